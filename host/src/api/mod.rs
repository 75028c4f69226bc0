//! The HTTP tier: request ids, health, and the manifest's function routes.

pub mod admission;
mod error;
mod functions;
mod jobs;
mod request_id;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use imgfleet_resize::Limits;

pub use error::ApiError;
pub use jobs::job_message;

use crate::completions::Completions;
use crate::manifest::Manifest;
use crate::queue::Queue;
use crate::slots::Slots;
use crate::staging::Staging;

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
    pub tenant_shards: usize,
    pub shard_counter: Arc<AtomicUsize>,
    pub job_store: crate::job_store::JobStore,
    /// How long an asynchronous job's input may wait for a worker.
    pub async_input_ttl: Duration,
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
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/jobs", axum::routing::post(jobs::submit))
        .route("/v1/jobs/{id}", get(jobs::status))
        .route("/v1/jobs/{id}/output", get(jobs::output));
    for route in &state.manifest.routes {
        let path = match &route.pattern {
            crate::manifest::RoutePattern::Exact(p) => p.clone(),
            crate::manifest::RoutePattern::Prefix(p) => format!("{p}/{{*rest}}"),
        };
        router = router.route(&path, axum::routing::any(functions::invoke));
        if let crate::manifest::RoutePattern::Prefix(p) = &route.pattern {
            router = router.route(p, axum::routing::any(functions::invoke));
        }
    }
    router
        .fallback(functions::not_found)
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "status": "ok",
        "slots": state.slots.count(),
        "busy": state.slots.busy(),
        "queued": state.slots.queued(),
        "pending": state.admission.pending(),
        "staging_bytes": state.staging.used_bytes(),
    }))
}
