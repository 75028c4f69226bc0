//! Making a delivered image when the result cache cannot answer at once: one flight per
//! output on this host (concurrent identical requests wait for it), one lease per result in
//! the fleet (a host that finds another making it waits for its result). The source is
//! fetched conditionally on the version last seen; an unchanged source whose result is
//! cached is served without a resize (`revalidated`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use bytes::Bytes;
use imgfleet_metering::CacheUse;
use imgfleet_stores::clock::now_ms;
use imgfleet_stores::identity::OriginRecord;
use imgfleet_stores::origins::etag::{self, Output};
use imgfleet_stores::origins::{FetchError, Fetched, Source, Validator};
use imgfleet_stores::results::{Entry, Header, Kind, Subject};

use super::super::AppState;
use super::super::audit::Metered;
use super::super::auth::Principal;
use super::super::error::{ApiError, ErrorCode};
use super::super::request_id::RequestId;

/// What a flight hands to everyone waiting for it.
#[derive(Clone)]
pub enum Made {
    Image {
        entry: Entry,
        validator: Validator,
        /// What the request that started the flight is metered for (origin bytes, CPU,
        /// and how the image was made).
        metered: Metered,
        /// The function's Server-Timing, when this flight ran it.
        timing: Option<String>,
    },
    /// The function's own refusal (an unsupported image, say): not cached.
    Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        metered: Metered,
        /// Its stable code, as `functions::invoke` read it from the body.
        code: Option<ErrorCode>,
    },
    /// The origin confirmed the version the requests revalidate: a 304 for each.
    Unchanged(Validator),
    Failed(ApiError),
}

/// The version a flight's fetch is conditional on, and whose it is.
#[derive(Clone)]
pub enum Conditional {
    /// The version whose result is cached here (stale: older than the origin's max-age).
    Cached(Validator),
    /// The version the client holds (`If-None-Match`), with no result of it cached.
    Client(Validator),
}

impl Conditional {
    fn validator(&self) -> &Validator {
        match self {
            Self::Cached(v) | Self::Client(v) => v,
        }
    }
}

/// What decides an output, owned: a flight outlives the request that started it.
#[derive(Clone)]
pub struct OwnedOutput {
    pub subject: Subject,
    pub canonical_query: String,
    pub build: Arc<str>,
    pub accept: Option<String>,
}

impl OwnedOutput {
    pub fn view(&self) -> Output<'_> {
        Output {
            tenant: &self.subject.tenant,
            origin: &self.subject.origin,
            source: &self.subject.path,
            canonical_query: &self.canonical_query,
            build: &self.build,
            accept: self.accept.as_deref(),
        }
    }
}

pub struct Making {
    pub state: AppState,
    pub origin: OriginRecord,
    pub output: OwnedOutput,
    /// The request's own `Accept`, handed to the function for `fmt=auto`.
    pub accept_header: Option<axum::http::HeaderValue>,
    /// The version the fetch is conditional on, if any.
    pub conditional_on: Option<Conditional>,
    pub principal: Principal,
    pub request_id: Option<RequestId>,
}

impl Making {
    pub async fn run(self) -> Arc<Made> {
        Arc::new(self.make().await.unwrap_or_else(Made::Failed))
    }

