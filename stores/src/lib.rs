//! imgfleet's persistence: one folder per port (identity, usage, jobs, staging, audit,
//! origins, results), each with its backends side by side, named for what they run on. Backends come
//! with features (`sqlite`, `postgres`, `dynamodb`, `jetstream`, `http-origins`, `s3`), so a
//! Lambda binary carries only what it uses; no backend links the WASM runtime.

pub mod clock;
pub mod data_dir;
pub mod identity;
#[cfg(any(feature = "http-origins", feature = "s3"))]
pub mod origins;
#[cfg(any(feature = "http-origins", feature = "s3"))]
pub mod results;
pub mod usage;

#[cfg(feature = "sqlite")]
pub mod audit;
#[cfg(all(feature = "sqlite", feature = "postgres"))]
pub mod jobs;
#[cfg(feature = "jetstream")]
pub mod staging;

#[cfg(feature = "dynamodb")]
pub mod aws;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
