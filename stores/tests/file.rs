//! Staging on one host (small entries in memory, large and durable ones in files) through
//! the staging suite, plus what only files must prove: a damaged or half-written file is never
//! served (the unit tests in `staging/mod.rs` cover restarts and expiry).

use std::time::Duration;

use bytes::Bytes;
use imgfleet_stores::staging::{Keep, Staging, StagingConfig};

async fn staging(capacity_bytes: u64) -> Staging {
    let dir = tempfile::tempdir().unwrap().keep();
    Staging::open(
        &dir,
        StagingConfig {
            spill_bytes: 64 * 1024,
            capacity_bytes,
            ..StagingConfig::default()
        },
    )
    .unwrap()
}

staging_suite!(staging);

#[tokio::test]
async fn a_damaged_or_half_written_file_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = StagingConfig::default();
    let first = Staging::open(dir.path(), config).unwrap();
    let ttl = Duration::from_secs(60);
    let kept = first
        .put(Bytes::from(vec![5u8; 1000]), ttl, Keep::Durable)
        .await
        .unwrap();
    let flipped = first
        .put(Bytes::from(vec![6u8; 1000]), ttl, Keep::Durable)
        .await
        .unwrap();
    let cut = first
        .put(Bytes::from(vec![7u8; 1000]), ttl, Keep::Durable)
        .await
        .unwrap();
    drop(first);
    let durable = dir.path().join("durable");
    let mut bytes = std::fs::read(durable.join(&flipped)).unwrap();
    bytes[500] ^= 1;
    std::fs::write(durable.join(&flipped), bytes).unwrap();
    let bytes = std::fs::read(durable.join(&cut)).unwrap();
    std::fs::write(durable.join(&cut), &bytes[..600]).unwrap();
    std::fs::write(durable.join("half-written.part"), b"partial").unwrap();

    let again = Staging::open(dir.path(), config).unwrap();
    assert!(!durable.join("half-written.part").exists());
    assert_eq!(
        again.get(&kept).await.unwrap(),
        Bytes::from(vec![5u8; 1000])
    );
    for key in [&flipped, &cut] {
        assert!(matches!(
            again.get(key).await,
            Err(imgfleet_stores::staging::StagingError::Damaged(_))
        ));
    }
}
