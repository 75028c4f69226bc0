//! Usage on DynamoDB. Items of the table:
//!
//! | pk | sk | holds |
//! |---|---|---|
//! | `id#<record id>` | `id` | nothing: the mark that a record is counted (kept after packing) |
//! | `raw#<tenant>` | `<at_ms>#<id>` | `record`: the raw record's JSON, `at_ms` |
//! | `hour#<tenant>` | `<hour_ms>` | the hourly rollup's counters, `tenant`, `hour_ms` |
//! | `seg#<tenant>` | `<day_ms>#<first id>` | `data`: packed records (zstd JSON lines), `records` |
//!
//! A fold is written in transactions of [`RECORDS_PER_TRANSACTION`] records: each puts the
//! records' marks on the condition that none exists, the raw records, and adds the chunk's
//! rollups. A chunk whose records someone else counted meanwhile is cancelled as a whole and
//! reported as `Raced`; the meter folds again without the records now known, so each record
//! is counted exactly once even when a fold is only partly written before a failure.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, TransactWriteItem, Update,
};
use imgfleet_metering::{Batch, Folded, Rollup, UsageRecord, fold};

use super::segment::{DAY_MS, by_tenant_and_day, decode_segment, encode_segment, in_order};
use crate::dynamodb::{error_text, get_n, get_s, is_condition_failure, n, s, sortable};
use crate::usage::{UsageError, UsageStore};

/// Two items per record plus at most one rollup each stay under DynamoDB's 100 per
/// transaction.
const RECORDS_PER_TRANSACTION: usize = 30;
/// One segment is written with the deletion of its raw records in one transaction.
const RECORDS_PER_SEGMENT: usize = 99;
const COUNTERS: [&str; 7] = [
    "requests",
    "errors",
    "bytes_in",
    "bytes_out",
    "pixels_in",
    "pixels_out",
    "cpu_ns",
];

type Item = HashMap<String, AttributeValue>;

fn unavailable(e: impl std::fmt::Display) -> UsageError {
    UsageError::Unavailable(e.to_string())
}

fn mark_key(id: &str) -> (String, &'static str) {
    (format!("id#{id}"), "id")
}

fn raw_sk(r: &UsageRecord) -> String {
    format!("{}#{}", sortable(r.at_ms), r.id)
}

fn counters(r: &Rollup) -> [u64; 7] {
    [
        r.requests,
        r.errors,
        r.bytes_in,
        r.bytes_out,
        r.pixels_in,
        r.pixels_out,
        r.cpu_ns,
    ]
}

pub struct DynamoUsageStore {
    client: Client,
    table: String,
}

