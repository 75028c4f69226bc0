//! Loads a `.wasm` file as a component: core modules (what the Debian/build-std path
//! produces) are wrapped with the preview1 proxy adapter, and the compiled machine code
//! is cached next to the file so a restart does not pay for Cranelift again.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
};
use wasmtime::Engine;
use wasmtime::component::Component;

pub fn load(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading {} (build the functions first: ./dev.sh build-wasm)",
            path.display()
        )
    })?;
    let bytes = to_component(bytes)?;
    let cache = cache_path(engine, path, &bytes);
    if let Some(cache) = &cache
        && cache.exists()
    {
        // SAFETY: the file was written by `precompile_component` of an engine with the same
        // compatibility hash (it is part of the file name), in a directory we own.
        match unsafe { Component::deserialize_file(engine, cache) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(cache = %cache.display(), error = %e, "ignoring unusable compile cache")
            }
        }
    }
    let started = std::time::Instant::now();
    let compiled = engine.precompile_component(&bytes)?;
    tracing::info!(component = %path.display(), ms = started.elapsed().as_millis() as u64, "compiled");
    if let Some(cache) = &cache {
        // A cache we cannot write only costs the next start a compile.
        let _ = write_atomically(cache, &compiled);
    }
    // SAFETY: `compiled` was produced just above by this very engine.
    Ok(unsafe { Component::deserialize(engine, &compiled) }?)
}

/// Wraps a core module into a component; components pass through untouched.
pub fn to_component(bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if wasmparser::Parser::is_component(&bytes) {
        return Ok(bytes);
    }
    if !wasmparser::Parser::is_core_wasm(&bytes) {
        anyhow::bail!("not a WebAssembly module or component");
    }
    wit_component::ComponentEncoder::default()
        .module(&bytes)?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
        )?
        .validate(true)
        .encode()
        .context("wrapping the core module into a component")
}

fn cache_path(engine: &Engine, path: &Path, component: &[u8]) -> Option<PathBuf> {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let mut digest = Sha256::new();
    digest.update(engine_hash.finish().to_le_bytes());
    digest.update(component);
    let key: String = digest
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = path.parent()?.join(".compiled");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join(format!("{key}.cwasm")))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}
