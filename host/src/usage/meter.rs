//! Consumes the usage queue: each batch is folded by the metering function (records already
//! counted are named to it) and stored with its rollups in one transaction; the message is
//! deleted only after that commit, so a crash redelivers and nothing is counted twice.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use imgfleet_metering::http::FoldRequest;
use imgfleet_metering::{Batch, Folded};

use super::{UsageError, UsageStore};
use crate::queue::{Message, Queue, ReceiveRequest, receive_or_pause};
use crate::runtime::WarmPool;

/// The manifest component that folds batches.
pub const METERING_COMPONENT: &str = "metering";
const FOLD_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("unreadable batch: {0}")]
    Unreadable(String),
    #[error("the metering function failed: {0}")]
    Function(String),
    #[error(transparent)]
    Store(#[from] UsageError),
}

pub struct Meter {
    pub store: Arc<dyn UsageStore>,
    pub function: WarmPool,
}

impl Meter {
    /// Folds and stores one batch; returns what the fold said.
    pub async fn ingest(&self, batch: Batch) -> Result<Folded, MeterError> {
        // Another meter may store some of these records between our read and our write;
        // the store then refuses the fold whole and we fold again.
        for _ in 0..5 {
            let ids = batch.records.iter().map(|r| r.id.clone()).collect();
            let known = self.store.known(ids).await?;
            let request = FoldRequest {
                batch: batch.clone(),
                known,
            };
            let body =
                serde_json::to_vec(&request).map_err(|e| MeterError::Unreadable(e.to_string()))?;
            let (status, body) = self
                .function
                .post(Bytes::from(body), FOLD_DEADLINE)
                .await
                .map_err(|e| MeterError::Function(e.to_string()))?;
            if status != http::StatusCode::OK {
                return Err(MeterError::Function(format!(
                    "answered {status}: {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            let folded: Folded =
                serde_json::from_slice(&body).map_err(|e| MeterError::Function(e.to_string()))?;
            match self.store.apply(folded.clone()).await {
                Ok(()) => return Ok(folded),
                Err(UsageError::Raced) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(UsageError::Raced.into())
    }

    async fn handle(&self, queue: &dyn Queue, message: Message) {
        let outcome = match serde_json::from_slice::<Batch>(&message.body) {
            Ok(batch) => self.ingest(batch).await,
            Err(e) => Err(MeterError::Unreadable(e.to_string())),
        };
        match outcome {
            Ok(folded) => {
                for r in &folded.rejected {
                    tracing::error!(record = %r.id, reason = %r.reason, "usage record rejected");
                }
            }
            Err(MeterError::Unreadable(e)) => {
                // Redelivering cannot help; the dead-letter queue keeps it for a look.
                tracing::error!(error = %e, "unreadable usage batch");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "usage batch not stored; it will be redelivered");
                return;
            }
        }
        if let Err(e) = queue.delete(&message.receipt).await {
            tracing::warn!(error = %e, "deleting a stored usage batch (a redelivery counts nothing)");
        }
    }

    pub fn spawn(self: Arc<Self>, queue: Arc<dyn Queue>) {
        tokio::spawn(async move {
            loop {
                let request = ReceiveRequest {
                    max_messages: 10,
                    wait: Duration::from_secs(5),
                    visibility: None,
                };
                for message in receive_or_pause(queue.as_ref(), request, "usage batches").await {
                    self.handle(queue.as_ref(), message).await;
                }
            }
        });
    }
}
