//! Every end-to-end test in one binary: real `imgfleet` processes, real servers (moto_server,
//! nats-server, PostgreSQL), black box over HTTP. One module per area.

mod async_jobs;
mod browser;
mod chaos;
mod console;
mod contract;
mod delivery;
mod faults;
mod fleet;
mod fleet_faults;
mod fleet_kit;
mod fuzz_replay;
mod host_defences;
mod http_resize;
mod identity;
mod metering;
mod observability;
mod queue_path;
mod result_cache;
mod wasm_vs_native;
