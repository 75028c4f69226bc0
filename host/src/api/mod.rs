//! The HTTP tier: request ids, health, and the manifest's function routes.

mod error;
mod functions;
mod request_id;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use imgfleet_resize::Limits;

pub use error::ApiError;

use crate::manifest::Manifest;
use crate::slots::Slots;

#[derive(Clone)]
pub struct AppState {
    pub manifest: Arc<Manifest>,
    pub slots: Slots,
    pub limits: Limits,
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new().route("/healthz", get(healthz));
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
    }))
}
