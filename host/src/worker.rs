//! Workers: pull jobs from the jobs queue only when a slot is free (one worker per slot),
//! fetch the staged input, run the function in a slot, stage the output and reply.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::jobs::{Completion, Job, Outcome, now_ms};
use crate::queue::backend::QueueDirectory;
use crate::queue::{Durability, Message, OutgoingMessage, Queue, ReceiveRequest};
use crate::runtime::InvokeRequest;
use crate::slots::{Slots, SubmitError};
use crate::staging::{Keep, Staging};

pub struct WorkerContext {
    pub jobs: Arc<dyn Queue>,
    pub replies: Arc<QueueDirectory>,
    pub slots: Slots,
    pub staging: Staging,
    /// Value of the limits header every invocation carries.
    pub limits_header: String,
    /// How long a job stays hidden while a worker has it.
    pub visibility: Duration,
    /// How long an output waits for its client.
    pub output_ttl: Duration,
}

/// Starts one worker per slot.
pub fn spawn_workers(ctx: Arc<WorkerContext>) {
    for _ in 0..ctx.slots.count() {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                let request = ReceiveRequest {
                    max_messages: 1,
                    wait: Duration::from_secs(20),
                    visibility: Some(ctx.visibility),
                };
                match ctx.jobs.receive(request).await {
                    Ok(messages) => {
                        for m in messages {
                            handle(&ctx, m).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "receiving jobs failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }
}

async fn handle(ctx: &WorkerContext, m: Message) {
    let job: Job = match serde_json::from_slice(&m.body) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, message = %m.id, "dropping an unreadable job");
            let _ = ctx.jobs.delete(&m.receipt).await;
            return;
        }
    };
    let span =
        tracing::info_span!("job", id = %job.id, tenant = %job.tenant, attempt = m.receive_count);
    tracing::Instrument::instrument(finish(ctx, m, job), span).await;
}

async fn finish(ctx: &WorkerContext, m: Message, job: Job) {
    let queue_ms = now_ms().saturating_sub(job.submitted_ms) as f64;
    let outcome = run(ctx, &job).await;
    if let Some(reply_to) = &job.reply_to {
        let completion = Completion {
            job_id: job.id.clone(),
            outcome,
            queue_ms,
        };
        let body = serde_json::to_vec(&completion).expect("a completion serialises");
        let sent = match ctx.replies.get(reply_to).await {
            // The requester is waiting on a live connection: a crash loses the request
            // with its connection, so the reply need not wait for the disk.
            Ok(q) => {
                q.send(OutgoingMessage::new(body).durability(Durability::Buffered))
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::error!(error = %e, reply_to, "could not send the completion");
        }
    }
    ctx.staging.remove(&job.input);
    if let Err(e) = ctx.jobs.delete(&m.receipt).await {
        tracing::warn!(error = %e, "deleting a finished job failed; it may run again");
    }
}

fn failed(status: u16, code: &str, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        status,
        code: code.to_string(),
        message: message.into(),
    }
}

async fn run(ctx: &WorkerContext, job: &Job) -> Outcome {
    let input = match ctx.staging.get(&job.input).await {
        Ok(b) => b,
        Err(e) => return failed(503, "input_lost", format!("the staged input is gone: {e}")),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (header::ACCEPT, &job.accept),
        (header::CONTENT_TYPE, &job.content_type),
    ] {
        if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.limits_header) {
        headers.insert(HeaderName::from_static(imgfleet_resize::LIMITS_HEADER), v);
    }
    let Ok(method) = http::Method::from_bytes(job.method.as_bytes()) else {
        return failed(
            400,
            "invalid_method",
            format!("`{}` is not an HTTP method", job.method),
        );
    };
    let request = InvokeRequest {
        method,
        path_and_query: job.path_and_query.clone(),
        headers,
        body: input,
    };
    let reply = match ctx.slots.submit(&job.function, request) {
        Ok(rx) => rx,
        Err(e @ SubmitError::Full { .. }) => return failed(503, "overloaded", e.to_string()),
        Err(e @ SubmitError::Closed) => return failed(503, "shutting_down", e.to_string()),
    };
    let inv = match reply.await {
        Ok(Ok((inv, _))) => inv,
        Ok(Err(e)) => {
            let (status, code) = e.status_and_code();
            if status >= 500 {
                tracing::error!(error = %e, "function failed");
            }
            return failed(status, code, e.client_message());
        }
        Err(_) => return failed(503, "shutting_down", "the host is shutting down"),
    };
    let facts = inv
        .headers
        .get(imgfleet_resize::http::FACTS_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let passed_on: Vec<(String, String)> = inv
        .headers
        .iter()
        .filter(|(n, _)| n.as_str() != imgfleet_resize::http::FACTS_HEADER)
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let output = match ctx
        .staging
        .put(inv.body, ctx.output_ttl, Keep::Volatile)
        .await
    {
        Ok(k) => k,
        Err(e) => return failed(503, "staging_full", e.to_string()),
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Outcome::Answered {
        status: inv.status.as_u16(),
        headers: passed_on,
        output,
        instantiate_ms: ms(inv.instantiate),
        wall_ms: ms(inv.wall),
        cpu_ms: ms(inv.cpu),
        facts,
    }
}
