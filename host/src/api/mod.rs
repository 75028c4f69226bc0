//! The HTTP tier: request ids, health, and the manifest's function routes.

mod admin;
pub mod admission;
mod audit;
pub mod auth;
mod error;
mod functions;
mod hedging;
pub(crate) mod images;
mod jobs;
mod metrics;
pub(crate) mod openapi;
mod request_id;
mod usage;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use imgfleet_resize::Limits;

pub use error::ApiError;
pub use jobs::job_message;

use crate::execution::completions::Completions;
use crate::execution::manifest::Manifest;
use crate::execution::slots::Slots;
use imgfleet_queue::Queue;
use imgfleet_stores::staging::Staging;

#[derive(Clone)]
pub struct AppState {
    pub manifest: Arc<Manifest>,
    pub slots: Slots,
    pub limits: Limits,
    pub staging: Staging,
    pub jobs: Arc<dyn Queue>,
    pub completions: Completions,
    pub admission: Arc<admission::Admission>,
    pub deadline: Duration,
    /// When a request still waiting on a degraded queue sends a second copy of its job.
    pub hedge_after: Option<Duration>,
    pub hedges: Arc<hedging::Budget>,
    pub tenant_shards: usize,
    pub shard_counter: Arc<AtomicUsize>,
    pub job_store: imgfleet_stores::jobs::JobStore,
    /// How long an asynchronous job's input may wait for a worker.
    pub async_input_ttl: Duration,
    pub gate: Arc<crate::data_plane::gate::Gate>,
    pub identity: Arc<dyn imgfleet_stores::identity::IdentityStore>,
    pub audit: imgfleet_stores::audit::sqlite::AuditLog,
    pub admin_token: Arc<String>,
    pub usage: Arc<dyn imgfleet_stores::usage::UsageStore>,
    pub usage_queue: Arc<dyn Queue>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub health: Arc<crate::operator::health::Health>,
    /// Where signed GET URLs fetch their sources.
    pub origins: imgfleet_stores::origins::Origins,
    /// The resize function's build, in delivered images' ETags.
    pub resize_build: Arc<str>,
    /// Delivered images made once and served again.
    pub results: crate::delivery::cache::ResultCache,
    /// Delivered images being made, by output: identical requests wait for one.
    pub flights: Arc<crate::delivery::flight::Flights<Arc<images::make::Made>>>,
    pub host_id: Arc<str>,
}

impl AppState {
    /// Jobs of one tenant spread over `tenant_shards` groups: the queue serves groups round
    /// robin, so a tenant can use that many slots at once and never starve the others.
    pub fn next_shard(&self) -> usize {
        self.shard_counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.tenant_shards
    }
}

pub fn router(state: AppState) -> Router {
    use axum::middleware::{from_fn, from_fn_with_state};
    use utoipa::OpenApi as _;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let mut v1 = OpenApiRouter::new()
        .routes(routes!(jobs::submit))
        .routes(routes!(jobs::status))
        .routes(routes!(jobs::output))
        .routes(routes!(usage::usage));
    // Function routes come from the manifest: routed here, documented by `openapi`.
    let mut function_routes = Vec::new();
    for route in &state.manifest.routes {
        let (path, documented) = match &route.pattern {
            crate::execution::manifest::RoutePattern::Exact(p) => (p.clone(), p.clone()),
            crate::execution::manifest::RoutePattern::Prefix(p) => {
                (format!("{p}/{{*rest}}"), format!("{p}/{{rest}}"))
            }
        };
        v1 = v1.route(&path, axum::routing::any(functions::invoke));
        function_routes.push((documented, route.component.clone()));
        if let crate::execution::manifest::RoutePattern::Prefix(p) = &route.pattern {
            v1 = v1.route(p, axum::routing::any(functions::invoke));
            function_routes.push((p.clone(), route.component.clone()));
        }
    }
    // Authentication before anything else on every customer route.
    let v1 = v1.route_layer(from_fn_with_state(state.clone(), auth::require));
    let admin =
        admin::routes().route_layer(from_fn_with_state(state.clone(), admin::require_admin));
    // Signed URLs carry their own credential: no API key.
    let images = OpenApiRouter::new().route("/v1/img/{*rest}", get(images::deliver));
    let (router, routed) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics::render))
        .routes(routes!(crate::console::page))
        .routes(routes!(crate::console::script))
        .routes(routes!(crate::console::style))
        .merge(v1)
        .merge(images)
        .merge(admin)
        .split_for_parts();
    let own = {
        use utoipa::Path;
        (
            __path_openapi_json::path(),
            __path_openapi_json::operation(),
        )
    };
    let doc = openapi::document(routed, &function_routes, own);
    let doc = Arc::new(serde_json::to_vec(&doc).expect("the description serialises"));
    router
        .route("/openapi.json", get(move || openapi_json(doc.clone())))
        .fallback(functions::not_found)
        // axum adds the `Allow` header to what this answers.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn(auth::challenge))
        .layer(from_fn_with_state(state.clone(), audit::record))
        .layer(from_fn(request_id::assign))
        .with_state(state)
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route does not take {method}; `Allow` names the methods it does"),
    )
}

