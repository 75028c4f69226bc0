//! Asynchronous jobs: `POST /v1/jobs` accepts (202) once the job is durable, `GET
//! /v1/jobs/{id}` tells its state, `GET /v1/jobs/{id}/output` returns the result until it
//! expires. Another tenant's job answers 404, exactly like a job that does not exist.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::AppState;
use super::audit::Metered;
use super::auth::{Principal, principal};
use super::error::ApiError;
use super::functions::{enqueue, job_for, queue_error, read_body, staging_error};
use crate::execution::messages::queue_message;
use imgfleet_queue::OutgoingMessage;
use imgfleet_stores::clock::now_ms;
use imgfleet_stores::jobs::Job;
use imgfleet_stores::jobs::{JobRecord, JobStatus};
use imgfleet_stores::staging::Keep;

/// The function behind `/v1/jobs`: the one serving `/v1/resize`.
const JOB_ROUTE: &str = "/v1/resize";

fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        e.to_string(),
    )
    .retry_after(1)
}

/// What `POST /v1/jobs` answers once the job is durable.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct JobAccepted {
    id: String,
    /// Always `queued`.
    status: &'static str,
    status_url: String,
}

/// A job's state; the fields after `finished_ms` depend on it.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct JobState {
    id: String,
    #[schema(value_type = String, examples("queued", "done", "failed"))]
    status: &'static str,
    created_ms: u64,
    finished_ms: Option<u64>,
    /// The function's status (done, failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    /// Where the output is (done).
    #[serde(skip_serializing_if = "Option::is_none")]
    output_url: Option<String>,
    /// When the output goes (done).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
    /// Whether it has gone (done).
    #[serde(skip_serializing_if = "Option::is_none")]
    expired: Option<bool>,
    /// Why it failed (failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<JobError>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct JobError {
    code: Option<String>,
    message: Option<String>,
}

#[utoipa::path(post, path = "/v1/jobs", tag = "resize", security(("api_key" = [])),
    summary = "Queue a resize",
    description = "Takes the parameters of `POST /v1/resize`; answers once the job and its input are \
                   durable. What the resize function would refuse before decoding (parameters, \
                   format, size, pixel and output limits) is refused here, at once.",
    params(super::openapi::ResizeQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The image"),
    responses(
        (status = 202, description = "Queued", body = JobAccepted,
         headers(("Location" = String, description = "The job's status URL"))),
        (status = 404, description = "`not_found`: this deployment has no resize function", body = super::openapi::ErrorBody),
        super::openapi::ResizeErrors,
        super::openapi::TenantErrors,
    ))]
pub async fn submit(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let Some(function) = state.manifest.route(JOB_ROUTE).map(str::to_string) else {
        return Err(ApiError::not_found(
            "this deployment has no resize function",
        ));
    };
    let principal = principal(&req)?;
    // Never the client's request id: job ids must not be choosable (see functions.rs).
    let id = uuid::Uuid::now_v7().to_string();
    let request_id = super::request_id::of(&req);
    tracing::Span::current().record("job", id.as_str());
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, state.limits.max_input_bytes).await?;
    if function == crate::execution::manifest::RESIZE_COMPONENT {
        imgfleet_resize::pipeline::precheck(&body, parts.uri.query().unwrap_or(""), &state.limits)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                    e.code.as_str(),
                    e.message,
                )
            })?;
    }
    let input_bytes = body.len() as u64;
    let input = state
        .staging
        .put_input(body, state.async_input_ttl, Keep::Durable)
        .await
        .map_err(staging_error)?;
    let path_and_query = format!("{JOB_ROUTE}?{}", parts.uri.query().unwrap_or(""));
    let job = job_for(
        &id,
        request_id,
        principal,
        function,
        &parts,
        path_and_query,
        &input,
    );
    // The record first: if the process dies before the message is queued, start-up
    // queues it again from the record.
    if let Err(e) = state.job_store.insert(&job).await {
        state.staging.remove(&input);
        return Err(store_error(e));
    }
    let shard = state.next_shard();
    let first = match enqueue(&state, job_message(&job, shard), &id).await {
        Ok(first) => first,
        Err(e) => {
            // Not accepted after all: the client is told so and may retry, so the job must not
            // run later behind its back (a crash right here leaves it to start-up, which
            // queues it: at worst it runs once without the client knowing).
            tracing::warn!(error = %e, "queueing a job failed; refused");
            if let Err(e) = state.job_store.forget(&id).await {
                tracing::warn!(error = %e, "forgetting a refused job; start-up will queue it");
            }
            state.staging.remove(&input);
            return Err(queue_error(e));
        }
    };
    super::hedging::watch_async(&state, job, shard, first);
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(JobAccepted {
            id: id.clone(),
            status: "queued",
            status_url: format!("/v1/jobs/{id}"),
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    let mut metered = Metered::default();
    metered.input.bytes = input_bytes;
    resp.extensions_mut().insert(metered);
    Ok(resp)
}

/// The queue message of an accepted job: durable, de-duplicated by job id.
pub fn job_message(job: &Job, shard: usize) -> OutgoingMessage {
    queue_message(job, shard).dedup_id(job.id.clone())
}

/// The caller's own job; another tenant's is reported exactly like a missing one.
async fn find(state: &AppState, id: &str, tenant: &str) -> Result<JobRecord, ApiError> {
    state
        .job_store
        .get(id, tenant)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "resize", security(("api_key" = [])),
    params(("id" = String, Path, description = "The job's id, as `POST /v1/jobs` gave it")),
    responses(
        (status = 200, description = "The job's state", body = JobState),
        (status = 404, description = "`not_found`: no such job of this tenant", body = super::openapi::ErrorBody),
        super::openapi::TenantErrors,
    ))]
