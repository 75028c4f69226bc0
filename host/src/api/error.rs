//! The API's error responses: `{"error":{"code":..,"message":..}}` with a stable code.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The stable code of an error response, for the audit log.
#[derive(Debug, Clone)]
pub struct ErrorCode(pub String);

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

/// Unix milliseconds in a query: the stores keep signed 64-bit times, so a larger value is
/// refused rather than wrapped into the past.
pub fn check_time(name: &str, ms: Option<u64>) -> Result<(), ApiError> {
    match ms {
        Some(ms) if ms > i64::MAX as u64 => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("`{name}`: at most {} (Unix milliseconds)", i64::MAX),
        )),
        _ => Ok(()),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = imgfleet_resize::error::error_json(self.code, &self.message);
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        resp.extensions_mut()
            .insert(ErrorCode(self.code.to_string()));
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
