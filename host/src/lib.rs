//! imgfleet's native host: runs the WASM functions named in `spin.toml` on wasmtime,
//! places invocations on the machine's cores and serves the HTTP API. One folder per layer;
//! `wiring` is the one place that opens the stores and queues and starts every layer.

pub mod api;
pub mod console;
pub mod data_plane;
pub mod delivery;
pub mod execution;
pub mod metering;
pub mod operator;
pub mod wiring;
