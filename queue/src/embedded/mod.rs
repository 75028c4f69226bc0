//! The embedded, durable queue backend: all queues of a host in one directory, one
//! append-only log with group commit, state rebuilt from the log on start, compaction
//! when most of the log is dead.

mod log;
mod record;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use crossbeam_channel::Sender;
use tokio::sync::{Notify, oneshot};

pub use self::log::LogDamage;
use self::log::{Op, WriterHealth};
use self::record::Record;
use self::state::{Delivery, QueueState, new_sent};
use super::{
    Depth, Message, OutgoingMessage, Queue, QueueError, QueueSpec, Receipt, ReceiveRequest,
    validate_receive,
};
use crate::Durability;

#[derive(Debug, Clone, Copy)]
pub struct EmbeddedOptions {
    /// Compact once the log is larger than this and at least three quarters dead.
    pub compact_min_bytes: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            compact_min_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Resolves once appended records are durable; `None` when nobody waits for that.
type DurableAck = Option<oneshot::Receiver<Result<(), String>>>;

struct Shared {
    queues: HashMap<String, QueueState>,
    /// Queue index -> name, for records.
    names: HashMap<u32, String>,
    next_seq: u64,
    log_bytes: u64,
    writer: Sender<Op>,
    options: EmbeddedOptions,
}

impl Shared {
    /// The queue `name` (created by `EmbeddedStore::queue` before any handle on it).
    fn queue(&mut self, name: &str) -> Result<&mut QueueState, QueueError> {
        self.queues
            .get_mut(name)
            .ok_or_else(|| QueueError::Unavailable(format!("no queue `{name}` in this store")))
    }

    /// The queue a record refers to by index.
    fn by_index(&mut self, index: u32) -> Option<&mut QueueState> {
        let name = self.names.get(&index)?;
        self.queues.get_mut(name)
    }

    /// Appends records to the log; the returned receiver resolves once they are durable
    /// (only when `sync` is asked for).
    fn append(
        &mut self,
        records: &[Record],
        sync: bool,
    ) -> Option<oneshot::Receiver<Result<(), String>>> {
        if records.is_empty() {
            return None;
        }
        let mut bytes = Vec::new();
        for r in records {
            r.encode_into(&mut bytes);
        }
        self.log_bytes += bytes.len() as u64;
        let (ack, rx) = if sync {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        // The writer thread lives as long as the store; a send can only fail at exit.
        let _ = self.writer.send(Op::Append { bytes, ack });
        rx
    }

    fn maybe_compact(&mut self) {
        let live: u64 = self.queues.values().map(|q| q.live_bytes).sum();
        if self.log_bytes < self.options.compact_min_bytes || live * 4 > self.log_bytes {
            return;
        }
        let now = SystemTime::now();
        let mut records = vec![Record::NextSeq(self.next_seq)];
        for q in self.queues.values() {
            q.snapshot(&mut records, now);
        }
        let mut snapshot = Vec::new();
        for r in &records {
            r.encode_into(&mut snapshot);
        }
        tracing::info!(
            before = self.log_bytes,
            after = snapshot.len(),
            "compacting the queue log"
        );
        self.log_bytes = snapshot.len() as u64;
        let _ = self.writer.send(Op::Compact {
            snapshot,
            ack: None,
        });
    }
}

/// What opening the store found in its log: the log's own damage, and records that did
/// not fit the state rebuilt so far (all zero for a log one process wrote).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub log: LogDamage,
    /// A message id sent a second time: the later record is ignored.
    pub duplicate_messages: u64,
    /// A queue index named twice with different names: the later name is ignored.
    pub conflicting_queue_names: u64,
    /// Records naming a queue index the log never named: ignored.
    pub orphan_records: u64,
}

impl Recovery {
    pub fn is_clean(&self) -> bool {
        *self == Self::default()
    }
}

/// A directory of durable queues. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Mutex<Shared>>,
    notify: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    dir: PathBuf,
    writer: WriterHealth,
    recovery: Arc<Recovery>,
}

fn damaged_state() -> QueueError {
    QueueError::Unavailable(
        "the embedded queue's state is damaged (an earlier operation failed inside it); restart the host".into(),
    )
}

