//! The fleet's staging area (JetStream object store) through the staging suite, on a real
//! nats-server started here.

use imgfleet_queue::jetstream::{JetStream, JetStreamConfig};
use imgfleet_stores::staging::jetstream::SharedStaging;
use imgfleet_stores::staging::{Staging, StagingConfig};
use imgfleet_tests::nats::Nats;

/// Every case gets a server of its own (kept until the test process ends): the staging
/// bucket has one name per fleet.
async fn staging(capacity_bytes: u64) -> Staging {
    let nats: &'static Nats = Box::leak(Box::new(Nats::single()));
    let js = JetStream::connect(&JetStreamConfig {
        urls: nats.urls(),
        replicas: nats.replicas(),
    })
    .await
    .expect("connecting to nats-server");
    let shared = SharedStaging::open(&js, capacity_bytes, 1)
        .await
        .expect("opening the shared staging");
    let dir = tempfile::tempdir().unwrap().keep();
    Staging::open(&dir, StagingConfig::default())
        .unwrap()
        .with_shared(shared)
}

staging_suite!(staging);
