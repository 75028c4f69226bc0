//! In-memory queue state, rebuilt from the log on start. Every mutation returns the
//! records that describe it; the caller appends them to the log while still holding the
//! lock, so the log's order is the order of the changes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::record::{Record, Sent};
use crate::{DEDUP_WINDOW, Depth, Message, OutgoingMessage, QueueError, QueueSpec, Receipt};

/// Messages without a group share this key; they are not held back by each other.
const UNGROUPED: &str = "";

pub fn now_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ready,
    Delayed,
    InFlight { until: Instant },
}

#[derive(Debug)]
struct Msg {
    sent: Sent,
    phase: Phase,
}

impl Msg {
    fn group_key(&self) -> &str {
        self.sent.group.as_deref().unwrap_or(UNGROUPED)
    }
}

/// A timer: at `at`, message `seq` leaves its delay or its visibility timeout, provided it
/// is still in the phase the timer was set for (`count` is its receive count then).
type Timer = Reverse<(Instant, u64, u32)>;

pub struct QueueState {
    pub index: u32,
    pub spec: QueueSpec,
    messages: HashMap<u64, Msg>,
    /// Deliverable messages per group, in send order.
    ready: BTreeMap<String, BTreeSet<u64>>,
    /// Groups with a message in flight (ungrouped messages never lock).
    locked: HashMap<String, u32>,
    /// Round-robin cursor: the group served last.
    cursor: Option<String>,
    timers: BinaryHeap<Timer>,
    dedup: HashMap<String, (u64, SystemTime)>,
    dedup_order: VecDeque<(SystemTime, String)>,
    in_flight: usize,
    delayed: usize,
    pub live_bytes: u64,
}

/// Outcome of one delivery attempt for the caller to act on.
pub enum Delivery {
    /// A message to hand out, and whether it was sent `Synced`.
    Deliver(Message, bool),
    /// Received too many times: to be re-sent to the dead-letter queue.
    DeadLetter(Sent),
}

impl QueueState {
    pub fn new(index: u32, spec: QueueSpec) -> Self {
        Self {
            index,
            spec,
            messages: HashMap::new(),
            ready: BTreeMap::new(),
            locked: HashMap::new(),
            cursor: None,
            timers: BinaryHeap::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            in_flight: 0,
            delayed: 0,
            live_bytes: 0,
        }
    }

    fn make_ready(&mut self, seq: u64) {
        let Some(msg) = self.messages.get_mut(&seq) else {
            return;
        };
        msg.phase = Phase::Ready;
        let key = msg.group_key().to_string();
        self.ready.entry(key).or_default().insert(seq);
    }

    /// Whether message `seq` is here (recovery ignores a message id sent twice).
    pub fn contains(&self, seq: u64) -> bool {
        self.messages.contains_key(&seq)
    }

    /// Adds a message (a new send, or one replayed from the log). Replayed messages start
    /// ready: visibility timeouts do not survive a restart.
    pub fn insert(&mut self, sent: Sent, now: Instant, replay: bool) {
        let seq = sent.seq;
        let delay = Duration::from_millis(sent.delay_ms);
        let sent_at = UNIX_EPOCH + Duration::from_millis(sent.sent_at_ms);
        if let Some(id) = &sent.dedup_id {
            self.remember_dedup(id.clone(), seq, sent_at);
        }
        self.live_bytes += sent.body.len() as u64 + 64;
        let visible_at = sent_at + delay;
        let remaining = visible_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let delayed = !delay.is_zero() && (!replay || !remaining.is_zero());
        self.messages.insert(
            seq,
            Msg {
                sent,
                phase: Phase::Delayed,
            },
        );
        if delayed {
            self.delayed += 1;
            let wait = if replay { remaining } else { delay };
            self.timers.push(Reverse((now + wait, seq, 0)));
        } else {
            self.make_ready(seq);
        }
    }

    pub fn remember_dedup(&mut self, id: String, seq: u64, at: SystemTime) {
        self.dedup_order.push_back((at, id.clone()));
        self.dedup.insert(id, (seq, at));
    }

    /// The id of a message sent with `dedup_id` within the window, if any.
    pub fn deduplicated(&mut self, dedup_id: &str, now: SystemTime) -> Option<u64> {
        while let Some((at, id)) = self.dedup_order.front() {
            if now.duration_since(*at).unwrap_or_default() < DEDUP_WINDOW {
                break;
            }
            if self.dedup.get(id).is_some_and(|(_, t)| t == at) {
                self.dedup.remove(id);
            }
            self.dedup_order.pop_front();
        }
        self.dedup.get(dedup_id).map(|(seq, _)| *seq)
    }

