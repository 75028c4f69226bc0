//! imgfleet's persistence: one folder per port (identity, usage, jobs, staging, audit), each
//! with its backends side by side, named for what they run on. Backends come with features
//! (`sqlite`, `postgres`, `dynamodb`, `jetstream`), so a Lambda binary carries only DynamoDB;
//! no backend links the WASM runtime.

pub mod clock;
pub mod data_dir;
pub mod identity;
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
