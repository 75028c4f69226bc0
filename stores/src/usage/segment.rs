//! Segments: a tenant's raw usage records of one UTC day, packed as zstd-compressed JSON
//! lines once they are past their raw age (both stores keep them the same way).

use std::collections::BTreeMap;

use imgfleet_metering::UsageRecord;

use crate::usage::UsageError;

pub const DAY_MS: u64 = 86_400_000;
const ZSTD_LEVEL: i32 = 9;

fn unavailable(e: impl std::fmt::Display) -> UsageError {
    UsageError::Unavailable(e.to_string())
}

pub fn decode_segment(data: &[u8]) -> Result<Vec<UsageRecord>, UsageError> {
    let text = zstd::decode_all(data).map_err(unavailable)?;
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).map_err(unavailable))
        .collect()
}

pub fn encode_segment(records: &[UsageRecord]) -> Result<Vec<u8>, UsageError> {
    let mut text = Vec::new();
    for r in records {
        serde_json::to_writer(&mut text, r).map_err(unavailable)?;
        text.push(b'\n');
    }
    zstd::encode_all(text.as_slice(), ZSTD_LEVEL).map_err(unavailable)
}

/// Records grouped by tenant and UTC day (the segments they belong in).
pub fn by_tenant_and_day(records: Vec<UsageRecord>) -> BTreeMap<(String, u64), Vec<UsageRecord>> {
    let mut groups: BTreeMap<(String, u64), Vec<UsageRecord>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.tenant.clone(), r.at_ms - r.at_ms % DAY_MS))
            .or_default()
            .push(r);
    }
    groups
}

/// `existing` segment's records and `new` ones, in segment order (time, then id).
pub fn merged(
    existing: Option<&[u8]>,
    mut new: Vec<UsageRecord>,
) -> Result<Vec<UsageRecord>, UsageError> {
    let mut records = match existing {
        Some(blob) => decode_segment(blob)?,
        None => Vec::new(),
    };
    records.append(&mut new);
    in_order(&mut records);
    Ok(records)
}

/// Segment order, which is also the order `UsageStore::records` answers in: time, then id.
pub fn in_order(records: &mut [UsageRecord]) {
    records.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.id.cmp(&b.id)));
}
