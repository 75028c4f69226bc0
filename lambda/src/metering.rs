//! The metering function: consumes the usage queue. The records of every readable message
//! in the event are folded together with the metering logic (records already counted are
//! skipped) and written to the usage table, each counted once. A message that is not a
//! usage batch is reported as a batch item failure (and, after the queue's
//! `maxReceiveCount`, dead-lettered); if the store cannot be written, every readable
//! message is reported, and the next delivery folds them again without double counting.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use imgfleet_metering::{Batch, fold};
use imgfleet_stores::usage::{UsageError, UsageStore};

use crate::deps::Deps;

/// Folding again after a race with another instance is bounded; the messages are
/// redelivered after that.
const FOLD_ATTEMPTS: usize = 3;

pub async fn handle_batch(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let mut readable = Vec::new();
    let mut records = Vec::new();
    for message in event.records {
        let id = message.message_id.unwrap_or_default();
        match message.body.as_deref().map(serde_json::from_str::<Batch>) {
            Some(Ok(batch)) => {
                records.extend(batch.records);
                readable.push(id);
            }
            _ => {
                tracing::warn!(message_id = %id, "not a usage batch; SQS will redeliver it, then dead-letter it");
                response.add_failure(id);
            }
        }
    }
    if records.is_empty() {
        return response;
    }
    if let Err(e) = store(
        deps,
        Batch {
            id: String::new(),
            records,
        },
    )
    .await
    {
        tracing::error!(error = %e, "usage not stored; SQS will redeliver the batch");
        for id in readable {
            response.add_failure(id);
        }
    }
    response
}

async fn store(deps: &Deps, batch: Batch) -> Result<(), UsageError> {
    let ids: Vec<String> = batch.records.iter().map(|r| r.id.clone()).collect();
    for _ in 0..FOLD_ATTEMPTS {
        let known = deps.usage.known(ids.clone()).await?;
        let folded = fold(batch.clone(), &known);
        for rejected in &folded.rejected {
            tracing::warn!(record = %rejected.id, reason = %rejected.reason, "usage record rejected");
        }
        match deps.usage.apply(folded).await {
            Err(UsageError::Raced) => continue,
            other => return other,
        }
    }
    Err(UsageError::Raced)
}
