//! Serves every route of the manifest through the queue: the body is read under the size
//! limit and staged, a job goes on the jobs queue, and the request waits for its completion
//! (a worker on this or another host runs the function).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use super::AppState;
use super::audit::Metered;
use super::auth::Principal;
use super::error::ApiError;
use crate::execution::messages::queue_message;
use crate::execution::messages::{Completion, Outcome};
use imgfleet_queue::{Durability, QueueError};
use imgfleet_stores::clock::now_ms;
use imgfleet_stores::jobs::Job;
use imgfleet_stores::staging::{Keep, StagingError};

pub(super) const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

pub(super) fn header_string(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub async fn invoke(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    let Some(function) = state.manifest.route(&path).map(str::to_string) else {
        return Err(ApiError::not_found(format!("no route for {path}")));
    };
    let principal = super::auth::principal(&req)?;
    // Job ids are always the host's own: a client-chosen id (the request id may be one)
    // could collide with another tenant's job or completion.
    let id = uuid::Uuid::now_v7().to_string();
    let request_id = super::request_id::of(&req);
    tracing::Span::current().record("job", id.as_str());
    let (parts, body) = req.into_parts();
    let ticket = state.admission.admit().map_err(|wait| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "the work already waiting would take about {} ms; try again shortly",
                wait.as_millis()
            ),
        )
        .retry_after(wait.as_secs().max(1))
    })?;
    let body = read_body(&parts.headers, body, state.limits.max_input_bytes).await?;
    // One budget from here to the answer, enough for a full queue allowance plus the run
    // itself: staging, queueing, waiting and fetching the output all spend it, so a slow
    // step (a store electing a leader) cannot stretch the answer past it.
    let budget = state.deadline * 2 + Duration::from_secs(2);
    let until = tokio::time::Instant::now() + budget;
    let late = || {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_exceeded",
            format!("no result within {} ms", budget.as_millis()),
        )
    };
    let input_bytes = body.len() as u64;
    // Kept for a hedged copy, which may need the input staged again elsewhere.
    let kept = body.clone();
    let input = state
        .staging
        .put_input(body, input_ttl(&state), Keep::Volatile)
        .await
        .map_err(staging_error)?;
    // Freed by this request, not by a worker (a hedged copy of the job may still need it),
    // however the request ends: answered, refused, timed out or dropped by its client.
    let input = Staged {
        staging: &state.staging,
        key: input,
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or(path);
    let job = Job {
        reply_to: Some(state.completions.queue_name().to_string()),
        ..job_for(
            &id,
            request_id,
            principal,
            function,
            &parts,
            path_and_query,
            &input.key,
        )
    };
    let mut waiter = state.completions.wait_for(&id);
    let shard = state.next_shard();
    let message = queue_message(&job, shard)
        // The client waits on this connection: if the host dies, the request dies with it.
        .durability(Durability::Buffered);
    let first = enqueue(&state, message, &id).await.map_err(queue_error)?;
    // Staging and queueing are bounded by their own retry budgets, which fit in this one.
    let sent = super::hedging::Sent {
        job: &job,
        shard,
        id: &first,
        body: &kept,
    };
    let completion = super::hedging::await_completion(&state, &mut waiter, until, sent).await;
    drop(input);
    let Some(completion) = completion else {
        return Err(late());
    };
    if let Some(worker) = &completion.traceparent {
        tracing::Span::current().record("worker_span", worker.as_str());
    }
    drop(ticket);
    let mut resp = respond(&state, completion, until)
        .await
        .map_err(|e| e.unwrap_or_else(late))?;
    let mut metered = resp
        .extensions()
        .get::<Metered>()
        .cloned()
        .unwrap_or_default();
    metered.input.bytes = input_bytes;
    resp.extensions_mut().insert(metered);
    Ok(resp)
}

/// How long a synchronous request's input is kept staged: past the request's own budget,
/// so that no copy of its job finds it gone while the request still waits.
pub(super) fn input_ttl(state: &AppState) -> Duration {
    state.deadline * 3
}

/// A staged entry freed when dropped.
struct Staged<'a> {
    staging: &'a imgfleet_stores::staging::Staging,
    key: String,
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        self.staging.remove(&self.key);
    }
}

