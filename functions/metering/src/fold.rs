//! Validation, de-duplication and the hourly rollup.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::record::{Batch, UsageRecord};

pub const HOUR_MS: u64 = 3_600_000;

/// One tenant's usage in one hour (UTC), or an increment of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollup {
    pub tenant: String,
    pub hour_ms: u64,
    pub requests: u64,
    /// Requests answered with a status of 400 or above.
    pub errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub pixels_in: u64,
    pub pixels_out: u64,
    pub cpu_ns: u64,
}

impl Rollup {
    pub fn add(&mut self, r: &UsageRecord) {
        self.requests += 1;
        self.errors += u64::from(r.status >= 400);
        self.bytes_in += r.input.bytes;
        self.bytes_out += r.output.bytes;
        self.pixels_in += r.input.pixels();
        self.pixels_out += r.output.pixels();
        self.cpu_ns += r.cpu_ns;
    }

    /// Adds another rollup of the same tenant and hour.
    pub fn merge(&mut self, o: &Rollup) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.pixels_in += o.pixels_in;
        self.pixels_out += o.pixels_out;
        self.cpu_ns += o.cpu_ns;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub id: String,
    pub reason: String,
}

/// The outcome of folding one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folded {
    /// Records to keep, each counted once in `rollups`.
    pub accepted: Vec<UsageRecord>,
    /// Per tenant and hour, sorted.
    pub rollups: Vec<Rollup>,
    /// Records already counted (named in `known`, or repeated within the batch).
    pub duplicates: u64,
    /// Records that cannot be counted, and why.
    pub rejected: Vec<Rejected>,
}

pub fn validate(r: &UsageRecord) -> Result<(), String> {
    let plain = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.#".contains(&b))
    };
    if r.id.is_empty() || r.id.len() > 64 || !plain(&r.id) {
        return Err("id must be 1-64 characters of A-Za-z0-9-_.#".into());
    }
    if r.tenant.is_empty() || r.tenant.len() > 64 || !plain(&r.tenant) {
        return Err("tenant must be 1-64 characters of A-Za-z0-9-_.#".into());
    }
    if r.key_id.len() > 64 {
        return Err("key_id is longer than 64 characters".into());
    }
    if !(100..=599).contains(&r.status) {
        return Err(format!("status {} is not an HTTP status", r.status));
    }
    if r.at_ms == 0 {
        return Err("at_ms is missing".into());
    }
    if !r.route.starts_with('/') || r.route.len() > 256 {
        return Err("route must be a path of at most 256 characters".into());
    }
    Ok(())
}

/// Folds `batch`, skipping every record whose id is in `known` (already counted) or
/// repeated within the batch.
pub fn fold(batch: Batch, known: &[String]) -> Folded {
    let mut seen: HashSet<String> = known.iter().cloned().collect();
    let mut out = Folded::default();
    let mut rollups: BTreeMap<(String, u64), Rollup> = BTreeMap::new();
    for r in batch.records {
        if let Err(reason) = validate(&r) {
            out.rejected.push(Rejected { id: r.id, reason });
            continue;
        }
        if !seen.insert(r.id.clone()) {
            out.duplicates += 1;
            continue;
        }
        let hour = r.at_ms - r.at_ms % HOUR_MS;
        rollups
            .entry((r.tenant.clone(), hour))
            .or_insert_with(|| Rollup {
                tenant: r.tenant.clone(),
                hour_ms: hour,
                ..Rollup::default()
            })
            .add(&r);
        out.accepted.push(r);
    }
    out.rollups = rollups.into_values().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ImageSide;

    fn rec(id: &str, tenant: &str, at_ms: u64, status: u16) -> UsageRecord {
        UsageRecord {
            id: id.into(),
            request_id: String::new(),
            tenant: tenant.into(),
            key_id: "k".into(),
            at_ms,
            route: "/v1/resize".into(),
            status,
            input: ImageSide {
                bytes: 1000,
                format: Some("jpeg".into()),
                width: 40,
                height: 30,
            },
            output: ImageSide {
                bytes: 100,
                format: Some("png".into()),
                width: 4,
                height: 3,
            },
            cpu_ns: 5_000_000,
            wall_ns: 6_000_000,
            queue_ns: 1000,
            origin_bytes: 0,
            not_modified: false,
            cache: None,
        }
    }

    fn batch(records: Vec<UsageRecord>) -> Batch {
        Batch {
            id: "b".into(),
            records,
        }
    }

    #[test]
    fn records_roll_up_per_tenant_and_hour() {
        let h = 10 * HOUR_MS;
        let f = fold(
            batch(vec![
                rec("1", "a", h + 5, 200),
                rec("2", "a", h + HOUR_MS - 1, 415),
                rec("3", "a", h + HOUR_MS, 200),
                rec("4", "b", h + 7, 200),
            ]),
            &[],
        );
        assert_eq!(f.accepted.len(), 4);
        assert_eq!(f.rollups.len(), 3);
        let first = &f.rollups[0];
        assert_eq!((first.tenant.as_str(), first.hour_ms), ("a", h));
        assert_eq!(first.requests, 2);
        assert_eq!(first.errors, 1);
        assert_eq!(first.bytes_in, 2000);
        assert_eq!(first.bytes_out, 200);
        assert_eq!(first.pixels_in, 2400);
        assert_eq!(first.pixels_out, 24);
        assert_eq!(first.cpu_ns, 10_000_000);
        assert_eq!(
            (f.rollups[1].hour_ms, f.rollups[2].tenant.as_str()),
            (h + HOUR_MS, "b")
        );
    }

    #[test]
    fn known_and_repeated_ids_count_once() {
        let f = fold(
            batch(vec![
                rec("1", "a", 5, 200),
                rec("2", "a", 5, 200),
                rec("2", "a", 5, 200),
            ]),
            &["1".to_string()],
        );
        assert_eq!(f.duplicates, 2);
        assert_eq!(f.accepted.len(), 1);
        assert_eq!(f.rollups[0].requests, 1);
        // The same batch again, with everything known: nothing new.
        let again = fold(
            batch(vec![rec("1", "a", 5, 200), rec("2", "a", 5, 200)]),
            &["1".to_string(), "2".to_string()],
        );
        assert!(again.accepted.is_empty() && again.rollups.is_empty());
    }

    #[test]
    fn invalid_records_are_rejected_with_a_reason_and_not_counted() {
        let mut bad_status = rec("s", "a", 5, 200);
        bad_status.status = 42;
        let mut bad_tenant = rec("t", "a b", 5, 200);
        bad_tenant.tenant = "a b".into();
        let no_time = rec("z", "a", 0, 200);
        let mut bad_route = rec("r", "a", 5, 200);
        bad_route.route = "resize".into();
        let f = fold(
            batch(vec![
                bad_status,
                bad_tenant,
                no_time,
                bad_route,
                rec("", "a", 5, 200),
                rec("ok", "a", 5, 200),
            ]),
            &[],
        );
        assert_eq!(f.rejected.len(), 5, "{:?}", f.rejected);
        assert!(f.rejected.iter().all(|r| !r.reason.is_empty()));
        assert_eq!(f.accepted.len(), 1);
    }
}
