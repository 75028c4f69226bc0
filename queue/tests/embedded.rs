//! The embedded queue: the shared behavioural suite, plus what only a durable local log
//! has to prove (recovery, torn tails, kill -9, compaction, round robin, delays).

use std::sync::Arc;
use std::time::Duration;

use crate::suite::{Pair, receive};
use imgfleet_queue::embedded::{EmbeddedOptions, EmbeddedStore};
use imgfleet_queue::{OutgoingMessage, Queue, QueueError, QueueSpec};

async fn fresh(spec: QueueSpec) -> Pair {
    let dir = tempfile::tempdir().unwrap().keep();
    let store = EmbeddedStore::open(&dir).unwrap();
    let dlq_spec = QueueSpec::new(spec.dead_letter_name());
    let with_dlq = spec.max_receives.is_some();
    let q = store.queue(spec).await.unwrap();
    let dlq = if with_dlq {
        Some(store.queue(dlq_spec).await.unwrap())
    } else {
        None
    };
    (q, dlq)
}

queue_suite!(fresh);

/// Copies the log as it is on disk right now and opens the copy: what a restart after
/// kill -9 at this instant would see.
fn crash_copy(store: &EmbeddedStore) -> EmbeddedStore {
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::copy(store.dir().join("queue.log"), dir.join("queue.log")).unwrap();
    EmbeddedStore::open(&dir).unwrap()
}

#[tokio::test]
async fn a_restart_keeps_unacked_messages_counts_and_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut spec = QueueSpec::new("jobs");
    spec.max_receives = Some(5);
    let q = store.queue(spec.clone()).await.unwrap();
    for i in 0..3 {
        q.send(OutgoingMessage::new(format!("m{i}"))).await.unwrap();
    }
    let got = receive(&*q, 2, 0, Some(600)).await;
    assert_eq!(got.len(), 2);
    q.delete(&got[0].receipt).await.unwrap();
    // A synced send after the delete makes the delete durable too (the log is ordered).
    q.send(OutgoingMessage::new("m3")).await.unwrap();

    let reopened = crash_copy(&store);
    let q2 = reopened.queue(spec).await.unwrap();
    let mut bodies: Vec<(String, u32)> = receive(&*q2, 10, 0, None)
        .await
        .into_iter()
        .map(|m| (String::from_utf8(m.body.to_vec()).unwrap(), m.receive_count))
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        vec![("m1".into(), 2), ("m2".into(), 1), ("m3".into(), 1)],
        "m0 stays deleted; m1 (in flight at the crash) is back with its count kept"
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_the_rest_survives() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let q = store.queue(QueueSpec::new("q")).await.unwrap();
        q.send(OutgoingMessage::new("kept")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = dir.path().join("queue.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]); // half a frame
    std::fs::write(&log, &bytes).unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let q = store.queue(QueueSpec::new("q")).await.unwrap();
    let got = receive(&*q, 10, 0, None).await;
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].body[..], b"kept");
    q.send(OutgoingMessage::new("after")).await.unwrap();
    assert!(std::fs::metadata(&log).unwrap().len() < bytes.len() as u64 + 200);
}

#[tokio::test]
async fn compaction_shrinks_the_log_and_keeps_live_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(
        dir.path(),
        EmbeddedOptions {
            compact_min_bytes: 1 << 20,
        },
    )
    .unwrap();
    let q = store.queue(QueueSpec::new("q")).await.unwrap();
    q.send(OutgoingMessage::new("survivor").group("s"))
        .await
        .unwrap();
    let body = vec![7u8; 16 * 1024];
    for _ in 0..200 {
        q.send(OutgoingMessage::new(body.clone())).await.unwrap();
        let got = receive(&*q, 10, 0, None).await;
        for m in got {
            if &m.body[..] == b"survivor" {
                q.change_visibility(&m.receipt, Duration::ZERO)
                    .await
                    .unwrap();
            } else {
                q.delete(&m.receipt).await.unwrap();
            }
        }
    }
    q.send(OutgoingMessage::new("last")).await.unwrap();
    let size = store.log_bytes();
    assert!(
        size < 1 << 20,
        "log is {size} bytes after 3 MB of dead messages"
    );
    let reopened = crash_copy(&store);
    let q2 = reopened.queue(QueueSpec::new("q")).await.unwrap();
    let mut bodies: Vec<Vec<u8>> = receive(&*q2, 10, 0, None)
        .await
        .into_iter()
        .map(|m| m.body.to_vec())
        .collect();
    bodies.sort();
    assert_eq!(bodies, vec![b"last".to_vec(), b"survivor".to_vec()]);
    // Ids keep increasing after a compaction.
    let id: u64 = q2
        .send(OutgoingMessage::new("x"))
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(id > 200);
}

