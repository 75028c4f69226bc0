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

/// What each partition holds, read from the partitions themselves.
async fn held(parts: &[Arc<dyn Queue>]) -> Vec<usize> {
    let mut counts = Vec::new();
    for part in parts {
        counts.push(receive(&**part, 10, 300, None).await.len());
    }
    counts
}

/// A hedge's copy must not share the first copy's fate: it goes to another partition.
#[tokio::test]
async fn a_second_copy_goes_to_another_partition_than_the_first() {
    let spec = crate::suite::spec("elsewhere");
    let (parts, _) = partitions(&spec).await;
    let q = Partitioned::new("elsewhere", parts.clone(), ATTEMPT);
    let message = OutgoingMessage::new("job").group("tenant#0");
    let first = q.send(message.clone()).await.unwrap();
    let second = q.send_elsewhere(message, &first).await.unwrap();
    let partition = |id: &str| id.split_once(':').unwrap().0.to_string();
    assert_ne!(partition(&first), partition(&second));
    let counts = held(&parts).await;
    assert_eq!(counts.iter().sum::<usize>(), 2, "{counts:?}");
    assert!(counts.iter().all(|n| *n <= 1), "{counts:?}");
}

/// A hedged job's completion goes to every partition: whichever can deliver it does.
#[tokio::test]
async fn a_message_sent_everywhere_lands_on_every_partition() {
    let spec = crate::suite::spec("everywhere");
    let (parts, _) = partitions(&spec).await;
    let q = Partitioned::new("everywhere", parts.clone(), ATTEMPT);
    q.send_everywhere(OutgoingMessage::new("completion"))
        .await
        .unwrap();
    // The copies after the first land in the background.
    let mut counts = vec![0; parts.len()];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while counts.contains(&0) && std::time::Instant::now() < deadline {
        for (n, got) in counts.iter_mut().zip(held(&parts).await) {
            *n += got;
        }
    }
    assert_eq!(counts, vec![1; parts.len()]);
}

/// A partition that takes a send and never answers (its leader hanging).
struct Hanging;

#[async_trait::async_trait]
impl Queue for Hanging {
    fn name(&self) -> &str {
        "hanging"
    }
    fn max_message_bytes(&self) -> usize {
        256 * 1024
    }
    async fn send(&self, _: OutgoingMessage) -> Result<String, imgfleet_queue::QueueError> {
        std::future::pending().await
    }
    async fn receive(
        &self,
        _: imgfleet_queue::ReceiveRequest,
    ) -> Result<Vec<imgfleet_queue::Message>, imgfleet_queue::QueueError> {
        std::future::pending().await
    }
    async fn delete(&self, _: &imgfleet_queue::Receipt) -> Result<(), imgfleet_queue::QueueError> {
        std::future::pending().await
    }
    async fn change_visibility(
        &self,
        _: &imgfleet_queue::Receipt,
        _: Duration,
    ) -> Result<(), imgfleet_queue::QueueError> {
        std::future::pending().await
    }
    async fn depth(&self) -> Result<imgfleet_queue::Depth, imgfleet_queue::QueueError> {
        std::future::pending().await
    }
}

/// A partition that stops answering makes the queue degraded (the sign for waiting
/// requests to hedge) while a send moves on to the others; a healthy queue never is.
#[tokio::test]
async fn a_partition_that_does_not_answer_degrades_the_queue_and_is_passed_over() {
    let spec = crate::suite::spec("degraded");
    let (mut parts, _) = partitions(&spec).await;
    parts.truncate(2);
    let healthy = Partitioned::new("degraded", parts.clone(), ATTEMPT);
    healthy.send(OutgoingMessage::new("a")).await.unwrap();
    assert!(!healthy.degraded());
    let mut with_hanging: Vec<Arc<dyn Queue>> = vec![Arc::new(Hanging)];
    with_hanging.extend(parts.iter().cloned());
    let q = Partitioned::new("degraded", with_hanging, Duration::from_millis(200));
    assert!(!q.degraded());
    // Ungrouped sends start at partition 0, the hanging one.
    let id = q.send(OutgoingMessage::new("b")).await.unwrap();
    assert!(!id.starts_with("0:"), "{id}");
    assert!(q.degraded());
    // A copy of a message on a live partition goes to the other live one, not the hanging.
    let copy = q
        .send_elsewhere(OutgoingMessage::new("c"), &id)
        .await
        .unwrap();
    assert!(!copy.starts_with("0:") && copy != id, "{copy}");
}

