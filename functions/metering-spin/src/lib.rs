//! Thin Spin adapter around [`imgfleet_metering::http::handle`].

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn metering(req: Request) -> anyhow::Result<impl IntoResponse> {
    let resp = imgfleet_metering::http::handle(&req.method().to_string(), req.body());
    Ok(Response::builder()
        .status(resp.status)
        .header("content-type", "application/json")
        .body(resp.body)
        .build())
}
