//! The behavioural suite every queue backend must pass. A backend's test file calls
//! `queue_suite!(factory)` where `factory(spec)` yields a fresh, empty queue for `spec`
//! and its dead-letter queue. The cases outside the macro hold for some backends only;
//! their test files call them.

// Each test binary uses the cases that hold for its backend.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use imgfleet_queue::{OutgoingMessage, Queue, QueueSpec, ReceiveRequest};

pub type Pair = (Arc<dyn Queue>, Option<Arc<dyn Queue>>);

pub fn spec(name: &str) -> QueueSpec {
    let mut s = QueueSpec::new(name);
    s.visibility_timeout = Duration::from_secs(30);
    s
}

pub async fn receive(
    q: &dyn Queue,
    max: usize,
    wait_ms: u64,
    visibility_s: Option<u64>,
) -> Vec<imgfleet_queue::Message> {
    q.receive(ReceiveRequest {
        max_messages: max,
        wait: Duration::from_millis(wait_ms),
        visibility: visibility_s.map(Duration::from_secs),
    })
    .await
    .expect("receive")
}

pub async fn send_delete_is_final(q: Pair) {
    let (q, _) = q;
    q.send(OutgoingMessage::new("hello").group("g").attribute("k", "v"))
        .await
        .unwrap();
    let got = receive(&*q, 1, 1000, Some(1)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].body[..], b"hello");
    assert_eq!(got[0].attributes.get("k").map(String::as_str), Some("v"));
    assert_eq!(got[0].receive_count, 1);
    q.delete(&got[0].receipt).await.unwrap();
    // Past the visibility timeout: a deleted message never comes back.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        receive(&*q, 10, 0, None).await.is_empty(),
        "deleted message came back"
    );
}

pub async fn visibility_expiry_redelivers(q: Pair) {
    let (q, _) = q;
    q.send(OutgoingMessage::new("m").group("g")).await.unwrap();
    let first = receive(&*q, 1, 1000, Some(1)).await;
    assert_eq!(first.len(), 1);
    assert!(
        receive(&*q, 1, 0, None).await.is_empty(),
        "in flight, so hidden"
    );
    let again = receive(&*q, 1, 3000, Some(30)).await;
    assert_eq!(again.len(), 1, "redelivered after the visibility timeout");
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(again[0].id, first[0].id);
    q.delete(&again[0].receipt).await.unwrap();
}

