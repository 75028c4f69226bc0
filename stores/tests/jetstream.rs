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

/// A node that hangs (SIGSTOP: its connections stay open, nothing answers) stalls neither
/// writes nor the reads it can be spared: a write to the bucket it leads goes to another
/// bucket, and a read the cluster routed to it (direct gets go to any replica) goes to the
/// stream's leader. Waiting the node out instead costs a write its whole attempt (1.5 s)
/// and a read its steps (0.75 s each). What the hung node leads is another matter: its
/// followers stop answering direct gets once they lose their leader, so entries there wait
/// for it to come back or be replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_stalls_neither_writes_nor_reads() {
    use bytes::Bytes;
    use std::time::{Duration, Instant};
    let nats = Nats::cluster();
    // This host talks to the first node only, so the hung one is a peer, not its server
    // (a host whose own server hangs reconnects elsewhere; that is the client's business).
    let js = JetStream::connect(&JetStreamConfig {
        urls: nats.nodes[0].url(),
        replicas: nats.replicas(),
    })
    .await
    .expect("connecting to nats-server");
    let shared = SharedStaging::open(&js, 1 << 30, 3)
        .await
        .expect("opening the shared staging");
    let ttl = Duration::from_secs(300);
    let body = Bytes::from(vec![7u8; 300_000]);
    let mut written = Vec::new();
    for _ in 0..6 {
        written.push(shared.put(body.clone(), ttl).await.expect("a write"));
    }
    // The peer leading the most buckets hangs.
    let mut led = [0usize; 3];
    let mut leader_of = [usize::MAX; 3];
    for (p, leader_of) in leader_of.iter_mut().enumerate() {
        let mut stream = js
            .context
            .get_stream(format!("OBJ_imgfleet_staging_p{p}"))
            .await
            .expect("a staging bucket's stream");
        let info = stream.info().await.expect("its description");
        if let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.as_deref()) {
            led[nats.node(leader)] += 1;
            *leader_of = nats.node(leader);
        }
    }
    let hung = if led[2] > led[1] { 2 } else { 1 };
    nats.pause(hung);
    let work = async {
        let mut slowest = (Duration::ZERO, String::new());
        for earlier in written.clone() {
            let started = Instant::now();
            let key = shared.put(body.clone(), ttl).await.expect("a write");
            if started.elapsed() > slowest.0 {
                slowest = (started.elapsed(), format!("writing {key}"));
            }
            // Keys lead with their bucket's index.
            let bucket: usize = earlier[..1].parse().expect("a partitioned key");
            if leader_of[bucket] == hung {
                continue;
            }
            let started = Instant::now();
            let read = shared
                .get(&earlier, imgfleet_stores::clock::now_ms())
                .await
                .expect("a read");
            if started.elapsed() > slowest.0 {
                slowest = (started.elapsed(), format!("reading {earlier}"));
            }
            assert_eq!(read, body, "{earlier} read back whole");
            written.push(key);
        }
        slowest
    };
    let slowest = tokio::time::timeout(Duration::from_secs(30), work).await;
    nats.resume(hung);
    let (slowest, what) = slowest.expect("writes and reads went on while a node hung");
    assert!(
        slowest < Duration::from_millis(1200),
        "{what} took {slowest:?} while node {hung} hung (buckets it led: {led:?})"
    );
}
