//! imgfleet's native host: runs the WASM functions named in `spin.toml` on wasmtime,
//! places invocations on the machine's cores and serves the HTTP API.

pub mod api;
pub mod audit;
pub mod auth;
pub mod capacity;
pub mod cli;
pub mod completions;
pub mod cpu;
pub mod file_guard;
pub mod identity;
pub mod job_store;
pub mod job_store_pg;
pub mod jobs;
pub mod load;
pub mod manifest;
pub mod operator;
pub mod pg;
pub mod queue;
pub mod runtime;
pub mod server;
pub mod shared_staging;
pub mod slots;
pub mod staging;
pub mod telemetry;
pub mod usage;
pub mod worker;
