//! The API's OpenAPI 3.1 description, served at `/openapi.json`. Operations come from the
//! handlers' own `#[utoipa::path]` annotations, registered by the same `routes!` calls that
//! route them (`api::router`), so a route cannot exist undocumented; the routes the manifest
//! adds (functions) and the catch-all image route are documented here and added beside them.
//! The error responses every group of routes shares are the `*Errors` types below.

use std::collections::BTreeMap;

use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Header, ObjectBuilder, OpenApi, RefOr, Type};
use utoipa::{IntoResponses, Modify, PartialSchema, ToSchema};

/// The error envelope of every refusal and failure.
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)] // a description of `error::ApiError`'s body, never built
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable, machine-readable: see docs/API.md for the list.
    #[schema(example = "invalid_parameter")]
    code: String,
    /// For people; may change between versions.
    message: String,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "imgfleet",
        description = "Multi-tenant image resizing: synchronous and queued resizes, signed image \
                       URLs, usage metering and the operator's admin API. Errors are \
                       `{\"error\":{\"code\",\"message\"}}` with a stable code (docs/API.md).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "resize", description = "Resizing an uploaded image, now or as a queued job"),
        (name = "delivery", description = "Signed image URLs (docs/DELIVERY.md)"),
        (name = "usage", description = "A tenant's metered usage"),
        (name = "admin", description = "Tenants, keys, origins, URL keys, purges, audit (admin token)"),
        (name = "operations", description = "Health, readiness, metrics, this description"),
        (name = "console", description = "The web console's page and assets"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(what.to_string());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            "api_key",
            bearer("A tenant's API key: `Authorization: Bearer ifk_<key id>_<secret>`"),
        );
        components.add_security_scheme(
            "admin_token",
            bearer("The deployment's admin token (`imgfleet admin-token`)"),
        );
    }
}

fn string_header(description: &str) -> Header {
    let mut h = Header::new(String::schema());
    h.description = Some(description.to_string());
    h
}

fn seconds_header() -> Header {
    let mut h = Header::new(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0)),
    );
    h.description = Some("Seconds to wait before trying again".to_string());
    h
}

/// An error response: the envelope, `X-Request-Id`, and `Retry-After` where the refusal
/// passes with time (429, 503).
fn error(description: &str) -> RefOr<Response> {
    error_with(description, &[])
}

fn error_with(description: &str, extra: &[(&str, Header)]) -> RefOr<Response> {
    let mut b = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "Error",
            )))),
        )
        .header("X-Request-Id", request_id_header());
    for (name, h) in extra {
        b = b.header(*name, h.clone());
    }
    RefOr::T(b.build())
}

pub fn request_id_header() -> Header {
    string_header("The request's id: the client's, if it sent a usable one, else the host's")
}

fn retry(description: &str) -> RefOr<Response> {
    error_with(description, &[("Retry-After", seconds_header())])
}

fn responses(list: Vec<(&str, RefOr<Response>)>) -> BTreeMap<String, RefOr<Response>> {
    list.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn unauthorized() -> RefOr<Response> {
    error_with(
        "No usable credential: `credential_missing`, `credential_scheme`, `credential_malformed`, \
         `key_unknown`, `key_revoked` (admin routes: `admin_credential_invalid`)",
        &[(
            "WWW-Authenticate",
            string_header("`Bearer realm=\"imgfleet\"`"),
        )],
    )
}

/// What any route behind an API key may answer besides its own outcomes.
pub struct TenantErrors;

impl IntoResponses for TenantErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(vec![
            ("401", unauthorized()),
            (
                "403",
                error("`tenant_disabled`, or `scope_denied`: the key lacks this route's scope"),
            ),
            (
                "429",
                retry(
                    "`rate_limited` (the tenant's request rate) or `quota_exceeded` (its monthly allowance)",
                ),
            ),
            (
                "503",
                retry(
                    "The service cannot take the request now: `auth_unavailable`, \
                     `metering_unavailable`, `overloaded`, `queue_full`, `queue_unavailable`, \
                     `store_unavailable`, `staging_full`, `staging_unavailable`, `input_lost`, \
                     `usage_unavailable`",
                ),
            ),
        ])
    }
}

/// What every admin route may answer besides its own outcomes.
pub struct AdminErrors;

impl IntoResponses for AdminErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(vec![
            (
                "400",
                error("`invalid_request`: the JSON body or the query is not valid"),
            ),
            ("401", unauthorized()),
            (
                "403",
                error("`admin_credential_required`: a tenant's API key was sent"),
            ),
            (
                "503",
                retry(
                    "`identity_store_unavailable`, `audit_unavailable`, `usage_unavailable`, \
                     `metering_unavailable`: nothing was changed",
                ),
            ),
        ])
    }
}

