//! The request log: one durable audit record per API request (who, what, outcome, sizes)
//! and, for authenticated requests, its usage record in the outbox that the host's `metering::shipper`
//! empties onto the usage queue. Its own SQLite file, so these writes never wait on job or
//! identity writes. A writer thread commits in groups; a request's response waits for its
//! records' commit, so every answered request is on disk (WAL, synchronous=NORMAL: it
//! survives the process being killed; a power cut may lose the last group).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgfleet_auth::Usage;
use imgfleet_metering::UsageRecord;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    pub request_id: String,
    pub at_ms: u64,
    /// `None` when the request never authenticated.
    pub tenant: Option<String>,
    pub key_id: Option<String>,
    pub method: String,
    pub path: String,
    /// The request's parameters.
    pub query: Option<String>,
    pub status: u16,
    /// The stable error code, for refused or failed requests.
    pub code: Option<String>,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// Output pixels of a resize, when known.
    pub pixels: u64,
    pub duration_ms: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct AuditQuery {
    pub tenant: Option<String>,
    /// Unix milliseconds, inclusive.
    pub from: Option<u64>,
    /// Unix milliseconds, exclusive.
    pub to: Option<u64>,
    pub limit: Option<usize>,
}

pub const MAX_QUERY_LIMIT: usize = 10_000;
const GROUP: usize = 512;
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// While writes fail, how often the writer tries a small one to learn the disk is back.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// What the writer thread commits: requests, and the outbox records already shipped (the
/// deletion rides along in the next group instead of contending for the write lock).
enum Pending {
    Request(Box<AuditRecord>, Option<String>, oneshot::Sender<bool>),
    Shipped(i64, oneshot::Sender<bool>),
    /// A usage record that is not a request's (an asynchronous job's run).
    Usage(String, oneshot::Sender<bool>),
}

#[derive(Clone)]
pub struct AuditLog {
    tx: crossbeam_channel::Sender<Pending>,
    reader: Arc<Mutex<Connection>>,
    health: Health,
}

/// Whether the log takes writes: the last write's error while they fail (disk full, I/O
/// error, locked past the busy timeout), and for good once the writer thread is gone.
#[derive(Clone)]
struct Health(
    Arc<Mutex<Result<(), String>>>,
    Arc<std::sync::atomic::AtomicBool>,
);

impl Health {
    fn get(&self) -> Result<(), String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, state: Result<(), String>) {
        let mut current = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if self.1.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if current.is_ok() != state.is_ok() {
            match &state {
                Ok(()) => tracing::info!("the audit log takes writes again"),
                Err(e) => tracing::error!(error = %e, "the audit log cannot be written"),
            }
        }
        *current = state;
    }
}

/// Marks the writer stopped when its thread ends, however it ends.
struct StoppedOnDrop(Health);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A defect: every request from now on is refused, and the log says why.
            self.0.set(Err("the audit log writer has stopped".into()));
        }
        // Otherwise every handle to the log is gone (the host is shutting down): nobody is
        // left to refuse, and an error logged at each clean stop would be a false alarm.
        self.0.1.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("audit log: {0}")]
    Unavailable(String),
}

fn task_failed(e: tokio::task::JoinError) -> AuditError {
    AuditError::Unavailable(format!("a read of the log failed: {e}"))
}

