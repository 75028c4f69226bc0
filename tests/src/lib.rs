//! Test kit shared by the function's own tests, the end-to-end tests and the benchmarks:
//! images generated on the spot (no binary fixtures to trust) and a real `imgfleet`
//! process to talk to over HTTP.

pub mod bench;
pub mod collector;
pub mod colour;
pub mod host;
pub mod images;
pub mod nats;
pub mod origin;
pub mod photos;
pub mod postgres;
pub mod quality;
pub mod traffic;
