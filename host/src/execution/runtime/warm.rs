//! A warm instance: one instance that serves many calls, for small pure functions on the
//! request path (auth-check) where even a pooled instantiation and a fresh WASI context cost
//! more than the function itself. Everything else keeps a fresh instance per invocation.
//!
//! Why this is safe for auth-check: it keeps no state between calls by construction (pure
//! code, no globals), answers only from its input, and the holder retires an instance after a
//! bounded number of calls or at its first failure.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

use super::engine::EPOCH_TICK;
use super::invoke::{InvokeError, InvokeRequest, classify, incoming};
use super::state::StoreState;

pub struct WarmInstance {
    store: Store<StoreState>,
    proxy: Proxy,
    calls: u64,
    memory_limit: usize,
}

impl WarmInstance {
    pub(super) async fn new(
        engine: &Engine,
        pre: &ProxyPre<StoreState>,
        memory_limit: usize,
    ) -> Result<Self, InvokeError> {
        let mut store = Store::new(engine, StoreState::new(memory_limit));
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(Duration::from_secs(1)));
        let proxy = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| InvokeError::Host(format!("instantiating: {e:#}")))?;
        Ok(Self {
            store,
            proxy,
            calls: 0,
            memory_limit,
        })
    }

    /// Calls made through this instance so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// One request through `handle`; status and body come back. After an error the instance
    /// must be dropped (its state is unknown).
    pub async fn call(
        &mut self,
        request: InvokeRequest,
        deadline: Duration,
    ) -> Result<(http::StatusCode, Bytes), InvokeError> {
        self.calls += 1;
        let (req, out, receiver) = incoming(&mut self.store, request)?;
        self.store.set_epoch_deadline(ticks(deadline));
        let handler = self.proxy.wasi_http_incoming_handler();
        // The guest writes its body while `handle` runs: call and read side by side.
        let call = handler.call_handle(&mut self.store, req, out);
        let read = async {
            let resp = receiver.await.ok()?.ok()?;
            let (parts, body) = resp.into_parts();
            Some((parts.status, body.collect().await.ok()?.to_bytes()))
        };
        let (called, read) = tokio::join!(call, read);
        if let Err(e) = called {
            let refused = self.store.data().limiter.refused;
            return Err(classify(e, refused, self.memory_limit, deadline));
        }
        read.ok_or(InvokeError::NoResponse)
    }
}

/// A few warm instances of one function, shared by many callers: at most `max` exist, each
/// used by one caller at a time, retired after `CALLS_PER_INSTANCE` calls or any failure.
pub struct WarmPool {
    runtime: std::sync::Arc<super::Runtime>,
    function: String,
    idle: std::sync::Mutex<Vec<WarmInstance>>,
    permits: tokio::sync::Semaphore,
}

/// Bounds whatever an instance might accumulate over its life.
pub const CALLS_PER_INSTANCE: u64 = 100_000;

impl WarmPool {
    pub fn new(runtime: std::sync::Arc<super::Runtime>, function: &str, max: usize) -> Self {
        Self {
            runtime,
            function: function.to_string(),
            idle: std::sync::Mutex::new(Vec::new()),
            // The instances come from the runtime's fixed pool: never more than `max`.
            permits: tokio::sync::Semaphore::new(max.max(1)),
        }
    }

    /// `POST /` with `body` to the function; its status and body.
    pub async fn post(
        &self,
        body: Bytes,
        deadline: Duration,
    ) -> Result<(http::StatusCode, Bytes), InvokeError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| InvokeError::Host(e.to_string()))?;
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut instance = match pooled {
            Some(i) => i,
            None => self.runtime.warm(&self.function).await?,
        };
        let request = InvokeRequest {
            method: http::Method::POST,
            path_and_query: "/".into(),
            headers: http::HeaderMap::new(),
            body,
        };
        // On error the instance is dropped: its state is unknown.
        let answer = instance.call(request, deadline).await?;
        if instance.calls() < CALLS_PER_INSTANCE {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(instance);
        }
        Ok(answer)
    }
}

fn ticks(d: Duration) -> u64 {
    d.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64
}
