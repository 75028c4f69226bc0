//! The JetStream backend against real servers: the behavioural suite every backend passes,
//! on a three-node JetStream cluster with three replicas (started here, on 127.0.0.1).

use std::sync::{Arc, OnceLock};

use crate::suite::Pair;
use imgfleet_queue::jetstream::held_back_stream_name;
use imgfleet_queue::jetstream::{JetStream, JetStreamConfig, JetStreamQueue};
use imgfleet_queue::{OutgoingMessage, Queue, QueueSpec};
use imgfleet_tests::nats::Nats;

/// One cluster for the whole suite (each case gets queues of its own).
fn cluster() -> &'static Nats {
    static CLUSTER: OnceLock<Nats> = OnceLock::new();
    CLUSTER.get_or_init(Nats::cluster)
}

async fn connect() -> JetStream {
    let nats = cluster();
    JetStream::connect(&JetStreamConfig {
        urls: nats.urls(),
        replicas: nats.replicas(),
    })
    .await
    .expect("connecting to the cluster")
}

async fn fresh(mut spec: QueueSpec) -> Pair {
    let js = connect().await;
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
    let mut spec = crate::suite::spec("released");
    spec.max_receives = Some(2);
    crate::suite::released_deliveries_are_not_counted(fresh(spec).await).await;
}

/// Hand-backs of `queue`'s message `id` on record (the side stream counting them).
async fn hand_backs(js: &JetStream, queue: &str, id: &str) -> usize {
    use futures_util::StreamExt;
    let held = held_back_stream_name(queue);
    let subject = format!("{held}.{id}");
    let stream = js.context.get_stream(&held).await.expect("the side stream");
    let mut counts = stream
        .info_with_subjects(&subject)
        .await
        .expect("its subjects");
    let mut n = 0;
    while let Some(entry) = counts.next().await {
        let (s, count) = entry.expect("a subject count");
        if s == subject {
            n = count;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_messages_hand_backs_are_forgotten() {
    let js = connect().await;
    let (q, _) = fresh(crate::suite::spec("forgotten")).await;
    q.send(OutgoingMessage::new("m")).await.unwrap();
    let first = crate::suite::receive(&*q, 1, 3000, Some(60)).await;
    q.release(&first[0]).await.unwrap();
    let again = crate::suite::receive(&*q, 1, 3000, Some(60)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(hand_backs(&js, q.name(), &again[0].id).await, 1);
    q.delete(&again[0].receipt).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while hand_backs(&js, q.name(), &again[0].id).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the hand-back outlived its message"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_and_keeps_what_it_accepted() {
    let q = fresh(crate::suite::bounded_spec("bounded")).await;
    crate::suite::a_full_queue_refuses_and_keeps_what_it_accepted(q).await;
}