#[tokio::test]
async fn groups_are_served_round_robin() {
    let (q, _) = fresh(QueueSpec::new("rr")).await;
    for i in 0..5 {
        q.send(OutgoingMessage::new(format!("flood{i}")).group(format!("a{}", i % 2)))
            .await
            .unwrap();
    }
    q.send(OutgoingMessage::new("b").group("b")).await.unwrap();
    // Two flooding groups and one light one: the light one is served within three receives.
    let mut order = Vec::new();
    for _ in 0..3 {
        let got = receive(&*q, 1, 0, None).await;
        order.push(String::from_utf8(got[0].body.to_vec()).unwrap());
        q.delete(&got[0].receipt).await.unwrap();
    }
    assert!(
        order.contains(&"b".to_string()),
        "b waited behind the flood: {order:?}"
    );
}

#[tokio::test]
async fn a_deduplicated_send_returns_the_original_id() {
    let (q, _) = fresh(QueueSpec::new("dedup-id")).await;
    let a = q
        .send(OutgoingMessage::new("x").dedup_id("k"))
        .await
        .unwrap();
    let b = q
        .send(OutgoingMessage::new("x").dedup_id("k"))
        .await
        .unwrap();
    assert_eq!(a, b);
}

#[tokio::test]
async fn delayed_messages_appear_after_their_delay() {
    let (q, _) = fresh(QueueSpec::new("delay")).await;
    q.send(OutgoingMessage::new("later").delay(Duration::from_millis(800)))
        .await
        .unwrap();
    assert!(receive(&*q, 1, 0, None).await.is_empty());
    let started = std::time::Instant::now();
    let got = receive(&*q, 1, 5000, None).await;
    assert_eq!(got.len(), 1);
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn stale_receipts_and_bad_requests_are_refused() {
    let (q, _) = fresh(QueueSpec::new("strict")).await;
    q.send(OutgoingMessage::new("m")).await.unwrap();
    let first = receive(&*q, 1, 0, None).await;
    q.change_visibility(&first[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let second = receive(&*q, 1, 0, None).await;
    assert!(matches!(
        q.delete(&first[0].receipt).await,
        Err(QueueError::InvalidReceipt)
    ));
    q.delete(&second[0].receipt).await.unwrap();
    assert!(matches!(
        q.delete(&second[0].receipt).await,
        Err(QueueError::InvalidReceipt)
    ));
    let big = vec![0u8; q.max_message_bytes() + 1];
    assert!(matches!(
        q.send(OutgoingMessage::new(big)).await,
        Err(QueueError::TooLarge { .. })
    ));
    let bad = imgfleet_queue::ReceiveRequest {
        max_messages: 11,
        ..Default::default()
    };
    assert!(matches!(q.receive(bad).await, Err(QueueError::Invalid(_))));
}

/// The example process the kill -9 tests kill (`cargo test` builds examples).
fn producer() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let producer = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("examples/queue_producer");
    assert!(
        producer.exists(),
        "{} missing (cargo test builds examples)",
        producer.display()
    );
    producer
}

#[test]
fn acknowledged_sends_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(producer())
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.parse::<u64>().ok())
            .max()
    });
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let last_acked = reader
        .join()
        .unwrap()
        .expect("the producer acknowledged some sends");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let q: Arc<dyn Queue> = store.queue(QueueSpec::new("durable")).await.unwrap();
        let mut seen = std::collections::BTreeSet::new();
        loop {
            let got = receive(&*q, 10, 0, None).await;
            if got.is_empty() {
                break;
            }
            for m in got {
                seen.insert(
                    String::from_utf8(m.body.to_vec())
                        .unwrap()
                        .parse::<u64>()
                        .unwrap(),
                );
                q.delete(&m.receipt).await.unwrap();
            }
        }
        for n in 0..=last_acked {
            assert!(
                seen.contains(&n),
                "acknowledged message {n} (of 0..={last_acked}) was lost"
            );
        }
    });
}

/// A blob store in memory, to exercise the claim check.
#[derive(Default)]
struct MemoryBlobs(std::sync::Mutex<std::collections::HashMap<String, bytes::Bytes>>);

