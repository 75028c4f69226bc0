//! Usage metering: every authenticated request leaves a usage record in the host's local
//! durable log (with its audit record, before the response); `shipper` sends them in
//! batches to the `usage` queue; `meter` folds each batch with the metering function and
//! stores records and hourly rollups in the usage store, counting each record once.

pub mod meter;
pub mod shipper;

/// Milliseconds (as the host measures them) to nanoseconds (as records keep them).
pub fn ns(ms: f64) -> u64 {
    (ms * 1e6) as u64
}
