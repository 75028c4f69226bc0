//! The fleet's job store: the same records as the embedded one, in PostgreSQL, so every
//! host answers for every job. `finish` is a conditional update, so of two hosts that ran
//! the same job (a redelivery) exactly one finishes it.

use super::{Finish, Job, JobRecord, JobStatus, StoreError};
use crate::pg_call;
use crate::postgres::Pg;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS imgfleet_jobs (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        accepted_by TEXT NOT NULL,
        status TEXT NOT NULL,
        job TEXT NOT NULL,
        http_status INTEGER,
        content_type TEXT,
        output TEXT,
        error_code TEXT,
        error_message TEXT,
        created_ms BIGINT NOT NULL,
        finished_ms BIGINT,
        expires_ms BIGINT);
    CREATE INDEX IF NOT EXISTS imgfleet_jobs_queued ON imgfleet_jobs (accepted_by, status);";

pub struct PgJobs {
    pg: Pg,
    host: String,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn i64s(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl PgJobs {
    pub async fn open(url: &str, host: &str) -> Result<Self, StoreError> {
        Ok(Self {
            pg: Pg::open(url, SCHEMA).await.map_err(StoreError)?,
            host: host.to_string(),
        })
    }

    pub async fn insert(&self, job: &Job) -> Result<(), StoreError> {
        let json = serde_json::to_string(job).expect("a job serialises");
        pg_call!(&self.pg, unavailable, |c| {
            c.execute(
                "INSERT INTO imgfleet_jobs (id, tenant, accepted_by, status, job, created_ms)
                 VALUES ($1, $2, $3, 'queued', $4, $5)",
                &[
                    &job.id,
                    &job.tenant,
                    &self.host,
                    &json,
                    &i64s(job.submitted_ms),
                ],
            )
            .await
            .map(drop)
            .map_err(unavailable)
        })
    }

    pub async fn forget(&self, id: &str) -> Result<(), StoreError> {
        pg_call!(&self.pg, unavailable, |c| {
            c.execute(
                "DELETE FROM imgfleet_jobs WHERE id = $1 AND status = 'queued'",
                &[&id],
            )
            .await
            .map(drop)
            .map_err(unavailable)
        })
    }

    pub async fn finish(&self, id: &str, finish: Finish, now_ms: u64) -> Result<bool, StoreError> {
        pg_call!(&self.pg, unavailable, |c| {
            let changed = match &finish {
                Finish::Answered {
                    http_status,
                    content_type,
                    output,
                    expires_ms,
                } => c
                    .execute(
                        "UPDATE imgfleet_jobs SET status = 'done', http_status = $2,
                            content_type = $3, output = $4, finished_ms = $5, expires_ms = $6
                         WHERE id = $1 AND status = 'queued'",
                        &[
                            &id,
                            &i32::from(*http_status),
                            content_type,
                            output,
                            &i64s(now_ms),
                            &i64s(*expires_ms),
                        ],
                    )
                    .await
                    .map_err(unavailable)?,
                Finish::Failed {
                    http_status,
                    code,
                    message,
                } => c
                    .execute(
                        "UPDATE imgfleet_jobs SET status = 'failed', http_status = $2,
                            error_code = $3, error_message = $4, finished_ms = $5
                         WHERE id = $1 AND status = 'queued'",
                        &[&id, &i32::from(*http_status), code, message, &i64s(now_ms)],
                    )
                    .await
                    .map_err(unavailable)?,
            };
            Ok(changed == 1)
        })
    }

    pub async fn get(&self, id: &str, tenant: &str) -> Result<Option<JobRecord>, StoreError> {
        pg_call!(&self.pg, unavailable, |c| {
            let row = c
                .query_opt(
                    "SELECT job, status, http_status, content_type, output, error_code,
                            error_message, created_ms, finished_ms, expires_ms
                     FROM imgfleet_jobs WHERE id = $1 AND tenant = $2",
                    &[&id, &tenant],
                )
                .await
                .map_err(unavailable)?;
            row.map(|r| {
                Ok(JobRecord {
                    job: serde_json::from_str(r.get(0)).map_err(unavailable)?,
                    status: JobStatus::parse(r.get(1)),
                    http_status: r.get::<_, Option<i32>>(2).map(|v| v as u16),
                    content_type: r.get(3),
                    output: r.get(4),
                    error_code: r.get(5),
                    error_message: r.get(6),
                    created_ms: r.get::<_, i64>(7) as u64,
                    finished_ms: r.get::<_, Option<i64>>(8).map(|v| v as u64),
                    expires_ms: r.get::<_, Option<i64>>(9).map(|v| v as u64),
                })
            })
            .transpose()
        })
    }

    pub async fn status(&self, id: &str) -> Result<Option<JobStatus>, StoreError> {
        pg_call!(&self.pg, unavailable, |c| {
            let row = c
                .query_opt("SELECT status FROM imgfleet_jobs WHERE id = $1", &[&id])
                .await
                .map_err(unavailable)?;
            Ok(row.map(|r| JobStatus::parse(r.get(0))))
        })
    }

    /// This host's accepted, unfinished jobs (other hosts offer their own again).
    pub async fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        pg_call!(&self.pg, unavailable, |c| {
            let rows = c
                .query(
                    "SELECT job FROM imgfleet_jobs WHERE accepted_by = $1 AND status = 'queued'
                     ORDER BY created_ms",
                    &[&self.host],
                )
                .await
                .map_err(unavailable)?;
            Ok(rows
                .iter()
                .filter_map(|r| serde_json::from_str(r.get(0)).ok())
                .collect())
        })
    }
}