#[async_trait::async_trait]
impl imgfleet_queue::claim_check::BlobStore for MemoryBlobs {
    async fn put(&self, body: bytes::Bytes) -> Result<String, QueueError> {
        let mut map = self.0.lock().unwrap();
        let key = format!("blob-{}", map.len());
        map.insert(key.clone(), body);
        Ok(key)
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, QueueError> {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| QueueError::Unavailable(format!("no blob {key}")))
    }
    async fn remove(&self, key: &str) -> Result<(), QueueError> {
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
}

#[tokio::test]
async fn oversized_bodies_travel_by_claim_check() {
    use imgfleet_queue::claim_check::ClaimCheck;
    let (inner, _) = fresh(QueueSpec::new("claims")).await;
    let blobs = Arc::new(MemoryBlobs::default());
    let q = ClaimCheck::new(inner.clone(), blobs.clone());
    let big: Vec<u8> = (0..inner.max_message_bytes() * 3)
        .map(|i| (i % 251) as u8)
        .collect();
    q.send(OutgoingMessage::new(big.clone())).await.unwrap();
    q.send(OutgoingMessage::new("small")).await.unwrap();
    assert_eq!(
        blobs.0.lock().unwrap().len(),
        1,
        "only the oversized body is stored aside"
    );
    let got = receive(&q, 10, 0, None).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        &got[0].body[..],
        &big[..],
        "the receiver gets the original bytes back"
    );
    assert_eq!(&got[1].body[..], b"small");
    for m in &got {
        q.delete(&m.receipt).await.unwrap();
    }
    assert!(
        blobs.0.lock().unwrap().is_empty(),
        "deleting the message frees its blob"
    );
}

#[tokio::test]
async fn depth_reports_the_age_of_the_oldest_undeleted_message() {
    let (q, _) = fresh(QueueSpec::new("aging")).await;
    assert_eq!(
        q.depth().await.unwrap().oldest_age,
        Some(Duration::ZERO),
        "empty queue"
    );
    q.send(OutgoingMessage::new("first")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    q.send(OutgoingMessage::new("second")).await.unwrap();
    let age = q.depth().await.unwrap().oldest_age.expect("an age");
    assert!(age >= Duration::from_millis(400), "the first one: {age:?}");
    let got = receive(q.as_ref(), 1, 0, None).await;
    assert_eq!(&got[0].body[..], b"first");
    let age = q.depth().await.unwrap().oldest_age.expect("an age");
    assert!(
        age >= Duration::from_millis(400),
        "in flight still counts: {age:?}"
    );
    q.delete(&got[0].receipt).await.unwrap();
    let age = q.depth().await.unwrap().oldest_age.expect("an age");
    assert!(age < Duration::from_millis(400), "now the second: {age:?}");
}

/// Writes `bodies` to queue `q` (group per body) in a fresh store in `dir`, then closes it.
async fn logged(dir: &std::path::Path, queues: &[&str], bodies: &[&str]) {
    let store = EmbeddedStore::open(dir).unwrap();
    for name in queues {
        let q = store.queue(QueueSpec::new(*name)).await.unwrap();
        for body in bodies {
            q.send(OutgoingMessage::new(format!("{name}:{body}")).group(*body))
                .await
                .unwrap();
        }
    }
}

/// Every body in `q`, received and deleted.
async fn drain(q: &dyn Queue) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = receive(q, 10, 0, None).await;
        if got.is_empty() {
            break;
        }
        for m in got {
            out.push(String::from_utf8(m.body.to_vec()).unwrap());
            q.delete(&m.receipt).await.unwrap();
        }
    }
    out.sort();
    out
}

fn log_of(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("queue.log")
}

#[tokio::test]
async fn a_flipped_bit_in_the_middle_loses_only_its_record_and_keeps_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    logged(dir.path(), &["q"], &["aa", "bb", "cc"]).await;
    let mut bytes = std::fs::read(log_of(dir.path())).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == b"q:bb")
        .expect("the second body is in the log");
    bytes[at + 2] ^= 0x01;
    std::fs::write(log_of(dir.path()), &bytes).unwrap();

    let store = EmbeddedStore::open(dir.path()).unwrap();
    let damage = &store.recovery().log;
    assert!(damage.damaged_bytes > 0, "{:?}", store.recovery());
    let copy = damage.kept_copy.clone().expect("the damaged log is kept");
    assert_eq!(std::fs::read(copy).unwrap(), bytes);
    let q = store.queue(QueueSpec::new("q")).await.unwrap();
    assert_eq!(drain(&*q).await, ["q:aa", "q:cc"]);
    q.send(OutgoingMessage::new("after")).await.unwrap();
    drop((q, store));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The log was rewritten without the damage: the next start finds nothing wrong.
    let again = EmbeddedStore::open(dir.path()).unwrap();
    assert!(again.recovery().is_clean(), "{:?}", again.recovery());
    let q = again.queue(QueueSpec::new("q")).await.unwrap();
    assert_eq!(drain(&*q).await, ["after"]);
}

#[tokio::test]
async fn records_written_twice_are_each_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    logged(dir.path(), &["q"], &["aa", "bb"]).await;
    let once = std::fs::read(log_of(dir.path())).unwrap();
    std::fs::write(log_of(dir.path()), [once.clone(), once].concat()).unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery().duplicate_messages, 2);
    let q = store.queue(QueueSpec::new("q")).await.unwrap();
    assert_eq!(drain(&*q).await, ["q:aa", "q:bb"]);
}