pub async fn status(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = find(&state, &id, &who.tenant).await?;
    let expired = r.expires_ms.is_some_and(|e| e <= now_ms());
    let mut body = JobState {
        id: r.job.id.clone(),
        status: r.status.as_str(),
        created_ms: r.created_ms,
        finished_ms: r.finished_ms,
        http_status: None,
        output_url: None,
        expires_ms: None,
        expired: None,
        error: None,
    };
    match r.status {
        JobStatus::Done => {
            body.http_status = r.http_status;
            body.output_url = Some(format!("/v1/jobs/{}/output", r.job.id));
            body.expires_ms = r.expires_ms;
            body.expired = Some(expired);
        }
        JobStatus::Failed => {
            body.http_status = r.http_status;
            body.error = Some(JobError {
                code: r.error_code,
                message: r.error_message,
            });
        }
        JobStatus::Queued => {}
    }
    Ok(Json(body).into_response())
}

#[utoipa::path(get, path = "/v1/jobs/{id}/output", tag = "resize", security(("api_key" = [])),
    params(("id" = String, Path, description = "The job's id, as `POST /v1/jobs` gave it")),
    responses(
        (status = 200, description = "The resized image",
         content((Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/webp"), (Vec<u8> = "image/avif"))),
        (status = 404, description = "`not_found`: no such job of this tenant", body = super::openapi::ErrorBody),
        (status = 409, description = "`not_ready`: the job has not finished", body = super::openapi::ErrorBody),
        (status = 410, description = "`output_expired`", body = super::openapi::ErrorBody),
        super::openapi::ResizeErrors,
        super::openapi::TenantErrors,
    ))]
pub async fn output(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = find(&state, &id, &who.tenant).await?;
    match r.status {
        JobStatus::Queued => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            "the job has not finished yet",
        )),
        JobStatus::Failed => Err(ApiError::new(
            StatusCode::from_u16(r.http_status.unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "job_failed",
            r.error_message.unwrap_or_else(|| "the job failed".into()),
        )),
        JobStatus::Done => {
            let gone = || {
                ApiError::new(
                    StatusCode::GONE,
                    "output_expired",
                    "the output has expired; submit the job again",
                )
            };
            if r.expires_ms.is_some_and(|e| e <= now_ms()) {
                return Err(gone());
            }
            let key = r.output.ok_or_else(gone)?;
            let bytes = state.staging.get(&key).await.map_err(|_| gone())?;
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() =
                StatusCode::from_u16(r.http_status.unwrap_or(200)).unwrap_or(StatusCode::OK);
            if let Some(ct) = r.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            Ok(resp)
        }
    }
}