/// A partition that failed is back in line once its mark runs out, but suspect: sends try
/// it after the partitions that never failed, and a receive's no-wait pass gives it a
/// short attempt, not a whole one. A node that hangs on and off (stopped, resumed, stopped
/// again) would otherwise take new messages in each moment it answers, and then hold them,
/// and cost a whole attempt each time.
#[tokio::test]
async fn a_partition_back_in_line_after_failing_stays_suspect() {
    let spec = crate::suite::spec("suspect");
    let (mut parts, _) = partitions(&spec).await;
    parts.truncate(1);
    let mut with_hanging: Vec<Arc<dyn Queue>> = vec![Arc::new(Hanging)];
    with_hanging.extend(parts);
    let attempt = Duration::from_secs(1);
    let q = Partitioned::new("suspect", with_hanging, attempt);
    // Ungrouped sends take the partitions in turn: the first starts at the hanging one,
    // which is joined by the next before its attempt is up.
    let started = std::time::Instant::now();
    let id = q.send(OutgoingMessage::new("a")).await.unwrap();
    assert!(id.starts_with("1:"), "{id}");
    assert!(
        started.elapsed() < attempt / 2,
        "a send waited {:?} on a partition that does not answer",
        started.elapsed()
    );
    assert!(q.degraded(), "late to answer, the partition is tried last");
    // Its attempt runs out in the background and marks it down (5 s); past that mark the
    // hanging partition is no longer down.
    tokio::time::sleep(attempt + Duration::from_millis(5_200)).await;
    assert!(!q.degraded());
    for body in ["b", "c"] {
        let started = std::time::Instant::now();
        let id = q.send(OutgoingMessage::new(body)).await.unwrap();
        assert!(id.starts_with("1:"), "{id}");
        assert!(
            started.elapsed() < attempt / 2,
            "a send started at the suspect partition went there first"
        );
    }
    // A receive's no-wait pass still asks it, briefly.
    let started = std::time::Instant::now();
    let got = crate::suite::receive(&q, 10, 0, Some(60)).await;
    let took = started.elapsed();
    assert_eq!(got.len(), 3);
    assert!(
        took < attempt / 2,
        "a partition that failed lately got {took:?} of a {attempt:?} attempt"
    );
    assert!(q.degraded(), "failing again marks it down again");
}

/// A long poll does not wait on a partition that hangs: a message that reaches a live
/// partition after that partition's poll of the round ended empty is received by the
/// next round at once, not once the hanging poll has given up (a whole attempt later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_partition_holds_up_no_long_poll() {
    let spec = crate::suite::spec("hang-poll");
    let (mut parts, _) = partitions(&spec).await;
    parts.truncate(1);
    let live = parts[0].clone();
    let mut with_hanging: Vec<Arc<dyn Queue>> = vec![Arc::new(Hanging)];
    with_hanging.extend(parts);
    let q = Partitioned::new("hang-poll", with_hanging, ATTEMPT);
    let sent_at = Arc::new(std::sync::Mutex::new(None));
    let sender = {
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            // The receive's no-wait pass gives the hanging partition a moment, then long
            // polls start in 500 ms rounds: this lands several rounds in.
            tokio::time::sleep(ATTEMPT + Duration::from_millis(800)).await;
            *sent_at.lock().unwrap() = Some(std::time::Instant::now());
            live.send(OutgoingMessage::new("late")).await.unwrap();
        })
    };
    let got = receive(&q, 10, 10_000, Some(60)).await;
    let since_sent = sent_at.lock().unwrap().expect("sent").elapsed();
    sender.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        since_sent < Duration::from_secs(1),
        "received {since_sent:?} after it was sent"
    );
}

/// A partition on a node with a fault: sends answered only after `send_delay` (the node
/// paused), receives made before `hung_until` never answered (they went out on a
/// connection the client has since left). Notes what it took and what was withdrawn.
struct Faulty {
    inner: Arc<dyn Queue>,
    send_delay: Duration,
    hung_until: Option<std::time::Instant>,
    took: std::sync::Mutex<Vec<String>>,
    withdrawn: std::sync::Mutex<Vec<String>>,
}

