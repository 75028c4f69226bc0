//! The API function (API Gateway HTTP API): authenticates every request with the
//! auth-check logic against the identity table, then
//! - `POST /v1/resize` runs the resize logic right here (a Lambda instance is one request's
//!   core, so a queue hop would only add latency) and answers with the image;
//! - `POST /v1/jobs` stages the image in S3 and queues a job for the resize function;
//! - `GET /v1/jobs/{id}` and `…/output` read the job's row and output;
//! - `GET /v1/img/…` (signed URLs, no API key) reads the source from one of the tenant's S3
//!   origins and resizes it here, with the host's ETags, caching headers and 304s.
//!
//! Usage and audit are recorded for every authenticated request before it is answered.

use std::time::Instant;

use imgfleet_auth::{CheckRequest, Decision, Denial, Grant, Scope, Usage, check};
use imgfleet_metering::{ImageSide, UsageRecord};
use imgfleet_resize::http::{FACTS_HEADER, HttpRequest};
use imgfleet_stores::usage::{UsageStore, image_sides};
use lambda_http::{Body, Request, RequestExt, Response};

use crate::deps::{Deps, now_ms};
use crate::envelope::{error, json};
use crate::job::{self, JobMessage, Status};
use crate::staging;
use crate::usage::account;

/// The request as the handlers see it.
struct Call<'a> {
    req: &'a Request,
    request_id: String,
    started: Instant,
}

impl Call<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.req.headers().get(name).and_then(|v| v.to_str().ok())
    }

    fn query(&self) -> &str {
        self.req.uri().query().unwrap_or("")
    }

    fn body(&self) -> &[u8] {
        self.req.body().as_ref()
    }

    /// A usage record of this request with the caller's identity.
    fn record(
        &self,
        grant: &Grant,
        route: &str,
        status: u16,
        sides: (ImageSide, ImageSide),
    ) -> UsageRecord {
        let wall_ns = self.started.elapsed().as_nanos() as u64;
        UsageRecord {
            id: uuid::Uuid::now_v7().simple().to_string(),
            request_id: self.request_id.clone(),
            tenant: grant.tenant.clone(),
            key_id: grant.key_id.clone(),
            at_ms: now_ms(),
            route: route.to_string(),
            status,
            input: sides.0,
            output: sides.1,
            // One request per instance: the function's time is the request's CPU time.
            cpu_ns: wall_ns,
            wall_ns,
            queue_ns: 0,
            origin_bytes: 0,
            not_modified: false,
            cache: None,
        }
    }
}

pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), str::to_string);
    let call = Call {
        req: &req,
        request_id,
        started: Instant::now(),
    };
    let mut response = route(deps, &call).await;
    if let Ok(v) = call.request_id.parse() {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

async fn route(deps: &Deps, call: &Call<'_>) -> Response<Body> {
    // API Gateway's path without the stage prefix (`/dev/v1/resize` is `/v1/resize`).
    let raw = call.req.raw_http_path();
    let path = if raw.is_empty() {
        call.req.uri().path()
    } else {
        raw
    };
    let path = path.trim_end_matches('/');
    let method = call.req.method().as_str();
    match (method, path) {
        ("GET", "/healthz") => json(200, &serde_json::json!({ "status": "ok" })),
        ("GET" | "HEAD", p) if p.starts_with(imgfleet_auth::signed_url::PREFIX) => {
            let mut response = deliver(deps, call, p).await;
            if !(200..300).contains(&response.status().as_u16())
                && response.status().as_u16() != 304
            {
                response
                    .headers_mut()
                    .insert("cache-control", http::HeaderValue::from_static("no-store"));
            }
            if method == "HEAD" {
                *response.body_mut() = Body::Empty;
            }
            response
        }
        ("POST", "/v1/resize") => resize(deps, call).await,
        ("POST", "/v1/jobs") => submit(deps, call).await,
        (_, "/healthz" | "/v1/resize" | "/v1/jobs") => method_not_allowed(),
        _ => match path
            .strip_prefix("/v1/jobs/")
            .map(|rest| rest.split_once('/'))
        {
            Some(None) if method == "GET" => status(deps, call, &path[9..]).await,
            Some(Some((id, "output"))) if method == "GET" => output(deps, call, id).await,
            Some(None | Some((_, "output"))) => method_not_allowed(),
            _ => error(404, "not_found", format!("no route {path}")),
        },
    }
}

fn method_not_allowed() -> Response<Body> {
    error(
        405,
        "method_not_allowed",
        "this route does not take that method",
    )
}

async fn authenticate(deps: &Deps, call: &Call<'_>, scope: Scope) -> Result<Grant, Response<Body>> {
    let header = call.header("authorization");
    let credential =
        imgfleet_auth::parse_authorization(header.map(str::as_bytes)).map_err(denied)?;
    let unavailable = |e: imgfleet_stores::identity::StoreError| {
        error(
            503,
            "auth_unavailable",
            format!("the request could not be authenticated: {e}"),
        )
    };
    let (key, tenant) = deps
        .identity
        .key_and_tenant(credential.key_id)
        .await
        .map_err(unavailable)?;
    let usage = match &tenant {
        Some(t) if t.quota.monthly_bytes.is_some() || t.quota.monthly_pixels.is_some() => {
            month_usage(deps, &t.id).await.map_err(|e| {
                error(
                    503,
                    "auth_unavailable",
                    format!("this month's usage could not be read: {e}"),
                )
            })?
        }
        _ => Usage::default(),
    };
    let request = CheckRequest {
        authorization: header.map(str::to_string),
        scope,
        key,
        tenant,
        usage,
    };
    match check(&request) {
        Decision::Allow(grant) => Ok(grant),
        Decision::Deny(denial) => Err(denied(denial)),
    }
}

/// Input bytes and output pixels the tenant has used this calendar month (UTC).
async fn month_usage(
    deps: &Deps,
    tenant: &str,
) -> Result<Usage, imgfleet_stores::usage::UsageError> {
    let now = now_ms();
    let rollups = deps
        .usage
        .rollups(
            tenant,
            imgfleet_auth::calendar::month_start_ms(now),
            now + 1,
        )
        .await?;
    Ok(rollups.iter().fold(Usage::default(), |u, r| Usage {
        bytes: u.bytes + r.bytes_in,
        pixels: u.pixels + r.pixels_out,
    }))
}

fn denied(denial: Denial) -> Response<Body> {
    let mut response = error(denial.status(), denial.code(), denial.message());
    if denial.status() == 401 {
        response
            .headers_mut()
            .insert("www-authenticate", http::HeaderValue::from_static("Bearer"));
    }
    if let Denial::QuotaExceeded(_) = denial {
        let now = now_ms();
        let wait = imgfleet_auth::calendar::next_month_start_ms(now).saturating_sub(now) / 1000;
        response
            .headers_mut()
            .insert("retry-after", wait.max(1).into());
    }
    response
}

async fn resize(deps: &Deps, call: &Call<'_>) -> Response<Body> {
    let grant = match authenticate(deps, call, Scope::Resize).await {
        Ok(g) => g,
        Err(response) => return response,
    };
    let auth_ms = call.started.elapsed().as_secs_f64() * 1000.0;
    // Inline: this instance serves one request at a time, there is nothing to yield to.
    let out = imgfleet_resize::http::handle(HttpRequest {
        method: "POST",
        query: call.query(),
        accept: call.header("accept"),
        limits: None,
        body: call.body(),
    });
    let record = call.record(
        &grant,
        "/v1/resize",
        out.status,
        image_sides(out.header(FACTS_HEADER)),
    );
    if let Err(refused) = metered(deps, call, record, None).await {
        return refused;
    }
    let mut response = Response::builder().status(out.status);
    for (name, value) in &out.headers {
        match *name {
            FACTS_HEADER => {}
            "server-timing" => {
                response = response.header(*name, format!("auth;dur={auth_ms:.3}, {value}"))
            }
            _ => response = response.header(*name, value),
        }
    }
    let body = if out.status == 200 {
        Body::Binary(out.body)
    } else {
        Body::Text(String::from_utf8_lossy(&out.body).into_owned())
    };
    response
        .body(body)
        .expect("a response built from the function's own headers")
}

async fn submit(deps: &Deps, call: &Call<'_>) -> Response<Body> {
    let grant = match authenticate(deps, call, Scope::Jobs).await {
        Ok(g) => g,
        Err(response) => return response,
    };
    // Refuse what could never run before anything is stored.
    if let Err(e) = imgfleet_resize::ResizeParams::from_query(call.query()) {
        return error(e.status(), e.code.as_str(), e.message.clone());
    }
    if call.body().is_empty() {
        return error(400, "empty_body", "send the image as the request body");
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    let input_key = staging::input_key(&id);
    if let Err(e) = staging::put(deps, &input_key, call.body().to_vec()).await {
        tracing::error!(error = %e, "staging the input");
        return error(
            503,
            "staging_unavailable",
            "the image could not be staged; try again",
        );
    }
    let message = JobMessage {
        id: id.clone(),
        tenant: grant.tenant.clone(),
        key_id: grant.key_id.clone(),
        request_id: call.request_id.clone(),
        query: call.query().to_string(),
        accept: call.header("accept").map(str::to_string),
        input_key,
        submitted_ms: now_ms(),
    };
    if let Err(e) = job::put_queued(deps, &message).await {
        tracing::error!(error = %e, "recording the job");
        return error(
            503,
            "store_unavailable",
            "the job could not be recorded; try again",
        );
    }
    let sent = deps
        .sqs
        .send_message()
        .queue_url(&deps.names.jobs_queue_url)
        .message_body(serde_json::to_string(&message).expect("a job message serialises"))
        // Per-tenant order; one tenant's burst queues behind itself, not before others.
        .message_group_id(&grant.tenant)
        .message_deduplication_id(&id)
        .send()
        .await;
    if let Err(e) = sent {
        tracing::error!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "queueing the job");
        return error(
            503,
            "queue_unavailable",
            "the job could not be queued; try again",
        );
    }
    let input = ImageSide {
        bytes: call.body().len() as u64,
        ..ImageSide::default()
    };
    let record = call.record(&grant, "/v1/jobs", 202, (input, ImageSide::default()));
    // The job is queued and will be metered when it runs; a lost submission record must
    // not make the client submit it twice.
    if let Err(e) = account(deps, record, Some(&id)).await {
        tracing::error!(request_id = %call.request_id, job = %id, error = %e, "submission not metered");
    }
    let mut response = json(
        202,
        &serde_json::json!({ "id": id, "status": "queued", "status_url": format!("/v1/jobs/{id}") }),
    );
    if let Ok(location) = format!("/v1/jobs/{id}").parse() {
        response.headers_mut().insert("location", location);
    }
    response
}

/// The caller's job; another tenant's answers exactly like a missing one.
async fn find(deps: &Deps, id: &str, grant: &Grant) -> Result<job::JobRow, Response<Body>> {
    let not_found = || error(404, "not_found", format!("no job {id}"));
    if !job::valid_id(id) {
        return Err(not_found());
    }
    match job::get(deps, id).await {
        Ok(Some(row)) if row.tenant == grant.tenant => Ok(row),
        Ok(_) => Err(not_found()),
        Err(e) => {
            tracing::error!(error = %e, "reading a job");
            Err(error(
                503,
                "store_unavailable",
                "the job store could not be read; try again",
            ))
        }
    }
}

async fn status(deps: &Deps, call: &Call<'_>, id: &str) -> Response<Body> {
    let grant = match authenticate(deps, call, Scope::Jobs).await {
        Ok(g) => g,
        Err(response) => return response,
    };
    let response = match find(deps, id, &grant).await {
        Ok(row) => json(200, &row.to_json(now_ms())),
        Err(response) => response,
    };
    let record = call.record(
        &grant,
        "/v1/jobs/{id}",
        response.status().as_u16(),
        Default::default(),
    );
    metered(deps, call, record, Some(id))
        .await
        .map_or_else(|refused| refused, |()| response)
}

async fn output(deps: &Deps, call: &Call<'_>, id: &str) -> Response<Body> {
    let grant = match authenticate(deps, call, Scope::Jobs).await {
        Ok(g) => g,
        Err(response) => return response,
    };
    let response = match find(deps, id, &grant).await {
        Ok(row) => output_of(deps, row).await,
        Err(response) => response,
    };
    let output = ImageSide {
        bytes: if response.status() == 200 {
            body_len(response.body())
        } else {
            0
        },
        ..ImageSide::default()
    };
    let record = call.record(
        &grant,
        "/v1/jobs/{id}/output",
        response.status().as_u16(),
        (ImageSide::default(), output),
    );
    metered(deps, call, record, Some(id))
        .await
        .map_or_else(|refused| refused, |()| response)
}

/// Records the request's usage and audit row; a request that cannot be accounted for is
/// answered `503 metering_unavailable` instead of being served.
async fn metered(
    deps: &Deps,
    call: &Call<'_>,
    record: UsageRecord,
    job: Option<&str>,
) -> Result<(), Response<Body>> {
    account(deps, record, job).await.map_err(|e| {
        tracing::error!(request_id = %call.request_id, error = %e, "usage not recorded");
        error(
            503,
            "metering_unavailable",
            "the request could not be metered; nothing was served or charged, try again",
        )
    })
}

fn body_len(body: &Body) -> u64 {
    body.as_ref().len() as u64
}

async fn output_of(deps: &Deps, row: job::JobRow) -> Response<Body> {
    let gone = || {
        error(
            410,
            "output_expired",
            "the output has expired; submit the job again",
        )
    };
    match row.status {
        Status::Queued => error(409, "not_ready", "the job has not finished yet"),
        Status::Failed => {
            let (_, message) = row.error.unwrap_or_default();
            error(row.http_status.unwrap_or(500), "job_failed", message)
        }
        Status::Done => {
            if row.expires_ms.is_some_and(|e| e <= now_ms()) {
                return gone();
            }
            let Some(key) = row.output_key else {
                return gone();
            };
            let bytes = match staging::get(deps, &key).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return gone(),
                Err(e) => {
                    tracing::error!(error = %e, "reading a job's output");
                    return error(
                        503,
                        "staging_unavailable",
                        "the output could not be read; try again",
                    );
                }
            };
            Response::builder()
                .status(row.http_status.unwrap_or(200))
                .header(
                    "content-type",
                    row.content_type
                        .unwrap_or_else(|| "application/octet-stream".into()),
                )
                .body(Body::Binary(bytes))
                .expect("a response of a stored status and content type")
        }
    }
}

