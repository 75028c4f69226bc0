//! Opening queues by name on whichever backend the host is configured with.

use std::collections::HashMap;
use std::sync::Arc;

use super::embedded::EmbeddedStore;
use super::jetstream::{JetStream, JetStreamQueue};
use super::sqs::SqsQueue;
use super::{Queue, QueueError, QueueSpec};

#[derive(Clone)]
pub enum QueueBackend {
    Embedded(EmbeddedStore),
    Sqs(aws_sdk_sqs::Client),
    JetStream(Box<JetStream>),
}

impl QueueBackend {
    pub async fn open(&self, spec: QueueSpec) -> Result<Arc<dyn Queue>, QueueError> {
        match self {
            Self::Embedded(store) => store.queue(spec).await,
            Self::Sqs(client) => Ok(Arc::new(SqsQueue::open(client.clone(), &spec).await?)),
            Self::JetStream(js) => Ok(Arc::new(JetStreamQueue::open(js, &spec).await?)),
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
