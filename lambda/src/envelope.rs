//! Error answers in the API's one shape: `{"error":{"code","message"}}` with a stable code.

use lambda_http::{Body, Response};

pub fn error(status: u16, code: &str, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "error": { "code": code, "message": message.into() } }),
    )
}

pub fn json(status: u16, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Text(value.to_string()))
        .expect("a response of a valid status and header")
}

/// The code and message of an error body in the envelope's shape.
pub fn parse(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some((
        v["error"]["code"].as_str()?.to_string(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}
