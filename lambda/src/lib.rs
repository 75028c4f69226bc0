//! imgfleet on AWS Lambda. Three functions, each a thin adapter over the same logic the WASM
//! components run: `api` (API Gateway HTTP API → auth-check, then a sync resize or a queued
//! job), `resize` (the jobs queue's consumer) and `metering` (the usage queue's consumer).
//! Every handler takes its event and a [`deps::Deps`], so the tests drive them in-process
//! against a real SQS/DynamoDB/S3 API (moto).

pub mod api;
pub mod deps;
pub mod envelope;
pub mod job;
pub mod metering;
pub mod resize;
pub mod staging;
pub mod usage;
