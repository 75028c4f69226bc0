//! The management plane over HTTP, under `/admin/`, behind its own credential: tenants,
//! keys, quotas and the audit log. Writes go to the identity store; the answer comes once
//! this host's auth cache enforces the change.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use imgfleet_auth::{Quota, Scope, TenantRecord};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::openapi::{AdminErrors, AdminLookupErrors};
use imgfleet_stores::audit::sqlite::{AuditQuery, AuditRecord};
use imgfleet_stores::identity::StoreError;
use imgfleet_stores::identity::admin::{
    self as manage, CreatedKey, CreatedUrlKey, NewOrigin, NewPurge, PublicKey, PublicUrlKey,
    create_key,
};
use imgfleet_stores::identity::{OriginRecord, PurgeRecord};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(disable))
        .routes(routes!(enable))
        .routes(routes!(set_quota))
        .routes(routes!(new_key, list_keys))
        .routes(routes!(revoke))
        .routes(routes!(add_origin, list_origins))
        .routes(routes!(remove_origin))
        .routes(routes!(new_url_key, list_url_keys))
        .routes(routes!(revoke_url_key))
        .routes(routes!(add_purge, list_purges))
        .routes(routes!(audit))
        .routes(routes!(super::usage::admin_usage))
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
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send a JSON body (Content-Type: application/json)",
        ));
    }
    let invalid = |e: serde_json::Error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the JSON body is not valid: {e}"),
        )
    };
    // serde also reads a struct from an array of its fields in order; the API takes objects.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(invalid)?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the JSON body must be an object",
        ));
    }
    serde_json::from_value(value).map_err(invalid)
}

/// For requests whose every field has a default: no body means all defaults.
fn optional_json_body<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    json_body(body)
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
#[derive(utoipa::ToSchema)]
struct NewTenant {
    id: String,
}

#[utoipa::path(post, path = "/admin/tenants", tag = "admin", security(("admin_token" = [])),
    request_body = NewTenant,
    responses((status = 201, description = "Created", body = TenantRecord), AdminLookupErrors, AdminErrors))]
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

#[utoipa::path(get, path = "/admin/tenants", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, description = "Every tenant", body = TenantList), AdminErrors))]
async fn list_tenants(State(state): State<AppState>) -> Result<Response, ApiError> {
    let tenants = state.identity.tenants().await.map_err(store_error)?;
    Ok(Json(TenantList { tenants }).into_response())
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

#[utoipa::path(post, path = "/admin/tenants/{id}/disable", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Disabled on every host within the auth SLA", body = TenantRecord), AdminLookupErrors, AdminErrors))]
async fn disable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(state, &id, true).await
}

#[utoipa::path(post, path = "/admin/tenants/{id}/enable", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "Enabled", body = TenantRecord), AdminLookupErrors, AdminErrors))]
async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(state, &id, false).await
}

#[utoipa::path(put, path = "/admin/tenants/{id}/quota", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id")), request_body = Quota,
    responses((status = 200, description = "The tenant with its new limits", body = TenantRecord), AdminLookupErrors, AdminErrors))]
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
#[derive(utoipa::ToSchema)]
struct NewKeyRequest {
    scopes: Option<Vec<Scope>>,
    label: Option<String>,
}

#[utoipa::path(post, path = "/admin/tenants/{id}/keys", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id")), request_body(content = Option<NewKeyRequest>, description = "Optional: scopes (default: all) and a label"),
    responses((status = 201, description = "The key; `api_key` is shown this once", body = CreatedKey), AdminLookupErrors, AdminErrors))]
async fn new_key(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewKeyRequest = optional_json_body(&body)?;
    let created = create_key(state.identity.as_ref(), &tenant, req.scopes, req.label)
        .await
        .map_err(store_error)?;
    applied(&state, created.record.version).await;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[utoipa::path(get, path = "/admin/tenants/{id}/keys", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "The tenant's keys, without secrets", body = KeyList), AdminLookupErrors, AdminErrors))]
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
    Ok(Json(KeyList { keys }).into_response())
}