async fn durable(ack: DurableAck) -> Result<(), QueueError> {
    match ack {
        None => Ok(()),
        Some(rx) => match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(QueueError::Unavailable(format!(
                "queue log write failed: {e}"
            ))),
            Err(_) => Err(QueueError::Unavailable("queue log writer stopped".into())),
        },
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, replaying its log.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        Self::open_with(dir, EmbeddedOptions::default())
    }

    pub fn open_with(dir: &Path, options: EmbeddedOptions) -> std::io::Result<Self> {
        let (records, file, log_bytes, damage) = log::recover(dir)?;
        let health = WriterHealth::default();
        let writer = log::start_writer(dir.to_path_buf(), file, log_bytes, health.clone())?;
        let mut shared = Shared {
            queues: HashMap::new(),
            names: HashMap::new(),
            next_seq: 1,
            log_bytes,
            writer,
            options,
        };
        let mut recovery = Recovery {
            log: damage,
            ..Recovery::default()
        };
        let now = Instant::now();
        for record in records {
            replay(&mut shared, record, now, &mut recovery);
        }
        if !recovery.is_clean() {
            tracing::error!(
                dir = %dir.display(),
                duplicate_messages = recovery.duplicate_messages,
                conflicting_queue_names = recovery.conflicting_queue_names,
                orphan_records = recovery.orphan_records,
                "the queue log held records that did not fit (was the directory shared?); ignored them"
            );
        }
        Ok(Self {
            shared: Arc::new(Mutex::new(shared)),
            notify: Arc::new(Mutex::new(HashMap::new())),
            dir: dir.to_path_buf(),
            writer: health,
            recovery: Arc::new(recovery),
        })
    }

    /// What opening the store found wrong with its log, and ignored.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Whether the store can take writes: `Err` with the reason while its log cannot be
    /// written (disk full, I/O error), once its writer has stopped, or once its state is
    /// damaged.
    pub fn health(&self) -> Result<(), String> {
        if self.shared.is_poisoned() {
            return Err(damaged_state().to_string());
        }
        self.writer.get()
    }

    /// The store will never take writes again (its writer is gone, or its state damaged):
    /// only a restart helps.
    pub fn stopped(&self) -> bool {
        self.shared.is_poisoned() || self.writer.stopped()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes in the log now (shrinks after a compaction).
    pub fn log_bytes(&self) -> u64 {
        self.shared.lock().map_or(0, |shared| shared.log_bytes)
    }

    /// The queue described by `spec`, created if new (with its dead-letter queue when
    /// `max_receives` is set). Settings come from `spec`, not from the log.
    pub async fn queue(&self, spec: QueueSpec) -> Result<Arc<dyn Queue>, QueueError> {
        if spec.max_receives.is_some() {
            self.ensure(QueueSpec::new(spec.dead_letter_name()), false)
                .await?;
        }
        self.ensure(spec.clone(), true).await?;
        Ok(Arc::new(EmbeddedQueue {
            store: self.clone(),
            name: spec.name.clone(),
            notify: self.notifier(&spec.name),
            spec,
        }))
    }

    async fn ensure(&self, spec: QueueSpec, overwrite: bool) -> Result<(), QueueError> {
        let ack = {
            let mut shared = self.shared.lock().map_err(|_| damaged_state())?;
            if let Some(q) = shared.queues.get_mut(&spec.name) {
                if overwrite {
                    q.spec = spec;
                }
                None
            } else {
                let index = shared.names.keys().max().map_or(0, |m| m + 1);
                shared.names.insert(index, spec.name.clone());
                let record = Record::Queue {
                    queue: index,
                    name: spec.name.clone(),
                };
                shared
                    .queues
                    .insert(spec.name.clone(), QueueState::new(index, spec));
                shared.append(&[record], true)
            }
        };
        durable(ack).await
    }

    fn notifier(&self, name: &str) -> Arc<Notify> {
        // The map only hands out notifiers: a panic elsewhere cannot leave it half-changed.
        self.notify
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }
}

/// Applies one record read from the log to the state being rebuilt; what does not fit is
/// counted in `recovery` and ignored, never trusted.
fn replay(shared: &mut Shared, record: Record, now: Instant, recovery: &mut Recovery) {
    let orphan = |recovery: &mut Recovery| recovery.orphan_records += 1;
    match record {
        Record::Queue { queue, name } => {
            if let Some(known) = shared.names.get(&queue) {
                if *known != name {
                    recovery.conflicting_queue_names += 1;
                }
                return;
            }
            shared.names.insert(queue, name.clone());
            shared
                .queues
                .entry(name.clone())
                .or_insert_with(|| QueueState::new(queue, QueueSpec::new(name)));
        }
        Record::Sent(sent) => {
            shared.next_seq = shared.next_seq.max(sent.seq.saturating_add(1));
            match shared.by_index(sent.queue) {
                Some(q) if q.contains(sent.seq) => recovery.duplicate_messages += 1,
                Some(q) => q.insert(sent, now, true),
                None => orphan(recovery),
            }
        }
        Record::Received { queue, seq, count } => match shared.by_index(queue) {
            Some(q) => q.replay_received(seq, count),
            None => orphan(recovery),
        },
        Record::Deleted { queue, seq } => match shared.by_index(queue) {
            Some(q) => q.replay_deleted(seq),
            None => orphan(recovery),
        },
        Record::NextSeq(n) => shared.next_seq = shared.next_seq.max(n),
        Record::Dedup {
            queue,
            id,
            seq,
            at_ms,
        } => match shared.by_index(queue) {
            Some(q) => q.remember_dedup(id, seq, UNIX_EPOCH + Duration::from_millis(at_ms)),
            None => orphan(recovery),
        },
    }
}

