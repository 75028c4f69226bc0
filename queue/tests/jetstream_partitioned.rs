//! A JetStream queue spread over three streams (`--nats-partitions 3`) against real
//! servers: the behavioural suite every backend passes, on a three-node cluster.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::suite::Pair;
use imgfleet_queue::backend::{self, QueueBackend};
use imgfleet_queue::jetstream::{JetStream, JetStreamConfig};
use imgfleet_queue::{OutgoingMessage, QueueSpec, ReceiveRequest, leaders};
use imgfleet_tests::nats::Nats;

fn cluster() -> &'static Nats {
    static CLUSTER: OnceLock<Nats> = OnceLock::new();
    CLUSTER.get_or_init(Nats::cluster)
}

async fn backend() -> QueueBackend {
    let nats = cluster();
    let js = JetStream::connect(&JetStreamConfig {
        urls: nats.urls(),
        replicas: nats.replicas(),
    })
    .await
    .expect("connecting to the cluster");
    QueueBackend::JetStream {
        js: Box::new(js),
        partitions: 3,
    }
}

async fn fresh(mut spec: QueueSpec) -> Pair {
    let backend = backend().await;
    spec.name = format!(
        "{}-{}",
        spec.name,
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    );
    let q = backend
        .open(spec.clone())
        .await
        .expect("creating the queue");
    let dlq = match spec.max_receives {
        Some(_) => Some(
            backend
                .open(QueueSpec::new(spec.dead_letter_name()))
                .await
                .expect("dead-letter queue"),
        ),
        None => None,
    };
    (q, dlq)
}

queue_suite!(fresh);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_stay_fast() {
    let (q, _) = fresh(crate::suite::spec("trips")).await;
    let mut took = Vec::new();
    for i in 0..30 {
        let started = Instant::now();
        q.send(OutgoingMessage::new(format!("m{i}")).group(format!("g{}", i % 4)))
            .await
            .unwrap();
        let got = q
            .receive(ReceiveRequest {
                max_messages: 1,
                wait: Duration::from_secs(5),
                visibility: None,
            })
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        q.delete(&got[0].receipt).await.unwrap();
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "send + receive + delete: median {:?}, max {:?}",
        took[15], took[29]
    );
    assert!(took[15] < Duration::from_millis(500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_deliveries_are_not_counted() {
    let mut spec = crate::suite::spec("released");
    spec.max_receives = Some(2);
    crate::suite::released_deliveries_are_not_counted(fresh(spec).await).await;
}

/// Two hosts, each with its own connection and its own view of the same three streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_messages_nobody_here_waits_for_go_to_another_host() {
    let spec = crate::suite::spec(&format!(
        "hoard-{}",
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    ));
    let busy = backend().await.open(spec.clone()).await.expect("busy host");
    let idle = backend().await.open(spec).await.expect("idle host");
    let others = crate::suite::late_messages_go_to_the_idle_host(&*busy, &*idle).await;
    for m in &others {
        assert_eq!(m.receive_count, 1, "a release counted as a receive");
    }
}

/// Full only when every partition is: the limit is split between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_and_keeps_what_it_accepted() {
    let q = fresh(crate::suite::bounded_spec("bounded")).await;
    crate::suite::a_full_queue_refuses_and_keeps_what_it_accepted(q).await;
}

/// A hedged job's spare copy, taken back once its request has its answer: never delivered,
/// and no longer first of its group, so the group's next message comes at once. A copy
/// already taken runs on: its deletion still succeeds, and taking it back twice is no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_copy_is_never_delivered_and_holds_up_nothing() {
    use crate::suite::receive;
    let (q, _) = fresh(crate::suite::spec("withdrawn")).await;
    let spare = q
        .send(OutgoingMessage::new("spare").group("g"))
        .await
        .unwrap();
    q.send(OutgoingMessage::new("next").group("g"))
        .await
        .unwrap();
    q.withdraw(&spare).await.expect("withdrawing a queued copy");
    let got = receive(&*q, 1, 5000, None).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        &got[0].body[..],
        b"next",
        "the withdrawn copy was delivered"
    );
    q.delete(&got[0].receipt).await.unwrap();

    let taken = q.send(OutgoingMessage::new("taken")).await.unwrap();
    let got = receive(&*q, 1, 5000, None).await;
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].body[..], b"taken");
    q.withdraw(&taken).await.expect("withdrawing a taken copy");
    q.delete(&got[0].receipt)
        .await
        .expect("deleting a withdrawn message its worker had");
    q.withdraw(&taken).await.expect("withdrawing twice");
    assert!(
        receive(&*q, 10, 1500, None).await.is_empty(),
        "a withdrawn message came back"
    );
    assert!(
        matches!(
            q.withdraw("9:1").await,
            Err(imgfleet_queue::QueueError::Invalid(_))
        ),
        "an id of no partition"
    );
}

/// Another host's queue, opened to send to (a worker's replies): what is sent reaches the
/// owner's receives, in the partition the sender chose, and the sender cannot take
/// anything off the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_opened_by_another_host_to_reply_to_reaches_its_owner() {
    let spec = crate::suite::spec(&format!(
        "replies-{}",
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    ));
    let owner = backend()
        .await
        .open(spec.clone())
        .await
        .expect("the owner's queue");
    let sender = backend()
        .await
        .open_with(spec.clone(), imgfleet_queue::backend::Leaders::LeftToOwner)
        .await
        .expect("opened to send");
    assert_eq!(sender.max_message_bytes(), owner.max_message_bytes());
    let mut sent = Vec::new();
    for body in ["a", "b", "c"] {
        sent.push(sender.send(OutgoingMessage::new(body)).await.expect("sent"));
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let more = crate::suite::receive(&*owner, 10, 2_000, Some(30)).await;
        assert!(!more.is_empty(), "got {} of {}", got.len(), sent.len());
        got.extend(more);
    }
    let mut ids: Vec<String> = got.iter().map(|m| m.id.clone()).collect();
    ids.sort();
    sent.sort();
    assert_eq!(ids, sent, "ids as the sender was told");
    let refused = sender
        .receive(ReceiveRequest {
            max_messages: 1,
            wait: Duration::ZERO,
            visibility: None,
        })
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("only sends to it")),
        "{refused:?}"
    );
}

/// Opening a queue spreads its partitions' leaders over the nodes by step-downs, each of
/// which leaves a partition without a leader until an election ends (seconds on a loaded
/// machine). The queue is handed out only once every partition is led again: its first
/// calls would otherwise fail on that partition or wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_is_handed_out_only_once_every_partition_is_led() {
    let spec = crate::suite::spec(&format!(
        "led-{}",
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    ));
    let backend = backend().await;
    backend.open(spec.clone()).await.expect("opening the queue");
    let QueueBackend::JetStream { js, partitions } = &backend else {
        unreachable!("the backend is JetStream");
    };
    let placement: Vec<_> = (0..*partitions)
        .map(|i| backend::partition_placement(&spec.name, i))
        .collect();
    let placed = leaders::place(js, &placement)
        .await
        .expect("every partition's stream, consumer and counts led");
    assert_eq!(placed.len(), 3);
}
