//! A queue spread over three partitions (here embedded queues, each in a store of its own)
//! through the shared behavioural suite, plus what only a partitioned queue has to prove.

use std::sync::Arc;
use std::time::Duration;

use crate::suite::{Pair, receive};
use imgfleet_queue::embedded::EmbeddedStore;
use imgfleet_queue::partitioned::Partitioned;
use imgfleet_queue::{OutgoingMessage, Queue, QueueSpec};

const ATTEMPT: Duration = Duration::from_secs(2);

/// Three partitions of `spec` and, when it dead-letters, their three dead-letter queues.
async fn partitions(spec: &QueueSpec) -> (Vec<Arc<dyn Queue>>, Vec<Arc<dyn Queue>>) {
    let mut parts: Vec<Arc<dyn Queue>> = Vec::new();
    let mut dlqs: Vec<Arc<dyn Queue>> = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap().keep();
        let store = EmbeddedStore::open(&dir).unwrap();
        parts.push(store.queue(spec.clone()).await.unwrap());
        if spec.max_receives.is_some() {
            let dlq = QueueSpec::new(spec.dead_letter_name());
            dlqs.push(store.queue(dlq).await.unwrap());
        }
    }
    (parts, dlqs)
}

async fn fresh(spec: QueueSpec) -> Pair {
    let (parts, dlqs) = partitions(&spec).await;
    let q: Arc<dyn Queue> = Arc::new(Partitioned::new(&spec.name, parts, ATTEMPT));
    let dlq: Option<Arc<dyn Queue>> = (!dlqs.is_empty()).then(|| {
        Arc::new(Partitioned::new(spec.dead_letter_name(), dlqs, ATTEMPT)) as Arc<dyn Queue>
    });
    (q, dlq)
}

queue_suite!(fresh);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungrouped_messages_spread_over_every_partition_and_all_come_back() {
    let spec = crate::suite::spec("spread");
    let (parts, _) = partitions(&spec).await;
    let q = Partitioned::new("spread", parts.clone(), ATTEMPT);
    for i in 0..30 {
        q.send(OutgoingMessage::new(format!("m{i}"))).await.unwrap();
    }
    for part in &parts {
        assert_eq!(part.depth().await.unwrap().visible, 10, "round robin");
    }
    let mut bodies = Vec::new();
    while bodies.len() < 30 {
        let got = receive(&q, 10, 2000, None).await;
        assert!(!got.is_empty(), "only {} of 30 came back", bodies.len());
        for m in got {
            bodies.push(String::from_utf8(m.body.to_vec()).unwrap());
            q.delete(&m.receipt).await.unwrap();
        }
    }
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 30);
    assert_eq!(q.depth().await.unwrap().visible, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_on_any_partition_ends_a_long_poll_and_none_is_stranded() {
    let spec = crate::suite::spec("long-poll");
    let (parts, _) = partitions(&spec).await;
    let q = Arc::new(Partitioned::new("long-poll", parts.clone(), ATTEMPT));
    for (i, part) in parts.iter().enumerate() {
        let part = part.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            part.send(OutgoingMessage::new(format!("p{i}")))
                .await
                .unwrap();
        });
    }
    let started = std::time::Instant::now();
    let mut got = receive(&*q, 10, 10_000, Some(60)).await;
    assert!(!got.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    // The three arrived at once: whatever the first poll to answer did not bring went back
    // to its partition (no receive was waiting for it), and the next receives get it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got.len() < 3 && std::time::Instant::now() < deadline {
        got.extend(receive(&*q, 10, 1000, Some(60)).await);
    }
    let mut bodies: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["p0", "p1", "p2"]);
    for m in &got {
        q.delete(&m.receipt).await.unwrap();
    }
}

/// Two hosts on one partitioned queue: what a host's leftover polls bring while none of
/// its receives is waiting goes back to the queue, for the other host, instead of staying
/// in flight until the first host asks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_messages_nobody_here_waits_for_go_to_another_host() {
    let spec = crate::suite::spec("hoard");
    let (parts, _) = partitions(&spec).await;
    let busy = Partitioned::new("hoard", parts.clone(), ATTEMPT);
    let idle = Partitioned::new("hoard", parts.clone(), ATTEMPT);
    crate::suite::late_messages_go_to_the_idle_host(&busy, &idle).await;
}

#[tokio::test]
async fn receipts_that_name_no_partition_are_refused() {
    let spec = crate::suite::spec("receipts");
    let (parts, _) = partitions(&spec).await;
    let q = Partitioned::new("receipts", parts, ATTEMPT);
    for bad in ["", "x", "7:abc", "x:abc"] {
        let err = q
            .delete(&imgfleet_queue::Receipt(bad.into()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, imgfleet_queue::QueueError::InvalidReceipt),
            "{bad}: {err}"
        );
    }
}
