//! One logical queue over several partitions, each a queue of its own (on JetStream, a
//! stream with its own Raft group and so its own leader).
//!
//! Why: a replicated stream takes no writes while its Raft group elects a new leader, and
//! nats-server waits 4–9 s before it does. With the partitions' leaders on different nodes,
//! the death of one node stalls only the partitions it led: sends go to another partition
//! meanwhile, and receives keep draining the others.
//!
//! How the port's semantics carry over:
//! * a group's messages all go to one partition (by a hash of the group) while it answers,
//!   so order and exclusivity per group hold as on one queue. When that partition is
//!   unavailable a send goes to the next one: the group's order across that switch is not
//!   kept, and two of its messages can be in flight at once for a while;
//! * ungrouped messages are spread round robin;
//! * a send is one short attempt per partition (a partition's own retries would hide the
//!   failover), so a publish that timed out but did arrive can be enqueued a second time on
//!   the next partition: de-duplication holds within a partition only;
//! * a partition that has not answered a send within [`SEND_HEDGE`] is joined by the next
//!   one, its own attempt still out: a node that just hung, before anything here saw it
//!   fail, costs a send a fraction of an attempt. The first partition to take the message
//!   has it; a copy another lands later is withdrawn (a withdrawal that fails leaves a
//!   copy to be delivered twice, which receivers tolerate as any redelivery). A group's
//!   order holds only while its partition answers within that bound;
//! * ids and receipts carry the partition's index (`<index>:<inner>`);
//! * a receive first takes what is ready, partition by partition from a rotating start;
//!   when nothing is, it long-polls every partition at once in short slices and returns as
//!   soon as one has messages. A slice ends when its polls have ended; a poll still out
//!   (its partition hangs) is neither waited for nor doubled by the next slices until it
//!   is stale ([`STALE_POLL`]: one sent on a connection the client has left ends only with
//!   its own timeout, while the partition answers on the new connection). What the
//!   other polls bring while the receive is under way (a slower poll of an earlier slice)
//!   it takes next; what they bring after it has returned is released: handed back to its
//!   partition for any consumer, not counted as a receive where the partition can tell.
//!   Kept for this host's next receive instead, it would stay in flight, holding up its
//!   group, until one of the host's busy consumers came back, and a host with more polls
//!   out would hoard work that hosts with idle slots are waiting for;
//! * a no-wait receive waits on a partition for [`RECEIVE_PATIENCE`], then goes on in the
//!   background while the next partition is tried, and what it brings goes the same way
//!   (cut short, it could strand messages it had taken);
//! * a partition late to answer (past those bounds) is tried last for an attempt's length;
//!   one that fails or outlasts a whole attempt, for longer;
//! * when no partition takes a send, it tries them all again for a few seconds (a host
//!   between two servers has no connection for a moment);
//! * a partition that fails is tried last by sends and left out of the first, no-wait
//!   pass of receives for a while ([`Health`]); long polls still include it, since they
//!   cost nothing while they wait. Only when every partition fails is a call an error.
//!   `depth` adds up the partitions that answer;
//! * a partition that failed lately stays suspect for longer: sends try it after the
//!   partitions that never failed, and give it a short first attempt
//!   ([`SUSPECT_ATTEMPT`]); a no-wait receive, a shorter one still ([`SUSPECT_RECEIVE`]:
//!   what it takes later goes on in the background, as above). A node that hangs on and
//!   off answers for a moment between its hangs: what it took then would wait out its
//!   next hang, and a whole attempt each time its mark runs out would be added to a
//!   request's latency (to a worker's, answering through it, and to every completion
//!   behind a receive that waits on it).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::health::Health;
use super::{Depth, Message, OutgoingMessage, Queue, QueueError, Receipt, ReceiveRequest};

