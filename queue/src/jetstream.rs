//! NATS JetStream backend: the self-hosted fleet's queue, replicated by Raft across a
//! JetStream cluster, so a node's death fails over without an operator.
//!
//! One stream per queue (`IMGFLEET_<name>`, work-queue retention: a message is gone once
//! acknowledged) and one durable pull consumer shared by every host. How the port's
//! semantics map onto it:
//! * visibility timeout = the consumer's ack wait; a per-receive visibility and
//!   `change_visibility` are a NAK with that delay (zero: at once);
//! * `receive_count` = the delivery count, less the deliveries this backend handed back
//!   unseen because their group was busy (one marker message each in a side stream, only
//!   when it happens);
//! * dead-lettering: on the delivery past `max_receives` the message is published to the
//!   `<name>-dlq` stream and acknowledged, never given to the caller (SQS's behaviour);
//! * groups: each group has its own subject; a message is handed out only while it is the
//!   first message left on its subject, so nothing of a group is delivered while an
//!   earlier one is in flight, and a group's order is send order;
//! * de-duplication: `Nats-Msg-Id` with a five-minute window. Every message carries one
//!   (its dedup id or a fresh one), which makes retrying a publish whose answer was lost
//!   safe — what lets sends ride out a leader election.
//!
//! Per-message delays are refused, as on SQS FIFO queues.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{
    Attributes, DEDUP_WINDOW, Depth, Message, OutgoingMessage, Queue, QueueError, QueueSpec,
    Receipt, ReceiveRequest, validate_receive, validate_send,
};

/// The consumer every host pulls from.
pub(crate) const CONSUMER: &str = "workers";
const GROUP_HEADER: &str = "Imgfleet-Group";
const ATTRIBUTE_PREFIX: &str = "Imgfleet-A-";
/// How long a message held back by a busy group waits before it is offered again.
const BUSY_GROUP_RETRY: Duration = Duration::from_millis(200);
/// How long a delivery handed back without being counted as held back waits.
const UNCOUNTED_PAUSE: Duration = Duration::from_secs(2);
/// A single call (publish, ack, lookup) that has not answered within this long counts as
/// unavailable; a publish is retried within it, so a leader election in the cluster (a
/// few seconds) costs latency, not errors.
pub(crate) const CALL_BUDGET: Duration = Duration::from_secs(8);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a delivery's check waits on its stream's leader before it asks a replica: a
/// healthy leader answers in milliseconds.
const LEADER_PATIENCE: Duration = Duration::from_millis(500);
/// A quiet connection's ping: a server that hangs is found out in three of these (0.75 s),
/// and a host connected to it has no connection until then. Any traffic from the server
/// counts as an answer, so a busy server is never taken for a hung one.
const PING_INTERVAL: Duration = Duration::from_millis(250);

/// Connection settings for a fleet's JetStream cluster.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Server URLs, comma-separated; the client fails over between them.
    pub urls: String,
    /// Replicas of every stream (3 in a cluster of three; 1 on a single server).
    pub replicas: usize,
}

/// A connection shared by every queue (and the staging object store) of a host.
#[derive(Clone)]
pub struct JetStream {
    pub client: async_nats::Client,
    pub context: jetstream::Context,
    pub replicas: usize,
}