/// A signed image URL (docs/DELIVERY.md): the signature and expiry before anything else,
/// then the tenant's state and allowances, the canonical options, the origin (S3 only
/// here), a conditional read of the source, the resize in this instance.
async fn deliver(deps: &Deps, call: &Call<'_>, path: &str) -> Response<Body> {
    use imgfleet_auth::signed_url::{self, UrlError};
    use imgfleet_stores::identity::OriginSource;
    use imgfleet_stores::origins::etag::{self, Output};
    use imgfleet_stores::origins::{FetchLimits, Fetched};

    let url = match signed_url::parse(path) {
        Ok(url) => url,
        Err(e) => return error(400, "malformed_url", e.to_string()),
    };
    if !call.query().is_empty() {
        return error(
            400,
            "malformed_url",
            "a signed image URL has no query string: everything is in its path",
        );
    }
    let (tenant, url_key, origin) = match deps
        .identity
        .delivery(url.tenant, url.key_id, url.origin)
        .await
    {
        Ok(found) => found,
        Err(e) => {
            return error(
                503,
                "auth_unavailable",
                format!("the URL could not be checked: {e}"),
            );
        }
    };
    let Some(tenant) = tenant else {
        return error(404, "unknown_tenant", format!("no tenant `{}`", url.tenant));
    };
    let Some(secret) = url_key
        .filter(|k| !k.revoked)
        .and_then(|k| signed_url::unhex(&k.secret))
    else {
        return error(
            403,
            "bad_signature",
            "the URL is signed with an unknown or revoked URL key",
        );
    };
    match url.verify(&secret, now_ms() / 1000) {
        Ok(()) => {}
        Err(e @ UrlError::Expired { .. }) => return error(403, "url_expired", e.to_string()),
        Err(e) => return error(403, "bad_signature", e.to_string()),
    }
    let usage = if tenant.quota.monthly_bytes.is_some() || tenant.quota.monthly_pixels.is_some() {
        match month_usage(deps, &tenant.id).await {
            Ok(u) => u,
            Err(e) => {
                return error(
                    503,
                    "auth_unavailable",
                    format!("this month's usage could not be read: {e}"),
                );
            }
        }
    } else {
        Usage::default()
    };
    if let Err(denial) = imgfleet_auth::decision::tenant_allows(&tenant, &usage) {
        return denied(denial);
    }
    let grant = Grant {
        tenant: tenant.id.clone(),
        key_id: format!("url:{}", url.key_id),
        quota: tenant.quota.clone(),
    };
    let params = match imgfleet_resize::ResizeParams::from_query(&url.query) {
        Ok(p) => p,
        Err(e) => return error(400, "invalid_parameter", e.message),
    };
    let canonical = params.canonical_query();
    if canonical != url.query {
        return error(
            400,
            "non_canonical_url",
            format!(
                "the options must be in their canonical form, `{}`",
                canonical.replace('&', ",")
            ),
        );
    }
    let Some(origin) = origin.filter(|o| !o.removed) else {
        return error(
            404,
            "unknown_origin",
            format!("tenant `{}` has no origin `{}`", url.tenant, url.origin),
        );
    };
    let OriginSource::S3 {
        bucket,
        prefix,
        region,
        endpoint,
    } = &origin.source
    else {
        return error(
            502,
            "origin_error",
            "HTTP origins are served by imgfleet hosts; this deployment reads S3 origins",
        );
    };
    let Some(key) = signed_url::percent_decode(url.source) else {
        return error(400, "malformed_url", "the source path is not UTF-8");
    };
    let negotiated = params.format == imgfleet_resize::params::FormatChoice::Auto;
    let accept = etag::normalised_accept(call.header("accept"));
    let build = function_build();
    let output = Output {
        tenant: url.tenant,
        origin: url.origin,
        source: url.source,
        canonical_query: &canonical,
        build: &build,
        accept: negotiated.then_some(accept.as_str()),
    };
    let known = call
        .header("if-none-match")
        .and_then(|tags| etag::revalidating(tags, &output));
    let limits = FetchLimits {
        max_bytes: imgfleet_resize::Limits::default().max_input_bytes,
        ..FetchLimits::default()
    };
    let fetched = deps
        .origins
        .fetch(
            bucket,
            prefix,
            region,
            endpoint,
            &key,
            known.as_ref(),
            &limits,
        )
        .await;
    let caching = |mut response: http::response::Builder, tag: &str| {
        response = response
            .header("etag", tag)
            .header("cache-control", origin.cache.cache_control());
        if negotiated {
            response = response.header("vary", "Accept");
        }
        response
    };
    let (source, not_modified) = match (fetched, known) {
        (Ok(Fetched::NotModified), Some(v)) => (None, Some((v, 0))),
        (Ok(Fetched::Source(s)), Some(v)) if v == s.validator => {
            let n = s.bytes.len() as u64;
            (None, Some((v, n)))
        }
        (Ok(Fetched::Source(s)), _) => (Some(s), None),
        (Ok(Fetched::NotModified), None) => {
            return error(
                502,
                "origin_error",
                "304 to a request that named no version",
            );
        }
        (Err(e), _) => {
            let (status, code) = e.status_and_code();
            let record = call.record(&grant, ROUTE_IMG, status, Default::default());
            if let Err(refused) = metered(deps, call, record, None).await {
                return refused;
            }
            return error(status, code, e.to_string());
        }
    };
    if let Some((validator, origin_bytes)) = not_modified {
        let mut record = call.record(&grant, ROUTE_IMG, 304, Default::default());
        record.origin_bytes = origin_bytes;
        record.not_modified = true;
        if let Err(refused) = metered(deps, call, record, None).await {
            return refused;
        }
        return caching(
            Response::builder().status(304),
            &etag::etag(&output, &validator),
        )
        .body(Body::Empty)
        .expect("a 304 with valid headers");
    }
    let Some(source) = source else {
        return error(502, "origin_error", "no source");
    };
    let origin_bytes = source.bytes.len() as u64;
    let tag = etag::etag(&output, &source.validator);
    // The result cache: a result made from this version of the source is kept in the
    // staging bucket; the origin was asked (its version is in the key), the resize is saved.
    let cache_key = format!("results/{}", etag::result_key(&output, &source.validator));
    if let Some(entry) = cached(deps, &cache_key, &tenant.id).await {
        let imgfleet_stores::results::Kind::Result {
            content_type,
            input,
            output: out_side,
        } = &entry.header.kind
        else {
            return error(502, "origin_error", "a cached entry is not a result");
        };
        let mut record = call.record(&grant, ROUTE_IMG, 200, (input.clone(), out_side.clone()));
        record.origin_bytes = origin_bytes;
        record.cache = Some(imgfleet_metering::CacheUse::Revalidated);
        if let Err(refused) = metered(deps, call, record, None).await {
            return refused;
        }
        return caching(
            Response::builder()
                .status(200)
                .header("content-type", content_type.as_str())
                .header("server-timing", "cache;desc=revalidated"),
            &tag,
        )
        .body(Body::Binary(entry.body.to_vec()))
        .expect("a response with valid headers");
    }
    let out = imgfleet_resize::http::handle(HttpRequest {
        method: "POST",
        query: &canonical,
        accept: call.header("accept"),
        limits: None,
        body: &source.bytes,
    });
    let sides = image_sides(out.header(FACTS_HEADER));
    let mut record = call.record(&grant, ROUTE_IMG, out.status, sides.clone());
    record.origin_bytes = origin_bytes;
    if out.status == 200 {
        record.cache = Some(imgfleet_metering::CacheUse::Miss);
        let entry = imgfleet_stores::results::Entry {
            header: imgfleet_stores::results::Header {
                subject: imgfleet_stores::results::Subject {
                    tenant: url.tenant.to_string(),
                    origin: url.origin.to_string(),
                    path: url.source.to_string(),
                },
                validator: source.validator.encode(),
                created_ms: now_ms(),
                kind: imgfleet_stores::results::Kind::Result {
                    content_type: out
                        .header("content-type")
                        .unwrap_or("image/jpeg")
                        .to_string(),
                    input: sides.0,
                    output: sides.1,
                },
            },
            body: out.body.clone().into(),
        };
        // Kept before answering: a frozen or ended instance would lose a background write.
        if let Err(e) = staging::put(deps, &cache_key, entry.encode()).await {
            tracing::warn!(error = %e, "a result could not be cached");
        }
    }
    if let Err(refused) = metered(deps, call, record, None).await {
        return refused;
    }
    let mut response = Response::builder().status(out.status);
    for (name, value) in &out.headers {
        if *name != FACTS_HEADER {
            response = response.header(*name, value);
        }
    }
    if out.status == 200 {
        response = caching(response.header("server-timing", "cache;desc=miss"), &tag);
        response
            .body(Body::Binary(out.body))
            .expect("a response built from the function's own headers")
    } else {
        response
            .body(Body::Text(String::from_utf8_lossy(&out.body).into_owned()))
            .expect("a response built from the function's own headers")
    }
}

/// The cached result under `key`, if it is whole and no purge of its tenant reaches it;
/// any failure is a miss.
async fn cached(deps: &Deps, key: &str, tenant: &str) -> Option<imgfleet_stores::results::Entry> {
    let bytes = staging::get(deps, key).await.ok()??;
    let entry = imgfleet_stores::results::Entry::decode(&bytes)?;
    let purges = deps.identity.purges_of(tenant).await.ok()?;
    (!imgfleet_stores::results::reached_by(&entry.header, &purges)).then_some(entry)
}

/// The route signed GETs are metered under, as on the host.
const ROUTE_IMG: &str = "/v1/img/{*rest}";

/// This binary's build, in delivered images' ETags: a digest of the executable, taken once
/// per instance, so a new deployment makes new tags.
fn function_build() -> String {
    static BUILD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILD
        .get_or_init(|| {
            let bytes = std::env::current_exe()
                .and_then(std::fs::read)
                .unwrap_or_default();
            imgfleet_stores::origins::etag::build_of(&bytes)
        })
        .clone()
}
