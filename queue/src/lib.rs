//! The queue port: one SQS-shaped interface between the API tier and the workers (jobs out,
//! completions back, usage batches). Backends: `embedded` (durable, single machine, the
//! default), `sqs` (Amazon SQS, or anything speaking its API) and `jetstream` (NATS
//! JetStream, replicated across a self-hosted fleet).
//!
//! Semantics every backend honours (the behavioural suite in `tests/` checks them):
//! * `receive` hides a message for its visibility timeout; not deleted by then, it is
//!   delivered again with `receive_count` one higher.
//! * After `max_receives` deliveries a message moves to the dead-letter queue instead.
//! * Messages of one group are delivered in send order, and not while an earlier message of
//!   the group is in flight; different groups are served round robin.
//! * A `dedup_id` seen within the last five minutes is not enqueued twice.
//! * `receive` with a wait long-polls: it returns as soon as a message is available.

// The embedded backend is always there; the networked ones come with features (`sqs`,
// `jetstream`), so that what needs only the embedded log (a fuzz target) builds without them.
#[cfg(all(feature = "sqs", feature = "jetstream"))]
pub mod backend;
pub mod claim_check;
pub mod embedded;
pub mod health;
#[cfg(feature = "jetstream")]
pub mod jetstream;
#[cfg(feature = "jetstream")]
pub mod leaders;
pub mod partitioned;
#[cfg(feature = "jetstream")]
pub mod server_choice;
#[cfg(feature = "sqs")]
pub mod sqs;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

pub type Attributes = BTreeMap<String, String>;

/// How long a de-duplication id is remembered (SQS's window).
pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);
/// Longest long poll (SQS's maximum).
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Most messages one receive returns (SQS's maximum).
pub const MAX_BATCH: usize = 10;
/// Longest visibility timeout (SQS's maximum).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// Whether `send` returns before or after the message is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledged only once it would survive a power cut (the default).
    #[default]
    Synced,
    /// Acknowledged once queued in memory; made durable with the next group commit. For
    /// messages whose sender is waiting on the result anyway (synchronous requests): losing
    /// one in a crash loses nothing the client was told.
    Buffered,
}

#[derive(Debug, Clone, Default)]
pub struct OutgoingMessage {
    pub body: Bytes,
    pub group: Option<String>,
    pub dedup_id: Option<String>,
    pub delay: Duration,
    pub attributes: Attributes,
    pub durability: Durability,
}

impl OutgoingMessage {
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }

    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    pub fn dedup_id(mut self, id: impl Into<String>) -> Self {
        self.dedup_id = Some(id.into());
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ReceiveRequest {
    pub max_messages: usize,
    pub wait: Duration,
    /// Overrides the queue's default visibility timeout.
    pub visibility: Option<Duration>,
}

impl Default for ReceiveRequest {
    fn default() -> Self {
        Self {
            max_messages: 1,
            wait: Duration::ZERO,
            visibility: None,
        }
    }
}

/// Proof of one delivery; deleting or extending needs the newest one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(pub String);

#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub receipt: Receipt,
    pub body: Bytes,
    pub group: Option<String>,
    pub attributes: Attributes,
    /// 1 on the first delivery.
    pub receive_count: u32,
    pub sent_at: SystemTime,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Deliverable now.
    pub visible: usize,
    /// Received and neither deleted nor timed out.
    pub in_flight: usize,
    /// Waiting out their delay.
    pub delayed: usize,
    /// Age of the oldest message not yet deleted (zero when there is none), when the
    /// backend can tell: SQS keeps it in CloudWatch only, not in the queue's attributes.
    pub oldest_age: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("message of {size} bytes is over the queue's limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("the receipt is stale or unknown (the message was redelivered or deleted)")]
    InvalidReceipt,
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("no queue named `{0}`")]
    NoSuchQueue(String),
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
    /// The queue is at its byte limit or its servers out of storage: back-pressure that
    /// clears as messages are consumed, not an outage to retry through.
    #[error("the queue is full: {0}")]
    Full(String),
}

/// Static description of a queue; backends create what it describes.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub visibility_timeout: Duration,
    pub retention: Duration,
    pub max_message_bytes: usize,
    /// Move a message to `<name>-dlq` once it has been received this many times.
    pub max_receives: Option<u32>,
    /// Bytes the queue may hold (backends that can bound it: JetStream); at the limit a send
    /// is refused with [`QueueError::Full`], never by dropping a message already accepted.
    pub max_bytes: Option<u64>,
}

