//! The job store on one host: SQLite (WAL, synchronous=FULL).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Finish, Job, JobRecord, JobStatus, StoreError};

pub(super) struct SqliteJobs(Arc<Mutex<Connection>>);

async fn with<R: Send + 'static>(
    conn: &Arc<Mutex<Connection>>,
    f: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
) -> Result<R, StoreError> {
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || match conn.lock() {
        Ok(conn) => f(&conn).map_err(StoreError::from),
        // A panic mid-call may have left the connection inside a transaction: refuse it
        // rather than use it (every later call fails clearly; a restart reopens the file).
        Err(_) => Err(StoreError(
            "an earlier call failed inside the job store".into(),
        )),
    })
    .await
    .map_err(|e| StoreError(format!("a job store call failed: {e}")))?
}

impl SqliteJobs {
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // An accepted job must survive a power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                status TEXT NOT NULL,
                job TEXT NOT NULL,
                http_status INTEGER,
                content_type TEXT,
                output TEXT,
                error_code TEXT,
                error_message TEXT,
                created_ms INTEGER NOT NULL,
                finished_ms INTEGER,
                expires_ms INTEGER
            );
            CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status);",
        )?;
        Ok(Self(Arc::new(Mutex::new(conn))))
    }

    pub(super) async fn insert(&self, job: &Job) -> Result<(), StoreError> {
        let conn = &self.0;
        let (id, tenant, json, created) = (
            job.id.clone(),
            job.tenant.clone(),
            serde_json::to_string(job).expect("a job serialises"),
            job.submitted_ms,
        );
        with(conn, move |c| {
            c.execute(
                "INSERT INTO jobs (id, tenant, status, job, created_ms) VALUES (?1, ?2, 'queued', ?3, ?4)",
                params![id, tenant, json, created as i64],
            )
            .map(|_| ())
        })
        .await
    }

    /// Forgets a job that was never accepted (its message could not be queued).
    pub(super) async fn forget(&self, id: &str) -> Result<(), StoreError> {
        let conn = &self.0;
        let id = id.to_string();
        with(conn, move |c| {
            c.execute(
                "DELETE FROM jobs WHERE id = ?1 AND status = 'queued'",
                params![id],
            )
            .map(|_| ())
        })
        .await
    }

    /// Records how a job ended, only if it has not ended yet. Returns whether this call
    /// was the one that finished it (a redelivered job finishes at most once).
    pub(super) async fn finish(
        &self,
        id: &str,
        finish: Finish,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let conn = &self.0;
        let id = id.to_string();
        with(conn, move |c| {
            let changed = match finish {
                Finish::Answered {
                    http_status,
                    content_type,
                    output,
                    expires_ms,
                } => c.execute(
                    "UPDATE jobs SET status = 'done', http_status = ?2, content_type = ?3, output = ?4,
                     finished_ms = ?5, expires_ms = ?6 WHERE id = ?1 AND status = 'queued'",
                    params![id, http_status, content_type, output, now_ms as i64, expires_ms as i64],
                )?,
                Finish::Failed { http_status, code, message } => c.execute(
                    "UPDATE jobs SET status = 'failed', http_status = ?2, error_code = ?3, error_message = ?4,
                     finished_ms = ?5 WHERE id = ?1 AND status = 'queued'",
                    params![id, http_status, code, message, now_ms as i64],
                )?,
            };
            Ok(changed == 1)
        })
        .await
    }

    /// The job, if it exists and belongs to `tenant` (another tenant's job does not exist).
    pub(super) async fn get(
        &self,
        id: &str,
        tenant: &str,
    ) -> Result<Option<JobRecord>, StoreError> {
        let conn = &self.0;
        let (id, tenant) = (id.to_string(), tenant.to_string());
        with(conn, move |c| {
            c.query_row(
                "SELECT job, status, http_status, content_type, output, error_code, error_message,
                        created_ms, finished_ms, expires_ms
                 FROM jobs WHERE id = ?1 AND tenant = ?2",
                params![id, tenant],
                row_to_record,
            )
            .optional()
        })
        .await
    }

    pub(super) async fn status(&self, id: &str) -> Result<Option<JobStatus>, StoreError> {
        let conn = &self.0;
        let id = id.to_string();
        with(conn, move |c| {
            c.query_row("SELECT status FROM jobs WHERE id = ?1", params![id], |r| {
                Ok(JobStatus::parse(&r.get::<_, String>(0)?))
            })
            .optional()
        })
        .await
    }

    /// Jobs accepted and not finished: after a restart they are offered to the queue again
    /// (de-duplicated by job id), so a crash between acceptance and enqueueing loses none.
    /// In a fleet, only the jobs this host (by its id) accepted.
    pub(super) async fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        let conn = &self.0;
        with(conn, |c| {
            let mut stmt =
                c.prepare("SELECT job FROM jobs WHERE status = 'queued' ORDER BY created_ms")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut jobs = Vec::new();
            for json in rows {
                if let Ok(job) = serde_json::from_str(&json?) {
                    jobs.push(job);
                }
            }
            Ok(jobs)
        })
        .await
    }
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    let json: String = r.get(0)?;
    let job: Job = serde_json::from_str(&json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(JobRecord {
        job,
        status: JobStatus::parse(&r.get::<_, String>(1)?),
        http_status: r.get::<_, Option<u16>>(2)?,
        content_type: r.get(3)?,
        output: r.get(4)?,
        error_code: r.get(5)?,
        error_message: r.get(6)?,
        created_ms: r.get::<_, i64>(7)? as u64,
        finished_ms: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        expires_ms: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
    })
}
