//! The fleet's usage store: PostgreSQL, shared by every host's meter. The same tables as
//! the embedded store; a record id can be inserted once, so two hosts folding overlapping
//! batches cannot both count a record — the second fold is refused as raced and refolded.

use async_trait::async_trait;
use imgfleet_metering::{Folded, Rollup, UsageRecord};
use tokio_postgres::error::SqlState;

use super::segment::{DAY_MS, by_tenant_and_day, decode_segment, encode_segment, merged};
use super::{UsageError, UsageStore};
use crate::pg_call;
use crate::postgres::Pg;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS imgfleet_usage_records (
        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, at_ms BIGINT NOT NULL, record TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS imgfleet_usage_records_by_tenant
        ON imgfleet_usage_records (tenant, at_ms);
    CREATE TABLE IF NOT EXISTS imgfleet_usage_rollups (
        tenant TEXT NOT NULL, hour_ms BIGINT NOT NULL,
        requests BIGINT NOT NULL, errors BIGINT NOT NULL,
        bytes_in BIGINT NOT NULL, bytes_out BIGINT NOT NULL,
        pixels_in BIGINT NOT NULL, pixels_out BIGINT NOT NULL, cpu_ns BIGINT NOT NULL,
        PRIMARY KEY (tenant, hour_ms));
    CREATE TABLE IF NOT EXISTS imgfleet_usage_segments (
        tenant TEXT NOT NULL, day_ms BIGINT NOT NULL, records BIGINT NOT NULL,
        data BYTEA NOT NULL, PRIMARY KEY (tenant, day_ms));
    CREATE TABLE IF NOT EXISTS imgfleet_usage_packed_ids (id TEXT PRIMARY KEY);";

/// Serialises compactions across hosts (each packs what is old; two at once would both
/// rewrite the same segments).
const COMPACT_LOCK: i64 = 0x1a6f_1ee7_0003;

pub struct PostgresUsageStore {
    pg: Pg,
}

impl PostgresUsageStore {
    pub async fn open(url: &str) -> Result<Self, UsageError> {
        Ok(Self {
            pg: Pg::open(url, SCHEMA)
                .await
                .map_err(UsageError::Unavailable)?,
        })
    }
}

fn unavailable(e: impl std::fmt::Display) -> UsageError {
    UsageError::Unavailable(e.to_string())
}

/// Two folds touching the same rollups in another order can deadlock, and one is cancelled:
/// that is a race like any other — fold again.
fn classify(e: tokio_postgres::Error) -> UsageError {
    match e.code() {
        Some(c)
            if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
        {
            UsageError::Raced
        }
        _ => unavailable(e),
    }
}

fn i64s(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn parse(text: &str) -> Result<UsageRecord, UsageError> {
    serde_json::from_str(text).map_err(unavailable)
}

#[async_trait]
impl UsageStore for PostgresUsageStore {
    async fn known(&self, ids: Vec<String>) -> Result<Vec<String>, UsageError> {
        pg_call!(&self.pg, unavailable, |c| {
            let rows = c
                .query(
                    "SELECT id FROM imgfleet_usage_records WHERE id = ANY($1)
                     UNION SELECT id FROM imgfleet_usage_packed_ids WHERE id = ANY($1)",
                    &[&ids],
                )
                .await
                .map_err(unavailable)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    async fn apply(&self, folded: Folded) -> Result<(), UsageError> {
        let ids: Vec<&str> = folded.accepted.iter().map(|r| r.id.as_str()).collect();
        let tenants: Vec<&str> = folded.accepted.iter().map(|r| r.tenant.as_str()).collect();
        let at: Vec<i64> = folded.accepted.iter().map(|r| i64s(r.at_ms)).collect();
        let json: Vec<String> = folded
            .accepted
            .iter()
            .map(|r| serde_json::to_string(r).map_err(unavailable))
            .collect::<Result<_, _>>()?;
        let mut rollups = folded.rollups.clone();
        // One order for every fold, so concurrent folds lock rollup rows alike.
        rollups.sort_by(|a, b| (&a.tenant, a.hour_ms).cmp(&(&b.tenant, b.hour_ms)));
        pg_call!(&self.pg, unavailable, |c| {
            let tx = c.transaction().await.map_err(classify)?;
            let inserted = tx
                .execute(
                    "INSERT INTO imgfleet_usage_records (id, tenant, at_ms, record)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[])
                     ON CONFLICT (id) DO NOTHING",
                    &[&ids, &tenants, &at, &json],
                )
                .await
                .map_err(classify)?;
            // Some were stored by another fold since `known` was read: this fold is stale
            // (dropping the transaction rolls it back).
            if inserted != ids.len() as u64 {
                return Err(UsageError::Raced);
            }
            for r in &rollups {
                tx.execute(
                    "INSERT INTO imgfleet_usage_rollups VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (tenant, hour_ms) DO UPDATE SET
                        requests = imgfleet_usage_rollups.requests + excluded.requests,
                        errors = imgfleet_usage_rollups.errors + excluded.errors,
                        bytes_in = imgfleet_usage_rollups.bytes_in + excluded.bytes_in,
                        bytes_out = imgfleet_usage_rollups.bytes_out + excluded.bytes_out,
                        pixels_in = imgfleet_usage_rollups.pixels_in + excluded.pixels_in,
                        pixels_out = imgfleet_usage_rollups.pixels_out + excluded.pixels_out,
                        cpu_ns = imgfleet_usage_rollups.cpu_ns + excluded.cpu_ns",
                    &[
                        &r.tenant,
                        &i64s(r.hour_ms),
                        &i64s(r.requests),
                        &i64s(r.errors),
                        &i64s(r.bytes_in),
                        &i64s(r.bytes_out),
                        &i64s(r.pixels_in),
                        &i64s(r.pixels_out),
                        &i64s(r.cpu_ns),
                    ],
                )
                .await
                .map_err(classify)?;
            }
            tx.commit().await.map_err(classify)
        })
    }

    async fn rollups(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Rollup>, UsageError> {
        pg_call!(&self.pg, unavailable, |c| {
            let rows = c
                .query(
                    "SELECT tenant, hour_ms, requests, errors, bytes_in, bytes_out, pixels_in,
                            pixels_out, cpu_ns
                     FROM imgfleet_usage_rollups
                     WHERE tenant = $1 AND hour_ms >= $2 AND hour_ms < $3 ORDER BY hour_ms",
                    &[&tenant, &i64s(from_ms), &i64s(to_ms)],
                )
                .await
                .map_err(unavailable)?;
            let n = |r: &tokio_postgres::Row, i: usize| r.get::<_, i64>(i) as u64;
            Ok(rows
                .iter()
                .map(|r| Rollup {
                    tenant: r.get(0),
                    hour_ms: n(r, 1),
                    requests: n(r, 2),
                    errors: n(r, 3),
                    bytes_in: n(r, 4),
                    bytes_out: n(r, 5),
                    pixels_in: n(r, 6),
                    pixels_out: n(r, 7),
                    cpu_ns: n(r, 8),
                })
                .collect())
        })
    }

    async fn tenants(&self, from_ms: u64, to_ms: u64) -> Result<Vec<String>, UsageError> {
        pg_call!(&self.pg, unavailable, |c| {
            let rows = c
                .query(
                    "SELECT DISTINCT tenant FROM imgfleet_usage_rollups
                     WHERE hour_ms >= $1 AND hour_ms < $2 ORDER BY tenant",
                    &[&i64s(from_ms), &i64s(to_ms)],
                )
                .await
                .map_err(unavailable)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    async fn records(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<UsageRecord>, UsageError> {
        let to = i64s(to_ms);
        pg_call!(&self.pg, unavailable, |c| {
            let mut out = Vec::new();
            let segments = c
                .query(
                    "SELECT data FROM imgfleet_usage_segments
                     WHERE tenant = $1 AND day_ms >= $2 AND day_ms < $3 ORDER BY day_ms",
                    &[&tenant, &i64s(from_ms - from_ms % DAY_MS), &to],
                )
                .await
                .map_err(unavailable)?;
            for s in &segments {
                out.extend(
                    decode_segment(s.get(0))?
                        .into_iter()
                        .filter(|r| r.at_ms >= from_ms && r.at_ms < to_ms),
                );
            }
            let raw = c
                .query(
                    "SELECT record FROM imgfleet_usage_records
                     WHERE tenant = $1 AND at_ms >= $2 AND at_ms < $3 ORDER BY at_ms",
                    &[&tenant, &i64s(from_ms), &to],
                )
                .await
                .map_err(unavailable)?;
            for r in &raw {
                out.push(parse(r.get(0))?);
            }
            super::segment::in_order(&mut out);
            Ok(out)
        })
    }

    async fn compact(&self, before_ms: u64) -> Result<u64, UsageError> {
        pg_call!(&self.pg, unavailable, |c| {
            let tx = c.transaction().await.map_err(unavailable)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COMPACT_LOCK])
                .await
                .map_err(unavailable)?;
            let rows = tx
                .query(
                    "SELECT record FROM imgfleet_usage_records WHERE at_ms < $1",
                    &[&i64s(before_ms)],
                )
                .await
                .map_err(unavailable)?;
            let old: Vec<UsageRecord> = rows
                .iter()
                .map(|r| parse(r.get(0)))
                .collect::<Result<_, _>>()?;
            let mut packed = 0u64;
            for ((tenant, day), records) in by_tenant_and_day(old) {
                let new_ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
                let existing = tx
                    .query_opt(
                        "SELECT data FROM imgfleet_usage_segments WHERE tenant = $1 AND day_ms = $2",
                        &[&tenant, &i64s(day)],
                    )
                    .await
                    .map_err(unavailable)?;
                let records = merged(existing.as_ref().map(|r| r.get::<_, &[u8]>(0)), records)?;
                tx.execute(
                    "INSERT INTO imgfleet_usage_segments (tenant, day_ms, records, data)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (tenant, day_ms) DO UPDATE SET records = excluded.records,
                        data = excluded.data",
                    &[
                        &tenant,
                        &i64s(day),
                        &(records.len() as i64),
                        &encode_segment(&records)?,
                    ],
                )
                .await
                .map_err(unavailable)?;
                // Packed records are still known: a late redelivery counts nothing.
                tx.execute(
                    "INSERT INTO imgfleet_usage_packed_ids (id) SELECT UNNEST($1::text[])
                     ON CONFLICT (id) DO NOTHING",
                    &[&new_ids],
                )
                .await
                .map_err(unavailable)?;
                packed += tx
                    .execute(
                        "DELETE FROM imgfleet_usage_records WHERE id = ANY($1)",
                        &[&new_ids],
                    )
                    .await
                    .map_err(unavailable)?;
            }
            tx.commit().await.map_err(unavailable)?;
            Ok(packed)
        })
    }
}
