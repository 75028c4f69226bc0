//! Signed GET delivery: `GET` and `HEAD /v1/img/{tenant}/{key id}-{signature}/{options}/
//! {origin}/{source path}`, what a web page's `<img src>` points at. No API key: the URL's
//! signature is the credential (see `imgfleet_auth::signed_url`). The source is fetched from
//! the tenant's origin by the host (the resize component has no network), resized by the
//! same function as `POST /v1/resize`, and answered with an `ETag` and `Cache-Control` that
//! browsers and CDNs honour; `If-None-Match` is answered `304` by revalidating the source
//! with its origin, without fetching or resizing.

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use imgfleet_auth::signed_url::{self, UrlError};
use imgfleet_resize::ResizeParams;
use imgfleet_resize::params::FormatChoice;
use imgfleet_stores::identity::OriginRecord;
use imgfleet_stores::origins::{FetchError, Fetched, Validator};

use super::AppState;
use super::audit::Metered;
use super::auth::Principal;
use super::error::ApiError;
use imgfleet_stores::origins::etag::{self, Output};

/// Errors may be retried soon: a cache must not keep them.
const ERROR_CACHE_CONTROL: &str = "no-store";

pub async fn deliver(State(state): State<AppState>, req: Request) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let (mut resp, principal) = match serve(&state, req).await {
        Ok((resp, principal)) => (resp, Some(principal)),
        Err((e, principal)) => (e.into_response(), principal),
    };
    if !resp.status().is_success() && resp.status() != StatusCode::NOT_MODIFIED {
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(ERROR_CACHE_CONTROL),
        );
    }
    if let Some(p) = principal {
        resp.extensions_mut().insert(p);
    }
    if let Some(m) = matched {
        resp.extensions_mut().insert(m);
    }
    resp
}

type Refused = (ApiError, Option<Principal>);

