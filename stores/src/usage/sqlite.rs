//! The embedded usage store: `usage.sqlite` (WAL). Raw records by id (the id is the
//! de-duplication key), hourly rollups per tenant, and zstd-compressed segments (JSON lines)
//! per tenant and UTC day for records past their raw age.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use imgfleet_metering::{Folded, Rollup, UsageRecord};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::segment::{DAY_MS, by_tenant_and_day, decode_segment, encode_segment, merged};
use super::{UsageError, UsageStore};
use crate::sqlite::FileGuard;

#[derive(Clone)]
pub struct SqliteUsageStore {
    /// Writes (one at a time, as SQLite allows).
    conn: Arc<Mutex<Connection>>,
    /// Reads, which WAL lets run beside a write.
    reader: Arc<Mutex<Connection>>,
    /// Counted usage written to a removed file would be lost: unavailable instead, so
    /// batches stay queued until the file is back.
    file: Arc<FileGuard>,
}

fn unavailable(e: impl std::fmt::Display) -> UsageError {
    UsageError::Unavailable(e.to_string())
}

impl SqliteUsageStore {
    pub fn open(path: &Path) -> Result<Self, UsageError> {
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        // Counted usage is billing data: durable through a power cut.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        // Write-heavy: a large page cache and memory-mapped reads keep the B-trees' pages
        // out of read(2) copies.
        conn.pragma_update(None, "cache_size", -65_536)
            .map_err(unavailable)?;
        conn.pragma_update(None, "mmap_size", 1_i64 << 30)
            .map_err(unavailable)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (
                id TEXT PRIMARY KEY, tenant TEXT NOT NULL, at_ms INTEGER NOT NULL,
                record TEXT NOT NULL) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS records_by_tenant ON records(tenant, at_ms);
             CREATE TABLE IF NOT EXISTS rollups (
                tenant TEXT NOT NULL, hour_ms INTEGER NOT NULL,
                requests INTEGER NOT NULL, errors INTEGER NOT NULL,
                bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL,
                pixels_in INTEGER NOT NULL, pixels_out INTEGER NOT NULL,
                cpu_ns INTEGER NOT NULL,
                PRIMARY KEY (tenant, hour_ms));
             CREATE TABLE IF NOT EXISTS segments (
                tenant TEXT NOT NULL, day_ms INTEGER NOT NULL,
                records INTEGER NOT NULL, data BLOB NOT NULL,
                PRIMARY KEY (tenant, day_ms));
             CREATE TABLE IF NOT EXISTS packed_ids (id TEXT PRIMARY KEY) WITHOUT ROWID;",
        )
        .map_err(unavailable)?;
        let reader = Connection::open(path).map_err(unavailable)?;
        reader
            .busy_timeout(Duration::from_secs(5))
            .map_err(unavailable)?;
        reader
            .pragma_update(None, "cache_size", -65_536)
            .map_err(unavailable)?;
        reader
            .pragma_update(None, "mmap_size", 1_i64 << 30)
            .map_err(unavailable)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            file: Arc::new(FileGuard::new(path).map_err(unavailable)?),
        })
    }

    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, UsageError> + Send + 'static,
    ) -> Result<R, UsageError> {
        Self::on(self.conn.clone(), self.file.clone(), f).await
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, UsageError> + Send + 'static,
    ) -> Result<R, UsageError> {
        Self::on(self.reader.clone(), self.file.clone(), f).await
    }

    async fn on<R: Send + 'static>(
        conn: Arc<Mutex<Connection>>,
        file: Arc<FileGuard>,
        f: impl FnOnce(&mut Connection) -> Result<R, UsageError> + Send + 'static,
    ) -> Result<R, UsageError> {
        tokio::task::spawn_blocking(move || {
            file.check().map_err(UsageError::Unavailable)?;
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(unavailable)?
    }
}

fn is_known(c: &Connection, id: &str) -> rusqlite::Result<bool> {
    let raw: Option<i64> = c
        .prepare_cached("SELECT 1 FROM records WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    if raw.is_some() {
        return Ok(true);
    }
    let packed: Option<i64> = c
        .prepare_cached("SELECT 1 FROM packed_ids WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    Ok(packed.is_some())
}

#[async_trait]
impl UsageStore for SqliteUsageStore {
    async fn known(&self, ids: Vec<String>) -> Result<Vec<String>, UsageError> {
        self.read(move |c| {
            let mut known = Vec::new();
            for id in ids {
                if is_known(c, &id).map_err(unavailable)? {
                    known.push(id);
                }
            }
            Ok(known)
        })
        .await
    }

    async fn apply(&self, folded: Folded) -> Result<(), UsageError> {
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO records (id, tenant, at_ms, record) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(id) DO NOTHING",
                    )
                    .map_err(unavailable)?;
                for r in &folded.accepted {
                    let json = serde_json::to_string(r).map_err(unavailable)?;
                    let inserted = insert
                        .execute(params![r.id, r.tenant, r.at_ms as i64, json])
                        .map_err(unavailable)?;
                    // Stored by someone else since `known` was read: the whole fold is stale
                    // (dropping the transaction rolls it back). Packed records cannot race:
                    // they are older than any message the queue still holds.
                    if inserted == 0 {
                        return Err(UsageError::Raced);
                    }
                }
                let mut add = tx
                    .prepare_cached(
                        "INSERT INTO rollups VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT(tenant, hour_ms) DO UPDATE SET
                            requests = requests + excluded.requests,
                            errors = errors + excluded.errors,
                            bytes_in = bytes_in + excluded.bytes_in,
                            bytes_out = bytes_out + excluded.bytes_out,
                            pixels_in = pixels_in + excluded.pixels_in,
                            pixels_out = pixels_out + excluded.pixels_out,
                            cpu_ns = cpu_ns + excluded.cpu_ns",
                    )
                    .map_err(unavailable)?;
                for r in &folded.rollups {
                    add.execute(params![
                        r.tenant,
                        r.hour_ms as i64,
                        r.requests as i64,
                        r.errors as i64,
                        r.bytes_in as i64,
                        r.bytes_out as i64,
                        r.pixels_in as i64,
                        r.pixels_out as i64,
                        r.cpu_ns as i64
                    ])
                    .map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn rollups(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Rollup>, UsageError> {
        let tenant = tenant.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT tenant, hour_ms, requests, errors, bytes_in, bytes_out, pixels_in,
                            pixels_out, cpu_ns
                     FROM rollups WHERE tenant = ?1 AND hour_ms >= ?2 AND hour_ms < ?3
                     ORDER BY hour_ms",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(
                    params![tenant, from_ms as i64, to_ms.min(i64::MAX as u64) as i64],
                    |r| {
                        Ok(Rollup {
                            tenant: r.get(0)?,
                            hour_ms: r.get::<_, i64>(1)? as u64,
                            requests: r.get::<_, i64>(2)? as u64,
                            errors: r.get::<_, i64>(3)? as u64,
                            bytes_in: r.get::<_, i64>(4)? as u64,
                            bytes_out: r.get::<_, i64>(5)? as u64,
                            pixels_in: r.get::<_, i64>(6)? as u64,
                            pixels_out: r.get::<_, i64>(7)? as u64,
                            cpu_ns: r.get::<_, i64>(8)? as u64,
                        })
                    },
                )
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    async fn tenants(&self, from_ms: u64, to_ms: u64) -> Result<Vec<String>, UsageError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT DISTINCT tenant FROM rollups WHERE hour_ms >= ?1 AND hour_ms < ?2
                     ORDER BY tenant",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(
                    params![from_ms as i64, to_ms.min(i64::MAX as u64) as i64],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    async fn records(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<UsageRecord>, UsageError> {
        let tenant = tenant.to_string();
        self.read(move |c| {
            let to = to_ms.min(i64::MAX as u64);
            let mut out = Vec::new();
            let mut segs = c
                .prepare_cached(
                    "SELECT data FROM segments WHERE tenant = ?1 AND day_ms >= ?2 AND day_ms < ?3
                     ORDER BY day_ms",
                )
                .map_err(unavailable)?;
            let blobs = segs
                .query_map(
                    params![tenant, (from_ms - from_ms % DAY_MS) as i64, to as i64],
                    |r| r.get::<_, Vec<u8>>(0),
                )
                .map_err(unavailable)?;
            for blob in blobs {
                out.extend(
                    decode_segment(&blob.map_err(unavailable)?)?
                        .into_iter()
                        .filter(|r| r.at_ms >= from_ms && r.at_ms < to),
                );
            }
            let mut raw = c
                .prepare_cached(
                    "SELECT record FROM records WHERE tenant = ?1 AND at_ms >= ?2 AND at_ms < ?3
                     ORDER BY at_ms",
                )
                .map_err(unavailable)?;
            let rows = raw
                .query_map(params![tenant, from_ms as i64, to as i64], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(unavailable)?;
            for row in rows {
                out.push(serde_json::from_str(&row.map_err(unavailable)?).map_err(unavailable)?);
            }
            super::segment::in_order(&mut out);
            Ok(out)
        })
        .await
    }

    async fn compact(&self, before_ms: u64) -> Result<u64, UsageError> {
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let old: Vec<UsageRecord> = {
                let mut stmt = tx
                    .prepare("SELECT record FROM records WHERE at_ms < ?1")
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(params![before_ms.min(i64::MAX as u64) as i64], |r| {
                        r.get::<_, String>(0)
                    })
                    .map_err(unavailable)?;
                rows.map(|r| serde_json::from_str(&r.map_err(unavailable)?).map_err(unavailable))
                    .collect::<Result<_, UsageError>>()?
            };
            let mut packed = 0u64;
            for ((tenant, day), records) in by_tenant_and_day(old) {
                let existing: Option<Vec<u8>> = tx
                    .query_row(
                        "SELECT data FROM segments WHERE tenant = ?1 AND day_ms = ?2",
                        params![tenant, day as i64],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(unavailable)?;
                let records = merged(existing.as_deref(), records)?;
                let data = encode_segment(&records)?;
                tx.execute(
                    "INSERT INTO segments (tenant, day_ms, records, data) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(tenant, day_ms) DO UPDATE SET records = excluded.records,
                        data = excluded.data",
                    params![tenant, day as i64, records.len() as i64, data],
                )
                .map_err(unavailable)?;
                for r in &records {
                    // Packed records are still known: a late redelivery counts nothing.
                    tx.execute(
                        "INSERT OR IGNORE INTO packed_ids (id) VALUES (?1)",
                        params![r.id],
                    )
                    .map_err(unavailable)?;
                    packed += u64::from(
                        tx.execute("DELETE FROM records WHERE id = ?1", params![r.id])
                            .map_err(unavailable)?
                            > 0,
                    );
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(packed)
        })
        .await
    }
}
