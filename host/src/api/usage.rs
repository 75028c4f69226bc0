//! Usage queries, from the usage store's hourly rollups: `GET /v1/usage` for the caller's
//! own tenant (there is no way to name another), `GET /admin/usage` for any. Usage is
//! eventual: a request shows up once its batch has been folded (seconds).

use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use imgfleet_metering::Rollup;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use imgfleet_stores::clock::now_ms;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
/// Keeps one answer small: at most this many buckets.
const MAX_BUCKETS: u64 = 24 * 93;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Unix milliseconds, inclusive; default: the start of this month (UTC).
    from: Option<u64>,
    /// Unix milliseconds, exclusive; default: now.
    to: Option<u64>,
    /// `hour` or `day` (default).
    #[param(inline)]
    granularity: Option<Granularity>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AdminUsageQuery {
    /// One tenant; default: every tenant with usage in the range.
    tenant: Option<String>,
    /// Unix milliseconds, inclusive; default: the start of this month (UTC).
    from: Option<u64>,
    /// Unix milliseconds, exclusive; default: now.
    to: Option<u64>,
    /// `hour` or `day` (default).
    #[param(inline)]
    granularity: Option<Granularity>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    #[default]
    Day,
}

/// A tenant's usage over a range, in buckets of the granularity.
#[derive(Serialize, utoipa::ToSchema)]
struct UsageReport {
    tenant: String,
    from: u64,
    to: u64,
    granularity: Granularity,
    buckets: Vec<Bucket>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct TenantUsage {
    tenant: String,
    buckets: Vec<Bucket>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct AdminUsageReport {
    from: u64,
    to: u64,
    granularity: Granularity,
    tenants: Vec<TenantUsage>,
}

/// One bucket: requests served (errors among them), bytes and pixels in and out, function CPU.
#[derive(Serialize, utoipa::ToSchema)]
struct Bucket {
    start_ms: u64,
    requests: u64,
    errors: u64,
    bytes_in: u64,
    bytes_out: u64,
    pixels_in: u64,
    pixels_out: u64,
    cpu_ms: f64,
}

impl From<Rollup> for Bucket {
    fn from(r: Rollup) -> Self {
        Self {
            start_ms: r.hour_ms,
            requests: r.requests,
            errors: r.errors,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            pixels_in: r.pixels_in,
            pixels_out: r.pixels_out,
            cpu_ms: r.cpu_ns as f64 / 1e6,
        }
    }
}

struct Range {
    from: u64,
    to: u64,
    granularity: Granularity,
    bucket_ms: u64,
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m)
}

fn range(
    from: Option<u64>,
    to: Option<u64>,
    granularity: Option<Granularity>,
) -> Result<Range, ApiError> {
    let now = now_ms();
    let from = from.unwrap_or_else(|| imgfleet_auth::calendar::month_start_ms(now));
    let to = to.unwrap_or(now + 1);
    let granularity = granularity.unwrap_or_default();
    let bucket_ms = match granularity {
        Granularity::Hour => HOUR_MS,
        Granularity::Day => DAY_MS,
    };
    if to <= from {
        return Err(bad("`to` must be after `from`"));
    }
    super::error::check_time("to", Some(to))?;
    if (to - from) / bucket_ms > MAX_BUCKETS {
        return Err(bad(format!(
            "at most {MAX_BUCKETS} buckets per request; narrow from/to or use days"
        )));
    }
    Ok(Range {
        from,
        to,
        granularity,
        bucket_ms,
    })
}

fn unavailable(e: imgfleet_stores::usage::UsageError) -> ApiError {
    tracing::error!(error = %e, "usage query");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "usage_unavailable",
        "usage cannot be read right now",
    )
    .retry_after(1)
}

async fn buckets(state: &AppState, tenant: &str, r: &Range) -> Result<Vec<Bucket>, ApiError> {
    // Rollups are hourly: widen `from` to its hour so the first hour is whole.
    let hourly = state
        .usage
        .rollups(tenant, r.from - r.from % HOUR_MS, r.to)
        .await
        .map_err(unavailable)?;
    Ok(imgfleet_stores::usage::bucket(&hourly, r.bucket_ms)
        .into_iter()
        .map(Bucket::from)
        .collect())
}

#[utoipa::path(get, path = "/v1/usage", tag = "usage", security(("api_key" = [])),
    params(UsageQuery),
    responses(
        (status = 200, description = "The caller's own usage (eventual: seconds behind)", body = UsageReport),
        (status = 400, description = "`invalid_request`: a bad range or granularity", body = super::openapi::ErrorBody),
        super::openapi::TenantErrors,
    ))]
pub async fn usage(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let r = range(q.from, q.to, q.granularity)?;
    let buckets = buckets(&state, &who.tenant, &r).await?;
    Ok(Json(UsageReport {
        tenant: who.tenant,
        from: r.from,
        to: r.to,
        granularity: r.granularity,
        buckets,
    })
    .into_response())
}

#[utoipa::path(get, path = "/admin/usage", tag = "admin", security(("admin_token" = [])),
    params(AdminUsageQuery),
    responses(
        (status = 200, description = "Usage per tenant", body = AdminUsageReport),
        super::openapi::AdminErrors,
    ))]
pub async fn admin_usage(
    State(state): State<AppState>,
    query: Result<Query<AdminUsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let r = range(q.from, q.to, q.granularity)?;
    let tenants = match q.tenant {
        Some(t) => vec![t],
        None => state
            .usage
            .tenants(r.from - r.from % HOUR_MS, r.to)
            .await
            .map_err(unavailable)?,
    };
    let mut out = Vec::new();
    for tenant in tenants {
        let buckets = buckets(&state, &tenant, &r).await?;
        out.push(TenantUsage { tenant, buckets });
    }
    Ok(Json(AdminUsageReport {
        from: r.from,
        to: r.to,
        granularity: r.granularity,
        tenants: out,
    })
    .into_response())
}