/// Outcomes of admin routes that name a tenant, key or origin.
pub struct AdminLookupErrors;

impl IntoResponses for AdminLookupErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(vec![
            ("404", error("`not_found`: no such tenant, key or origin")),
            (
                "409",
                error("`conflict`: it exists already, or the change conflicts with its state"),
            ),
        ])
    }
}

/// What the resize function (synchronous or queued) may refuse or fail with.
pub struct ResizeErrors;

impl IntoResponses for ResizeErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(vec![
            (
                "400",
                error("`invalid_parameter` (the message names it) or `empty_body`"),
            ),
            (
                "413",
                error("`input_too_large`: the body is over the byte limit"),
            ),
            (
                "415",
                error("`unsupported_format`: not JPEG, PNG, WebP or GIF"),
            ),
            (
                "422",
                error(
                    "`corrupt_image`, `too_many_pixels`, `output_too_large`, \
                     `memory_limit_exceeded`",
                ),
            ),
            (
                "500",
                error("`function_failed`: the function crashed (details in the host log)"),
            ),
            (
                "504",
                error("`deadline_exceeded`: the function ran past its deadline"),
            ),
        ])
    }
}

/// The query of a resize (docs/API.md#summary). Parsed by the function itself
/// (`imgfleet_resize::params`), strictly: an unknown or repeated parameter is refused.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ResizeQuery {
    /// Output width in pixels; a missing side follows the aspect ratio.
    #[param(minimum = 1, maximum = 8192)]
    w: Option<u32>,
    /// Output height in pixels.
    #[param(minimum = 1, maximum = 8192)]
    h: Option<u32>,
    /// How the image goes into the `w`×`h` box.
    #[param(inline)]
    fit: Option<Fit>,
    /// Output format (default: the input's; GIF becomes PNG); `auto` negotiates from `Accept`.
    #[param(inline)]
    fmt: Option<Format>,
    /// Quality of JPEG, WebP and AVIF output.
    #[param(minimum = 1, maximum = 100)]
    q: Option<u8>,
    /// AVIF encoder speed; only with `fmt=avif` or `fmt=auto`.
    #[param(minimum = 1, maximum = 10)]
    speed: Option<u8>,
    /// Whether `fit=inside` may enlarge.
    #[param(inline)]
    enlarge: Option<Flag>,
}

#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Fit {
    Inside,
    Contain,
    Cover,
    Fill,
}

#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Format {
    Jpeg,
    Png,
    Webp,
    Avif,
    Auto,
}

#[derive(ToSchema)]
#[allow(dead_code)]
enum Flag {
    #[serde(rename = "0")]
    No,
    #[serde(rename = "1")]
    Yes,
}

/// The synchronous resize, as the manifest's routes serve it (`functions::invoke`): added
/// for every route the manifest gives a function.
#[utoipa::path(
    post,
    path = "/v1/resize",
    tag = "resize",
    operation_id = "resize",
    summary = "Resize an image",
    description = "The image is the body; the answer is the resized image. Inputs: JPEG, PNG, \
                   WebP, GIF (first frame). Waits for a worker; see `/v1/jobs` to queue instead.",
    params(ResizeQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
                 description = "The image (its format is read from the bytes)"),
    responses(
        (status = 200, description = "The resized image",
         content(
            (Vec<u8> = "image/jpeg"),
            (Vec<u8> = "image/png"),
            (Vec<u8> = "image/webp"),
            (Vec<u8> = "image/avif"),
         ),
         headers(
            ("X-Request-Id" = String, description = "The request's id"),
            ("Server-Timing" = String, description = "`auth`, `queue`, `inst`, `wasm`, `cpu`, `decode`, `resize`, `encode`"),
         )),
        ResizeErrors,
        TenantErrors,
    ),
    security(("api_key" = []))
)]
#[allow(dead_code)]
fn resize_operation() {}

/// A function the manifest routes that is not the resize function: the body goes in, the
/// function's answer comes out.
#[utoipa::path(
    post,
    path = "/v1/{function}",
    tag = "resize",
    summary = "Invoke a function of the manifest",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The function's answer", content((Vec<u8> = "application/octet-stream"))),
        (status = 400, description = "Refused by the function", body = ErrorBody),
        (status = 500, description = "`function_failed`", body = ErrorBody),
        (status = 504, description = "`deadline_exceeded`", body = ErrorBody),
        TenantErrors,
    ),
    security(("api_key" = []))
)]
#[allow(dead_code)]
fn function_operation() {}