/// How long one long poll of the partitions lasts before the next round.
const SLICE: Duration = Duration::from_millis(500);
/// How long past its slice a round of long polls waits for its polls to end: a healthy
/// partition's poll ends with the slice.
const PAST_SLICE: Duration = Duration::from_millis(200);
/// How long a long poll may be out before its partition is polled again beside it: past a
/// round (slice and grace) and half as long again, it is stuck, not slow.
const STALE_POLL: Duration = Duration::from_millis(1_000);
/// A round of long polls that ends sooner than this failed everywhere.
const QUICK_FAILURE: Duration = Duration::from_millis(100);
/// How long a send goes on trying the partitions while none takes it: a host whose
/// connection is moving to another server (its server hung or went away) has none for a
/// second or two, and a request had better wait that out than fail.
const SEND_GRACE: Duration = Duration::from_secs(3);
/// How long a send waits on one partition before it tries the next one as well: a
/// healthy partition answers in milliseconds, and a node that just hung (not yet known to
/// have failed) must not cost a whole attempt before another partition is tried.
const SEND_HEDGE: Duration = Duration::from_millis(250);
/// A first send on a suspect partition (one that failed lately) before the next is tried:
/// a healthy partition answers in milliseconds, and one that answers slower than this after
/// failing lately is better left for another.
const SUSPECT_ATTEMPT: Duration = Duration::from_millis(300);
/// How long a no-wait receive waits on a partition before the next is tried: a healthy
/// partition answers in milliseconds, and a receive cut short loses nothing (it goes on in
/// the background).
const RECEIVE_PATIENCE: Duration = Duration::from_millis(250);
/// The same on a suspect partition (one that failed lately).
const SUSPECT_RECEIVE: Duration = Duration::from_millis(100);
/// The round of a poll that belongs to none (a no-wait receive gone on in the background).
const NO_ROUND: u64 = u64::MAX;

type Parts = Arc<[Arc<dyn Queue>]>;

/// One send attempt on one partition: the partition, and what it answered.
type SendAttempt = std::pin::Pin<
    Box<dyn std::future::Future<Output = (usize, Result<String, QueueError>)> + Send>,
>;

/// What one pass of a send over the partitions came to.
enum Pass {
    Sent(String),
    /// No partition took the message: the last one's unavailability, and one's refusal
    /// for want of room.
    Refused {
        last: Option<String>,
        full: Option<String>,
    },
}

pub struct Partitioned {
    name: String,
    parts: Parts,
    /// One send attempt on one partition; past it the next partition is tried.
    attempt: Duration,
    next_send: AtomicUsize,
    next_receive: AtomicUsize,
    health: Arc<Health>,
}

/// What one partition's poll brought: the round of long polls it was part of, the
/// partition, and the messages.
type Polled = (u64, usize, Vec<Message>);

/// Where the polls of one receive deliver, from their own tasks.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<Polled>,
    parts: Parts,
}

impl Outbox {
    fn deliver(&self, round: u64, index: usize, messages: Vec<Message>) {
        if let Err(unsent) = self.tx.send((round, index, messages)) {
            // The receive has returned.
            release(&self.parts, unsent.0.2);
        }
    }
}

/// What the polls of one receive have brought; what is left in it when the receive
/// returns is released.
struct Inbox {
    rx: mpsc::UnboundedReceiver<Polled>,
    parts: Parts,
    /// Per partition, the round and start of this receive's latest long poll on it while
    /// that poll is out: a partition that hangs is not polled again while one is (a poll
    /// still out delivers whenever it ends), until that poll is stale.
    polling: Vec<Option<(u64, Instant)>>,
}

fn mailbox(parts: &Parts) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Outbox {
            tx,
            parts: parts.clone(),
        },
        Inbox {
            rx,
            parts: parts.clone(),
            polling: vec![None; parts.len()],
        },
    )
}

impl Inbox {
    /// Notes that a poll of round `round` on partition `index` has ended.
    fn ended(&mut self, round: u64, index: usize) {
        if self.polling[index].is_some_and(|(latest, _)| latest == round) {
            self.polling[index] = None;
        }
    }