/// What two processes appending to one directory left (they number queues and messages
/// alike): recovery keeps the first of each, reports the rest, and never panics.
#[tokio::test]
async fn two_processes_logs_interleaved_are_recovered_without_a_panic() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    logged(a.path(), &["jobs", "completions"], &["x", "y"]).await;
    logged(b.path(), &["completions", "jobs"], &["y", "z"]).await;
    let (la, lb) = (
        std::fs::read(log_of(a.path())).unwrap(),
        std::fs::read(log_of(b.path())).unwrap(),
    );
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(log_of(shared.path()), [la, lb].concat()).unwrap();
    let store = EmbeddedStore::open(shared.path()).unwrap();
    let r = store.recovery().clone();
    assert_eq!(r.conflicting_queue_names, 2, "{r:?}");
    assert_eq!(r.duplicate_messages, 4, "{r:?}");
    assert!(store.health().is_ok());
    let jobs = store.queue(QueueSpec::new("jobs")).await.unwrap();
    let completions = store.queue(QueueSpec::new("completions")).await.unwrap();
    assert_eq!(drain(&*jobs).await, ["jobs:x", "jobs:y"]);
    assert_eq!(
        drain(&*completions).await,
        ["completions:x", "completions:y"]
    );
    jobs.send(OutgoingMessage::new("new")).await.unwrap();
    assert_eq!(drain(&*jobs).await, ["new"]);
}

#[tokio::test]
async fn an_unknown_record_type_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    logged(dir.path(), &["q"], &["aa"]).await;
    let payload = [0xEEu8, 7, 7, 7];
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    let mut bytes = frame;
    bytes.extend(std::fs::read(log_of(dir.path())).unwrap());
    std::fs::write(log_of(dir.path()), &bytes).unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery().log.unreadable_records, 1);
    assert!(store.recovery().log.kept_copy.is_some());
    let q = store.queue(QueueSpec::new("q")).await.unwrap();
    assert_eq!(drain(&*q).await, ["q:aa"]);
}

/// `kill -9` of a process that appends, deletes and compacts, at 50 random moments, each
/// restart on the log the last one left: every start recovers without damage in the
/// middle, no message is there twice, and every acknowledged message whose delete had not
/// begun is there (a delete is not synced, so a deleted message may come back: at least
/// once).
#[test]
fn kill_9_during_appends_and_compactions_fifty_times_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let producer = producer();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut acked = std::collections::BTreeSet::new();
    // Messages whose delete had begun: gone or back, either is right.
    let mut deleted = std::collections::BTreeSet::new();
    // A different moment each round, reproducible from the round number.
    let mut moment = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..50 {
        let mut child = std::process::Command::new(&producer)
            .arg(dir.path())
            .arg("churn")
            // Numbers never repeat across rounds: a number seen twice is one message twice.
            .arg((round * 1_000_000).to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        moment ^= moment << 13;
        moment ^= moment >> 7;
        moment ^= moment << 17;
        std::thread::sleep(Duration::from_millis(40 + moment % 160));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let Some((kind, n)) = line.split_once(' ') else {
                continue;
            };
            let Ok(n) = n.trim().parse::<u64>() else {
                continue;
            };
            match kind {
                "s" => acked.insert(n),
                "d" => deleted.insert(n),
                _ => false,
            };
        }
        rt.block_on(async {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let r = store.recovery();
            assert_eq!(
                (r.log.damaged_bytes, r.duplicate_messages, r.orphan_records),
                (0, 0, 0),
                "round {round}: {r:?}"
            );
            assert!(store.health().is_ok());
            let q = store.queue(QueueSpec::new("durable")).await.unwrap();
            let mut present = std::collections::BTreeMap::<u64, usize>::new();
            let mut receipts = Vec::new();
            loop {
                let got = receive(&*q, 10, 0, Some(60)).await;
                if got.is_empty() {
                    break;
                }
                for m in got {
                    let n: u64 = String::from_utf8_lossy(&m.body).trim().parse().unwrap();
                    *present.entry(n).or_default() += 1;
                    receipts.push(m.receipt);
                }
            }
            for (n, count) in &present {
                assert_eq!(
                    *count, 1,
                    "round {round}: message {n} is there {count} times"
                );
            }
            for n in acked.difference(&deleted) {
                assert!(
                    present.contains_key(n),
                    "round {round}: acknowledged message {n} was lost"
                );
            }
            // Hand everything back for the next round (these changes need not be durable).
            for receipt in receipts {
                q.change_visibility(&receipt, Duration::ZERO).await.unwrap();
            }
        });
    }
    assert!(
        acked.len() > 200,
        "too little happened to judge: {} messages acknowledged",
        acked.len()
    );
}
