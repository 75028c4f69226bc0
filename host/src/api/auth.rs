//! Authentication of `/v1` requests: the gate decides before anything else happens; the
//! tenant it names travels with the request (handlers filter by it) and with the response
//! (the audit log records it).

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use imgfleet_auth::Scope;

use super::AppState;
use super::error::ApiError;
use crate::data_plane::gate::Refusal;

/// Who a request is from, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub key_id: String,
}

/// The authenticated caller of a request that passed [`require`].
pub fn principal(req: &Request) -> Result<Principal, ApiError> {
    req.extensions().get::<Principal>().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "credential_missing",
            "this endpoint needs an API key",
        )
    })
}

/// The scope a path needs.
pub fn scope_for(path: &str) -> Scope {
    if path.starts_with("/v1/jobs") {
        Scope::Jobs
    } else if path.starts_with("/v1/usage") {
        Scope::Usage
    } else {
        Scope::Resize
    }
}

pub async fn require(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let scope = scope_for(req.uri().path());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    // The route template (`/v1/jobs/{id}`), for metrics and usage: routing has happened.
    let matched = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let checking = tracing::info_span!("auth", scope = ?scope, tenant = tracing::field::Empty);
    let checked =
        tracing::Instrument::instrument(state.gate.check(authorization, scope), checking.clone())
            .await;
    if let Ok(g) = &checked {
        checking.record("tenant", g.tenant.as_str());
        tracing::Span::current().record("tenant", g.tenant.as_str());
    }
    let grant = match checked {
        Ok(g) => g,
        Err(r) => {
            let mut resp = refusal(r).into_response();
            if let Some(m) = matched {
                resp.extensions_mut().insert(m);
            }
            return Ok(resp);
        }
    };
    let auth_ms = started.elapsed().as_secs_f64() * 1e3;
    let principal = Principal {
        tenant: grant.tenant,
        key_id: grant.key_id,
    };
    req.extensions_mut().insert(principal.clone());
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(principal);
    if let Some(m) = matched {
        resp.extensions_mut().insert(m);
    }
    let timing = match resp.headers().get(super::functions::SERVER_TIMING) {
        Some(inner) => format!("auth;dur={auth_ms:.3}, {}", inner.to_str().unwrap_or("")),
        None => format!("auth;dur={auth_ms:.3}"),
    };
    if let Ok(v) = HeaderValue::from_str(&timing) {
        resp.headers_mut()
            .insert(super::functions::SERVER_TIMING, v);
    }
    Ok(resp)
}

pub fn refusal(r: Refusal) -> ApiError {
    match r {
        Refusal::Denied(d) => {
            let status = StatusCode::from_u16(d.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let err = ApiError::new(status, d.code(), d.message());
            match d {
                imgfleet_auth::Denial::QuotaExceeded(_) => {
                    let now = imgfleet_stores::clock::now_ms();
                    let next = imgfleet_auth::calendar::next_month_start_ms(now);
                    err.retry_after((next - now).div_ceil(1000))
                }
                _ => err,
            }
        }
        Refusal::RateLimited { retry_after_ms } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "the account's request rate limit is reached; slow down",
        )
        .retry_after(retry_after_ms.div_ceil(1000).max(1)),
        Refusal::Unavailable(why) => {
            tracing::error!(error = %why, "authentication unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "requests cannot be authenticated right now; try again shortly",
            )
            .retry_after(1)
        }
    }
}

/// A `WWW-Authenticate` challenge for 401s, as RFC 6750 asks.
pub async fn challenge(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"imgfleet\""),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_scope_they_need() {
        assert_eq!(scope_for("/v1/resize"), Scope::Resize);
        assert_eq!(scope_for("/v1/jobs"), Scope::Jobs);
        assert_eq!(scope_for("/v1/jobs/x/output"), Scope::Jobs);
        assert_eq!(scope_for("/v1/usage"), Scope::Usage);
        assert_eq!(scope_for("/hog/x"), Scope::Resize);
    }
}