#[utoipa::path(post, path = "/admin/keys/{key_id}/revoke", tag = "admin", security(("admin_token" = [])),
    params(("key_id" = String, Path, description = "The key's id (16 hex digits)")),
    responses((status = 200, description = "Revoked on every host within the auth SLA", body = PublicKey), AdminLookupErrors, AdminErrors))]
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

#[utoipa::path(post, path = "/admin/tenants/{id}/origins", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id")), request_body = NewOrigin,
    responses((status = 201, description = "Added", body = OriginRecord), AdminLookupErrors, AdminErrors))]
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

#[utoipa::path(get, path = "/admin/tenants/{id}/origins", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "The tenant's origins", body = OriginList), AdminLookupErrors, AdminErrors))]
async fn list_origins(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let origins = manage::origins(state.identity.as_ref(), &tenant)
        .await
        .map_err(store_error)?;
    Ok(Json(OriginList { origins }).into_response())
}

#[utoipa::path(delete, path = "/admin/tenants/{id}/origins/{name}", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id"), ("name" = String, Path, description = "The origin's name")),
    responses((status = 200, description = "Removed (kept as a tombstone)", body = OriginRecord), AdminLookupErrors, AdminErrors))]
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

#[utoipa::path(post, path = "/admin/tenants/{id}/purges", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id")), request_body = NewPurge,
    responses((status = 201, description = "In force on every host within the auth SLA", body = PurgeRecord), AdminLookupErrors, AdminErrors))]
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

#[utoipa::path(get, path = "/admin/tenants/{id}/purges", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "The tenant's purges", body = PurgeList), AdminLookupErrors, AdminErrors))]
async fn list_purges(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let purges = manage::purges(state.identity.as_ref(), &tenant)
        .await
        .map_err(store_error)?;
    Ok(Json(PurgeList { purges }).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
struct NewUrlKeyRequest {
    label: Option<String>,
}

#[utoipa::path(post, path = "/admin/tenants/{id}/url-keys", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id")), request_body(content = Option<NewUrlKeyRequest>, description = "Optional: a label"),
    responses((status = 201, description = "The URL key; `url_key` is shown this once", body = CreatedUrlKey), AdminLookupErrors, AdminErrors))]
async fn new_url_key(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewUrlKeyRequest = optional_json_body(&body)?;
    let created = manage::create_url_key(state.identity.as_ref(), &tenant, req.label)
        .await
        .map_err(store_error)?;
    applied(&state, created.record.version).await;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[utoipa::path(get, path = "/admin/tenants/{id}/url-keys", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "The tenant's URL keys, without secrets", body = UrlKeyList), AdminLookupErrors, AdminErrors))]
async fn list_url_keys(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let keys = manage::url_keys(state.identity.as_ref(), &tenant)
        .await
        .map_err(store_error)?;
    Ok(Json(UrlKeyList { url_keys: keys }).into_response())
}

#[utoipa::path(post, path = "/admin/tenants/{id}/url-keys/{key_id}/revoke", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id"), ("key_id" = String, Path, description = "The URL key's id")),
    responses((status = 200, description = "Revoked", body = PublicUrlKey), AdminLookupErrors, AdminErrors))]
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

#[utoipa::path(get, path = "/admin/audit", tag = "admin", security(("admin_token" = [])),
    params(AuditQuery),
    responses((status = 200, description = "Audit records, oldest first", body = AuditList), AdminErrors))]
async fn audit(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()))?;
    super::error::check_time("from", q.from)?;
    super::error::check_time("to", q.to)?;
    let records = state.audit.query(q).await.map_err(|e| {
        tracing::error!(error = %e, "audit query");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the audit log cannot be read right now",
        )
        .retry_after(1)
    })?;
    Ok(Json(AuditList { records }).into_response())
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct TenantList {
    tenants: Vec<TenantRecord>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct KeyList {
    keys: Vec<PublicKey>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct OriginList {
    origins: Vec<OriginRecord>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct PurgeList {
    purges: Vec<PurgeRecord>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct UrlKeyList {
    url_keys: Vec<PublicUrlKey>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct AuditList {
    records: Vec<AuditRecord>,
}
