//! metering: a batch of usage records (one per request, from the API hosts) goes in; the
//! records that count and their per-tenant hourly rollups come out. Pure: the caller says
//! which record ids are already counted, so a redelivered batch adds nothing.

pub mod fold;
pub mod http;
pub mod record;

pub use fold::{Folded, Rejected, Rollup, fold};
pub use record::{Batch, CacheUse, ImageSide, UsageRecord};
