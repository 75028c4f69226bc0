//! The usage store port: raw usage records, each counted once, and hourly rollups per
//! tenant. Backends side by side: `sqlite` (one host), `postgres` (a fleet), `dynamodb` (AWS).

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod segment;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use async_trait::async_trait;
use imgfleet_metering::{Folded, ImageSide, Rollup, UsageRecord};

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("the usage store is unavailable: {0}")]
    Unavailable(String),
    /// Some records were stored by someone else since the fold: fold again.
    #[error("records of this batch were counted concurrently")]
    Raced,
}

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Which of `ids` are already counted.
    async fn known(&self, ids: Vec<String>) -> Result<Vec<String>, UsageError>;
    /// Stores a fold's records and adds its rollups, all or nothing.
    async fn apply(&self, folded: Folded) -> Result<(), UsageError>;
    /// One tenant's hourly rollups with `from_ms <= hour < to_ms`, oldest first.
    async fn rollups(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Rollup>, UsageError>;
    /// Tenants with any usage in the range (for admins).
    async fn tenants(&self, from_ms: u64, to_ms: u64) -> Result<Vec<String>, UsageError>;
    /// One tenant's raw records in `[from_ms, to_ms)`, compressed segments included, by time.
    async fn records(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<UsageRecord>, UsageError>;
    /// Packs raw records older than `before_ms` into compressed per-tenant, per-day segments.
    /// Returns how many records were packed.
    async fn compact(&self, before_ms: u64) -> Result<u64, UsageError>;
}

/// Sums hourly rollups into buckets of `bucket_ms` (hours or UTC days).
pub fn bucket(rollups: &[Rollup], bucket_ms: u64) -> Vec<Rollup> {
    let mut out: Vec<Rollup> = Vec::new();
    for r in rollups {
        let start = r.hour_ms - r.hour_ms % bucket_ms;
        match out.last_mut() {
            Some(last) if last.hour_ms == start && last.tenant == r.tenant => last.merge(r),
            _ => out.push(Rollup {
                hour_ms: start,
                ..r.clone()
            }),
        }
    }
    out
}

/// The input and output sides of a function's `imgfleet-facts` header (empty when absent).
pub fn image_sides(facts: Option<&str>) -> (ImageSide, ImageSide) {
    let side = |f: &imgfleet_resize::ImageFacts| ImageSide {
        bytes: f.bytes,
        format: Some(f.format.name().to_string()),
        width: f.width,
        height: f.height,
    };
    match facts.and_then(imgfleet_resize::http::Facts::parse) {
        Some(f) => (side(&f.input), side(&f.output)),
        None => Default::default(),
    }
}