/// This API's OpenAPI 3.1 description (made once, when the router is).
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this host's routes",
               content_type = "application/json")))]
async fn openapi_json(doc: Arc<Vec<u8>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.as_ref().clone(),
    )
        .into_response()
}

/// `/healthz`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok`, or `failing` when a fatal problem will stop the host.
    #[schema(value_type = String, examples("ok", "failing"))]
    status: &'static str,
    problems: Vec<crate::operator::health::Problem>,
    slots: usize,
    busy: usize,
    queued: usize,
    pending: usize,
    staging_bytes: u64,
    auth_cache: AuthCacheState,
}

/// `/readyz`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Readiness {
    #[schema(value_type = String, examples("ready", "stale", "not_ready"))]
    status: &'static str,
    problems: Vec<crate::operator::health::Problem>,
    auth_cache: AuthCacheState,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct AuthCacheState {
    /// The identity store change-log version this host enforces.
    version: u64,
    /// How far behind the store it may be; none before the first sync.
    lag_ms: Option<u64>,
    /// Behind for longer than the auth SLA.
    stale: bool,
}

/// Alive and whole: every background task running and every store's writer there. A
/// host that lost one answers 503 naming it, and stops shortly after.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive and whole", body = Health),
              (status = 503, description = "A fatal problem: the host is stopping", body = Health)))]
async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let problems = state.health.problems();
    let healthy = !problems.iter().any(|p| p.fatal);
    let status = if healthy {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if healthy { "ok" } else { "failing" },
        problems,
        slots: state.slots.count(),
        busy: state.slots.busy(),
        queued: state.slots.queued(),
        pending: state.admission.pending(),
        staging_bytes: state.staging.used_bytes(),
        auth_cache: auth_cache(&state),
    };
    (status, axum::Json(body)).into_response()
}

fn auth_cache(state: &AppState) -> AuthCacheState {
    let cache = &state.gate.cache;
    AuthCacheState {
        version: cache.version(),
        lag_ms: cache.lag().map(|l| l.as_millis() as u64),
        stale: cache.stale(),
    }
}

/// Ready to take traffic: every store a request writes to takes writes, nothing has
/// stopped, and the auth cache is within its SLA of the identity store. A stale host still
/// serves (cached identities), but a load balancer should prefer fresh ones; a host whose
/// data directory cannot take writes refuses requests until it can again.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Readiness),
              (status = 503, description = "Not ready (`stale` or `not_ready`, with the problems)", body = Readiness)))]
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let stale = state.gate.cache.stale();
    let problems = state.health.problems();
    let ready = !stale && problems.is_empty();
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let label = if !problems.is_empty() {
        "not_ready"
    } else if stale {
        "stale"
    } else {
        "ready"
    };
    let body = Readiness {
        status: label,
        problems,
        auth_cache: auth_cache(&state),
    };
    (status, axum::Json(body)).into_response()
}
