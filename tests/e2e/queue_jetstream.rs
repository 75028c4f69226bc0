//! The JetStream backend against real servers: the behavioural suite every backend passes,
//! on a three-node JetStream cluster with three replicas (started here, on 127.0.0.1).

#[path = "../../host/tests/queue_suite/mod.rs"]
mod queue_suite;

use std::sync::{Arc, OnceLock};

use imgfleet_host::queue::jetstream::{JetStream, JetStreamConfig, JetStreamQueue};
use imgfleet_host::queue::{Queue, QueueSpec};
use imgfleet_tests::nats::Nats;
use queue_suite::Pair;

/// One cluster for the whole suite (each case gets queues of its own).
fn cluster() -> &'static Nats {
    static CLUSTER: OnceLock<Nats> = OnceLock::new();
    CLUSTER.get_or_init(Nats::cluster)
}

async fn fresh(mut spec: QueueSpec) -> Pair {
    let nats = cluster();
    let js = JetStream::connect(&JetStreamConfig {
        urls: nats.urls(),
        replicas: nats.replicas(),
    })
    .await
    .expect("connecting to the cluster");
    spec.name = format!(
        "{}-{}",
        spec.name,
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    );
    let q = JetStreamQueue::open(&js, &spec)
        .await
        .expect("creating the queue");
    let dlq = match spec.max_receives {
        Some(_) => {
            let dlq = JetStreamQueue::open(&js, &QueueSpec::new(spec.dead_letter_name()))
                .await
                .expect("dead-letter queue");
            Some(Arc::new(dlq) as Arc<dyn Queue>)
        }
        None => None,
    };
    (Arc::new(q), dlq)
}

queue_suite!(fresh);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_deliveries_are_not_counted() {
    let mut spec = queue_suite::spec("released");
    spec.max_receives = Some(2);
    queue_suite::released_deliveries_are_not_counted(fresh(spec).await).await;
}
