//! The management plane over HTTP, under `/admin/`, behind its own credential: tenants,
//! keys, quotas and the audit log. Writes go to the identity store; the answer comes once
//! this host's auth cache enforces the change.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use imgfleet_auth::{Quota, Scope};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use imgfleet_stores::audit::sqlite::AuditQuery;
use imgfleet_stores::identity::StoreError;
use imgfleet_stores::identity::admin::{
    self as manage, NewOrigin, NewPurge, PublicKey, create_key,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/tenants", post(create_tenant).get(list_tenants))
        .route("/admin/tenants/{id}/disable", post(disable))
        .route("/admin/tenants/{id}/enable", post(enable))
        .route("/admin/tenants/{id}/quota", put(set_quota))
        .route("/admin/tenants/{id}/keys", post(new_key).get(list_keys))
        .route("/admin/keys/{key_id}/revoke", post(revoke))
        .route(
            "/admin/tenants/{id}/origins",
            post(add_origin).get(list_origins),
        )
        .route(
            "/admin/tenants/{id}/origins/{name}",
            axum::routing::delete(remove_origin),
        )
        .route(
            "/admin/tenants/{id}/url-keys",
            post(new_url_key).get(list_url_keys),
        )
        .route(
            "/admin/tenants/{id}/url-keys/{key_id}/revoke",
            post(revoke_url_key),
        )
        .route(
            "/admin/tenants/{id}/purges",
            post(add_purge).get(list_purges),
        )
        .route("/admin/audit", get(audit))
        .route("/admin/usage", get(super::usage::admin_usage))
}

/// Only the admin credential passes; a tenant's API key is refused outright.
pub async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let unauthorized = |code, message: &str| ApiError::new(StatusCode::UNAUTHORIZED, code, message);
    let Some(raw) = req.headers().get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "credential_missing",
            "send the admin token: Authorization: Bearer <token>",
        ));
    };
    let text = raw.to_str().unwrap_or("").trim();
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized(
            "credential_scheme",
            "the Authorization scheme must be Bearer",
        ));
    }
    let token = token.trim();
    if imgfleet_auth::credential::parse_key(token).is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_credential_required",
            "this is a tenant API key; the admin API takes the admin token",
        ));
    }
    let expected = state.admin_token.as_bytes();
    if !(token.len() == expected.len() && bool::from(token.as_bytes().ct_eq(expected))) {
        return Err(unauthorized(
            "admin_credential_invalid",
            "the admin token is not valid",
        ));
    }
    let matched = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let mut resp = next.run(req).await;
    if let Some(m) = matched {
        resp.extensions_mut().insert(m);
    }
    Ok(resp)
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(why) => {
            tracing::warn!(error = %why, "identity store unavailable for an admin request");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity_store_unavailable",
                "the identity store is unavailable; nothing was changed, try again shortly",
            )
            .retry_after(1)
        }
        StoreError::NotFound(m) => ApiError::not_found(m),
        StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        StoreError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the JSON body is not valid: {e}"),
        )
    })
}

/// Answers only once this host's cache has the change, so the admin's next request sees it.
async fn applied(state: &AppState, version: u64) {
    state.gate.cache.nudge();
    if !state
        .gate
        .cache
        .wait_for(version, state.gate.cache.sla())
        .await
    {
        tracing::warn!(
            version,
            "an identity change is not yet in this host's cache"
        );
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    id: String,
}

async fn create_tenant(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: NewTenant = json_body(&body)?;
    let t = state
        .identity
        .create_tenant(&req.id)
        .await
        .map_err(store_error)?;
    applied(&state, t.version).await;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

async fn list_tenants(State(state): State<AppState>) -> Result<Response, ApiError> {
    let tenants = state.identity.tenants().await.map_err(store_error)?;
    Ok(Json(serde_json::json!({ "tenants": tenants })).into_response())
}

async fn set_disabled(state: AppState, id: &str, disabled: bool) -> Result<Response, ApiError> {
    let t = state
        .identity
        .set_disabled(id, disabled)
        .await
        .map_err(store_error)?;
    applied(&state, t.version).await;
    Ok(Json(t).into_response())
}

async fn disable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(state, &id, true).await
}

async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(state, &id, false).await
}

