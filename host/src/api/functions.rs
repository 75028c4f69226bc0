//! Serves every route of the manifest by invoking its component in a slot: the request
//! body is read under the size limit, the host's limits travel to the function in a
//! header, and the function's cost facts come back in one (stripped before replying).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use imgfleet_resize::LIMITS_HEADER;
use imgfleet_resize::http::{FACTS_HEADER, Facts};

use super::AppState;
use super::error::ApiError;
use crate::runtime::{InvokeError, InvokeRequest};
use crate::slots::SubmitError;

/// Request headers a function may see; everything else (credentials included) stays in the host.
const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

const FORWARDED: [HeaderName; 2] = [header::ACCEPT, header::CONTENT_TYPE];

pub async fn invoke(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    let Some(function) = state.manifest.route(&path).map(str::to_string) else {
        return Err(ApiError::not_found(format!("no route for {path}")));
    };
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, state.limits.max_input_bytes).await?;

    let mut headers = HeaderMap::new();
    for name in FORWARDED {
        if let Some(v) = parts.headers.get(&name) {
            headers.insert(name, v.clone());
        }
    }
    headers.insert(
        HeaderName::from_static(LIMITS_HEADER),
        HeaderValue::from_str(&state.limits.to_header()).expect("limits header is ASCII"),
    );
    let request = InvokeRequest {
        method: parts.method,
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or(path),
        headers,
        body,
    };
    let reply = state
        .slots
        .submit(&function, request)
        .map_err(|e| match e {
            SubmitError::Full { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
                    .retry_after(1)
            }
            SubmitError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
        })?;
    let (inv, waited) = reply
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the host is shutting down",
            )
        })?
        .map_err(invoke_error)?;

    let facts = inv
        .headers
        .get(FACTS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(Facts::parse);
    tracing::info!(
        function,
        status = inv.status.as_u16(),
        queue_ms = waited.as_secs_f64() * 1e3,
        wall_ms = inv.wall.as_secs_f64() * 1e3,
        cpu_ms = inv.cpu.as_secs_f64() * 1e3,
        facts = ?facts,
        "invoked"
    );
    let mut resp = Response::new(Body::from(inv.body));
    *resp.status_mut() = inv.status;
    for (name, value) in inv.headers.iter() {
        if name.as_str() != FACTS_HEADER && name != SERVER_TIMING {
            resp.headers_mut().append(name, value.clone());
        }
    }
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let mut timing = format!(
        "queue;dur={:.3}, inst;dur={:.3}, wasm;dur={:.3}, cpu;dur={:.3}",
        ms(waited),
        ms(inv.instantiate),
        ms(inv.wall),
        ms(inv.cpu)
    );
    if let Some(inner) = inv.headers.get(SERVER_TIMING).and_then(|v| v.to_str().ok()) {
        timing = format!("{timing}, {inner}");
    }
    if let Ok(v) = HeaderValue::from_str(&timing) {
        resp.headers_mut().insert(SERVER_TIMING, v);
    }
    Ok(resp)
}

async fn read_body(headers: &HeaderMap, body: Body, max: u64) -> Result<Bytes, ApiError> {
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

fn invoke_error(e: InvokeError) -> ApiError {
    match e {
        InvokeError::DeadlineExceeded(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_exceeded",
            e.to_string(),
        ),
        InvokeError::MemoryLimitExceeded(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "memory_limit_exceeded",
            e.to_string(),
        ),
        InvokeError::UnknownFunction(_) => ApiError::not_found(e.to_string()),
        // The details (a wasm backtrace) go to the log, not to the client.
        InvokeError::Trapped(_) | InvokeError::NoResponse => {
            tracing::error!(error = %e, "function failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "function_failed",
                "the function failed; the host log has the details under this request id",
            )
        }
        InvokeError::Host(_) => {
            tracing::error!(error = %e, "host failure");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; the host log has the details under this request id",
            )
        }
    }
}

pub async fn not_found() -> impl IntoResponse {
    ApiError::not_found("no such route")
}
