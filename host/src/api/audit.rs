//! Writes one audit record per API request once its response is known, and counts a
//! tenant's successful requests towards its monthly quotas.

use std::time::Instant;

use axum::body::HttpBody as _;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::auth::Principal;
use super::error::ErrorCode;
use super::request_id;
use crate::audit::AuditRecord;
use crate::jobs::now_ms;

/// Sizes a handler measured itself (a streamed body has no Content-Length).
#[derive(Debug, Clone, Copy, Default)]
pub struct Metered {
    pub input_bytes: u64,
    pub pixels: u64,
}

/// Probes and scrapes are not customer requests.
fn audited(path: &str) -> bool {
    !matches!(path, "/healthz" | "/readyz" | "/metrics")
}

pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if !audited(&path) {
        return next.run(req).await;
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
    let metered = resp.extensions().get::<Metered>().copied();
    let status = resp.status().as_u16();
    let input_bytes = metered.map_or(declared, |m| m.input_bytes);
    let pixels = metered.map_or(0, |m| m.pixels);
    if let Some(p) = &principal
        && status < 400
    {
        state.gate.usage.add(&p.tenant, at_ms, input_bytes, pixels);
    }
    let record = AuditRecord {
        request_id,
        at_ms,
        tenant: principal.as_ref().map(|p| p.tenant.clone()),
        key_id: principal.map(|p| p.key_id),
        method,
        path,
        query,
        status,
        code: resp.extensions().get::<ErrorCode>().map(|c| c.0.clone()),
        input_bytes,
        output_bytes: resp.body().size_hint().exact().unwrap_or(0),
        pixels,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
    };
    if !state.audit.record(record).await {
        tracing::error!("an audit record could not be written");
    }
    resp
}
