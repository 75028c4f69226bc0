//! Every response carries `X-Request-Id`: the client's own when it is sane, else a new
//! time-ordered UUID, so logs, traces and usage records can be joined on it. The request's
//! span also joins the client's W3C trace (`traceparent`, or a new one), which the job
//! carries on to the worker; `traceresponse` tells the client the trace and span.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use crate::operator::trace_context::{self, TraceContext};

pub const HEADER: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";
/// W3C Trace Context Level 2: the trace and the span that answered.
pub const TRACERESPONSE: &str = "traceresponse";

/// The request's id, for handlers (it also names the job and the usage record).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The id `assign` gave this request (a fresh one if the middleware did not run).
pub fn of(req: &Request) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

fn acceptable(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    // Handlers fill in who asked and which job carried it; the status when it is known.
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        tenant = tracing::field::Empty,
        job = tracing::field::Empty,
        status = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_id = tracing::field::Empty,
        worker_span = tracing::field::Empty,
        hedged = tracing::field::Empty,
    );
    let parent = req
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let trace = trace_context::enter(&span, parent);
    req.extensions_mut().insert(trace);
    let mut resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.record("status", resp.status().as_u16());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&trace.to_string()) {
        resp.headers_mut().insert(TRACERESPONSE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_short_plain_ids_are_kept() {
        assert!(super::acceptable("abc-123_x.y"));
        assert!(!super::acceptable(""));
        assert!(!super::acceptable("has space"));
        assert!(!super::acceptable(&"x".repeat(65)));
    }
}
