//! Writes one audit record per API request once its response is known — and, for an
//! authenticated request, its usage record — before the response leaves; counts a tenant's
//! successful requests towards its monthly quotas.
//!
//! Architecture invariant: no response leaves without its records committed. While the log
//! cannot take writes, requests are refused before any work (`503 metering_unavailable`);
//! a response whose records fail to commit is replaced by that refusal, its output dropped.

use std::time::Instant;

use axum::body::HttpBody as _;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use imgfleet_metering::{ImageSide, UsageRecord};

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ErrorCode};
use super::request_id;
use crate::operator::telemetry;
use imgfleet_stores::audit::sqlite::AuditRecord;
use imgfleet_stores::clock::now_ms;

/// What a handler measured about its request: image facts and the invocation's times.
#[derive(Debug, Clone, Default)]
pub struct Metered {
    pub input: ImageSide,
    pub output: ImageSide,
    pub cpu_ns: u64,
    pub wall_ns: u64,
    pub queue_ns: u64,
    /// Bytes read from the tenant's origin (signed GETs).
    pub origin_bytes: u64,
    /// A signed GET answered `304 Not Modified`.
    pub not_modified: bool,
    /// A signed GET: whether its image came from the result cache.
    pub cache: Option<imgfleet_metering::CacheUse>,
}

/// Probes and scrapes are not customer requests.
fn audited(path: &str) -> bool {
    !matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// How long a client is asked to wait when the request log cannot be written: it is
/// probed twice a second, and a disk that filled up usually needs an operator.
const RETRY_UNRECORDED_SECS: u64 = 5;

fn unrecorded(reason: &str) -> Response {
    use axum::response::IntoResponse;
    metrics::counter!(telemetry::UNRECORDED_REFUSALS).increment(1);
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "metering_unavailable",
        format!("the request could not be recorded, so it was not served: {reason}"),
    )
    .retry_after(RETRY_UNRECORDED_SECS)
    .into_response()
}

pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if !audited(&path) {
        return next.run(req).await;
    }
    // Known not to be recordable: no work is done that could not be billed.
    if let Err(reason) = state.audit.health() {
        return unrecorded(&reason);
    }
    let started = Instant::now();
    let at_ms = now_ms();
    let request_id = request_id::of(&req);
    let method = req.method().to_string();
    let query = req.uri().query().map(|q| q.chars().take(2048).collect());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let resp = next.run(req).await;
    let principal = resp.extensions().get::<Principal>().cloned();
    let mut metered = resp
        .extensions()
        .get::<Metered>()
        .cloned()
        .unwrap_or_default();
    if metered.input.bytes == 0 {
        metered.input.bytes = declared;
    }
    let output_bytes = resp.body().size_hint().exact().unwrap_or(0);
    metered.output.bytes = output_bytes;
    let status = resp.status().as_u16();
    let input_bytes = metered.input.bytes;
    let pixels = metered.output.pixels();
    let record = AuditRecord {
        request_id,
        at_ms,
        tenant: principal.as_ref().map(|p| p.tenant.clone()),
        key_id: principal.as_ref().map(|p| p.key_id.clone()),
        method,
        path,
        query,
        status,
        code: resp.extensions().get::<ErrorCode>().map(|c| c.0.clone()),
        input_bytes,
        output_bytes,
        pixels,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
    };
    let route = resp
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let labels = [("route", route.clone()), ("status", status.to_string())];
    metrics::counter!(telemetry::HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(telemetry::HTTP_DURATION, &labels).record(started.elapsed().as_secs_f64());
    let usage = principal.as_ref().map(|p| UsageRecord {
        // The host's own id: request ids may come from clients and need not be unique.
        id: uuid::Uuid::now_v7().to_string(),
        request_id: record.request_id.clone(),
        tenant: p.tenant.clone(),
        key_id: p.key_id.clone(),
        at_ms,
        route: if route == "unmatched" {
            record.path.clone()
        } else {
            route.clone()
        },
        status,
        input: metered.input.clone(),
        output: metered.output.clone(),
        cpu_ns: metered.cpu_ns,
        wall_ns: metered.wall_ns,
        queue_ns: metered.queue_ns,
        origin_bytes: metered.origin_bytes,
        not_modified: metered.not_modified,
        cache: metered.cache,
    });
    if !state.audit.record(record, usage.as_ref()).await {
        let reason = state
            .audit
            .health()
            .err()
            .unwrap_or_else(|| "the audit log refused the write".into());
        tracing::error!(%reason, status, "a response was replaced: its records could not be written");
        return unrecorded(&reason);
    }
    if let Some(p) = &principal
        && status < 400
    {
        state.gate.usage.add(&p.tenant, at_ms, input_bytes, pixels);
    }
    resp
}