impl JetStream {
    pub async fn connect(config: &JetStreamConfig) -> Result<Self, QueueError> {
        let urls: Vec<async_nats::ServerAddr> = config
            .urls
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| QueueError::Invalid(format!("NATS URL: {e}")))?;
        // Which server a host talks to decides what a hung node stalls, so every change
        // of server is logged with the server's name.
        let connected: Arc<OnceLock<async_nats::Client>> = Arc::default();
        let seen = connected.clone();
        let chooser = Arc::new(crate::server_choice::Chooser::new(
            std::process::id() as usize
        ));
        let client = async_nats::ConnectOptions::new()
            .name("imgfleet")
            .event_callback(move |event| {
                let server = seen.get().map(|c| c.server_info().server_name);
                async move { log_event(event, server) }
            })
            // Not straight back to a server that hangs (see server_choice).
            .reconnect_to_server_callback(move |pool, _| {
                let next = chooser
                    .pick(&pool)
                    .map(|addr| async_nats::ReconnectToServer { addr, delay: None });
                std::future::ready(next)
            })
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(ATTEMPT_TIMEOUT))
            // A server that hangs (stopped, not dead) keeps its connections open: pinging a
            // quiet connection finds it out in three intervals (the client gives up on a
            // server after two unanswered pings), and the client moves to another.
            .ping_interval(PING_INTERVAL)
            .connect(urls)
            .await
            .map_err(unavailable)?;
        let server = client.server_info();
        let _ = connected.set(client.clone());
        tracing::info!(server = %server.server_name, "connected to NATS");
        if older_than_supported(&server.version) {
            tracing::warn!(
                server = %server.server_name,
                version = %server.version,
                "nats-server older than 2.10: 2.9 was seen losing an acknowledged write when a \
                 partitioned stream leader came back (see README, Run a fleet)"
            );
        }
        let mut context = jetstream::new(client.clone());
        context.set_timeout(ATTEMPT_TIMEOUT);
        Ok(Self {
            client,
            context,
            replicas: config.replicas.max(1),
        })
    }
}

/// Logs a change of the connection's state. `server` is the one connected to when the
/// event was handled: after a reconnect, the new one.
fn log_event(event: async_nats::Event, server: Option<String>) {
    let server = server.unwrap_or_default();
    match event {
        async_nats::Event::Connected => tracing::info!(%server, "connected to NATS"),
        async_nats::Event::Disconnected => {
            tracing::warn!(%server, "disconnected from NATS; reconnecting")
        }
        async_nats::Event::LameDuckMode => {
            tracing::info!(%server, "NATS server entering lame duck mode")
        }
        // A reconnect attempt that fails (the server is down) says so once per attempt.
        async_nats::Event::ClientError(e) => {
            tracing::debug!(%server, error = %e, "NATS connection")
        }
        other => tracing::warn!(%server, event = %other, "NATS connection"),
    }
}

/// Whether a server's version ("2.9.10", "2.10.27-RC.1") is older than 2.10, the oldest the
/// fleet is tested with. An unreadable version is not judged.
fn older_than_supported(version: &str) -> bool {
    let mut parts = version.split(['.', '-']).map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) < (2, 10),
        _ => false,
    }
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

/// A publish the server refused: full when the stream is at its byte or message limit or
/// the servers are out of storage (retrying at once cannot help), unavailable otherwise.
fn refused(e: impl std::fmt::Display) -> QueueError {
    let why = e.to_string();
    if is_full(&why) {
        QueueError::Full(why)
    } else {
        QueueError::Unavailable(why)
    }
}

/// The server's words for a stream that cannot take more: its own limits ("maximum bytes
/// exceeded", "maximum messages exceeded") or the server's storage ("insufficient
/// resources", "insufficient storage resources available").
pub fn is_full(why: &str) -> bool {
    let why = why.to_ascii_lowercase();
    [
        "maximum bytes exceeded",
        "maximum messages exceeded",
        "insufficient",
    ]
    .iter()
    .any(|w| why.contains(w))
}

/// The stream counting the hand-backs of `queue`'s deliveries (a subject per sequence).
pub fn held_back_stream_name(queue: &str) -> String {
    format!("IMGFLEET_held_{}", &stream_name(queue)["IMGFLEET_".len()..])
}

/// Stream names allow neither dots nor wildcards; queue names are short words already.
pub fn stream_name(queue: &str) -> String {
    let safe: String = queue
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("IMGFLEET_{safe}")
}

/// The largest body `spec`'s queue takes on this connection's servers: headers and the
/// group subject ride along with the body.
fn max_message_bytes(js: &JetStream, spec: &QueueSpec) -> usize {
    let max_payload = match js.client.server_info().max_payload {
        0 => 1024 * 1024,
        n => n,
    };
    spec.max_message_bytes.min(max_payload).saturating_sub(4096)
}