    /// Whether partition `index` may be polled now: no poll of this receive is out on it,
    /// or the one out is stale. A poll sent on a connection the client has since left (its
    /// server hung) ends only with its own timeout, seconds later, and the partition
    /// answers on the new connection meanwhile.
    fn may_poll(&self, index: usize, now: Instant) -> bool {
        self.polling[index].is_none_or(|(_, since)| now.duration_since(since) >= STALE_POLL)
    }

    /// Adds what has arrived to `got`, up to `max`; more is released.
    fn take_arrived(&mut self, got: &mut Vec<Message>, max: usize) {
        while got.len() < max {
            match self.rx.try_recv() {
                Ok((round, index, messages)) => {
                    self.ended(round, index);
                    got.extend(messages);
                }
                Err(_) => break,
            }
        }
        if got.len() > max {
            release(&self.parts, got.split_off(max));
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.rx.close();
        while let Ok((_, _, messages)) = self.rx.try_recv() {
            release(&self.parts, messages);
        }
    }
}

/// Hands messages back to their partitions, in the background: a release that fails only
/// leaves its message to come back after its visibility timeout.
fn release(parts: &Parts, messages: Vec<Message>) {
    // A receive dropped with its runtime (at shutdown) leaves them to their timeout.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for message in messages {
        let Some((index, message)) = untag(message) else {
            continue;
        };
        let Some(part) = parts.get(index).cloned() else {
            continue;
        };
        runtime.spawn(async move {
            if let Err(e) = part.release(&message).await {
                tracing::debug!(error = %e, partition = index, "releasing a late message failed");
            }
        });
    }
}

impl Partitioned {
    /// `parts` must be non-empty; `attempt` bounds one send on one partition.
    pub fn new(name: impl Into<String>, parts: Vec<Arc<dyn Queue>>, attempt: Duration) -> Self {
        assert!(!parts.is_empty(), "a partitioned queue needs a partition");
        Self {
            name: name.into(),
            health: Arc::new(Health::new(parts.len())),
            parts: parts.into(),
            attempt,
            next_send: AtomicUsize::new(0),
            next_receive: AtomicUsize::new(0),
        }
    }

