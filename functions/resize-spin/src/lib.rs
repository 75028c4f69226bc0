//! Thin Spin adapter: translate the Spin request into [`imgfleet_resize::http::HttpRequest`]
//! and back. All behaviour lives in `imgfleet-resize`.

#[cfg(all(target_os = "wasi", target_env = "p1"))]
mod no_threads;

use imgfleet_resize::http::{HttpRequest, handle};
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn resize(req: Request) -> anyhow::Result<impl IntoResponse> {
    let header = |name: &str| req.header(name).and_then(|v| v.as_str());
    let method = req.method().to_string();
    let resp = handle(HttpRequest {
        method: &method,
        query: req.query(),
        accept: header("accept"),
        limits: header(imgfleet_resize::LIMITS_HEADER),
        body: req.body(),
    });
    let mut builder = Response::builder();
    builder.status(resp.status);
    for (name, value) in resp.headers {
        builder.header(name, value);
    }
    Ok(builder.body(resp.body).build())
}