/// A signed image URL (docs/DELIVERY.md): the signature is the credential.
#[utoipa::path(
    get,
    path = "/v1/img/{signed}",
    tag = "delivery",
    operation_id = "deliver",
    summary = "An image through a signed URL",
    description = "`{signed}` is `{tenant}/{key id}-{signature}/{options}/{origin}/{source path}` \
                   (docs/DELIVERY.md#3-the-url). Cacheable: a strong `ETag`, `Cache-Control` from \
                   the origin's policy, `304` on a matching `If-None-Match`. Errors carry \
                   `Cache-Control: no-store`.",
    params(
        ("signed" = String, Path, description = "The signed part of the URL, slashes included"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag of an earlier answer"),
        ("Accept" = Option<String>, Header, description = "Negotiates `fmt=auto`"),
    ),
    responses(
        (status = 200, description = "The image",
         content((Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/webp"), (Vec<u8> = "image/avif")),
         headers(
            ("ETag" = String, description = "Strong: names the source's version and everything that decides the output"),
            ("Cache-Control" = String, description = "`public, max-age=N[, immutable]` from the origin's policy"),
            ("Server-Timing" = String, description = "`cache` (hit, miss, revalidated) and the resize's timings"),
            ("X-Request-Id" = String, description = "The request's id"),
         )),
        (status = 304, description = "Not modified: the `If-None-Match` tag is current"),
        (status = 400, description = "`malformed_url`, `non_canonical_url`, `invalid_parameter`", body = ErrorBody),
        (status = 403, description = "`bad_signature`, `url_expired`, `tenant_disabled`", body = ErrorBody),
        (status = 404, description = "`unknown_tenant`, `unknown_origin`, `source_not_found`", body = ErrorBody),
        (status = 413, description = "`source_too_large`", body = ErrorBody),
        (status = 415, description = "`not_an_image`, `unsupported_format`", body = ErrorBody),
        (status = 422, description = "`corrupt_image` and the resize function's other image errors", body = ErrorBody),
        (status = 429, description = "`rate_limited`, `quota_exceeded`", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "`function_failed`", body = ErrorBody),
        (status = 502, description = "`origin_error`, `origin_redirect`, `origin_address_refused`", body = ErrorBody),
        (status = 503, description = "`auth_unavailable`, `metering_unavailable`, `overloaded`, …", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "`origin_timeout`, `deadline_exceeded`", body = ErrorBody),
    ),
    security(())
)]
#[allow(dead_code)]
fn deliver_operation() {}

/// Documents the routes `api::router` adds outside `routes!`: each manifest route (the
/// resize function's operation for the resize component, a generic one for others) and
/// the signed image route.
pub fn add_manifest_routes(doc: &mut OpenApi, routes: &[(String, String)]) {
    use crate::execution::manifest::RESIZE_COMPONENT;
    use utoipa::Path;
    for (path, component) in routes {
        let resize = component == RESIZE_COMPONENT;
        let mut op: Operation = if resize {
            __path_resize_operation::operation()
        } else {
            __path_function_operation::operation()
        };
        op.operation_id = Some(if resize && path == "/v1/resize" {
            "resize".into()
        } else {
            format!(
                "invoke_{}",
                path.trim_start_matches('/')
                    .replace(['/', '{', '}', '*'], "_")
            )
        });
        op.description = Some(format!(
            "{} (component `{component}`)",
            op.description.unwrap_or_default()
        ));
        doc.paths
            .add_path_operation(path.as_str(), vec![HttpMethod::Post], op);
    }
}

/// Where the answer of a POST (`from`, `status`) leads: to the operations `to`, each
/// parameter a runtime expression on the answer's body or the request's path.
struct Links {
    from: &'static str,
    status: &'static str,
    to: &'static [&'static str],
    params: &'static [(&'static str, &'static str)],
}

const NEW_TENANT: &[(&str, &str)] = &[("id", "$response.body#/id")];

