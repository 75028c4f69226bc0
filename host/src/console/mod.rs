//! The web console at `/console`: a static page, its script and style, built into the binary
//! (no build step, nothing fetched from elsewhere). The page only calls the public API with
//! the credential the user types in; the host gives it nothing the API does not.
//!
//! Architecture invariant: the console has no route, privilege or data of its own: every
//! call it makes is one a client could make with the same credential.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// Only this host's own script, style and API; images from `blob:` URLs the page makes.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      img-src 'self' blob: data:; connect-src 'self'; form-action 'none'; \
                      frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The assets change with the binary: revalidate rather than keep a stale console.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[utoipa::path(get, path = "/console", tag = "console",
    responses((status = 200, description = "The web console (a single page)", content_type = "text/html")))]
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

#[utoipa::path(get, path = "/console/app.js", tag = "console",
    responses((status = 200, description = "The console's script", content_type = "text/javascript")))]
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

#[utoipa::path(get, path = "/console/app.css", tag = "console",
    responses((status = 200, description = "The console's style", content_type = "text/css")))]
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
