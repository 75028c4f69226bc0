//! Opening queues by name on whichever backend the host is configured with.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::embedded::EmbeddedStore;
use super::jetstream::{self, JetStream, JetStreamQueue, JetStreamSender};
use super::leaders;
use super::partitioned::Partitioned;
use super::sqs::SqsQueue;
use super::{Queue, QueueError, QueueSpec};

#[derive(Clone)]
pub enum QueueBackend {
    Embedded(EmbeddedStore),
    Sqs(aws_sdk_sqs::Client),
    /// Each queue over `partitions` streams (one: a single stream, named after the queue).
    JetStream {
        js: Box<JetStream>,
        partitions: usize,
    },
}

/// One send attempt on one partition of a partitioned queue before the next is tried:
/// long enough for a healthy cluster's slowest answer, short against a leader election.
const PARTITION_ATTEMPT: Duration = Duration::from_secs(1);

/// Who keeps a partitioned queue's leaders on different nodes ([`leaders`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaders {
    /// This host: the queues it receives from (every host spreads the shared ones alike).
    Spread,
    /// Another host: a queue only sent to from here (another host's completions). Its
    /// owner creates and spreads it; spreading it from every sender would multiply the
    /// step-downs, and a first send would wait for them. Opened for sending only, without
    /// the JetStream API (which the servers refuse while their meta group elects a leader).
    LeftToOwner,
}

/// The queue that is partition `index` of the partitioned queue `name`.
pub fn partition_name(name: &str, index: usize) -> String {
    format!("p{index}-{name}")
}

/// Partition `index` of the partitioned queue `name`, as its leaders are kept together:
/// its stream, the consumer workers pull from, and the stream of its held-back counts.
pub fn partition_placement(name: &str, index: usize) -> leaders::Partition {
    let part = partition_name(name, index);
    leaders::Partition {
        stream: jetstream::stream_name(&part),
        consumer: Some(jetstream::CONSUMER.to_string()),
        companion: Some(jetstream::held_back_stream_name(&part)),
    }
}

impl QueueBackend {
    pub async fn open(&self, spec: QueueSpec) -> Result<Arc<dyn Queue>, QueueError> {
        self.open_with(spec, Leaders::Spread).await
    }

    pub async fn open_with(
        &self,
        spec: QueueSpec,
        leaders: Leaders,
    ) -> Result<Arc<dyn Queue>, QueueError> {
        match self {
            Self::Embedded(store) => store.queue(spec).await,
            Self::Sqs(client) => Ok(Arc::new(SqsQueue::open(client.clone(), &spec).await?)),
            // Another host's queue: sent to only, opened without the JetStream API.
            Self::JetStream { js, partitions } if leaders == Leaders::LeftToOwner => {
                if *partitions <= 1 {
                    let sender = JetStreamSender::open(js, &spec, jetstream::CALL_BUDGET).await?;
                    return Ok(Arc::new(sender));
                }
                let mut parts: Vec<Arc<dyn Queue>> = Vec::with_capacity(*partitions);
                for i in 0..*partitions {
                    let mut part = spec.clone();
                    part.name = partition_name(&spec.name, i);
                    // A send fails over to the next partition instead of waiting here.
                    parts.push(Arc::new(
                        JetStreamSender::open(js, &part, Duration::ZERO).await?,
                    ));
                }
                Ok(Arc::new(Partitioned::new(
                    spec.name,
                    parts,
                    PARTITION_ATTEMPT,
                )))
            }
            Self::JetStream { js, partitions } if *partitions > 1 => {
                let mut parts: Vec<Arc<dyn Queue>> = Vec::with_capacity(*partitions);
                let mut placement = Vec::with_capacity(*partitions);
                for i in 0..*partitions {
                    let mut part = spec.clone();
                    part.name = partition_name(&spec.name, i);
                    part.max_bytes = spec.max_bytes.map(|b| (b / *partitions as u64).max(1));
                    // A send fails over to the next partition instead of waiting here
                    // for an election.
                    let queue = JetStreamQueue::open(js, &part).await?;
                    parts.push(Arc::new(queue.with_publish_budget(Duration::ZERO)));
                    placement.push(partition_placement(&spec.name, i));
                }
                leaders::keep_spread((**js).clone(), placement).await;
                Ok(Arc::new(Partitioned::new(
                    spec.name,
                    parts,
                    PARTITION_ATTEMPT,
                )))
            }
            Self::JetStream { js, .. } => Ok(Arc::new(JetStreamQueue::open(js, &spec).await?)),
        }
    }
}

/// A queue of the directory: open, or being opened by the first sender to it.
type Opening = OnceCell<Arc<dyn Queue>>;

/// Queues opened so far, by name: completion messages name the queue to reply to.
pub struct QueueDirectory {
    backend: QueueBackend,
    /// A cell per name, so that a queue slow to open (during an election) holds up only
    /// the senders to it, not every reply of the host.
    opened: std::sync::Mutex<HashMap<String, Arc<Opening>>>,
    spec_for: fn(&str) -> QueueSpec,
}

impl QueueDirectory {
    /// `spec_for` gives the settings of a queue first opened by name.
    pub fn new(backend: QueueBackend, spec_for: fn(&str) -> QueueSpec) -> Self {
        Self {
            backend,
            opened: std::sync::Mutex::new(HashMap::new()),
            spec_for,
        }
    }

    /// A queue this host has opened itself, so that replies to it use the same one.
    pub fn insert(&self, name: &str, queue: Arc<dyn Queue>) {
        self.cell(name)
            .set(queue)
            .unwrap_or_else(|_| tracing::debug!(queue = name, "already open"));
    }

    /// The queue `name`, opened on first use; its leaders are left to its owner.
    pub async fn get(&self, name: &str) -> Result<Arc<dyn Queue>, QueueError> {
        self.cell(name)
            .get_or_try_init(|| {
                self.backend
                    .open_with((self.spec_for)(name), Leaders::LeftToOwner)
            })
            .await
            .cloned()
    }

    fn cell(&self, name: &str) -> Arc<Opening> {
        self.opened
            .lock()
            .expect("the queue directory")
            .entry(name.to_string())
            .or_default()
            .clone()
    }
}