impl AuditLog {
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.pragma_update(None, "mmap_size", 1_i64 << 30)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS audit (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                request_id TEXT NOT NULL,
                at_ms INTEGER NOT NULL,
                tenant TEXT,
                key_id TEXT,
                method TEXT NOT NULL,
                path TEXT NOT NULL,
                query TEXT,
                status INTEGER NOT NULL,
                code TEXT,
                input_bytes INTEGER NOT NULL,
                output_bytes INTEGER NOT NULL,
                pixels INTEGER NOT NULL,
                duration_ms REAL NOT NULL
            );
            CREATE INDEX IF NOT EXISTS audit_by_time ON audit(at_ms);
            CREATE TABLE IF NOT EXISTS usage_outbox (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                record TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit(tenant, at_ms);",
        )?;
        // Checkpoints (which fsync) run on their own thread, never inside a request's commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_timeout(Duration::from_secs(5))?;
        std::thread::Builder::new()
            .name("audit-checkpoint".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    if let Err(e) =
                        checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "audit checkpoint");
                    }
                }
            })
            .expect("spawning the audit checkpointer");
        let reader = Connection::open(path)?;
        reader.busy_timeout(Duration::from_secs(5))?;
        let (tx, rx) = crossbeam_channel::unbounded::<Pending>();
        let health = Health(Arc::new(Mutex::new(Ok(()))), Default::default());
        let writer_health = health.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let _stopped = StoppedOnDrop(writer_health.clone());
                write_loop(conn, rx, &writer_health)
            })
            .expect("spawning the audit writer");
        Ok(Self {
            tx,
            reader: Arc::new(Mutex::new(reader)),
            health,
        })
    }

    /// `Ok` while records are being committed; the reason while they cannot be (checked
    /// again every half second, so it turns `Ok` by itself once the disk takes writes).
    pub fn health(&self) -> Result<(), String> {
        self.health.get()
    }

    /// The writer is gone: nothing will be recorded again until the process restarts.
    pub fn stopped(&self) -> bool {
        self.health.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records one request (and its usage, if metered); returns once both are committed
    /// (false if they could not be).
    pub async fn record(&self, record: AuditRecord, usage: Option<&UsageRecord>) -> bool {
        let usage = match usage.map(serde_json::to_string).transpose() {
            Ok(u) => u,
            Err(_) => return false,
        };
        let (done, committed) = oneshot::channel();
        if self
            .tx
            .send(Pending::Request(Box::new(record), usage, done))
            .is_err()
        {
            return false;
        }
        committed.await.unwrap_or(false)
    }

    /// Puts a usage record in the outbox on its own; returns once it is committed.
    pub async fn usage(&self, usage: &UsageRecord) -> bool {
        let Ok(json) = serde_json::to_string(usage) else {
            return false;
        };
        let (done, committed) = oneshot::channel();
        if self.tx.send(Pending::Usage(json, done)).is_err() {
            return false;
        }
        committed.await.unwrap_or(false)
    }

    /// The oldest usage records not yet shipped, with their sequence numbers.
    pub async fn outbox(&self, limit: usize) -> Result<Vec<(i64, UsageRecord)>, AuditError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            let mut stmt =
                conn.prepare_cached("SELECT seq, record FROM usage_outbox ORDER BY seq LIMIT ?1")?;
            let rows = stmt.query_map(params![limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, text) = row?;
                match serde_json::from_str(&text) {
                    Ok(rec) => out.push((seq, rec)),
                    // Cannot happen short of disk corruption; keep the rest flowing.
                    Err(e) => tracing::error!(seq, error = %e, "unreadable usage record skipped"),
                }
            }
            Ok(out)
        })
        .await
        .map_err(task_failed)?
    }

    /// Usage records waiting to be shipped, and the time of the oldest.
    pub async fn outbox_stats(&self) -> Result<(u64, Option<u64>), AuditError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            let count: i64 =
                conn.query_row("SELECT COUNT(*) FROM usage_outbox", [], |r| r.get(0))?;
            let oldest: Option<String> = conn
                .query_row(
                    "SELECT record FROM usage_outbox ORDER BY seq LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let oldest_ms = oldest
                .and_then(|t| serde_json::from_str::<UsageRecord>(&t).ok())
                .map(|r| r.at_ms);
            Ok((count as u64, oldest_ms))
        })
        .await
        .map_err(task_failed)?
    }

    /// Forgets shipped usage records (all up to and including `seq`).
    pub async fn shipped(&self, seq: i64) -> Result<(), AuditError> {
        let (done, committed) = oneshot::channel();
        let gone = || AuditError::Unavailable("the write was not committed".into());
        self.tx
            .send(Pending::Shipped(seq, done))
            .map_err(|_| gone())?;
        if committed.await.unwrap_or(false) {
            Ok(())
        } else {
            Err(gone())
        }
    }

    pub async fn query(&self, q: AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            let mut stmt = conn.prepare_cached(
                "SELECT request_id, at_ms, tenant, key_id, method, path, query, status, code,
                        input_bytes, output_bytes, pixels, duration_ms
                 FROM audit
                 WHERE (?1 IS NULL OR tenant = ?1) AND at_ms >= ?2 AND at_ms < ?3
                 ORDER BY at_ms, seq LIMIT ?4",
            )?;
            let limit = q.limit.unwrap_or(1000).min(MAX_QUERY_LIMIT);
            let rows = stmt.query_map(
                params![
                    q.tenant,
                    q.from.unwrap_or(0) as i64,
                    q.to.map_or(i64::MAX, |t| t as i64),
                    limit as i64
                ],
                |r| {
                    Ok(AuditRecord {
                        request_id: r.get(0)?,
                        at_ms: r.get::<_, i64>(1)? as u64,
                        tenant: r.get(2)?,
                        key_id: r.get(3)?,
                        method: r.get(4)?,
                        path: r.get(5)?,
                        query: r.get(6)?,
                        status: r.get(7)?,
                        code: r.get(8)?,
                        input_bytes: r.get::<_, i64>(9)? as u64,
                        output_bytes: r.get::<_, i64>(10)? as u64,
                        pixels: r.get::<_, i64>(11)? as u64,
                        duration_ms: r.get(12)?,
                    })
                },
            )?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(AuditError::from)
        })
        .await
        .map_err(task_failed)?
    }

    /// Per-tenant usage of successful requests since `from_ms` (monthly quotas at start-up).
    pub fn totals_since(&self, from_ms: u64) -> Result<Vec<(String, Usage)>, AuditError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare(
            "SELECT tenant, SUM(input_bytes), SUM(pixels) FROM audit
             WHERE at_ms >= ?1 AND tenant IS NOT NULL AND status < 400 GROUP BY tenant",
        )?;
        let rows = stmt.query_map(params![from_ms as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Usage {
                    bytes: r.get::<_, i64>(1)? as u64,
                    pixels: r.get::<_, i64>(2)? as u64,
                },
            ))
        })?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(AuditError::from)
    }
}

