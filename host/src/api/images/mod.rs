//! Signed GET delivery: `GET` and `HEAD /v1/img/{tenant}/{key id}-{signature}/{options}/
//! {origin}/{source path}`, what a web page's `<img src>` points at. No API key: the URL's
//! signature is the credential (see `imgfleet_auth::signed_url`). The source is fetched from
//! the tenant's origin by the host (the resize component has no network), resized by the
//! same function as `POST /v1/resize`, and answered with an `ETag` and `Cache-Control` that
//! browsers and CDNs honour; `If-None-Match` is answered `304` by revalidating the source
//! with its origin, without fetching or resizing.
//!
//! Results are cached (`delivery/cache.rs`): while the source's version is fresh (within the
//! origin's max-age of the origin confirming it), a request is answered from the cache with
//! no origin contact; otherwise one flight per output (`make.rs`) revalidates the source and
//! resizes only what changed, and identical requests arriving meanwhile wait for it.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use imgfleet_auth::signed_url::{self, UrlError};
use imgfleet_metering::CacheUse;
use imgfleet_resize::ResizeParams;
use imgfleet_resize::params::FormatChoice;
use imgfleet_stores::identity::OriginRecord;
use imgfleet_stores::origins::etag::{self, Output};
use imgfleet_stores::origins::{FetchError, Validator};
use imgfleet_stores::results::{Entry, Header, Kind, Subject};

use super::AppState;
use super::audit::Metered;
use super::auth::Principal;
use super::error::ApiError;
use super::request_id::RequestId;

pub mod make;

use make::{Conditional, Made, Making, OwnedOutput};

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
    let output = OwnedOutput {
        subject: Subject {
            tenant: url.tenant.to_string(),
            origin: url.origin.to_string(),
            path: url.source.to_string(),
        },
        canonical_query: canonical,
        build: state.resize_build.clone(),
        accept: negotiated
            .then(|| etag::normalised_accept(header_str(&parts.headers, header::ACCEPT))),
    };
    let caching = Caching {
        origin: &origin,
        negotiated,
    };
    let view = output.view();
    let known = header_str(&parts.headers, header::IF_NONE_MATCH)
        .and_then(|tags| etag::revalidating(tags, &view));
    let source = state.results.source(&output.subject).await;
    // Within the origin's max-age of its last confirmation, the version is taken as
    // current, as browsers and CDNs take the image made from it.
    let stored = source
        .as_ref()
        .and_then(|s| Validator::decode(&s.validator));
    let fresh = source
        .as_ref()
        .is_some_and(|s| fresh(s, &origin, imgfleet_stores::clock::now_ms()));
    // What the flight asks the origin: whether the version whose result is cached is
    // still current (a stale one); else whether the client's own version is (a 304 needs
    // no resize); else nothing (the source's bytes are needed anyway).
    let mut conditional_on = None;
    if let Some(v) = stored {
        if fresh && known.as_ref() == Some(&v) {
            let hit = Metered {
                cache: Some(CacheUse::Hit),
                ..Metered::default()
            };
            return Ok((not_modified(&view, &v, &caching, hit), principal));
        }
        if let Some(entry) = state.results.get(&etag::result_key(&view, &v)).await {
            if fresh {
                let metered = make::metered_hit(&entry, CacheUse::Hit);
                let resp = image_response(entry, &view, &v, &caching, metered, None);
                return Ok((resp, principal));
            }
            conditional_on = Some(Conditional::Cached(v));
        }
    }
    if conditional_on.is_none() {
        conditional_on = known.clone().map(Conditional::Client);
    }
    // Requests revalidating their own version share a flight only with the same version.
    let flight_key = match &conditional_on {
        Some(Conditional::Client(v)) => format!("{}/{}", etag::output_key(&view), v.encode()),
        _ => etag::output_key(&view),
    };
    let making = Making {
        state: state.clone(),
        origin: origin.clone(),
        accept_header: parts.headers.get(header::ACCEPT).cloned(),
        conditional_on,
        principal: principal.clone(),
        request_id: parts.extensions.get::<RequestId>().cloned(),
        output: output.clone(),
    };
    let seat = state.flights.join(&flight_key, move || making.run());
    let started = seat.started;
    // Two fetches (a revalidation that finds its result gone, then the source) and a resize.
    let budget = state.origins.limits.total * 2 + state.deadline * 2 + Duration::from_secs(2);
    let made = seat
        .outcome(tokio::time::Instant::now() + budget)
        .await
        .ok_or_else(|| {
            refused(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
                format!("no result within {} ms", budget.as_millis()),
            ))
        })?;
    let view = output.view();
    match made.as_ref() {
        Made::Image {
            entry,
            validator,
            metered,
            timing,
            ..
        } => {
            // Requests that joined the flight are served its result: hits of their own.
            let metered = if started {
                metered.clone()
            } else {
                make::metered_hit(entry, CacheUse::Hit)
            };
            if known.as_ref() == Some(validator) {
                return Ok((not_modified(&view, validator, &caching, metered), principal));
            }
            let timing = if started { timing.clone() } else { None };
            let resp = image_response(entry.clone(), &view, validator, &caching, metered, timing);
            Ok((resp, principal))
        }
        Made::Answer {
            status,
            headers,
            body,
            metered,
            code,
        } => {
            let mut resp = Response::new(Body::from(body.clone()));
            *resp.status_mut() = *status;
            *resp.headers_mut() = headers.clone();
            if started {
                resp.extensions_mut().insert(metered.clone());
            }
            if let Some(code) = code {
                resp.extensions_mut().insert(code.clone());
            }
            Ok((resp, principal))
        }
        Made::Unchanged(v) => {
            let metered = if started {
                Metered::default()
            } else {
                Metered {
                    cache: Some(CacheUse::Hit),
                    ..Metered::default()
                }
            };
            Ok((not_modified(&view, v, &caching, metered), principal))
        }
        Made::Failed(e) => Err(refused(e.clone())),
    }
}

/// Whether a source version confirmed by its origin may still be taken as current.
fn fresh(source: &Header, origin: &OriginRecord, now_ms: u64) -> bool {
    let Kind::Source { checked_ms } = source.kind else {
        return false;
    };
    origin.cache.immutable
        || now_ms < checked_ms.saturating_add(origin.cache.max_age_secs.saturating_mul(1000))
}

fn image_response(
    entry: Entry,
    output: &Output<'_>,
    validator: &Validator,
    caching: &Caching<'_>,
    metered: Metered,
    timing: Option<String>,
) -> Response {
    let content_type = match &entry.header.kind {
        Kind::Result { content_type, .. } => content_type.clone(),
        Kind::Source { .. } => "application/octet-stream".into(),
    };
    let how = metered.cache.map_or("miss", CacheUse::as_str);
    let mut resp = Response::new(Body::from(entry.body));
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let timing = match timing {
        Some(t) => format!("{t}, cache;desc={how}"),
        None => format!("cache;desc={how}"),
    };
    if let Ok(v) = HeaderValue::from_str(&timing) {
        headers.insert(super::functions::SERVER_TIMING, v);
    }
    caching.apply(headers, &etag::etag(output, validator));
    resp.extensions_mut().insert(metered);
    resp
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
    metered: Metered,
) -> Response {
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    caching.apply(resp.headers_mut(), &etag::etag(output, validator));
    resp.extensions_mut().insert(Metered {
        not_modified: true,
        ..metered
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

pub(super) fn fetch_error(e: FetchError) -> ApiError {
    let (status, code) = e.status_and_code();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    ApiError::new(status, code, e.to_string())
}