pub async fn change_visibility_to_zero_releases_at_once(q: Pair) {
    let (q, _) = q;
    q.send(OutgoingMessage::new("m").group("g")).await.unwrap();
    let got = receive(&*q, 1, 1000, Some(60)).await;
    q.change_visibility(&got[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let again = receive(&*q, 1, 1000, None).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
}

pub async fn release_hands_a_message_back_at_once(q: Pair) {
    let (q, _) = q;
    q.send(OutgoingMessage::new("m").group("g")).await.unwrap();
    let got = receive(&*q, 1, 1000, Some(60)).await;
    assert_eq!(got.len(), 1);
    q.release(&got[0]).await.unwrap();
    let again = receive(&*q, 1, 2000, None).await;
    assert_eq!(again.len(), 1, "not offered again after its release");
    assert_eq!(again[0].id, got[0].id);
    assert_eq!(&again[0].body[..], b"m");
    q.delete(&again[0].receipt).await.unwrap();
}

/// For backends that leave released deliveries out of `receive_count` (JetStream): a
/// message released more often than `max_receives` (2) is neither counted nor dead-lettered.
pub async fn released_deliveries_are_not_counted(q: Pair) {
    let (q, dlq) = q;
    let dlq = dlq.expect("a dead-letter queue for this test");
    q.send(OutgoingMessage::new("m").group("g")).await.unwrap();
    for n in 1..=3 {
        let got = receive(&*q, 1, 3000, Some(60)).await;
        assert_eq!(got.len(), 1, "delivery {n}");
        assert_eq!(got[0].receive_count, 1, "delivery {n}");
        q.release(&got[0]).await.unwrap();
    }
    let got = receive(&*q, 1, 3000, Some(60)).await;
    assert_eq!(got.len(), 1, "dead-lettered although only released");
    q.delete(&got[0].receipt).await.unwrap();
    assert!(receive(&*dlq, 1, 0, None).await.is_empty());
}

pub async fn extending_visibility_keeps_it_hidden_and_deletable(q: Pair) {
    let (q, _) = q;
    q.send(OutgoingMessage::new("slow").group("g"))
        .await
        .unwrap();
    let got = receive(&*q, 1, 1000, Some(1)).await;
    assert_eq!(got.len(), 1);
    // A worker still busy with it extends its visibility, as a heartbeat does.
    q.change_visibility(&got[0].receipt, Duration::from_secs(4))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receive(&*q, 1, 0, None).await.is_empty(),
        "redelivered although its visibility was extended"
    );
    q.delete(&got[0].receipt).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(
        receive(&*q, 1, 0, None).await.is_empty(),
        "came back after being deleted"
    );
}

pub async fn dead_letter_after_max_receives(q: Pair) {
    let (q, dlq) = q;
    let dlq = dlq.expect("suite gives a dead-letter queue for this test");
    q.send(OutgoingMessage::new("poison").group("g"))
        .await
        .unwrap();
    for n in 1..=2 {
        // A long poll ends as soon as the message comes; the bound only allows for a
        // partition that is slow for a moment (a loaded machine's disk).
        let got = receive(&*q, 1, 5000, Some(30)).await;
        assert_eq!(got.len(), 1, "delivery {n}");
        assert_eq!(got[0].receive_count, n);
        q.change_visibility(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(
        receive(&*q, 1, 1000, None).await.is_empty(),
        "the third receive must not deliver it"
    );
    let dead = receive(&*dlq, 1, 3000, None).await;
    assert_eq!(dead.len(), 1, "moved to the dead-letter queue");
    assert_eq!(&dead[0].body[..], b"poison");
}

pub async fn long_poll_returns_as_soon_as_a_message_arrives(q: Pair) {
    let (q, _) = q;
    let sender = q.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender
            .send(OutgoingMessage::new("late").group("g"))
            .await
            .unwrap();
    });
    let started = Instant::now();
    let got = receive(&*q, 1, 10_000, None).await;
    let took = started.elapsed();
    assert_eq!(got.len(), 1);
    assert!(
        took >= Duration::from_millis(250),
        "returned before the send: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "waited well past the arrival: {took:?}"
    );
    q.delete(&got[0].receipt).await.unwrap();
    // An empty long poll waits its full time, and not much longer.
    let started = Instant::now();
    assert!(receive(&*q, 1, 1000, None).await.is_empty());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "empty poll took {took:?}"
    );
}

pub async fn fifo_within_a_group(q: Pair) {
    let (q, _) = q;
    for i in 0..5 {
        q.send(
            OutgoingMessage::new(format!("m{i}"))
                .group("g")
                .dedup_id(format!("d{i}")),
        )
        .await
        .unwrap();
    }
    for i in 0..5 {
        let got = receive(&*q, 1, 2000, Some(30)).await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            &got[0].body[..],
            format!("m{i}").as_bytes(),
            "order within the group"
        );
        // Held back while an earlier message was in flight is not a receive.
        assert_eq!(got[0].receive_count, 1, "m{i} counted as received before");
        // While m{i} is in flight nothing else of the group is delivered.
        assert!(
            receive(&*q, 1, 0, None).await.is_empty(),
            "group not held while m{i} in flight"
        );
        q.delete(&got[0].receipt).await.unwrap();
    }
}

pub async fn deduplication(q: Pair) {
    let (q, _) = q;
    q.send(OutgoingMessage::new("once").group("g").dedup_id("same"))
        .await
        .unwrap();
    // The duplicate is accepted (a retrying sender must not see an error) but not enqueued.
    q.send(OutgoingMessage::new("once").group("g").dedup_id("same"))
        .await
        .unwrap();
    let got = receive(&*q, 10, 1000, None).await;
    assert_eq!(got.len(), 1);
    q.delete(&got[0].receipt).await.unwrap();
    assert!(
        receive(&*q, 10, 500, None).await.is_empty(),
        "the duplicate was enqueued"
    );
}