    fn first_partition(&self, message: &OutgoingMessage) -> usize {
        match &message.group {
            Some(group) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                group.hash(&mut h);
                (h.finish() % self.parts.len() as u64) as usize
            }
            None => self.next_send.fetch_add(1, Ordering::Relaxed) % self.parts.len(),
        }
    }

    /// Tries the partitions in `order` until one takes the message; when none does, again
    /// for up to [`SEND_GRACE`] from the start.
    async fn send_in_order(
        &self,
        message: OutgoingMessage,
        order: Vec<usize>,
    ) -> Result<String, QueueError> {
        let started = Instant::now();
        // Suspect partitions get a short attempt on the first pass only: when every
        // partition failed, each gets its whole attempt.
        let mut first_pass = true;
        loop {
            let (last, full) = match self.send_pass(&message, &order, first_pass).await? {
                Pass::Sent(id) => return Ok(id),
                Pass::Refused { last, full } => (last, full),
            };
            match (full, last) {
                // Every partition that answered was full: back-pressure, not an outage.
                (Some(e), None) => return Err(QueueError::Full(e)),
                (_, last) if started.elapsed() + QUICK_FAILURE >= SEND_GRACE => {
                    return Err(QueueError::Unavailable(last.unwrap_or_default()));
                }
                _ => tokio::time::sleep(QUICK_FAILURE).await,
            }
            first_pass = false;
        }
    }

    /// One pass of a send over the partitions in `order`, each with one attempt. A
    /// partition that has not answered within [`SEND_HEDGE`] is marked late and the next
    /// one is tried as well, its attempt still out: whichever partition takes the message
    /// first has it, and the others' late copies are withdrawn.
    async fn send_pass(
        &self,
        message: &OutgoingMessage,
        order: &[usize],
        first_pass: bool,
    ) -> Result<Pass, QueueError> {
        let mut out: FuturesUnordered<SendAttempt> = FuturesUnordered::new();
        let mut waiting = order.iter().copied();
        let (mut last, mut full) = (None, None);
        // Each turn tries the next partition (if any is left), then waits for an answer or
        // for that partition to be due to be joined by the one after it.
        loop {
            let mut due = None;
            match waiting.next() {
                Some(index) => {
                    let attempt = if first_pass {
                        self.attempt_on(index, SUSPECT_ATTEMPT)
                    } else {
                        self.attempt
                    };
                    out.push(self.send_attempt(index, attempt, message.clone()));
                    due = Some((Instant::now() + SEND_HEDGE.min(attempt), index));
                }
                None if out.is_empty() => return Ok(Pass::Refused { last, full }),
                None => {}
            }
            let answered = match due {
                Some((at, index)) => tokio::select! {
                    answered = out.next() => answered,
                    () = tokio::time::sleep_until(at) => {
                        self.health.mark_late(index, self.attempt);
                        continue;
                    }
                },
                None => out.next().await,
            };
            let Some((index, result)) = answered else {
                continue;
            };
            match result {
                Ok(id) => {
                    self.withdraw_late(out);
                    return Ok(Pass::Sent(format!("{index}:{id}")));
                }
                Err(QueueError::Unavailable(e)) => {
                    tracing::debug!(queue = %self.name, partition = index, error = %e, "send attempt failed");
                    self.health.mark_down(index);
                    last = Some(e);
                }
                // Another partition may have room; a full one is not down.
                Err(QueueError::Full(e)) => full = Some(e),
                Err(e) => {
                    self.withdraw_late(out);
                    return Err(e);
                }
            }
        }
    }

    /// One send on partition `index`, bounded by `attempt`; it owns what it needs, so that
    /// it can be left to finish after its pass has returned.
    fn send_attempt(
        &self,
        index: usize,
        attempt: Duration,
        message: OutgoingMessage,
    ) -> SendAttempt {
        let part = self.parts[index].clone();
        Box::pin(async move { (index, bounded(index, attempt, part.send(message)).await) })
    }

    /// Lets the attempts still out when a pass has returned finish in the background: a
    /// copy one of them lands is withdrawn (the message went elsewhere; left, it would run
    /// twice), one that fails marks its partition down.
    fn withdraw_late(&self, mut out: FuturesUnordered<SendAttempt>) {
        if out.is_empty() {
            return;
        }
        let (parts, health, attempt) = (self.parts.clone(), self.health.clone(), self.attempt);
        tokio::spawn(async move {
            while let Some((index, result)) = out.next().await {
                match result {
                    Ok(id) => {
                        let withdrawn = bounded(index, attempt, parts[index].withdraw(&id)).await;
                        if let Err(e) = withdrawn {
                            tracing::debug!(error = %e, partition = index, "a late copy was not withdrawn; it is delivered too");
                        }
                    }
                    Err(QueueError::Unavailable(_)) => health.mark_down(index),
                    Err(_) => {}
                }
            }
        });
    }

    fn partition_of(&self, receipt: &Receipt) -> Result<(usize, Receipt), QueueError> {
        let (index, inner) = split(&receipt.0).ok_or(QueueError::InvalidReceipt)?;
        if index >= self.parts.len() {
            return Err(QueueError::InvalidReceipt);
        }
        Ok((index, Receipt(inner.to_string())))
    }

    /// One call on partition `index`, bounded by one attempt.
    async fn attempt<T>(
        &self,
        index: usize,
        call: impl std::future::Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        bounded(index, self.attempt, call).await
    }

    /// How long a first call on partition `index` may take: `suspect` if it failed lately.
    fn attempt_on(&self, index: usize, suspect: Duration) -> Duration {
        if self.health.suspect(index) {
            self.attempt.min(suspect)
        } else {
            self.attempt
        }
    }

    /// A no-wait receive on partition `index`; `None` while it is still out. One that has
    /// not answered within its patience ([`RECEIVE_PATIENCE`], or [`SUSPECT_RECEIVE`] on
    /// a suspect partition) is marked late and goes on in the background, delivering what
    /// it brings to `outbox`: cut short, it could lose messages it had taken (their
    /// delivery checks can wait on a stream leader that just died) to a whole visibility
    /// timeout. It marks its partition down if it fails or outlasts a whole attempt.
    async fn receive_now(
        &self,
        index: usize,
        request: ReceiveRequest,
        outbox: &Outbox,
    ) -> Result<Option<Vec<Message>>, QueueError> {
        let part = self.parts[index].clone();
        let mut call = tokio::spawn(async move { part.receive(request).await });
        let tagged = move |messages: Vec<Message>| messages.into_iter().map(move |m| tag(index, m));
        let patience = if self.health.suspect(index) {
            SUSPECT_RECEIVE
        } else {
            RECEIVE_PATIENCE
        }
        .min(self.attempt);
        match tokio::time::timeout(patience, &mut call).await {
            Ok(Ok(result)) => result.map(|m| Some(tagged(m).collect())),
            Ok(Err(e)) => Err(QueueError::Unavailable(format!("partition {index}: {e}"))),
            Err(_) => {
                self.health.mark_late(index, self.attempt);
                let (outbox, health) = (outbox.clone(), self.health.clone());
                let rest = self.attempt.saturating_sub(patience);
                tokio::spawn(async move {
                    let answer = match tokio::time::timeout(rest, &mut call).await {
                        Ok(answer) => answer,
                        Err(_) => {
                            health.mark_down(index);
                            call.await
                        }
                    };
                    match answer {
                        Ok(Ok(messages)) => {
                            outbox.deliver(NO_ROUND, index, tagged(messages).collect())
                        }
                        _ => health.mark_down(index),
                    }
                });
                Ok(None)
            }
        }
    }

    /// Long-polls every partition at once for `wait` (round `round` of a receive), but for
    /// those an earlier round's poll is still out on; returns the first messages any poll
    /// brings, or nothing once this round's polls have all ended empty. The others deliver
    /// to `outbox` when they end. A round does not wait for a poll that hangs: messages
    /// that reach the other partitions after their polls ended would wait for it too.
    async fn poll_all(
        &self,
        request: ReceiveRequest,
        wait: Duration,
        round: u64,
        outbox: &Outbox,
        inbox: &mut Inbox,
    ) -> Vec<Message> {
        let start = self.next_receive.fetch_add(1, Ordering::Relaxed);
        // Every partition, those marked down too: the polls run side by side, so one that
        // hangs costs nothing, and a message must not wait out a mark (a step-down marks a
        // partition that is fine a moment later).
        let mut polled = 0;
        let now = Instant::now();
        for index in self.health.order(start) {
            if !inbox.may_poll(index, now) {
                continue;
            }
            inbox.polling[index] = Some((round, now));
            polled += 1;
            let part = self.parts[index].clone();
            let outbox = outbox.clone();
            let health = self.health.clone();
            let poll = ReceiveRequest {
                max_messages: request.max_messages,
                wait,
                visibility: request.visibility,
            };
            tokio::spawn(async move {
                let messages: Vec<Message> = match part.receive(poll).await {
                    Ok(m) => m.into_iter().map(|m| tag(index, m)).collect(),
                    Err(_) => {
                        health.mark_down(index);
                        Vec::new()
                    }
                };
                outbox.deliver(round, index, messages);
            });
        }
        // A partition whose leader is gone (or whose node hangs) can take far longer than
        // `wait` to answer: its poll stays out, delivering when it ends, and is not waited
        // for. With every partition's poll still out from earlier rounds, any of them
        // ending ends this round (its partition is polled again in the next).
        let end = Instant::now() + wait + PAST_SLICE;
        let mut answered = 0;
        while answered < polled.max(1) {
            match tokio::time::timeout_at(end, inbox.rx.recv()).await {
                Ok(Some((polled_in, index, messages))) => {
                    inbox.ended(polled_in, index);
                    answered += usize::from(counts_for_round(polled_in, round, polled));
                    if !messages.is_empty() {
                        let mut got = messages;
                        inbox.take_arrived(&mut got, request.max_messages);
                        return got;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        Vec::new()
    }
}

/// Whether a poll of round `polled_in` that ended counts towards ending round `round`, which
/// sent `polled` polls: its own polls do; when it sent none (every partition's poll was
/// still out from earlier rounds), any earlier round's does, but not a no-wait receive gone
/// on in the background.
fn counts_for_round(polled_in: u64, round: u64, polled: usize) -> bool {
    polled_in == round || (polled == 0 && polled_in != NO_ROUND)
}

/// One call on partition `index`, bounded by `attempt`: not answering in time is being
/// unavailable.
async fn bounded<T>(
    index: usize,
    attempt: Duration,
    call: impl std::future::Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    tokio::time::timeout(attempt, call)
        .await
        .unwrap_or_else(|_| Err(no_answer(index, attempt)))
}

fn no_answer(index: usize, attempt: Duration) -> QueueError {
    QueueError::Unavailable(format!("partition {index}: no answer within {attempt:?}"))
}

fn split(tagged: &str) -> Option<(usize, &str)> {
    let (index, inner) = tagged.split_once(':')?;
    Some((index.parse().ok()?, inner))
}

fn tag(index: usize, mut message: Message) -> Message {
    message.id = format!("{index}:{}", message.id);
    message.receipt = Receipt(format!("{index}:{}", message.receipt.0));
    message
}

/// The partition a tagged message came from, and the message as that partition gave it.
fn untag(mut message: Message) -> Option<(usize, Message)> {
    let (index, id) = split(&message.id)?;
    let id = id.to_string();
    let (_, receipt) = split(&message.receipt.0)?;
    message.receipt = Receipt(receipt.to_string());
    message.id = id;
    Some((index, message))
}

#[async_trait]
impl Queue for Partitioned {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_message_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.max_message_bytes())
            .min()
            .unwrap_or(0)
    }

    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        let order = self.health.order(self.first_partition(&message));
        self.send_in_order(message, order).await
    }

    async fn send_elsewhere(
        &self,
        message: OutgoingMessage,
        earlier: &str,
    ) -> Result<String, QueueError> {
        let avoid = split(earlier).map(|(index, _)| index);
        let first = avoid.map_or_else(|| self.first_partition(&message), |i| i + 1);
        // The earlier copy's partition last: it is the one that seems stuck.
        let (mut order, stuck): (Vec<usize>, Vec<usize>) = self
            .health
            .order(first)
            .into_iter()
            .partition(|i| Some(*i) != avoid);
        order.extend(stuck);
        self.send_in_order(message, order).await
    }

    async fn send_everywhere(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        // Each copy on a task of its own: the first to land answers, the others still go
        // (a partition that takes a message may be unable to deliver it).
        let mut sends: futures_util::stream::FuturesUnordered<_> = (0..self.parts.len())
            .map(|index| {
                let (part, health) = (self.parts[index].clone(), self.health.clone());
                let (message, attempt) = (message.clone(), self.attempt);
                tokio::spawn(async move {
                    let sent = bounded(index, attempt, part.send(message)).await;
                    if matches!(sent, Err(QueueError::Unavailable(_))) {
                        health.mark_down(index);
                    }
                    sent.map(|id| format!("{index}:{id}"))
                })
            })
            .collect();
        let mut last = QueueError::Unavailable("no partition".into());
        while let Some(sent) = sends.next().await {
            match sent {
                Ok(Ok(id)) => return Ok(id),
                Ok(Err(e)) => last = e,
                Err(e) => last = QueueError::Unavailable(e.to_string()),
            }
        }
        Err(last)
    }

    fn degraded(&self) -> bool {
        self.health.any_down()
    }

    async fn withdraw(&self, id: &str) -> Result<(), QueueError> {
        let (index, inner) = split(id)
            .filter(|(index, _)| *index < self.parts.len())
            .ok_or_else(|| {
                QueueError::Invalid(format!("`{id}` is not a message id of {}", self.name))
            })?;
        bounded(index, self.attempt, self.parts[index].withdraw(inner)).await
    }

    async fn receive(&self, request: ReceiveRequest) -> Result<Vec<Message>, QueueError> {
        super::validate_receive(&request)?;
        let (outbox, mut inbox) = mailbox(&self.parts);
        let mut got = Vec::new();
        let start = self.next_receive.fetch_add(1, Ordering::Relaxed);
        let tried = self.health.up(start);
        let mut failed = 0;
        let mut last = String::new();
        for &index in &tried {
            if got.len() >= request.max_messages {
                return Ok(got);
            }
            let now = ReceiveRequest {
                max_messages: request.max_messages - got.len(),
                wait: Duration::ZERO,
                visibility: request.visibility,
            };
            match self.receive_now(index, now, &outbox).await {
                Ok(Some(messages)) => got.extend(messages),
                // Still out: what it brings is taken by the long polls below.
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(queue = %self.name, partition = index, error = %e, "no-wait receive failed");
                    failed += 1;
                    last = e.to_string();
                    self.health.mark_down(index);
                }
            }
        }
        if failed == tried.len() && got.is_empty() {
            return Err(QueueError::Unavailable(last));
        }
        if !got.is_empty() || request.wait.is_zero() {
            return Ok(got);
        }
        let deadline = tokio::time::Instant::now() + request.wait;
        for round in 0.. {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            // A slower poll of an earlier round may have brought messages meanwhile; they
            // are in flight already (and hold up their group), so they go first.
            inbox.take_arrived(&mut got, request.max_messages);
            if !got.is_empty() {
                break;
            }
            let polled = Instant::now();
            got = self
                .poll_all(request, left.min(SLICE), round, &outbox, &mut inbox)
                .await;
            if !got.is_empty() {
                break;
            }
            if polled.elapsed() < QUICK_FAILURE {
                // Every poll failed at once (no partition has a leader): wait a little
                // rather than ask again straight away.
                tokio::time::sleep(QUICK_FAILURE.min(left)).await;
            }
        }
        Ok(got)
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        let (index, inner) = self.partition_of(receipt)?;
        self.parts[index].delete(&inner).await
    }

    async fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let (index, inner) = self.partition_of(receipt)?;
        self.parts[index].change_visibility(&inner, timeout).await
    }

    async fn release(&self, message: &Message) -> Result<(), QueueError> {
        let (index, message) = untag(message.clone()).ok_or(QueueError::InvalidReceipt)?;
        let part = self.parts.get(index).ok_or(QueueError::InvalidReceipt)?;
        part.release(&message).await
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let mut total = Depth::default();
        let mut answered = 0;
        let mut last = String::new();
        let depths = self
            .parts
            .iter()
            .enumerate()
            .map(|(index, part)| self.attempt(index, part.depth()));
        for depth in futures_util::future::join_all(depths).await {
            match depth {
                Ok(d) => {
                    answered += 1;
                    total.visible += d.visible;
                    total.in_flight += d.in_flight;
                    total.delayed += d.delayed;
                    total.oldest_age = total.oldest_age.max(d.oldest_age);
                }
                Err(e) => last = e.to_string(),
            }
        }
        if answered == 0 {
            return Err(QueueError::Unavailable(last));
        }
        Ok(total)
    }
}
