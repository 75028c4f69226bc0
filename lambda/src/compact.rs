//! The compaction function, run once a day by an EventBridge schedule: packs raw usage
//! records older than the raw age into compressed per-tenant, per-day segments, as the
//! host does on its own timer. Packing is idempotent, so a run cut short by the function's
//! timeout is finished by the next.

use imgfleet_stores::usage::{UsageError, UsageStore};

use crate::deps::Deps;

const DAY_MS: u64 = 86_400_000;
/// The host's default (`--usage-raw-days`).
pub const DEFAULT_RAW_DAYS: u64 = 7;

/// Packs the records older than `raw_days` before `now_ms`; returns how many were packed.
pub async fn run(deps: &Deps, now_ms: u64, raw_days: u64) -> Result<u64, UsageError> {
    let before = now_ms.saturating_sub(raw_days * DAY_MS);
    let packed = deps.usage.compact(before).await?;
    tracing::info!(packed, before_ms = before, "usage records packed");
    Ok(packed)
}

/// `IMGFLEET_USAGE_RAW_DAYS`, as the host's flag of the same name (at least 5).
pub fn raw_days_from_env() -> Result<u64, String> {
    match std::env::var("IMGFLEET_USAGE_RAW_DAYS") {
        Err(_) => Ok(DEFAULT_RAW_DAYS),
        Ok(v) => match v.parse::<u64>() {
            Ok(days) if days >= 5 => Ok(days),
            _ => Err(format!(
                "IMGFLEET_USAGE_RAW_DAYS=`{v}`: a whole number of days, at least 5"
            )),
        },
    }
}