pub async fn groups_do_not_block_each_other(q: Pair) {
    let (q, _) = q;
    q.send(OutgoingMessage::new("a1").group("a")).await.unwrap();
    q.send(OutgoingMessage::new("a2").group("a")).await.unwrap();
    q.send(OutgoingMessage::new("b1").group("b")).await.unwrap();
    let first = receive(&*q, 1, 1000, None).await;
    assert_eq!(&first[0].body[..], b"a1");
    let second = receive(&*q, 1, 1000, None).await;
    assert_eq!(
        second.len(),
        1,
        "group b is not held back by a's message in flight"
    );
    assert_eq!(&second[0].body[..], b"b1");
}

/// Two consumers ("hosts") of one queue of three partitions: `busy` takes one of three
/// messages that arrive while its long poll is out on every partition, and then asks for no
/// more; the other two must reach `idle` (returned, deleted) instead of waiting in `busy`.
pub async fn late_messages_go_to_the_idle_host(
    busy: &dyn Queue,
    idle: &dyn Queue,
) -> Vec<imgfleet_queue::Message> {
    let send = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..3 {
            idle.send(OutgoingMessage::new(format!("m{i}")))
                .await
                .unwrap();
        }
    };
    let (got, ()) = tokio::join!(receive(busy, 1, 10_000, Some(60)), send);
    assert_eq!(got.len(), 1);
    let mut others = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while others.len() < 2 && std::time::Instant::now() < deadline {
        others.extend(receive(idle, 10, 1000, Some(60)).await);
    }
    let mut bodies: Vec<String> = got
        .iter()
        .chain(&others)
        .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        ["m0", "m1", "m2"],
        "the idle host got {}",
        others.len()
    );
    busy.delete(&got[0].receipt).await.unwrap();
    for m in &others {
        idle.delete(&m.receipt).await.unwrap();
    }
    others
}

#[macro_export]
macro_rules! queue_suite {
    ($factory:expr) => {
        macro_rules! case {
            ($name:ident, $max:expr) => {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut s = $crate::suite::spec(stringify!($name));
                    s.max_receives = $max;
                    let pair = ($factory)(s).await;
                    $crate::suite::$name(pair).await;
                }
            };
        }
        case!(send_delete_is_final, None);
        case!(visibility_expiry_redelivers, None);
        case!(change_visibility_to_zero_releases_at_once, None);
        case!(release_hands_a_message_back_at_once, None);
        case!(extending_visibility_keeps_it_hidden_and_deletable, None);
        case!(dead_letter_after_max_receives, Some(2));
        case!(long_poll_returns_as_soon_as_a_message_arrives, None);
        case!(fifo_within_a_group, None);
        case!(deduplication, None);
        case!(groups_do_not_block_each_other, None);
    };
}

/// A queue bounded to 64 KiB (`spec.max_bytes`): once it holds that much, a send is refused
/// as full (not as an outage to retry through), nothing it accepted is dropped to make room,
/// and a consumed message makes room again.
pub async fn a_full_queue_refuses_and_keeps_what_it_accepted(q: Pair) {
    let (q, _) = q;
    let mut accepted = std::collections::BTreeSet::new();
    let refusal = loop {
        let body = format!("{:04}{}", accepted.len(), "x".repeat(4092));
        match q.send(OutgoingMessage::new(body.clone())).await {
            Ok(_) => accepted.insert(body),
            Err(e) => break e,
        };
        assert!(
            accepted.len() < 200,
            "a queue of 64 KiB took {} messages of 4 KiB",
            accepted.len()
        );
    };
    assert!(
        matches!(refusal, imgfleet_queue::QueueError::Full(_)),
        "refused as {refusal:?}"
    );
    assert!(accepted.len() >= 4, "only {} accepted", accepted.len());
    let mut got = Vec::new();
    while got.len() < accepted.len() {
        let batch = receive(&*q, 10, 1000, Some(60)).await;
        if batch.is_empty() {
            break;
        }
        got.extend(batch);
    }
    let bodies: std::collections::BTreeSet<String> = got
        .iter()
        .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
        .collect();
    assert_eq!(
        bodies, accepted,
        "the full queue dropped or changed messages"
    );
    q.delete(&got[0].receipt).await.expect("delete");
    q.send(OutgoingMessage::new("room again"))
        .await
        .expect("a send once a message was consumed");
}

pub fn bounded_spec(name: &str) -> QueueSpec {
    let mut s = spec(name);
    s.max_bytes = Some(64 * 1024);
    s
}
