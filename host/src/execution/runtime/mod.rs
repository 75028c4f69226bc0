//! The wasmtime runtime: one engine with the pooling allocator, every component compiled
//! once and pre-instantiated, a fresh instance per invocation with a deadline and a memory cap.

mod engine;
mod invoke;
mod loader;
pub use loader::to_component;
mod state;
mod warm;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wasmtime::Engine;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::execution::manifest::Manifest;

pub use invoke::{Invocation, InvokeError, InvokeRequest};
use state::StoreState;
pub use warm::{WarmInstance, WarmPool};

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Wall-clock budget of one invocation, instantiation included.
    pub deadline: Duration,
    /// Linear-memory cap of one instance.
    pub memory_limit_bytes: usize,
    /// Instances that may exist at once (the pool is sized for this).
    pub max_instances: u32,
}

pub struct Runtime {
    engine: Engine,
    functions: HashMap<String, ProxyPre<StoreState>>,
    config: RuntimeConfig,
    _ticker: engine::EpochTicker,
}

impl Runtime {
    /// Builds the engine and compiles (or loads from cache) every component of the manifest.
    pub fn new(manifest: &Manifest, config: RuntimeConfig) -> anyhow::Result<Arc<Self>> {
        let engine = engine::build(&config)?;
        let ticker = engine::EpochTicker::start(engine.clone());
        let mut functions = HashMap::new();
        for (id, path) in &manifest.components {
            let component = loader::load(&engine, path)
                .with_context(|| format!("loading component `{id}` from {}", path.display()))?;
            let pre = state::pre_instantiate(&engine, &component)
                .with_context(|| format!("linking component `{id}`"))?;
            functions.insert(id.clone(), pre);
        }
        Ok(Arc::new(Self {
            engine,
            functions,
            config,
            _ticker: ticker,
        }))
    }

    pub fn has_function(&self, id: &str) -> bool {
        self.functions.contains_key(id)
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Runs one request through a fresh instance of `function`. Must be polled inside a
    /// tokio runtime; CPU time is measured on the calling thread.
    pub async fn invoke(
        &self,
        function: &str,
        request: InvokeRequest,
    ) -> Result<Invocation, InvokeError> {
        let pre = self
            .functions
            .get(function)
            .ok_or_else(|| InvokeError::UnknownFunction(function.to_string()))?;
        invoke::run(&self.engine, pre, &self.config, request).await
    }

    /// An instance of `function` kept for many calls (see [`WarmInstance`]).
    pub async fn warm(&self, function: &str) -> Result<WarmInstance, InvokeError> {
        let pre = self
            .functions
            .get(function)
            .ok_or_else(|| InvokeError::UnknownFunction(function.to_string()))?;
        WarmInstance::new(&self.engine, pre, self.config.memory_limit_bytes).await
    }
}