/// Links between operations, for clients and for stateful testing: a queued job to its
/// status and output, a new tenant to its keys, origins, URL keys, purges and switches, a
/// new key to its revocation.
const LINKS: [Links; 6] = [
    Links {
        from: "/v1/jobs",
        status: "202",
        to: &["status", "output"],
        params: &[("id", "$response.body#/id")],
    },
    Links {
        from: "/admin/tenants",
        status: "201",
        to: &[
            "list_keys",
            "new_key",
            "add_origin",
            "list_origins",
            "new_url_key",
            "add_purge",
            "disable",
            "set_quota",
        ],
        params: NEW_TENANT,
    },
    Links {
        from: "/admin/tenants/{id}/keys",
        status: "201",
        to: &["revoke"],
        params: &[("key_id", "$response.body#/key_id")],
    },
    Links {
        from: "/admin/tenants/{id}/url-keys",
        status: "201",
        to: &["revoke_url_key"],
        params: &[
            ("id", "$request.path.id"),
            ("key_id", "$response.body#/key_id"),
        ],
    },
    Links {
        from: "/admin/tenants/{id}/origins",
        status: "201",
        to: &["remove_origin"],
        params: &[("id", "$request.path.id"), ("name", "$response.body#/name")],
    },
    Links {
        from: "/admin/tenants/{id}/disable",
        status: "200",
        to: &["enable"],
        params: NEW_TENANT,
    },
];

fn add_links(doc: &mut OpenApi) {
    use utoipa::openapi::link::LinkBuilder;
    for links in &LINKS {
        let Some(RefOr::T(response)) = doc
            .paths
            .paths
            .get_mut(links.from)
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.responses.responses.get_mut(links.status))
        else {
            continue;
        };
        for target in links.to {
            let mut link = LinkBuilder::new().operation_id(*target);
            for (name, value) in links.params {
                link = link.parameter(*name, *value);
            }
            response
                .links
                .insert(target.to_string(), RefOr::T(link.build()));
        }
    }
}

/// The whole description: the routed operations', the manifest's, the signed image route
/// and this description's own.
pub fn document(
    mut routed: OpenApi,
    routes: &[(String, String)],
    own: (String, Operation),
) -> OpenApi {
    use utoipa::Path;
    add_manifest_routes(&mut routed, routes);
    routed.paths.add_path_operation(
        "/v1/img/{signed}",
        vec![HttpMethod::Get],
        __path_deliver_operation::operation(),
    );
    routed
        .paths
        .add_path_operation(own.0, vec![HttpMethod::Get], own.1);
    add_links(&mut routed);
    routed
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::OpenApi as _;

    #[test]
    fn the_description_is_openapi_3_1_with_both_security_schemes() {
        let doc = ApiDoc::openapi();
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        let schemes = &json["components"]["securitySchemes"];
        assert_eq!(schemes["api_key"]["scheme"], "bearer");
        assert_eq!(schemes["admin_token"]["scheme"], "bearer");
        assert!(json["components"]["schemas"]["Error"].is_object());
    }

    #[test]
    fn every_link_leads_to_an_operation_that_exists() {
        let mut doc = ApiDoc::openapi();
        add_manifest_routes(&mut doc, &[("/v1/resize".into(), "resize".into())]);
        // The operations `add_links` names, as the router registers them.
        for (path, id) in [
            ("/v1/jobs", "submit"),
            ("/v1/jobs/{id}", "status"),
            ("/admin/tenants", "create_tenant"),
        ] {
            let mut op = Operation::new();
            op.operation_id = Some(id.into());
            let mut r = utoipa::openapi::Responses::new();
            r.responses.insert(
                if id == "submit" { "202" } else { "201" }.into(),
                RefOr::T(Response::new("ok")),
            );
            op.responses = r;
            doc.paths
                .add_path_operation(path, vec![HttpMethod::Post], op);
        }
        add_links(&mut doc);
        let json = serde_json::to_value(&doc).unwrap();
        let links = &json["paths"]["/v1/jobs"]["post"]["responses"]["202"]["links"];
        assert_eq!(links["status"]["operationId"], "status");
        assert_eq!(links["status"]["parameters"]["id"], "$response.body#/id");
        let links = &json["paths"]["/admin/tenants"]["post"]["responses"]["201"]["links"];
        assert_eq!(links.as_object().unwrap().len(), 8);
    }

    #[test]
    fn the_resize_parameters_are_those_the_function_parses() {
        let mut doc = ApiDoc::openapi();
        add_manifest_routes(&mut doc, &[("/v1/resize".into(), "resize".into())]);
        let json = serde_json::to_value(&doc).unwrap();
        let params: Vec<String> = json["paths"]["/v1/resize"]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        // Every documented parameter is accepted by the function, and every one it accepts is
        // documented: the function refuses an unknown parameter by name.
        for name in &params {
            let q = format!("{name}=1");
            if let Err(e) = imgfleet_resize::params::ResizeParams::from_query(&q) {
                assert!(
                    !e.to_string().contains("unknown"),
                    "{name} is documented but the function does not know it: {e}"
                );
            }
        }
        for name in imgfleet_resize::params::PARAMETERS {
            assert!(params.iter().any(|p| p == name), "{name} is undocumented");
        }
    }
}
