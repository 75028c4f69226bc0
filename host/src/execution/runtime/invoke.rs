//! One invocation: fresh store and instance, request in, whole response out, with the
//! deadline, memory cap and CPU time accounted for.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::RuntimeConfig;
use super::engine::EPOCH_TICK;
use super::state::StoreState;
use crate::execution::cpu::thread_cpu_time;

/// An HTTP request for a function, body fully buffered (the API tier has already
/// enforced the size limit).
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub method: http::Method,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

#[derive(Debug)]
pub struct Invocation {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// Time to create the instance from its pre-instantiated form.
    pub instantiate: Duration,
    /// Wall time of the whole invocation.
    pub wall: Duration,
    /// CPU time spent on the invoking thread (guest code and the host calls it made).
    pub cpu: Duration,
    /// Peak linear memory of the instance, in bytes.
    pub memory_peak: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("no function named `{0}`")]
    UnknownFunction(String),
    #[error("the function ran past its deadline of {0:?}")]
    DeadlineExceeded(Duration),
    #[error("the function needed more than its memory limit of {0} bytes")]
    MemoryLimitExceeded(usize),
    #[error("the function failed: {0}")]
    Trapped(String),
    #[error("the function returned no response")]
    NoResponse,
    #[error("host error: {0}")]
    Host(String),
}

impl InvokeError {
    /// The HTTP status and stable error code a client sees for this failure.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            Self::DeadlineExceeded(_) => (504, "deadline_exceeded"),
            Self::MemoryLimitExceeded(_) => (422, "memory_limit_exceeded"),
            Self::UnknownFunction(_) => (404, "not_found"),
            Self::Trapped(_) | Self::NoResponse => (500, "function_failed"),
            Self::Host(_) => (500, "internal"),
        }
    }

    /// What the client is told; crash details stay in the log.
    pub fn client_message(&self) -> String {
        match self {
            Self::Trapped(_) | Self::NoResponse => {
                "the function failed; the host log has the details under this request id".into()
            }
            Self::Host(_) => {
                "internal error; the host log has the details under this request id".into()
            }
            other => other.to_string(),
        }
    }
}

pub(super) async fn run(
    engine: &Engine,
    pre: &ProxyPre<StoreState>,
    config: &RuntimeConfig,
    request: InvokeRequest,
) -> Result<Invocation, InvokeError> {
    let started = Instant::now();
    let cpu_start = thread_cpu_time();
    let outcome = tokio::time::timeout(
        // Safety net only: the epoch deadline stops guest code; this bounds host-side waits.
        config.deadline + Duration::from_secs(1),
        exchange(engine, pre, config, request),
    )
    .await
    .unwrap_or(Err(InvokeError::DeadlineExceeded(config.deadline)));
    let (status, headers, body, instantiate, memory_peak) = outcome?;
    Ok(Invocation {
        status,
        headers,
        body,
        instantiate,
        memory_peak,
        wall: started.elapsed(),
        cpu: thread_cpu_time().saturating_sub(cpu_start),
    })
}

type Exchanged = (http::StatusCode, http::HeaderMap, Bytes, Duration, usize);

async fn exchange(
    engine: &Engine,
    pre: &ProxyPre<StoreState>,
    config: &RuntimeConfig,
    request: InvokeRequest,
) -> Result<Exchanged, InvokeError> {
    let mut store = Store::new(engine, StoreState::new(config.memory_limit_bytes));
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(config.deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64);
    store.epoch_deadline_trap();

    let (req, out, receiver) = incoming(&mut store, request)?;

    let instantiating = Instant::now();
    let limit = config.memory_limit_bytes;
    let deadline = config.deadline;
    let pre = pre.clone();
    // The guest streams its body while `handle` runs, so the call and the reading of the
    // body proceed side by side.
    let task = tokio::task::spawn(async move {
        let result = async {
            let proxy = pre_instantiate(&mut store, &pre).await?;
            let instantiated = instantiating.elapsed();
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
                .map(|()| instantiated)
        }
        .await;
        let limiter = &store.data().limiter;
        result
            .map(|instantiated| (instantiated, limiter.peak))
            .map_err(|e| classify(e, limiter.refused, limit, deadline))
    });

    let response = receiver.await;
    let collected = match response {
        Ok(Ok(resp)) => {
            let (parts, body) = resp.into_parts();
            match body.collect().await {
                Ok(b) => Some((parts.status, parts.headers, b.to_bytes())),
                // A broken body means the guest died mid-stream: the task says why.
                Err(_) => None,
            }
        }
        Ok(Err(code)) => {
            return Err(InvokeError::Trapped(format!(
                "function answered with error {code:?}"
            )));
        }
        Err(_) => None,
    };
    let (instantiate, memory_peak) = match task.await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(e),
        Err(join) => return Err(InvokeError::Host(join.to_string())),
    };
    let (status, headers, body) = collected.ok_or(InvokeError::NoResponse)?;
    Ok((status, headers, body, instantiate, memory_peak))
}

/// The request and response-outparam resources for one call of `handle`, and where the
/// response will arrive.
pub(super) fn incoming(
    store: &mut Store<StoreState>,
    request: InvokeRequest,
) -> Result<
    (
        wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostIncomingRequest>,
        wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostResponseOutparam>,
        ResponseReceiver,
    ),
    InvokeError,
> {
    let host = |e: wasmtime::Error| InvokeError::Host(format!("{e:#}"));
    let mut builder = http::Request::builder()
        .method(request.method)
        .uri(format!("http://localhost{}", request.path_and_query));
    if let Some(h) = builder.headers_mut() {
        *h = request.headers;
    }
    let hyper_req = builder
        .body(
            Full::new(request.body)
                .map_err(|never| -> wasmtime_wasi_http::Error { match never {} }),
        )
        .map_err(|e| InvokeError::Host(e.to_string()))?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, hyper_req)
        .map_err(host)?;
    let out = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .map_err(host)?;
    Ok((req, out, receiver))
}

pub(super) type ResponseReceiver = tokio::sync::oneshot::Receiver<
    Result<
        http::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
        wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
    >,
>;

async fn pre_instantiate(
    store: &mut Store<StoreState>,
    pre: &ProxyPre<StoreState>,
) -> wasmtime::Result<wasmtime_wasi_http::p2::bindings::Proxy> {
    pre.instantiate_async(store).await
}

pub(super) fn classify(
    e: wasmtime::Error,
    memory_refused: bool,
    limit: usize,
    deadline: Duration,
) -> InvokeError {
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        InvokeError::DeadlineExceeded(deadline)
    } else if memory_refused {
        InvokeError::MemoryLimitExceeded(limit)
    } else {
        let mut text = format!("{e:#}");
        text.truncate(500);
        InvokeError::Trapped(text)
    }
}