/// The answer a completion stands for; `Err(None)`: its output could not be fetched by
/// `until`.
async fn respond(
    state: &AppState,
    completion: Completion,
    until: tokio::time::Instant,
) -> Result<Response, Option<ApiError>> {
    let queue_ms = completion.queue_ms;
    match completion.outcome {
        Outcome::Failed {
            status,
            code,
            message,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let err = ApiError::new(status, stable_code(&code), message);
            Err(Some(if status == StatusCode::SERVICE_UNAVAILABLE {
                err.retry_after(1)
            } else {
                err
            }))
        }
        Outcome::Answered {
            status,
            headers,
            output,
            instantiate_ms,
            wall_ms,
            cpu_ms,
            facts,
        } => {
            state
                .admission
                .observe(Duration::from_secs_f64(wall_ms / 1e3));
            let fetch = state.staging.get(&output);
            let fetch = tracing::Instrument::instrument(fetch, tracing::info_span!("fetch_output"));
            let body = tokio::time::timeout_at(until, fetch).await;
            state.staging.remove(&output);
            let body = body.map_err(|_| None)?.map_err(staging_error)?;
            tracing::info!(
                status,
                queue_ms,
                wall_ms,
                cpu_ms,
                facts = facts.as_deref().unwrap_or(""),
                "served"
            );
            let (input, output) = imgfleet_stores::usage::image_sides(facts.as_deref());
            let ns = crate::metering::ns;
            let metered = Metered {
                input,
                output,
                cpu_ns: ns(cpu_ms),
                wall_ns: ns(wall_ms),
                queue_ns: ns(queue_ms),
                origin_bytes: 0,
                not_modified: false,
                cache: None,
            };
            // A function's own error body carries its stable code; the audit log keeps it.
            let code = (status >= 400)
                .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
                .flatten()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
            let mut resp = Response::new(Body::from(body));
            if let Some(code) = code {
                resp.extensions_mut().insert(super::error::ErrorCode(code));
            }
            resp.extensions_mut().insert(metered);
            *resp.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut inner_timing = None;
            for (name, value) in headers {
                let (Ok(name), Ok(value)) =
                    (HeaderName::try_from(name), HeaderValue::from_str(&value))
                else {
                    continue;
                };
                if name == SERVER_TIMING {
                    inner_timing = value.to_str().ok().map(str::to_string);
                } else {
                    resp.headers_mut().append(name, value);
                }
            }
            let mut timing = format!(
                "queue;dur={queue_ms:.3}, inst;dur={instantiate_ms:.3}, wasm;dur={wall_ms:.3}, cpu;dur={cpu_ms:.3}"
            );
            if let Some(inner) = inner_timing {
                timing = format!("{timing}, {inner}");
            }
            if let Ok(v) = HeaderValue::from_str(&timing) {
                resp.headers_mut().insert(SERVER_TIMING, v);
            }
            Ok(resp)
        }
    }
}

/// Error codes arrive as strings from the queue; the API's codes are `&'static str`. The
/// set is small and fixed, so known codes map to their constants and anything else to
/// `internal` (never an unbounded leak).
fn stable_code(code: &str) -> &'static str {
    const KNOWN: [&str; 11] = [
        "invalid_method",
        "deadline_exceeded",
        "memory_limit_exceeded",
        "function_failed",
        "not_found",
        "overloaded",
        "shutting_down",
        "staging_full",
        "staging_unavailable",
        "input_lost",
        "job_abandoned",
    ];
    KNOWN.into_iter().find(|k| *k == code).unwrap_or("internal")
}

/// Puts a job on the jobs queue, as its own span (the queue hop of a request's trace).
pub(super) async fn enqueue(
    state: &AppState,
    message: imgfleet_queue::OutgoingMessage,
    job: &str,
) -> Result<String, QueueError> {
    let span = tracing::info_span!("enqueue", queue = state.jobs.name(), job);
    tracing::Instrument::instrument(state.jobs.send(message), span).await
}

/// A job carrying an authenticated request: its ids, its caller, the function to run with
/// the request's method and content headers, and the staged input. Nobody waits for it
/// unless the caller sets `reply_to`.
pub(super) fn job_for(
    id: &str,
    request_id: String,
    principal: Principal,
    function: String,
    parts: &axum::http::request::Parts,
    path_and_query: String,
    input: &str,
) -> Job {
    Job {
        id: id.to_string(),
        tenant: principal.tenant,
        key_id: principal.key_id,
        request_id,
        function,
        method: parts.method.to_string(),
        path_and_query,
        accept: header_string(&parts.headers, header::ACCEPT),
        content_type: header_string(&parts.headers, header::CONTENT_TYPE),
        input: input.to_string(),
        reply_to: None,
        submitted_ms: now_ms(),
        traceparent: parts
            .extensions
            .get::<crate::operator::trace_context::TraceContext>()
            .map(ToString::to_string),
        hedge: false,
    }
}

/// A job the queue did not take: full is back-pressure (retry once workers catch up),
/// anything else an outage.
pub(super) fn queue_error(e: QueueError) -> ApiError {
    match e {
        QueueError::Full(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", e.to_string())
                .retry_after(2)
        }
        _ => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_unavailable",
            e.to_string(),
        )
        .retry_after(1),
    }
}

pub(super) fn staging_error(e: StagingError) -> ApiError {
    match e {
        StagingError::Full { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "staging_full",
            e.to_string(),
        )
        .retry_after(1),
        StagingError::NotFound(_) | StagingError::Damaged(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "input_lost", e.to_string())
        }
        StagingError::Io(_) => {
            tracing::error!(error = %e, "staging I/O");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "staging_unavailable",
                e.to_string(),
            )
            .retry_after(1)
        }
    }
}

pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: u64,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "input_too_large",
            format!("the body is larger than the limit of {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    match Limited::new(body, max as usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            format!("the request body could not be read: {e}"),
        )),
    }
}

pub async fn not_found() -> impl IntoResponse {
    ApiError::not_found("no such route")
}