    async fn make(self) -> Result<Made, ApiError> {
        let state = &self.state;
        let results = &state.results;
        let subject = &self.output.subject;
        let known = self.conditional_on.as_ref().map(Conditional::validator);
        let fetched = self.fetch(known).await?;
        let source = match (fetched, known) {
            (Fetched::NotModified, Some(v)) => {
                results.confirm_source(subject, v.encode(), now_ms()).await;
                let key = etag::result_key(&self.output.view(), v);
                if let Some(entry) = results.get(&key).await {
                    return Ok(image(entry, v.clone(), CacheUse::Revalidated, 0));
                }
                if matches!(self.conditional_on, Some(Conditional::Client(_))) {
                    return Ok(Made::Unchanged(v.clone()));
                }
                // Unchanged, but its result is gone (evicted or purged): the source in full.
                match self.fetch(None).await? {
                    Fetched::Source(s) => s,
                    Fetched::NotModified => return Err(unexpected_304()),
                }
            }
            (Fetched::NotModified, None) => return Err(unexpected_304()),
            (Fetched::Source(s), _) => s,
        };
        results
            .confirm_source(subject, source.validator.encode(), now_ms())
            .await;
        let key = etag::result_key(&self.output.view(), &source.validator);
        let origin_bytes = source.bytes.len() as u64;
        if let Some(entry) = results.get(&key).await {
            // An origin without validators: its bytes' digest names a version already made.
            return Ok(image(
                entry,
                source.validator,
                CacheUse::Revalidated,
                origin_bytes,
            ));
        }
        if !results.claim(&key, &state.host_id).await
            && let Some(entry) = results.wait_for_fleet(&key).await
        {
            return Ok(image(entry, source.validator, CacheUse::Hit, origin_bytes));
        }
        let made = self.resize(source, &key).await;
        if !matches!(made, Ok(Made::Image { .. })) {
            results.release(&key);
        }
        made
    }

    async fn fetch(&self, known: Option<&Validator>) -> Result<Fetched, ApiError> {
        self.state
            .origins
            .fetch(&self.origin, &self.output.subject.path, known)
            .await
            .map_err(super::fetch_error)
    }

    /// The same path as `POST /v1/resize`; a 200 is cached.
    async fn resize(&self, source: Source, key: &str) -> Result<Made, ApiError> {
        let origin_bytes = source.bytes.len() as u64;
        let mut inner = Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/resize?{}", self.output.canonical_query))
            .header(header::CONTENT_LENGTH, origin_bytes);
        if let Some(accept) = &self.accept_header {
            inner = inner.header(header::ACCEPT, accept);
        }
        let mut inner = inner.body(Body::from(source.bytes)).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?;
        inner.extensions_mut().insert(self.principal.clone());
        // The same request id on the job, for traces joined across the hop.
        if let Some(id) = &self.request_id {
            inner.extensions_mut().insert(id.clone());
        }
        let resp = super::super::functions::invoke(State(self.state.clone()), inner).await?;
        let (mut parts, body) = resp.into_parts();
        let mut metered = parts.extensions.remove::<Metered>().unwrap_or_default();
        metered.origin_bytes = origin_bytes;
        let body = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the function's answer could not be read: {e}"),
            )
        })?;
        if parts.status != StatusCode::OK {
            return Ok(Made::Answer {
                status: parts.status,
                code: parts.extensions.remove::<ErrorCode>(),
                headers: parts.headers,
                body,
                metered,
            });
        }
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        let timing = super::super::functions::header_string(
            &parts.headers,
            super::super::functions::SERVER_TIMING,
        );
        let entry = Entry {
            header: Header {
                subject: self.output.subject.clone(),
                validator: source.validator.encode(),
                created_ms: now_ms(),
                kind: Kind::Result {
                    content_type,
                    input: metered.input.clone(),
                    output: metered.output.clone(),
                },
            },
            body,
        };
        self.state.results.publish(key, &entry).await;
        metered.cache = Some(CacheUse::Miss);
        Ok(Made::Image {
            entry,
            validator: source.validator,
            metered,
            timing,
        })
    }
}

fn image(entry: Entry, validator: Validator, how: CacheUse, origin_bytes: u64) -> Made {
    let mut metered = metered_hit(&entry, how);
    metered.origin_bytes = origin_bytes;
    Made::Image {
        entry,
        validator,
        metered,
        timing: None,
    }
}

/// A served result is metered for its sides as made, with no CPU of its own.
pub fn metered_hit(entry: &Entry, how: CacheUse) -> Metered {
    let (input, output) = match &entry.header.kind {
        Kind::Result { input, output, .. } => (input.clone(), output.clone()),
        Kind::Source { .. } => Default::default(),
    };
    Metered {
        input,
        output,
        cache: Some(how),
        ..Metered::default()
    }
}

fn unexpected_304() -> ApiError {
    super::fetch_error(FetchError::Origin(
        "304 to a request that named no version".into(),
    ))
}
