//! The store ports of imgfleet (identity, usage) and the backends that the host and the
//! Lambda functions share. The host adds its own embedded and fleet backends; this crate
//! stays free of the WASM runtime so a Lambda binary carries only what it runs.

pub mod aws;
pub mod dynamodb;
pub mod identity;
pub mod segment;
pub mod usage;