fn write_loop(mut conn: Connection, rx: crossbeam_channel::Receiver<Pending>, health: &Health) {
    loop {
        let first = if health.get().is_ok() {
            match rx.recv() {
                Ok(p) => p,
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(PROBE_EVERY) {
                Ok(p) => p,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    health.set(probe(&mut conn).map_err(|e| e.to_string()));
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        };
        let mut group = vec![first];
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let written = write_group(&mut conn, &group);
        let ok = written.is_ok();
        if let Err(e) = &written {
            tracing::error!(error = %e, records = group.len(), "audit records not written");
        }
        health.set(written.map_err(|e| e.to_string()));
        for p in group {
            let (Pending::Request(_, _, done)
            | Pending::Shipped(_, done)
            | Pending::Usage(_, done)) = p;
            let _ = done.send(ok);
        }
    }
}

/// A write as small as a real one can be, to learn whether writes go through again.
fn probe(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS probe (at INTEGER NOT NULL);
         INSERT INTO probe (at) VALUES (0);
         DELETE FROM probe;",
    )?;
    tx.commit()
}

fn write_group(conn: &mut Connection, group: &[Pending]) -> rusqlite::Result<()> {
    // An I/O error (EIO) cannot be made on demand on a real disk here; the fault tests
    // inject it at this point, where the file layer would report it.
    fail::fail_point!("audit-write", |_| Err(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
        Some("disk I/O error (injected)".into()),
    )));
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO audit (request_id, at_ms, tenant, key_id, method, path, query, status,
                                code, input_bytes, output_bytes, pixels, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        let mut outbox = tx.prepare_cached("INSERT INTO usage_outbox (record) VALUES (?1)")?;
        let mut forget = tx.prepare_cached("DELETE FROM usage_outbox WHERE seq <= ?1")?;
        for p in group {
            let (r, usage) = match p {
                Pending::Request(r, usage, _) => (r, usage),
                Pending::Shipped(seq, _) => {
                    forget.execute(params![seq])?;
                    continue;
                }
                Pending::Usage(u, _) => {
                    outbox.execute(params![u])?;
                    continue;
                }
            };
            if let Some(u) = usage {
                outbox.execute(params![u])?;
            }
            stmt.execute(params![
                r.request_id,
                r.at_ms as i64,
                r.tenant,
                r.key_id,
                r.method,
                r.path,
                r.query,
                r.status,
                r.code,
                r.input_bytes as i64,
                r.output_bytes as i64,
                r.pixels as i64,
                r.duration_ms,
            ])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, tenant: Option<&str>, at_ms: u64, status: u16) -> AuditRecord {
        AuditRecord {
            request_id: id.into(),
            at_ms,
            tenant: tenant.map(str::to_string),
            key_id: None,
            method: "POST".into(),
            path: "/v1/resize".into(),
            query: Some("w=10".into()),
            status,
            code: None,
            input_bytes: 100,
            output_bytes: 10,
            pixels: 7,
            duration_ms: 1.5,
        }
    }

    #[tokio::test]
    async fn records_are_durable_and_queryable_by_tenant_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let log = AuditLog::open(&path).unwrap();
        let writes = (0..50u64).map(|i| {
            let log = log.clone();
            let tenant = if i % 2 == 0 { "a" } else { "b" };
            async move {
                log.record(record(&format!("r{i}"), Some(tenant), 1000 + i, 200), None)
                    .await
            }
        });
        for ok in futures_join_all(writes).await {
            assert!(ok);
        }
        assert!(log.record(record("anon", None, 2000, 401), None).await);
        assert!(log.record(record("bad", Some("a"), 2001, 400), None).await);
        drop(log);

        let log = AuditLog::open(&path).unwrap();
        let all = log.query(AuditQuery::default()).await.unwrap();
        assert_eq!(all.len(), 52);
        let a = log
            .query(AuditQuery {
                tenant: Some("a".into()),
                from: Some(1010),
                to: Some(1020),
                limit: None,
            })
            .await
            .unwrap();
        assert_eq!(
            a.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            [1010, 1012, 1014, 1016, 1018]
        );
        assert_eq!(a[0], record("r10", Some("a"), 1010, 200));
        let limited = log
            .query(AuditQuery {
                limit: Some(3),
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(limited.len(), 3);
        let mut totals = log.totals_since(1000).unwrap();
        totals.sort_by(|x, y| x.0.cmp(&y.0));
        // Only successful requests count towards quotas.
        assert_eq!(
            totals,
            [
                (
                    "a".to_string(),
                    Usage {
                        bytes: 2500,
                        pixels: 175
                    }
                ),
                (
                    "b".to_string(),
                    Usage {
                        bytes: 2500,
                        pixels: 175
                    }
                ),
            ]
        );
    }

    #[tokio::test]
    async fn usage_records_wait_in_the_outbox_until_shipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let log = AuditLog::open(&path).unwrap();
        let usage = |id: &str| UsageRecord {
            id: id.into(),
            request_id: String::new(),
            tenant: "a".into(),
            key_id: "k".into(),
            at_ms: 5,
            route: "/v1/resize".into(),
            status: 200,
            input: Default::default(),
            output: Default::default(),
            cpu_ns: 1,
            wall_ns: 2,
            queue_ns: 3,
            origin_bytes: 0,
            not_modified: false,
            cache: None,
        };
        for id in ["u1", "u2", "u3"] {
            assert!(
                log.record(record(id, Some("a"), 1, 200), Some(&usage(id)))
                    .await
            );
        }
        assert!(log.record(record("anon", None, 1, 401), None).await);
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        let pending = log.outbox(10).await.unwrap();
        let ids: Vec<&str> = pending.iter().map(|(_, r)| r.id.as_str()).collect();
        assert_eq!(ids, ["u1", "u2", "u3"]);
        assert_eq!(pending[1].1, usage("u2"));
        log.shipped(pending[1].0).await.unwrap();
        let left = log.outbox(10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.id, "u3");
    }

    async fn futures_join_all<F: std::future::Future<Output = bool> + Send + 'static>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<bool> {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
