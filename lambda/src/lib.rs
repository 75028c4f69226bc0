//! imgfleet on AWS Lambda. Thin adapters over the same logic the WASM components run: `api`
//! (API Gateway → auth-check, then a sync resize or a queued job), `resize` (the jobs
//! queue's consumer), `metering` (the usage queue's consumer) and `compact` (a daily
//! schedule packing old usage records).
//! Every handler takes its event and a [`deps::Deps`], so the tests drive them in-process
//! against a real SQS/DynamoDB/S3 API (moto).

pub mod api;
pub mod compact;
pub mod deps;
pub mod envelope;
pub mod job;
pub mod metering;
pub mod resize;
pub mod staging;
pub mod usage;
