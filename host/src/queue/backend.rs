//! Opening queues by name on whichever backend the host is configured with.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::embedded::EmbeddedStore;
use super::jetstream::{self, JetStream, JetStreamQueue};
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

impl QueueBackend {
    pub async fn open(&self, spec: QueueSpec) -> Result<Arc<dyn Queue>, QueueError> {
        match self {
            Self::Embedded(store) => store.queue(spec).await,
            Self::Sqs(client) => Ok(Arc::new(SqsQueue::open(client.clone(), &spec).await?)),
            Self::JetStream { js, partitions } if *partitions > 1 => {
                let mut parts: Vec<Arc<dyn Queue>> = Vec::with_capacity(*partitions);
                let mut placement = Vec::with_capacity(*partitions);
                for i in 0..*partitions {
                    let mut part = spec.clone();
                    part.name = format!("p{i}-{}", spec.name);
                    // A send fails over to the next partition instead of waiting here
                    // for an election.
                    let queue = JetStreamQueue::open(js, &part).await?;
                    parts.push(Arc::new(queue.with_publish_budget(Duration::ZERO)));
                    placement.push(leaders::Partition {
                        stream: jetstream::stream_name(&part.name),
                        consumer: Some(jetstream::CONSUMER.to_string()),
                    });
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

/// Queues opened so far, by name: completion messages name the queue to reply to.
pub struct QueueDirectory {
    backend: QueueBackend,
    opened: tokio::sync::Mutex<HashMap<String, Arc<dyn Queue>>>,
    spec_for: fn(&str) -> QueueSpec,
}

impl QueueDirectory {
    /// `spec_for` gives the settings of a queue first opened by name.
    pub fn new(backend: QueueBackend, spec_for: fn(&str) -> QueueSpec) -> Self {
        Self {
            backend,
            opened: tokio::sync::Mutex::new(HashMap::new()),
            spec_for,
        }
    }

    pub async fn get(&self, name: &str) -> Result<Arc<dyn Queue>, QueueError> {
        let mut opened = self.opened.lock().await;
        if let Some(q) = opened.get(name) {
            return Ok(q.clone());
        }
        let q = self.backend.open((self.spec_for)(name)).await?;
        opened.insert(name.to_string(), q.clone());
        Ok(q)
    }
}
