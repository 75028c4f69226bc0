//! Staging on one host (small entries in memory, large and durable ones in files) through
//! the staging suite, plus what only files must prove: durable entries survive a restart.

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
async fn durable_entries_survive_a_restart_and_volatile_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = StagingConfig::default();
    let first = Staging::open(dir.path(), config).unwrap();
    let ttl = Duration::from_secs(60);
    let durable = first
        .put(Bytes::from_static(b"kept"), ttl, Keep::Durable)
        .await
        .unwrap();
    let volatile = first
        .put(Bytes::from(vec![3u8; 2 << 20]), ttl, Keep::Volatile)
        .await
        .unwrap();
    drop(first);
    let again = Staging::open(dir.path(), config).unwrap();
    assert_eq!(&again.get(&durable).await.unwrap()[..], b"kept");
    assert!(again.get(&volatile).await.is_err());
    assert_eq!(again.used_bytes(), 4);
}