struct EmbeddedQueue {
    store: EmbeddedStore,
    name: String,
    spec: QueueSpec,
    notify: Arc<Notify>,
}

impl EmbeddedQueue {
    /// Runs `f` on the store's state under its lock; a state left damaged by a panic is
    /// refused (every later call fails clearly, and `health` says so) rather than used.
    fn with_state<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> Result<R, QueueError> {
        let mut shared = self.store.shared.lock().map_err(|_| damaged_state())?;
        Ok(f(&mut shared))
    }

    fn try_receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<(Vec<Message>, DurableAck, Option<Instant>), QueueError> {
        let now = Instant::now();
        let wall = SystemTime::now();
        let (messages, ack, next, dead) = self.with_state(|shared| {
            let q = shared.queue(&self.name)?;
            let mut records = Vec::new();
            let deliveries = q.receive(max, visibility, now, wall, &mut records);
            let next = q.next_timer();
            let sync = q.spec.max_receives.is_some();
            let dlq_name = q.spec.dead_letter_name();
            let mut messages = Vec::new();
            let mut dead = false;
            let mut any_synced = false;
            for d in deliveries {
                match d {
                    Delivery::Deliver(m, synced) => {
                        any_synced |= synced;
                        messages.push(m);
                    }
                    Delivery::DeadLetter(mut sent) => {
                        // Re-sent to the dead-letter queue with its history, as SQS does.
                        let seq = shared.next_seq;
                        shared.next_seq += 1;
                        let dlq = shared.queue(&dlq_name)?;
                        sent.queue = dlq.index;
                        sent.seq = seq;
                        sent.delay_ms = 0;
                        sent.dedup_id = None;
                        records.push(Record::Sent(sent.clone()));
                        dlq.insert(sent, now, false);
                        dead = true;
                    }
                }
            }
            // Receive counts must be durable where they decide dead-lettering: a message that
            // crashes its worker's whole host must still reach the DLQ. A message that was
            // itself only buffered would not survive that crash anyway.
            let ack = shared.append(&records, (sync && any_synced) || dead);
            Ok::<_, QueueError>((messages, ack, next, dead.then_some(dlq_name)))
        })??;
        if let Some(dlq) = dead {
            self.store.notifier(&dlq).notify_waiters();
        }
        Ok((messages, ack, next))
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_message_bytes(&self) -> usize {
        self.spec.max_message_bytes
    }

    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        if message.body.len() > self.spec.max_message_bytes {
            return Err(QueueError::TooLarge {
                size: message.body.len(),
                limit: self.spec.max_message_bytes,
            });
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let (id, ack) = self.with_state(|shared| {
            let seq = shared.next_seq;
            let q = shared.queue(&self.name)?;
            if let Some(existing) = message
                .dedup_id
                .as_deref()
                .and_then(|d| q.deduplicated(d, wall))
            {
                return Ok((existing, None));
            }
            let durability = message.durability;
            let sent = new_sent(q.index, seq, message, wall);
            let record = Record::Sent(sent.clone());
            q.insert(sent, now, false);
            shared.next_seq += 1;
            let ack = shared.append(&[record], durability == Durability::Synced);
            Ok::<_, QueueError>((seq, ack))
        })??;
        self.notify.notify_one();
        durable(ack).await?;
        Ok(id.to_string())
    }

    async fn receive(&self, request: ReceiveRequest) -> Result<Vec<Message>, QueueError> {
        validate_receive(&request)?;
        let visibility = request.visibility.unwrap_or(self.spec.visibility_timeout);
        let deadline = Instant::now() + request.wait;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (messages, ack, next_timer) = self.try_receive(request.max_messages, visibility)?;
            if !messages.is_empty() || Instant::now() >= deadline {
                durable(ack).await?;
                return Ok(messages);
            }
            durable(ack).await?;
            let wake = next_timer.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        let now = Instant::now();
        self.with_state(|shared| {
            let record = shared.queue(&self.name)?.delete(receipt, now)?;
            // Deletes need not wait for the disk: losing one only means a redelivery.
            shared.append(&[record], false);
            shared.maybe_compact();
            Ok::<_, QueueError>(())
        })??;
        // The delete may have freed a group whose next message a receive is waiting for.
        self.notify.notify_waiters();
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        if timeout > super::MAX_VISIBILITY {
            return Err(QueueError::Invalid(format!(
                "visibility must be at most {:?}",
                super::MAX_VISIBILITY
            )));
        }
        let now = Instant::now();
        self.with_state(|shared| {
            shared
                .queue(&self.name)?
                .change_visibility(receipt, timeout, now)
        })??;
        if timeout.is_zero() {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let now = Instant::now();
        self.with_state(|shared| Ok(shared.queue(&self.name)?.depth(now)))?
    }
}
