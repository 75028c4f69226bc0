//! The resize function: consumes the jobs queue. Each message is one job: its input comes
//! from S3, the resize logic runs, the output goes back to S3 and the job's row says how it
//! ended. A job that fails for its own reasons (a corrupt image) ends `failed` and is not
//! retried; a message that cannot be handled (unreadable, or S3/DynamoDB/SQS failing) is
//! reported as a batch item failure, so SQS redelivers only that message and, after the
//! queue's `maxReceiveCount`, moves it to the dead-letter queue.

use std::collections::HashSet;
use std::time::Instant;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use imgfleet_metering::UsageRecord;
use imgfleet_resize::http::{FACTS_HEADER, HttpRequest};
use imgfleet_stores::usage::image_sides;

use crate::deps::{Deps, now_ms};
use crate::job::{self, JobMessage, Outcome, Status};
use crate::staging;
use crate::usage::account;

/// The jobs queue is FIFO: once a message of a group fails, the group's later messages in
/// the batch are handed back unrun too, so they are redelivered after it, in order.
/// Other groups (tenants) are not held up.
pub async fn handle_batch(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let mut failed_groups = HashSet::new();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let group = message.attributes.get("MessageGroupId").cloned();
        if group.as_ref().is_some_and(|g| failed_groups.contains(g)) {
            response.add_failure(id);
            continue;
        }
        if let Err(e) = handle_message(deps, &message).await {
            tracing::warn!(message_id = %id, error = %e, "job message failed; SQS will redeliver it");
            response.add_failure(id);
            failed_groups.extend(group);
        }
    }
    response
}

async fn handle_message(deps: &Deps, message: &SqsMessage) -> Result<(), String> {
    let body = message
        .body
        .as_deref()
        .ok_or("a job message without a body")?;
    let job: JobMessage =
        serde_json::from_str(body).map_err(|e| format!("not a job message: {e}"))?;
    let row = job::get(deps, &job.id)
        .await?
        .ok_or_else(|| format!("job {} has no row", job.id))?;
    if row.status != Status::Queued {
        // A redelivery of a job that already ended: nothing to do twice.
        return Ok(());
    }
    run(deps, &job).await
}

async fn run(deps: &Deps, job: &JobMessage) -> Result<(), String> {
    let started = Instant::now();
    let input = staging::get(deps, &job.input_key)
        .await?
        .ok_or_else(|| format!("the input of job {} is not in staging", job.id))?;
    let out = imgfleet_resize::http::handle(HttpRequest {
        method: "POST",
        query: &job.query,
        accept: job.accept.as_deref(),
        limits: None,
        body: &input,
    });
    let wall_ns = started.elapsed().as_nanos() as u64;
    let now = now_ms();
    let outcome = if out.status == 200 {
        let output_key = staging::output_key(&job.id);
        staging::put(deps, &output_key, out.body.clone()).await?;
        Outcome::Done {
            output_key,
            content_type: out
                .header("content-type")
                .unwrap_or("application/octet-stream")
                .to_string(),
            expires_ms: now + deps.output_ttl_ms,
        }
    } else {
        let (code, message) = crate::envelope::parse(&out.body)
            .unwrap_or_else(|| ("function_failed".into(), "the resize failed".into()));
        Outcome::Failed {
            http_status: out.status,
            code,
            message,
        }
    };
    // Metered before the job is marked finished: a crash in between reruns the job, and
    // the run's record id (fixed per job) is counted once however often it is sent.
    let (input_side, output_side) = image_sides(out.header(FACTS_HEADER));
    let record = UsageRecord {
        id: format!("{}.run", job.id),
        request_id: job.request_id.clone(),
        tenant: job.tenant.clone(),
        key_id: job.key_id.clone(),
        at_ms: now,
        route: "/v1/jobs".into(),
        status: out.status,
        input: input_side,
        output: output_side,
        cpu_ns: wall_ns,
        wall_ns,
        queue_ns: now.saturating_sub(job.submitted_ms) * 1_000_000,
        origin_bytes: 0,
        not_modified: false,
        cache: None,
    };
    account(deps, record, Some(&job.id)).await?;
    job::finish(deps, &job.id, &outcome, now).await?;
    staging::remove(deps, &job.input_key).await;
    Ok(())
}