impl DynamoUsageStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Every item of partition `pk` with `from <= sk <= to`.
    async fn query_range(
        &self,
        pk: String,
        from: String,
        to: String,
    ) -> Result<Vec<Item>, UsageError> {
        self.client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(to))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| unavailable(error_text(e)))
    }

    /// Every item whose `pk` starts with `prefix` and whose `field` is in `[from, to)`.
    async fn scan_prefix(
        &self,
        prefix: &str,
        field: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Item>, UsageError> {
        self.client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .filter_expression("begins_with(pk, :prefix) AND #f >= :from AND #f < :to")
            .expression_attribute_names("#f", field)
            .expression_attribute_values(":prefix", s(prefix))
            .expression_attribute_values(":from", n(from))
            .expression_attribute_values(":to", n(to))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| unavailable(error_text(e)))
    }

    fn chunk_items(&self, records: &[UsageRecord]) -> Result<Vec<TransactWriteItem>, UsageError> {
        let mut items = Vec::new();
        for r in records {
            let (pk, sk) = mark_key(&r.id);
            let mark = Put::builder()
                .table_name(&self.table)
                .item("pk", s(pk))
                .item("sk", s(sk))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(unavailable)?;
            let raw = Put::builder()
                .table_name(&self.table)
                .item("pk", s(format!("raw#{}", r.tenant)))
                .item("sk", s(raw_sk(r)))
                .item("at_ms", n(r.at_ms))
                .item("record", s(serde_json::to_string(r).map_err(unavailable)?))
                .build()
                .map_err(unavailable)?;
            items.push(TransactWriteItem::builder().put(mark).build());
            items.push(TransactWriteItem::builder().put(raw).build());
        }
        // The chunk's own rollups: a chunk is written, or cancelled, whole.
        let rollups = fold(
            Batch {
                id: String::new(),
                records: records.to_vec(),
            },
            &[],
        )
        .rollups;
        for rollup in &rollups {
            let mut update = Update::builder()
                .table_name(&self.table)
                .key("pk", s(format!("hour#{}", rollup.tenant)))
                .key("sk", s(sortable(rollup.hour_ms)))
                .update_expression(format!(
                    "SET tenant = :tenant, hour_ms = :hour ADD {}",
                    COUNTERS
                        .iter()
                        .map(|c| format!("{c} :{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .expression_attribute_values(":tenant", s(rollup.tenant.clone()))
                .expression_attribute_values(":hour", n(rollup.hour_ms));
            for (name, value) in COUNTERS.iter().zip(counters(rollup)) {
                update = update.expression_attribute_values(format!(":{name}"), n(value));
            }
            items.push(
                TransactWriteItem::builder()
                    .update(update.build().map_err(unavailable)?)
                    .build(),
            );
        }
        Ok(items)
    }

    /// Packs one tenant-day chunk into a segment and deletes its raw records, in one
    /// transaction; false when a concurrent compaction packed them first.
    async fn pack(
        &self,
        tenant: &str,
        day_ms: u64,
        records: &[UsageRecord],
    ) -> Result<bool, UsageError> {
        let data = encode_segment(records)?;
        let segment = Put::builder()
            .table_name(&self.table)
            .item("pk", s(format!("seg#{tenant}")))
            .item("sk", s(format!("{}#{}", sortable(day_ms), records[0].id)))
            .item("data", AttributeValue::B(Blob::new(data)))
            .item("records", n(records.len() as u64))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(unavailable)?;
        let mut request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(segment).build());
        for r in records {
            let delete = Delete::builder()
                .table_name(&self.table)
                .key("pk", s(format!("raw#{tenant}")))
                .key("sk", s(raw_sk(r)))
                .condition_expression("attribute_exists(pk)")
                .build()
                .map_err(unavailable)?;
            request = request.transact_items(TransactWriteItem::builder().delete(delete).build());
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(unavailable(error_text(e))),
        }
    }
}

fn parse_record(item: &Item) -> Result<UsageRecord, UsageError> {
    let text =
        get_s(item, "record").ok_or_else(|| unavailable("a raw usage item has no record"))?;
    serde_json::from_str(text).map_err(unavailable)
}

#[async_trait]
impl UsageStore for DynamoUsageStore {
    async fn known(&self, ids: Vec<String>) -> Result<Vec<String>, UsageError> {
        let mut known = Vec::new();
        let unique: BTreeSet<String> = ids.into_iter().collect();
        let unique: Vec<String> = unique.into_iter().collect();
        for chunk in unique.chunks(100) {
            let mut keys = KeysAndAttributes::builder().consistent_read(true);
            for id in chunk {
                let (pk, sk) = mark_key(id);
                keys = keys.keys(HashMap::from([
                    ("pk".to_string(), s(pk)),
                    ("sk".to_string(), s(sk)),
                ]));
            }
            let mut pending = Some(HashMap::from([(
                self.table.clone(),
                keys.build().map_err(unavailable)?,
            )]));
            while let Some(request) = pending.take().filter(|r| !r.is_empty()) {
                let out = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(request))
                    .send()
                    .await
                    .map_err(|e| unavailable(error_text(e)))?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    if let Some(id) = get_s(&item, "pk").and_then(|pk| pk.strip_prefix("id#")) {
                        known.push(id.to_string());
                    }
                }
                pending = out.unprocessed_keys;
            }
        }
        Ok(known)
    }

    async fn apply(&self, folded: Folded) -> Result<(), UsageError> {
        for chunk in folded.accepted.chunks(RECORDS_PER_TRANSACTION) {
            let items = self.chunk_items(chunk)?;
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if is_condition_failure(&e) => return Err(UsageError::Raced),
                Err(e) => return Err(unavailable(error_text(e))),
            }
        }
        Ok(())
    }

    async fn rollups(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Rollup>, UsageError> {
        if to_ms <= from_ms {
            return Ok(Vec::new());
        }
        let items = self
            .query_range(
                format!("hour#{tenant}"),
                sortable(from_ms),
                sortable(to_ms - 1),
            )
            .await?;
        Ok(items
            .iter()
            .map(|item| {
                let c = |name| get_n(item, name);
                Rollup {
                    tenant: tenant.to_string(),
                    hour_ms: c("hour_ms"),
                    requests: c("requests"),
                    errors: c("errors"),
                    bytes_in: c("bytes_in"),
                    bytes_out: c("bytes_out"),
                    pixels_in: c("pixels_in"),
                    pixels_out: c("pixels_out"),
                    cpu_ns: c("cpu_ns"),
                }
            })
            .collect())
    }

    async fn tenants(&self, from_ms: u64, to_ms: u64) -> Result<Vec<String>, UsageError> {
        let items = self.scan_prefix("hour#", "hour_ms", from_ms, to_ms).await?;
        let tenants: BTreeSet<String> = items
            .iter()
            .filter_map(|item| get_s(item, "tenant").map(str::to_string))
            .collect();
        Ok(tenants.into_iter().collect())
    }

    async fn records(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<UsageRecord>, UsageError> {
        if to_ms <= from_ms {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        // A segment's sort key starts with its day, so days before `to_ms` sort below it.
        let segments = self
            .query_range(
                format!("seg#{tenant}"),
                sortable(from_ms - from_ms % DAY_MS),
                sortable(to_ms),
            )
            .await?;
        for item in &segments {
            let data = item
                .get("data")
                .and_then(|v| v.as_b().ok())
                .ok_or_else(|| unavailable("a usage segment has no data"))?;
            out.extend(
                decode_segment(data.as_ref())?
                    .into_iter()
                    .filter(|r| (from_ms..to_ms).contains(&r.at_ms)),
            );
        }
        for item in self
            .query_range(format!("raw#{tenant}"), sortable(from_ms), sortable(to_ms))
            .await?
        {
            out.push(parse_record(&item)?);
        }
        in_order(&mut out);
        Ok(out)
    }

    async fn compact(&self, before_ms: u64) -> Result<u64, UsageError> {
        let old = self
            .scan_prefix("raw#", "at_ms", 0, before_ms)
            .await?
            .iter()
            .map(parse_record)
            .collect::<Result<Vec<_>, _>>()?;
        let mut packed = 0;
        for ((tenant, day), mut records) in by_tenant_and_day(old) {
            in_order(&mut records);
            for chunk in records.chunks(RECORDS_PER_SEGMENT) {
                if self.pack(&tenant, day, chunk).await? {
                    packed += chunk.len() as u64;
                }
            }
        }
        Ok(packed)
    }
}
