//! Consumes the usage queue: each batch is folded by the metering function (records already
//! counted are named to it) and stored with its rollups in one transaction; the message is
//! deleted only after that commit, so a crash redelivers and nothing is counted twice.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use imgfleet_metering::http::FoldRequest;
use imgfleet_metering::{Batch, Folded};

use crate::execution::runtime::WarmPool;
use crate::operator::telemetry;
use imgfleet_queue::{Message, Queue, ReceiveRequest, receive_or_pause};
use imgfleet_stores::clock::now_ms;
use imgfleet_stores::usage::{UsageError, UsageStore};

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
    /// The metering function's fold of `batch`, given what the store has already counted.
    pub async fn fold(&self, batch: &Batch) -> Result<Folded, MeterError> {
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
        serde_json::from_slice(&body).map_err(|e| MeterError::Function(e.to_string()))
    }

    /// Stores a fold; if some of its records were counted in the meantime (a redelivery
    /// racing its original), folds again against the store and retries.
    pub async fn store(&self, batch: &Batch, first: &Folded) -> Result<(), MeterError> {
        let mut refolded: Option<Folded> = None;
        for _ in 0..5 {
            let folded = refolded.as_ref().unwrap_or(first);
            match self.store.apply(folded.clone()).await {
                Ok(()) => {
                    for r in &folded.rejected {
                        tracing::error!(record = %r.id, reason = %r.reason, "usage record rejected");
                    }
                    metrics::counter!(telemetry::USAGE_RECORDS_STORED)
                        .increment(folded.accepted.len() as u64);
                    // The last hop of a request: its usage is counted (joined on request_id).
                    for r in &folded.accepted {
                        tracing::debug!(
                            batch = %batch.id,
                            request_id = %r.request_id,
                            tenant = %r.tenant,
                            usage_id = %r.id,
                            "usage counted"
                        );
                    }
                    if let Some(oldest) = folded.accepted.iter().map(|r| r.at_ms).min() {
                        // From the oldest request's time to its usage being counted.
                        let lag = now_ms().saturating_sub(oldest) as f64 / 1e3;
                        metrics::histogram!(telemetry::USAGE_INGEST_LAG).record(lag);
                    }
                    return Ok(());
                }
                Err(UsageError::Raced) => refolded = Some(self.fold(batch).await?),
                Err(e) => return Err(e.into()),
            }
        }
        Err(UsageError::Raced.into())
    }

    /// The batches of one receive as one batch (one fold, one commit), and their messages.
    fn gather(messages: Vec<Message>) -> Option<(Batch, Vec<Message>)> {
        let mut records = Vec::new();
        let mut readable = Vec::new();
        for message in messages {
            match serde_json::from_slice::<Batch>(&message.body) {
                Ok(batch) => {
                    records.extend(batch.records);
                    readable.push(message);
                }
                // Redelivering cannot help; the dead-letter queue keeps it for a look.
                Err(e) => tracing::error!(error = %e, "unreadable usage batch"),
            }
        }
        if readable.is_empty() {
            return None;
        }
        let id = readable
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>()
            .join("+");
        Some((Batch { id, records }, readable))
    }

    /// Runs until the process ends, in two stages side by side: receiving and folding the
    /// next batches while the previous fold is being stored. A message is deleted only
    /// after its records are committed.
    /// The two stages' tasks: folding, storing.
    pub fn spawn(self: Arc<Self>, queue: Arc<dyn Queue>) -> [tokio::task::JoinHandle<()>; 2] {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Batch, Vec<Message>, Folded)>(1);
        let folder = self.clone();
        let source = queue.clone();
        let folding = tokio::spawn(async move {
            loop {
                fail::fail_point!("meter");
                let request = ReceiveRequest {
                    max_messages: 10,
                    wait: Duration::from_secs(5),
                    visibility: None,
                };
                let messages = receive_or_pause(source.as_ref(), request, "usage batches").await;
                let Some((batch, messages)) = Self::gather(messages) else {
                    continue;
                };
                let fold = || folder.fold(&batch);
                match while_store_is_away(source.as_ref(), &messages, fold).await {
                    Ok(folded) => {
                        if tx.send((batch, messages, folded)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "usage batches not folded; they will be redelivered")
                    }
                }
            }
        });
        let storing = tokio::spawn(async move {
            while let Some((batch, messages, folded)) = rx.recv().await {
                let span = tracing::info_span!(
                    "meter",
                    batch = %batch.id,
                    records = batch.records.len()
                );
                let store = || self.store(&batch, &folded);
                let stored = while_store_is_away(queue.as_ref(), &messages, store);
                if let Err(e) = tracing::Instrument::instrument(stored, span).await {
                    tracing::warn!(error = %e, "usage batches not stored; they will be redelivered");
                    continue;
                }
                for message in messages {
                    if let Err(e) = queue.delete(&message.receipt).await {
                        tracing::warn!(error = %e, "deleting a stored usage batch (a redelivery counts nothing)");
                    }
                }
            }
        });
        [folding, storing]
    }
}

/// Retries `op` for as long as the usage store is unavailable, keeping the batch's messages
/// invisible meanwhile: an outage then costs no deliveries (which would end in the
/// dead-letter queue after a few minutes) and the batch is stored the moment the store is
/// back, instead of a visibility timeout later.
async fn while_store_is_away<T, F, Fut>(
    queue: &dyn Queue,
    messages: &[Message],
    mut op: F,
) -> Result<T, MeterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, MeterError>>,
{
    const HOLD: Duration = Duration::from_secs(60);
    let mut backoff = Duration::from_millis(100);
    let mut held_since = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        match op().await {
            Err(MeterError::Store(UsageError::Unavailable(why))) => {
                if !warned {
                    tracing::warn!(error = %why, "usage store unavailable; holding the batch until it is back");
                    warned = true;
                }
                if held_since.elapsed() > HOLD / 3 {
                    for m in messages {
                        let _ = queue.change_visibility(&m.receipt, HOLD).await;
                    }
                    held_since = tokio::time::Instant::now();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            other => {
                if warned {
                    tracing::info!("usage store back");
                }
                return other;
            }
        }
    }
}