/// The subject and headers `message` is published to `stream` with.
fn publication(stream: &str, message: &OutgoingMessage) -> (String, HeaderMap) {
    let mut headers = HeaderMap::new();
    let dedup = message
        .dedup_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    headers.insert("Nats-Msg-Id", dedup.as_str());
    if let Some(g) = &message.group {
        headers.insert(GROUP_HEADER, g.as_str());
    }
    for (k, v) in &message.attributes {
        headers.insert(format!("{ATTRIBUTE_PREFIX}{k}").as_str(), v.as_str());
    }
    (subject(stream, message.group.as_deref()), headers)
}

/// Sends `message` to the queue of `stream` (its group and attributes as headers), retried
/// within `budget`; the message's id is its stream sequence.
async fn send_to(
    js: &JetStream,
    stream: &str,
    max_message_bytes: usize,
    budget: Duration,
    message: OutgoingMessage,
) -> Result<String, QueueError> {
    validate_send(&message, max_message_bytes, "the JetStream backend")?;
    let (subject, headers) = publication(stream, &message);
    let seq = publish_within(js, budget, subject, headers, message.body).await?;
    Ok(seq.to_string())
}

/// Publishes and waits for the stream's acknowledgement (its sequence), retried within
/// `budget`.
async fn publish_within(
    js: &JetStream,
    budget: Duration,
    subject: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<u64, QueueError> {
    retry_within(budget, || async {
        let ack = js
            .context
            .publish_with_headers(subject.clone(), headers.clone(), body.clone())
            .await
            .map_err(unavailable)?;
        let ack = ack.await.map_err(refused)?;
        Ok(ack.sequence)
    })
    .await
}

/// Deletes message `id` (a stream sequence) of `stream` unless it is gone already.
async fn withdraw_from<I>(
    stream: &stream::Stream<I>,
    queue: &str,
    id: &str,
) -> Result<(), QueueError> {
    let seq: u64 = id
        .parse()
        .map_err(|_| QueueError::Invalid(format!("`{id}` is not a message id of {queue}")))?;
    match tokio::time::timeout(ATTEMPT_TIMEOUT, stream.delete_message(seq)).await {
        Ok(Ok(_)) => Ok(()),
        // Taken and deleted already (its run finished first).
        Ok(Err(e))
            if matches!(e.kind(), stream::DeleteMessageErrorKind::JetStream(ref js)
                if js.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND
                    || js.error_code() == jetstream::ErrorCode::STREAM_MESSAGE_DELETE_FAILED) =>
        {
            Ok(())
        }
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(unavailable("no answer to a withdrawal")),
    }
}

/// Each group gets a subject token of its own; hex keeps any group name a valid token.
fn subject(stream: &str, group: Option<&str>) -> String {
    match group {
        Some(g) => {
            let hex: String = g.bytes().map(|b| format!("{b:02x}")).collect();
            format!("{stream}.g{hex}")
        }
        None => format!("{stream}.none"),
    }
}

pub struct JetStreamQueue {
    js: JetStream,
    name: String,
    stream: stream::Stream,
    consumer: consumer::PullConsumer,
    /// One message per delivery handed back because its group was busy, on a subject per
    /// stream sequence.
    held_back: stream::Stream,
    max_receives: Option<u32>,
    /// The consumer's ack wait: a receive asking for this visibility needs no NAK.
    ack_wait: Duration,
    dead_letter: Option<Box<JetStreamQueue>>,
    max_message_bytes: usize,
    publish_budget: Duration,
}

impl JetStreamQueue {
    /// Creates (or finds and updates) the stream, consumer and dead-letter stream for `spec`.
    pub async fn open(js: &JetStream, spec: &QueueSpec) -> Result<Self, QueueError> {
        let dead_letter = match spec.max_receives {
            Some(_) => {
                let mut dlq = QueueSpec::new(spec.dead_letter_name());
                dlq.retention = Duration::from_secs(14 * 24 * 3600);
                dlq.max_message_bytes = spec.max_message_bytes;
                Some(Box::new(Box::pin(Self::open(js, &dlq)).await?))
            }
            None => None,
        };
        let name = stream_name(&spec.name);
        let max_message_bytes = max_message_bytes(js, spec);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: js.replicas,
            max_age: spec.retention,
            max_message_size: (max_message_bytes + 4096) as i32,
            duplicate_window: DEDUP_WINDOW,
            allow_direct: true,
            max_bytes: spec.max_bytes.map_or(-1, |b| b.min(i64::MAX as u64) as i64),
            // At the limit the server must refuse the new message: the default (discard the
            // oldest) would silently drop jobs already accepted.
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        let stream = retry(|| async {
            match js.context.get_stream(&name).await {
                Ok(_) => drop(
                    js.context
                        .update_stream(&config)
                        .await
                        .map_err(unavailable)?,
                ),
                Err(_) => drop(
                    js.context
                        .create_stream(config.clone())
                        .await
                        .map_err(unavailable)?,
                ),
            };
            js.context.get_stream(&name).await.map_err(unavailable)
        })
        .await?;
        let consumer_config = consumer::pull::Config {
            durable_name: Some(CONSUMER.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: spec.visibility_timeout,
            max_deliver: -1,
            max_ack_pending: 10_000,
            max_waiting: 4096,
            ..Default::default()
        };
        let mut consumer: consumer::PullConsumer = retry(|| async {
            stream
                .get_or_create_consumer(CONSUMER, consumer_config.clone())
                .await
                .map_err(unavailable)
        })
        .await?;
        let ack_wait = consumer.info().await.map_err(unavailable)?.config.ack_wait;
        if ack_wait != spec.visibility_timeout {
            // JetStream 2.9 cannot change a consumer in place, and deleting it would forget
            // which messages are in flight.
            tracing::warn!(queue = %spec.name, ?ack_wait, wanted = ?spec.visibility_timeout,
                "the queue's consumer keeps the visibility timeout it was created with");
        }
        let held_name = held_back_stream_name(&spec.name);
        let held_config = stream::Config {
            name: held_name.clone(),
            subjects: vec![format!("{held_name}.>")],
            storage: stream::StorageType::File,
            num_replicas: js.replicas,
            max_age: spec.retention,
            ..Default::default()
        };
        let held_back = retry(|| async {
            js.context
                .get_or_create_stream(held_config.clone())
                .await
                .map_err(unavailable)
        })
        .await?;
        Ok(Self {
            js: js.clone(),
            name: spec.name.clone(),
            stream,
            consumer,
            held_back,
            max_receives: spec.max_receives,
            ack_wait,
            dead_letter,
            max_message_bytes,
            publish_budget: CALL_BUDGET,
        })
    }

    /// How long a publish is retried while the stream's leader is away (none: it fails at
    /// once, for a caller that has somewhere else to send).
    pub fn with_publish_budget(mut self, budget: Duration) -> Self {
        self.publish_budget = budget;
        self
    }

    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<u64, QueueError> {
        publish_within(&self.js, self.publish_budget, subject, headers, body).await
    }

    fn held_back_subject(&self, seq: u64) -> String {
        format!("{}.{seq}", self.held_back.cached_info().config.name)
    }

    /// Deliveries of `seq` that were handed back unseen.
    async fn held_back_count(&self, seq: u64) -> Result<u32, QueueError> {
        let subject = self.held_back_subject(seq);
        let mut counts = self
            .held_back
            .info_with_subjects(&subject)
            .await
            .map_err(unavailable)?;
        let mut n = 0;
        while let Some(entry) = counts.next().await {
            let (s, count) = entry.map_err(unavailable)?;
            if s == subject {
                n = count as u32;
            }
        }
        Ok(n)
    }

    /// One attempt: a receive must not wait out an election of the counts' stream (a
    /// count that fails hands the delivery back uncounted, after a pause).
    async fn count_held_back(&self, seq: u64) -> Result<(), QueueError> {
        let subject = self.held_back_subject(seq);
        retry_within(Duration::ZERO, || async {
            let ack = self
                .js
                .context
                .publish(subject.clone(), Bytes::new())
                .await
                .map_err(unavailable)?;
            ack.await.map(drop).map_err(unavailable)
        })
        .await
    }

    /// Hands a delivery back without counting it as a receive: counted as held back first,
    /// so its redelivery cannot be seen before the count. Offered again after `pause` once
    /// counted; when even the count fails (no leader), after [`UNCOUNTED_PAUSE`], so that a
    /// failover cannot run up its receive count in a tight loop.
    async fn hand_back(
        &self,
        seq: Option<u64>,
        reply: &str,
        pause: Duration,
    ) -> Result<(), QueueError> {
        let counted = match seq {
            Some(seq) => self.count_held_back(seq).await.is_ok(),
            None => false,
        };
        let pause = if counted { pause } else { UNCOUNTED_PAUSE };
        ack(&self.js.client, reply, nak_after(pause)).await
    }

    /// Whether `seq` is the oldest message left on its group's subject.
    async fn first_of_group(&self, subject: &str, seq: u64) -> Result<bool, QueueError> {
        let leader = tokio::time::timeout(
            LEADER_PATIENCE,
            self.stream.get_first_raw_message_by_subject(subject, 1),
        )
        .await;
        let first = match leader {
            Ok(Ok(first)) => first.sequence,
            // The leader is electing, or the cluster's meta group is (the server then
            // refuses stream API requests for seconds): any replica answers a direct get.
            // A replica holds an earlier state of the leader's log, so it can only find an
            // older message still there (the delivery waits its turn), never miss one.
            _ => {
                self.stream
                    .direct_get_first_for_subject(subject)
                    .await
                    .map_err(unavailable)?
                    .sequence
            }
        };
        Ok(first >= seq)
    }

    /// Turns one delivery into a message for the caller, or hands it back (busy group) or
    /// dead-letters it; `None` unless the caller should see it.
    async fn admit(
        &self,
        delivered: jetstream::Message,
        visibility: Option<Duration>,
    ) -> Result<Option<Message>, QueueError> {
        let info = delivered.info().map_err(unavailable)?;
        let seq = info.stream_sequence;
        let deliveries = info.delivered.max(1) as u32;
        let published = info.published;
        let reply = delivered
            .reply
            .clone()
            .map(|s| s.to_string())
            .ok_or_else(|| unavailable("a JetStream delivery without a reply subject"))?;
        let headers = delivered.headers.clone().unwrap_or_default();
        let group = headers.get(GROUP_HEADER).map(|v| v.to_string());
        if group.is_some() && !self.first_of_group(delivered.subject.as_str(), seq).await? {
            self.count_held_back(seq).await?;
            ack(
                &self.js.client,
                &reply,
                jetstream::AckKind::Nak(Some(BUSY_GROUP_RETRY)),
            )
            .await?;
            return Ok(None);
        }
        let receive_count = if deliveries > 1 {
            deliveries
                .saturating_sub(self.held_back_count(seq).await?)
                .max(1)
        } else {
            1
        };
        if let (Some(max), Some(dlq)) = (self.max_receives, &self.dead_letter)
            && receive_count > max
        {
            let mut moved = headers.clone();
            moved.insert(
                "Nats-Msg-Id",
                format!("dead-{}-{seq}", self.stream_name()).as_str(),
            );
            dlq.publish(
                subject(&dlq.stream_name(), group.as_deref()),
                moved,
                delivered.payload.clone(),
            )
            .await?;
            ack(&self.js.client, &reply, jetstream::AckKind::Term).await?;
            tracing::warn!(queue = %self.name, seq, receive_count, "moved to the dead-letter queue");
            return Ok(None);
        }
        if let Some(v) = visibility.filter(|v| *v != self.ack_wait) {
            ack(&self.js.client, &reply, jetstream::AckKind::Nak(Some(v))).await?;
        }
        let attributes: Attributes = headers
            .iter()
            .filter_map(|(k, v)| {
                let name = k.to_string();
                let key = name.strip_prefix(ATTRIBUTE_PREFIX)?.to_string();
                Some((key, v.first()?.to_string()))
            })
            .collect();
        let sent_ms = (published.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
        Ok(Some(Message {
            id: seq.to_string(),
            receipt: Receipt(reply),
            body: delivered.payload.clone(),
            group,
            attributes,
            receive_count,
            sent_at: UNIX_EPOCH + Duration::from_millis(sent_ms),
        }))
    }

    fn stream_name(&self) -> String {
        self.stream.cached_info().config.name.clone()
    }
}

/// Another host's queue, for sending only (a worker's replies to its requests). Opened
/// without a word to the cluster: the servers refuse JetStream API requests for seconds
/// while their meta group elects a leader (its node died), and a host's first reply to
/// another must not wait for that. The owner created the stream and keeps its consumer.
pub struct JetStreamSender {
    js: JetStream,
    name: String,
    stream: stream::Stream<()>,
    max_message_bytes: usize,
    publish_budget: Duration,
}

impl JetStreamSender {
    /// `spec`'s queue, for sending, each publish retried within `publish_budget`.
    pub async fn open(
        js: &JetStream,
        spec: &QueueSpec,
        publish_budget: Duration,
    ) -> Result<Self, QueueError> {
        let stream = js
            .context
            .get_stream_no_info(stream_name(&spec.name))
            .await
            .map_err(|e| QueueError::Invalid(e.to_string()))?;
        Ok(Self {
            js: js.clone(),
            name: spec.name.clone(),
            stream,
            max_message_bytes: max_message_bytes(js, spec),
            publish_budget,
        })
    }

    fn only_sends(&self) -> QueueError {
        QueueError::Invalid(format!(
            "{} is another host's queue: this host only sends to it",
            self.name
        ))
    }
}

#[async_trait]
impl Queue for JetStreamSender {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        let stream = stream_name(&self.name);
        let (max, budget) = (self.max_message_bytes, self.publish_budget);
        send_to(&self.js, &stream, max, budget, message).await
    }

    async fn withdraw(&self, id: &str) -> Result<(), QueueError> {
        withdraw_from(&self.stream, &self.name, id).await
    }

    async fn receive(&self, _: ReceiveRequest) -> Result<Vec<Message>, QueueError> {
        Err(self.only_sends())
    }

    async fn delete(&self, _: &Receipt) -> Result<(), QueueError> {
        Err(self.only_sends())
    }

    async fn change_visibility(&self, _: &Receipt, _: Duration) -> Result<(), QueueError> {
        Err(self.only_sends())
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        Err(self.only_sends())
    }
}

/// The messages of one pull request, until it ends (fulfilled, expired or cut short) or
/// `within` has passed: a pull whose request or final status was lost (a node paused or
/// cut off mid-pull) would otherwise wait forever.
async fn drain<E: std::fmt::Display>(
    batch: Result<consumer::pull::Batch, E>,
    within: Duration,
) -> Result<Vec<jetstream::Message>, QueueError> {
    let mut batch = batch.map_err(unavailable)?;
    let end = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout_at(end, batch.next()).await {
            Ok(Some(Ok(m))) => out.push(m),
            // Status 503: nobody took the pull, the consumer has no leader (an election is
            // under way). Every pull would end the same way at once, so the caller must
            // not spin on it.
            Ok(Some(Err(e))) if out.is_empty() && e.to_string().contains(": 503") => {
                return Err(unavailable(format!(
                    "the queue's consumer has no leader ({e})"
                )));
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "pull ended");
                break;
            }
            Ok(None) => break,
            Err(_) if out.is_empty() => {
                return Err(unavailable("no answer to a pull from the queue's consumer"));
            }
            Err(_) => break,
        }
    }
    Ok(out)
}

