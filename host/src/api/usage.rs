//! `GET /v1/usage`: the caller's own usage, from the audit log. There is no way to name
//! another tenant: the tenant is the one the API key belongs to.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use crate::jobs::now_ms;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
/// Keeps one answer small: at most this many buckets.
const MAX_BUCKETS: u64 = 24 * 93;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Unix milliseconds, inclusive; default: the start of this month (UTC).
    from: Option<u64>,
    /// Unix milliseconds, exclusive; default: now.
    to: Option<u64>,
    /// `hour` or `day` (default).
    granularity: Option<String>,
}

pub async fn usage(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m);
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let now = now_ms();
    let from = q
        .from
        .unwrap_or_else(|| imgfleet_auth::calendar::month_start_ms(now));
    let to = q.to.unwrap_or(now + 1);
    let (granularity, bucket) = match q.granularity.as_deref().unwrap_or("day") {
        "hour" => ("hour", HOUR_MS),
        "day" => ("day", DAY_MS),
        other => return Err(bad(format!("granularity `{other}`: use hour or day"))),
    };
    if to <= from {
        return Err(bad("`to` must be after `from`".into()));
    }
    if (to - from) / bucket > MAX_BUCKETS {
        return Err(bad(format!(
            "at most {MAX_BUCKETS} buckets per request; narrow from/to or use days"
        )));
    }
    let buckets = state
        .audit
        .usage(who.tenant.clone(), from, to, bucket)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "usage query");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "usage_unavailable",
                "usage cannot be read right now",
            )
            .retry_after(1)
        })?;
    Ok(Json(serde_json::json!({
        "tenant": who.tenant,
        "from": from,
        "to": to,
        "granularity": granularity,
        "buckets": buckets,
    }))
    .into_response())
}