impl QueueSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            visibility_timeout: Duration::from_secs(30),
            retention: Duration::from_secs(4 * 24 * 3600),
            max_message_bytes: 256 * 1024,
            max_receives: None,
            max_bytes: None,
        }
    }

    pub fn dead_letter_name(&self) -> String {
        format!("{}-dlq", self.name)
    }
}

#[async_trait]
pub trait Queue: Send + Sync {
    fn name(&self) -> &str;
    fn max_message_bytes(&self) -> usize;
    /// Enqueues a message and returns its id. A send whose `dedup_id` was seen within
    /// [`DEDUP_WINDOW`] succeeds without enqueuing anything (the embedded backend returns
    /// the original's id; SQS may return a fresh one).
    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError>;
    /// Enqueues a second copy of a message sent earlier as `earlier` (the id `send`
    /// returned), where the first copy's fate is least likely to be shared: on a
    /// partitioned queue another partition. A hedge for a message that seems stuck; the
    /// receiver must tolerate both copies arriving. One queue: a plain send.
    async fn send_elsewhere(
        &self,
        message: OutgoingMessage,
        earlier: &str,
    ) -> Result<String, QueueError> {
        let _ = earlier;
        self.send(message).await
    }
    /// Enqueues a copy of the message on every partition at once, succeeding when one
    /// takes it: for a small message that must not wait on any one partition (a hedged
    /// job's completion). One queue: a plain send.
    async fn send_everywhere(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        self.send(message).await
    }
    /// Takes back a message sent as `id` (what `send` returned) that nobody needs any
    /// more, such as the other copy of a hedged job whose request has its answer: a copy
    /// not yet taken is never delivered and no longer holds up its group; one already
    /// taken runs on, and its deletion still succeeds. Best effort: a backend that cannot
    /// remove a message by its id (SQS removes by receipt; one queue is never hedged)
    /// leaves it, and its receiver tolerates it as it tolerates any copy.
    async fn withdraw(&self, id: &str) -> Result<(), QueueError> {
        let _ = id;
        Ok(())
    }
    /// Whether part of the queue failed lately (a partition's leader gone or not
    /// answering): callers waiting on a message may then hedge. One queue: never.
    fn degraded(&self) -> bool {
        false
    }
    async fn receive(&self, request: ReceiveRequest) -> Result<Vec<Message>, QueueError>;
    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError>;
    async fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<(), QueueError>;
    /// Hands a received message back at once, for any consumer to take. A backend that can
    /// tell such a delivery apart (JetStream) leaves it out of `receive_count`, so handing
    /// back never brings a message nearer the dead-letter queue; the others count it, as
    /// a visibility change to zero.
    async fn release(&self, message: &Message) -> Result<(), QueueError> {
        self.change_visibility(&message.receipt, Duration::ZERO)
            .await
    }
    async fn depth(&self) -> Result<Depth, QueueError>;
}

/// Receives for a consumer loop: a failing backend is logged and retried after a pause
/// (returning no messages), so callers only see messages.
pub async fn receive_or_pause(
    queue: &dyn Queue,
    request: ReceiveRequest,
    what: &str,
) -> Vec<Message> {
    match queue.receive(request).await {
        Ok(messages) => messages,
        Err(e) => {
            tracing::warn!(error = %e, queue = queue.name(), "receiving {what} failed; retrying");
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            Vec::new()
        }
    }
}

/// What a backend without per-message delays (`backend` names it) refuses to send, and
/// bodies over its `limit`.
#[cfg(any(feature = "sqs", feature = "jetstream"))]
pub(crate) fn validate_send(
    message: &OutgoingMessage,
    limit: usize,
    backend: &str,
) -> Result<(), QueueError> {
    if message.body.len() > limit {
        return Err(QueueError::TooLarge {
            size: message.body.len(),
            limit,
        });
    }
    if !message.delay.is_zero() {
        return Err(QueueError::Invalid(format!(
            "no per-message delay on {backend}"
        )));
    }
    Ok(())
}

pub(crate) fn validate_receive(request: &ReceiveRequest) -> Result<(), QueueError> {
    if !(1..=MAX_BATCH).contains(&request.max_messages) {
        return Err(QueueError::Invalid(format!(
            "max_messages must be 1..={MAX_BATCH}"
        )));
    }
    if request.wait > MAX_WAIT {
        return Err(QueueError::Invalid(format!(
            "wait must be at most {MAX_WAIT:?}"
        )));
    }
    if request.visibility.is_some_and(|v| v > MAX_VISIBILITY) {
        return Err(QueueError::Invalid(format!(
            "visibility must be at most {MAX_VISIBILITY:?}"
        )));
    }
    Ok(())
}