    /// Applies due timers: delays that ended and visibility timeouts that expired.
    pub fn tick(&mut self, now: Instant) {
        while let Some(Reverse((at, seq, count))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(msg) = self.messages.get(&seq) else {
                continue;
            };
            match msg.phase {
                Phase::Delayed if count == 0 => {
                    self.delayed = self.delayed.saturating_sub(1);
                    self.make_ready(seq);
                }
                Phase::InFlight { until } if until == at && msg.sent.receive_count == count => {
                    self.unlock(seq);
                    self.make_ready(seq);
                }
                _ => {}
            }
        }
    }

    /// When the next timer fires, for long polls to wake up.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    fn unlock(&mut self, seq: u64) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(msg) = self.messages.get(&seq) else {
            return;
        };
        let key = msg.group_key().to_string();
        if key != UNGROUPED
            && let Some(n) = self.locked.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                self.locked.remove(&key);
            }
        }
    }

    /// Picks the next deliverable message, serving groups round robin; `None` when nothing
    /// is deliverable.
    fn next_ready(&mut self) -> Option<u64> {
        let locked = &self.locked;
        let eligible = |(k, set): (&String, &BTreeSet<u64>)| {
            let first = *set.first()?;
            (k.as_str() == UNGROUPED || !locked.contains_key(k)).then(|| (k.clone(), first))
        };
        let (key, seq) = match &self.cursor {
            Some(c) => self
                .ready
                .range::<str, _>((Bound::Excluded(c.as_str()), Bound::Unbounded))
                .find_map(eligible)
                .or_else(|| {
                    self.ready
                        .range::<str, _>((Bound::Unbounded, Bound::Included(c.as_str())))
                        .find_map(eligible)
                }),
            None => self.ready.iter().find_map(eligible),
        }?;
        if let Some(set) = self.ready.get_mut(&key) {
            set.remove(&seq);
            if set.is_empty() {
                self.ready.remove(&key);
            }
        }
        self.cursor = Some(key);
        Some(seq)
    }

    /// Delivers up to `max` messages, hiding each for `visibility`. Returns the deliveries
    /// and the records to log.
    pub fn receive(
        &mut self,
        max: usize,
        visibility: Duration,
        now: Instant,
        wall: SystemTime,
        records: &mut Vec<Record>,
    ) -> Vec<Delivery> {
        self.tick(now);
        let mut out = Vec::new();
        while out.len() < max {
            let Some(seq) = self.next_ready() else { break };
            // A ready entry always names a message; should one not, it is skipped, not
            // trusted.
            let Some(msg) = self.messages.get_mut(&seq) else {
                continue;
            };
            let age = wall
                .duration_since(UNIX_EPOCH + Duration::from_millis(msg.sent.sent_at_ms))
                .unwrap_or_default();
            if age > self.spec.retention {
                records.push(self.remove(seq));
                continue;
            }
            let Some(msg) = self.messages.get_mut(&seq) else {
                continue;
            };
            msg.sent.receive_count = msg.sent.receive_count.saturating_add(1);
            let count = msg.sent.receive_count;
            if self.spec.max_receives.is_some_and(|max| count > max) {
                let Some(removed) = self.messages.remove(&seq) else {
                    continue;
                };
                self.live_bytes = self
                    .live_bytes
                    .saturating_sub(removed.sent.body.len() as u64 + 64);
                records.push(Record::Deleted {
                    queue: self.index,
                    seq,
                });
                out.push(Delivery::DeadLetter(removed.sent));
                continue;
            }
            let until = now + visibility;
            msg.phase = Phase::InFlight { until };
            let message = Message {
                id: seq.to_string(),
                receipt: receipt(self.index, seq, count),
                body: msg.sent.body.clone(),
                group: msg.sent.group.clone(),
                attributes: msg.sent.attributes.clone(),
                receive_count: count,
                sent_at: UNIX_EPOCH + Duration::from_millis(msg.sent.sent_at_ms),
            };
            let key = msg.group_key().to_string();
            let synced = msg.sent.synced;
            self.in_flight += 1;
            if key != UNGROUPED {
                *self.locked.entry(key).or_default() += 1;
            }
            self.timers.push(Reverse((until, seq, count)));
            records.push(Record::Received {
                queue: self.index,
                seq,
                count,
            });
            out.push(Delivery::Deliver(message, synced));
        }
        out
    }

    fn remove(&mut self, seq: u64) -> Record {
        if let Some(msg) = self.messages.get(&seq) {
            match msg.phase {
                Phase::InFlight { .. } => self.unlock(seq),
                Phase::Delayed => self.delayed = self.delayed.saturating_sub(1),
                Phase::Ready => {}
            }
        }
        if let Some(msg) = self.messages.remove(&seq) {
            let key = msg.group_key().to_string();
            if let Some(set) = self.ready.get_mut(&key) {
                set.remove(&seq);
                if set.is_empty() {
                    self.ready.remove(&key);
                }
            }
            self.live_bytes = self
                .live_bytes
                .saturating_sub(msg.sent.body.len() as u64 + 64);
        }
        Record::Deleted {
            queue: self.index,
            seq,
        }
    }

    /// Resolves a receipt to its message if it is the newest delivery and still in flight.
    fn in_flight_by_receipt(&self, receipt: &Receipt) -> Result<u64, QueueError> {
        let (queue, seq, count) = parse_receipt(receipt).ok_or(QueueError::InvalidReceipt)?;
        if queue != self.index {
            return Err(QueueError::InvalidReceipt);
        }
        match self.messages.get(&seq) {
            Some(m)
                if m.sent.receive_count == count && matches!(m.phase, Phase::InFlight { .. }) =>
            {
                Ok(seq)
            }
            _ => Err(QueueError::InvalidReceipt),
        }
    }

    pub fn delete(&mut self, receipt: &Receipt, now: Instant) -> Result<Record, QueueError> {
        self.tick(now);
        let seq = self.in_flight_by_receipt(receipt)?;
        Ok(self.remove(seq))
    }

    pub fn change_visibility(
        &mut self,
        receipt: &Receipt,
        timeout: Duration,
        now: Instant,
    ) -> Result<(), QueueError> {
        self.tick(now);
        let seq = self.in_flight_by_receipt(receipt)?;
        if timeout.is_zero() {
            self.unlock(seq);
            self.make_ready(seq);
            return Ok(());
        }
        let Some(msg) = self.messages.get_mut(&seq) else {
            return Err(QueueError::InvalidReceipt);
        };
        let until = now + timeout;
        msg.phase = Phase::InFlight { until };
        self.timers
            .push(Reverse((until, seq, msg.sent.receive_count)));
        Ok(())
    }

    /// Replays a logged receive: only the count matters after a restart.
    pub fn replay_received(&mut self, seq: u64, count: u32) {
        if let Some(m) = self.messages.get_mut(&seq) {
            m.sent.receive_count = count;
        }
    }

    pub fn replay_deleted(&mut self, seq: u64) {
        self.remove(seq);
    }

    pub fn depth(&mut self, now: Instant) -> Depth {
        self.tick(now);
        Depth {
            visible: self
                .messages
                .len()
                .saturating_sub(self.in_flight + self.delayed),
            in_flight: self.in_flight,
            delayed: self.delayed,
            oldest_age: Some(
                self.messages
                    .values()
                    .map(|m| m.sent.sent_at_ms)
                    .min()
                    .map_or(Duration::ZERO, |ms| {
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH + Duration::from_millis(ms))
                            .unwrap_or_default()
                    }),
            ),
        }
    }

    /// Records recreating this queue's live state (for compaction).
    pub fn snapshot(&self, out: &mut Vec<Record>, now: SystemTime) {
        out.push(Record::Queue {
            queue: self.index,
            name: self.spec.name.clone(),
        });
        let mut seqs: Vec<_> = self.messages.keys().copied().collect();
        seqs.sort_unstable();
        for msg in seqs.iter().filter_map(|seq| self.messages.get(seq)) {
            out.push(Record::Sent(msg.sent.clone()));
        }
        for (id, (seq, at)) in &self.dedup {
            if now.duration_since(*at).unwrap_or_default() < DEDUP_WINDOW
                && !self.messages.contains_key(seq)
            {
                out.push(Record::Dedup {
                    queue: self.index,
                    id: id.clone(),
                    seq: *seq,
                    at_ms: now_ms(*at),
                });
            }
        }
    }
}

/// The record of a new message.
pub fn new_sent(queue: u32, seq: u64, message: OutgoingMessage, now: SystemTime) -> Sent {
    Sent {
        queue,
        seq,
        sent_at_ms: now_ms(now),
        delay_ms: message.delay.as_millis() as u64,
        receive_count: 0,
        synced: message.durability == crate::Durability::Synced,
        group: message.group,
        dedup_id: message.dedup_id,
        attributes: message.attributes,
        body: message.body,
    }
}

fn receipt(queue: u32, seq: u64, count: u32) -> Receipt {
    Receipt(format!("{queue}.{seq}.{count}"))
}

fn parse_receipt(r: &Receipt) -> Option<(u32, u64, u32)> {
    let mut parts = r.0.split('.');
    let q = parts.next()?.parse().ok()?;
    let s = parts.next()?.parse().ok()?;
    let c = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((q, s, c))
}