impl Faulty {
    fn new(inner: Arc<dyn Queue>) -> Self {
        Self {
            inner,
            send_delay: Duration::ZERO,
            hung_until: None,
            took: Default::default(),
            withdrawn: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl Queue for Faulty {
    fn name(&self) -> &str {
        "faulty"
    }
    fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes()
    }
    async fn send(&self, message: OutgoingMessage) -> Result<String, imgfleet_queue::QueueError> {
        tokio::time::sleep(self.send_delay).await;
        let id = self.inner.send(message).await?;
        self.took.lock().unwrap().push(id.clone());
        Ok(id)
    }
    async fn withdraw(&self, id: &str) -> Result<(), imgfleet_queue::QueueError> {
        self.withdrawn.lock().unwrap().push(id.to_string());
        self.inner.withdraw(id).await
    }
    async fn receive(
        &self,
        request: imgfleet_queue::ReceiveRequest,
    ) -> Result<Vec<imgfleet_queue::Message>, imgfleet_queue::QueueError> {
        if self
            .hung_until
            .is_some_and(|until| std::time::Instant::now() < until)
        {
            std::future::pending::<()>().await;
        }
        self.inner.receive(request).await
    }
    async fn delete(&self, r: &imgfleet_queue::Receipt) -> Result<(), imgfleet_queue::QueueError> {
        self.inner.delete(r).await
    }
    async fn change_visibility(
        &self,
        r: &imgfleet_queue::Receipt,
        timeout: Duration,
    ) -> Result<(), imgfleet_queue::QueueError> {
        self.inner.change_visibility(r, timeout).await
    }
    async fn depth(&self) -> Result<imgfleet_queue::Depth, imgfleet_queue::QueueError> {
        self.inner.depth().await
    }
}

/// A send does not wait a whole attempt on a partition slow to answer: the next one is
/// tried alongside, the first to take the message has it, and the copy the slow one takes
/// later is withdrawn, so that the message is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_a_slow_partition_holds_up_goes_to_the_next_and_its_late_copy_is_withdrawn() {
    let spec = crate::suite::spec("slow-send");
    let (parts, _) = partitions(&spec).await;
    let slow = Arc::new(Faulty {
        send_delay: Duration::from_millis(700),
        ..Faulty::new(parts[0].clone())
    });
    let mut with_slow: Vec<Arc<dyn Queue>> = vec![slow.clone()];
    with_slow.extend(parts[1..].iter().cloned());
    let q = Partitioned::new("slow-send", with_slow, ATTEMPT);
    // Ungrouped sends take the partitions in turn: the first starts at the slow one.
    let started = std::time::Instant::now();
    let id = q.send(OutgoingMessage::new("a")).await.unwrap();
    let took = started.elapsed();
    assert!(id.starts_with("1:"), "{id}");
    assert!(
        took < slow.send_delay,
        "the send waited {took:?} on the slow partition"
    );
    assert!(
        q.degraded(),
        "late to answer, the slow partition is tried last"
    );
    // The next sends go to the partitions that answer first, and at once.
    for body in ["b", "c"] {
        let started = std::time::Instant::now();
        let id = q.send(OutgoingMessage::new(body)).await.unwrap();
        assert!(!id.starts_with("0:"), "{id}");
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
    }
    tokio::time::sleep(slow.send_delay).await;
    let took = slow.took.lock().unwrap().clone();
    assert_eq!(took.len(), 1, "the slow partition took the first send late");
    assert_eq!(
        *slow.withdrawn.lock().unwrap(),
        took,
        "its late copy is withdrawn"
    );
}

/// A receive's no-wait pass does not wait a whole attempt on a partition that does not
/// answer: it moves on to the next, which has the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_wait_receive_moves_on_from_a_partition_that_does_not_answer() {
    let spec = crate::suite::spec("hang-now");
    let (mut parts, _) = partitions(&spec).await;
    parts.truncate(1);
    parts[0].send(OutgoingMessage::new("ready")).await.unwrap();
    let mut with_hanging: Vec<Arc<dyn Queue>> = vec![Arc::new(Hanging)];
    with_hanging.extend(parts);
    let attempt = Duration::from_secs(3);
    let q = Partitioned::new("hang-now", with_hanging, attempt);
    let started = std::time::Instant::now();
    // Receives start at the partitions in turn: the first at the hanging one.
    let got = receive(&q, 1, 0, Some(60)).await;
    let took = started.elapsed();
    assert_eq!(got.len(), 1);
    assert!(took < attempt / 3, "the receive took {took:?}");
}

/// A long poll stuck on a connection left behind is polled again once it is stale, so a
/// receive gets the partition's messages through the new connection instead of waiting
/// for the old poll's own timeout (or, as here, for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_stuck_on_a_connection_left_behind_is_polled_again() {
    let spec = crate::suite::spec("stuck-poll");
    let (parts, _) = partitions(&spec).await;
    parts[0]
        .send(OutgoingMessage::new("waiting"))
        .await
        .unwrap();
    let stuck = Faulty {
        hung_until: Some(std::time::Instant::now() + Duration::from_millis(400)),
        ..Faulty::new(parts[0].clone())
    };
    let q = Partitioned::new("stuck-poll", vec![Arc::new(stuck)], ATTEMPT);
    let started = std::time::Instant::now();
    let got = receive(&q, 1, 5_000, Some(60)).await;
    let took = started.elapsed();
    assert_eq!(got.len(), 1, "nothing received in {took:?}");
    assert!(took < Duration::from_secs(3), "received after {took:?}");
}