/// Retries a call that failed as unavailable until [`CALL_BUDGET`] is spent.
async fn retry<T, F, Fut>(call: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    retry_within(CALL_BUDGET, call).await
}

/// Retries a call that failed as unavailable until `budget` is spent (none: one attempt).
async fn retry_within<T, F, Fut>(budget: Duration, mut call: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    let mut pause = Duration::from_millis(50);
    loop {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, call()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(QueueError::Unavailable(e)))
                if tokio::time::Instant::now() + pause < deadline =>
            {
                tracing::debug!(error = %e, "JetStream call failed; retrying");
            }
            Err(_) if tokio::time::Instant::now() + pause < deadline => {
                tracing::debug!("JetStream call timed out; retrying");
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(unavailable("no answer from JetStream")),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Sends an acknowledgement of `kind` for the delivery whose reply subject is `reply`, and
/// waits for the server to confirm it.
async fn ack(
    client: &async_nats::Client,
    reply: &str,
    kind: jetstream::AckKind,
) -> Result<(), QueueError> {
    let payload: Bytes = kind.into();
    match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(reply.to_string(), payload)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(unavailable("no confirmation of the acknowledgement")),
    }
}

/// A NAK that offers the delivery again after `pause` (zero: at once).
fn nak_after(pause: Duration) -> jetstream::AckKind {
    if pause.is_zero() {
        jetstream::AckKind::Nak(None)
    } else {
        jetstream::AckKind::Nak(Some(pause))
    }
}

/// An acknowledgement its caller needs done (a delete, a change of visibility). While a
/// consumer's leadership moves (an election, a step-down that keeps leaders apart) nobody
/// answers its acks for a moment; acks are idempotent, so it is retried within the call
/// budget rather than failed, which would leave the message to come back.
async fn settle(
    client: &async_nats::Client,
    reply: &str,
    kind: jetstream::AckKind,
) -> Result<(), QueueError> {
    retry(|| ack(client, reply, kind)).await
}

/// The delivery count and stream sequence a reply subject names, in either format of
/// ADR-15 (`<stream>.<consumer>.<delivered>.<seq>…`, or with a domain and an account hash
/// first).
fn delivery_of(reply: &str) -> Option<(u64, u64)> {
    let tokens: Vec<&str> = reply.strip_prefix("$JS.ACK.")?.split('.').collect();
    let at = if tokens.len() >= 9 { 4 } else { 2 };
    Some((
        tokens.get(at)?.parse().ok()?,
        tokens.get(at + 1)?.parse().ok()?,
    ))
}

fn receipt_is_ours(receipt: &Receipt, stream: &str) -> bool {
    receipt
        .0
        .strip_prefix("$JS.ACK.")
        .is_some_and(|rest| rest.split('.').any(|token| token == stream))
}

#[async_trait]
impl Queue for JetStreamQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        let stream = self.stream_name();
        let (max, budget) = (self.max_message_bytes, self.publish_budget);
        send_to(&self.js, &stream, max, budget, message).await
    }

    async fn withdraw(&self, id: &str) -> Result<(), QueueError> {
        withdraw_from(&self.stream, &self.name, id).await
    }

    async fn receive(&self, request: ReceiveRequest) -> Result<Vec<Message>, QueueError> {
        validate_receive(&request)?;
        let deadline = tokio::time::Instant::now() + request.wait;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wanted = request.max_messages - out.len();
            // What is there now, without waiting.
            let mut delivered = drain(
                self.consumer.fetch().max_messages(wanted).messages().await,
                ATTEMPT_TIMEOUT,
            )
            .await?;
            if delivered.is_empty() && left >= Duration::from_millis(10) {
                // Then wait for one: a pull for more would hold the first until the batch
                // filled or expired. The expiry is capped so a long poll still notices a
                // server that went away.
                let expires = left.min(Duration::from_secs(5));
                delivered = drain(
                    self.consumer
                        .batch()
                        .max_messages(1)
                        .expires(expires)
                        .messages()
                        .await,
                    expires + ATTEMPT_TIMEOUT,
                )
                .await?;
            }
            let got_any = !delivered.is_empty();
            for m in delivered {
                let reply = m.reply.as_ref().map(|r| r.to_string());
                let seq = m.info().ok().map(|i| i.stream_sequence);
                match self.admit(m, request.visibility).await {
                    Ok(Some(m)) => out.push(m),
                    Ok(None) => {}
                    Err(e) => {
                        // Handed back rather than left in flight for a whole visibility
                        // timeout, and not counted as a receive (during a failover this
                        // repeats, and would dead-letter a job nobody ever ran).
                        tracing::warn!(error = %e, queue = %self.name, "a delivery could not be checked; handed back");
                        if let Some(reply) = reply {
                            let _ = self.hand_back(seq, &reply, BUSY_GROUP_RETRY).await;
                        }
                    }
                }
            }
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(out);
            }
            if got_any {
                // Everything delivered was held back: give busy groups a moment.
                tokio::time::sleep(Duration::from_millis(20).min(left)).await;
            }
        }
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        if !receipt_is_ours(receipt, &self.stream_name()) {
            return Err(QueueError::InvalidReceipt);
        }
        settle(&self.js.client, &receipt.0, jetstream::AckKind::Ack).await?;
        if let Some((delivered, seq)) = delivery_of(&receipt.0)
            && delivered > 1
        {
            // Its hand-backs were counted for its receive count only; gone with it, they
            // would otherwise stay for the queue's whole retention.
            let held_back = self.held_back.clone();
            let subject = self.held_back_subject(seq);
            tokio::spawn(async move {
                if let Err(e) = held_back.purge().filter(subject).await {
                    tracing::debug!(error = %e, "forgetting a deleted message's hand-backs failed");
                }
            });
        }
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        if !receipt_is_ours(receipt, &self.stream_name()) {
            return Err(QueueError::InvalidReceipt);
        }
        settle(&self.js.client, &receipt.0, nak_after(timeout)).await
    }

    async fn release(&self, message: &Message) -> Result<(), QueueError> {
        if !receipt_is_ours(&message.receipt, &self.stream_name()) {
            return Err(QueueError::InvalidReceipt);
        }
        let seq = message.id.parse().ok();
        self.hand_back(seq, &message.receipt.0, Duration::ZERO)
            .await
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let info = retry(|| async {
            let mut consumer = self.consumer.clone();
            consumer.info().await.cloned().map_err(unavailable)
        })
        .await?;
        let state = retry(|| async {
            let mut stream = self.stream.clone();
            stream
                .info()
                .await
                .map(|i| i.state.clone())
                .map_err(unavailable)
        })
        .await?;
        let oldest_age = if state.messages == 0 {
            Duration::ZERO
        } else {
            let first_ms = (state.first_timestamp.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
            SystemTime::now()
                .duration_since(UNIX_EPOCH + Duration::from_millis(first_ms))
                .unwrap_or_default()
        };
        Ok(Depth {
            visible: info.num_pending as usize,
            in_flight: info.num_ack_pending,
            delayed: 0,
            oldest_age: Some(oldest_age),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_2_10_are_told_apart() {
        for old in ["2.9.10", "2.9.25", "1.4.1", "2.2.0-beta"] {
            assert!(older_than_supported(old), "{old}");
        }
        for new in ["2.10.0", "2.10.27", "2.15.2-RC.1", "3.0.0", "", "unknown"] {
            assert!(!older_than_supported(new), "{new}");
        }
    }

    #[test]
    fn reply_subjects_name_the_delivery_and_the_sequence() {
        assert_eq!(
            delivery_of("$JS.ACK.IMGFLEET_jobs.workers.3.100.7.1700000000000000000.42"),
            Some((3, 100))
        );
        assert_eq!(
            delivery_of("$JS.ACK._.szMpdrwD.IMGFLEET_jobs.workers.2.50.9.1700000000000000000.0.r"),
            Some((2, 50))
        );
        for bad in [
            "",
            "$JS.ACK.",
            "$JS.ACK.s.c.x.1.1.1.0",
            "nats.ACK.s.c.1.1.1.1.0",
        ] {
            assert_eq!(delivery_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_group_gets_a_valid_subject_token_of_its_own() {
        let a = subject("IMGFLEET_jobs", Some("acme#1"));
        let b = subject("IMGFLEET_jobs", Some("acme#2"));
        assert_ne!(a, b);
        for s in [&a, &b] {
            let token = s.rsplit('.').next().unwrap();
            assert!(token.bytes().all(|c| c.is_ascii_alphanumeric()), "{s}");
        }
        assert_eq!(
            subject("IMGFLEET_jobs", Some("a.b")).matches('.').count(),
            1
        );
        assert_eq!(stream_name("completions-01.x"), "IMGFLEET_completions-01_x");
    }
}