async fn set_quota(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let quota: Quota = json_body(&body)?;
    let t = state
        .identity
        .set_quota(&id, quota)
        .await
        .map_err(store_error)?;
    applied(&state, t.version).await;
    Ok(Json(t).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewKeyRequest {
    scopes: Option<Vec<Scope>>,
    label: Option<String>,
}

async fn new_key(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewKeyRequest = json_body(&body)?;
    let created = create_key(state.identity.as_ref(), &tenant, req.scopes, req.label)
        .await
        .map_err(store_error)?;
    applied(&state, created.record.version).await;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn list_keys(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let keys: Vec<PublicKey> = state
        .identity
        .keys(&tenant)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(PublicKey::from)
        .collect();
    Ok(Json(serde_json::json!({ "keys": keys })).into_response())
}

async fn revoke(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
) -> Result<Response, ApiError> {
    let k = state
        .identity
        .revoke_key(&key_id)
        .await
        .map_err(store_error)?;
    applied(&state, k.version).await;
    Ok(Json(PublicKey::from(k)).into_response())
}

async fn add_origin(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let new: NewOrigin = json_body(&body)?;
    let o = manage::add_origin(state.identity.as_ref(), &tenant, new)
        .await
        .map_err(store_error)?;
    applied(&state, o.version).await;
    Ok((StatusCode::CREATED, Json(o)).into_response())
}

async fn list_origins(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let origins = manage::origins(state.identity.as_ref(), &tenant)
        .await
        .map_err(store_error)?;
    Ok(Json(serde_json::json!({ "origins": origins })).into_response())
}

async fn remove_origin(
    State(state): State<AppState>,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let o = manage::remove_origin(state.identity.as_ref(), &tenant, &name)
        .await
        .map_err(store_error)?;
    applied(&state, o.version).await;
    Ok(Json(o).into_response())
}

/// Cached results of the named sources become misses on every host (within the auth
/// cache's SLA; this host before the answer).
async fn add_purge(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let new: NewPurge = json_body(&body)?;
    let p = manage::purge(state.identity.as_ref(), &tenant, new)
        .await
        .map_err(store_error)?;
    applied(&state, p.version).await;
    Ok((StatusCode::CREATED, Json(p)).into_response())
}

async fn list_purges(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let purges = manage::purges(state.identity.as_ref(), &tenant)
        .await
        .map_err(store_error)?;
    Ok(Json(serde_json::json!({ "purges": purges })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewUrlKeyRequest {
    label: Option<String>,
}

async fn new_url_key(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewUrlKeyRequest = json_body(&body)?;
    let created = manage::create_url_key(state.identity.as_ref(), &tenant, req.label)
        .await
        .map_err(store_error)?;
    applied(&state, created.record.version).await;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn list_url_keys(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let keys = manage::url_keys(state.identity.as_ref(), &tenant)
        .await
        .map_err(store_error)?;
    Ok(Json(serde_json::json!({ "url_keys": keys })).into_response())
}

async fn revoke_url_key(
    State(state): State<AppState>,
    Path((tenant, key_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let k = manage::revoke_url_key(state.identity.as_ref(), &tenant, &key_id)
        .await
        .map_err(store_error)?;
    applied(&state, k.version).await;
    Ok(Json(k).into_response())
}

async fn audit(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()))?;
    let records = state.audit.query(q).await.map_err(|e| {
        tracing::error!(error = %e, "audit query");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the audit log cannot be read right now",
        )
        .retry_after(1)
    })?;
    Ok(Json(serde_json::json!({ "records": records })).into_response())
}