async fn serve(state: &AppState, req: Request) -> Result<(Response, Principal), Refused> {
    let path = req.uri().path().to_string();
    let url = signed_url::parse(&path).map_err(|e| (url_error(e), None))?;
    if req.uri().query().is_some() {
        return Err((
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_url",
                "a signed image URL has no query string: everything is in its path",
            ),
            None,
        ));
    }
    let found = state
        .gate
        .cache
        .delivery(url.tenant, url.key_id, url.origin);
    let tenant = found.tenant.ok_or_else(|| {
        (
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_tenant",
                format!("no tenant `{}`", url.tenant),
            ),
            None,
        )
    })?;
    let principal = Principal {
        tenant: tenant.id.clone(),
        key_id: format!("url:{}", url.key_id),
    };
    let refused = |e: ApiError| (e, Some(principal.clone()));
    let secret = found
        .url_key
        .filter(|k| !k.revoked)
        .and_then(|k| signed_url::unhex(&k.secret))
        .ok_or_else(|| {
            refused(ApiError::new(
                StatusCode::FORBIDDEN,
                "bad_signature",
                "the URL is signed with an unknown or revoked URL key",
            ))
        })?;
    let now_secs = imgfleet_stores::clock::now_ms() / 1000;
    url.verify(&secret, now_secs)
        .map_err(|e| refused(url_error(e)))?;
    state
        .gate
        .admit_tenant(&tenant)
        .map_err(|r| refused(super::auth::refusal(r)))?;
    let params = ResizeParams::from_query(&url.query).map_err(|e| {
        refused(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            e.message,
        ))
    })?;
    let canonical = params.canonical_query();
    if canonical != url.query {
        return Err(refused(ApiError::new(
            StatusCode::BAD_REQUEST,
            "non_canonical_url",
            format!(
                "the options must be in their canonical form, `{}` (one URL per output keeps caches whole); `imgfleet url sign` makes such URLs",
                canonical.replace('&', ",")
            ),
        )));
    }
    let origin = found.origin.filter(|o| !o.removed).ok_or_else(|| {
        refused(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_origin",
            format!("tenant `{}` has no origin `{}`", url.tenant, url.origin),
        ))
    })?;
    let (parts, _) = req.into_parts();
    let negotiated = params.format == FormatChoice::Auto;
    let accept = etag::normalised_accept(header_str(&parts.headers, header::ACCEPT));
    let output = Output {
        tenant: url.tenant,
        origin: url.origin,
        source: url.source,
        canonical_query: &canonical,
        build: &state.resize_build,
        accept: negotiated.then_some(accept.as_str()),
    };
    let known = header_str(&parts.headers, header::IF_NONE_MATCH)
        .and_then(|tags| etag::revalidating(tags, &output));
    let fetched = state
        .origins
        .fetch(&origin, url.source, known.as_ref())
        .await
        .map_err(|e| refused(fetch_error(e)))?;
    let caching = Caching {
        origin: &origin,
        negotiated,
    };
    let source = match (fetched, known) {
        (Fetched::NotModified, Some(v)) => {
            return Ok((not_modified(&output, &v, &caching, 0), principal));
        }
        (Fetched::NotModified, None) => {
            return Err(refused(fetch_error(FetchError::Origin(
                "304 to a request that named no version".into(),
            ))));
        }
        // An origin without validators is revalidated by the digest of its bytes.
        (Fetched::Source(s), Some(v)) if v == s.validator => {
            let origin_bytes = s.bytes.len() as u64;
            return Ok((not_modified(&output, &v, &caching, origin_bytes), principal));
        }
        (Fetched::Source(s), _) => s,
    };
    let origin_bytes = source.bytes.len() as u64;
    let mut inner = Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/resize?{canonical}"))
        .header(header::CONTENT_LENGTH, origin_bytes);
    if let Some(accept) = parts.headers.get(header::ACCEPT) {
        inner = inner.header(header::ACCEPT, accept);
    }
    let mut inner = inner.body(Body::from(source.bytes)).map_err(|e| {
        refused(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        ))
    })?;
    inner.extensions_mut().insert(principal.clone());
    // The same request id on the job, for traces joined across the hop.
    if let Some(id) = parts.extensions.get::<super::request_id::RequestId>() {
        inner.extensions_mut().insert(id.clone());
    }
    let mut resp = super::functions::invoke(State(state.clone()), inner)
        .await
        .map_err(refused)?;
    let mut metered = resp
        .extensions()
        .get::<Metered>()
        .cloned()
        .unwrap_or_default();
    metered.origin_bytes = origin_bytes;
    resp.extensions_mut().insert(metered);
    if resp.status() == StatusCode::OK {
        let tag = etag::etag(&output, &source.validator);
        caching.apply(resp.headers_mut(), &tag);
    }
    Ok((resp, principal))
}

struct Caching<'a> {
    origin: &'a OriginRecord,
    negotiated: bool,
}

impl Caching<'_> {
    fn apply(&self, headers: &mut HeaderMap, tag: &str) {
        if let Ok(v) = HeaderValue::from_str(tag) {
            headers.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.origin.cache.cache_control()) {
            headers.insert(header::CACHE_CONTROL, v);
        }
        if self.negotiated {
            headers.insert(header::VARY, HeaderValue::from_static("Accept"));
        }
    }
}

fn not_modified(
    output: &Output<'_>,
    validator: &Validator,
    caching: &Caching<'_>,
    origin_bytes: u64,
) -> Response {
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    caching.apply(resp.headers_mut(), &etag::etag(output, validator));
    resp.extensions_mut().insert(Metered {
        origin_bytes,
        not_modified: true,
        ..Metered::default()
    });
    resp
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn url_error(e: UrlError) -> ApiError {
    match e {
        UrlError::Malformed(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_url", e.to_string())
        }
        UrlError::BadSignature => {
            ApiError::new(StatusCode::FORBIDDEN, "bad_signature", e.to_string())
        }
        UrlError::Expired { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "url_expired", e.to_string())
        }
    }
}

fn fetch_error(e: FetchError) -> ApiError {
    let (status, code) = e.status_and_code();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    ApiError::new(status, code, e.to_string())
}
