//! Durable records of asynchronous jobs: accepted before the client hears 202, finished
//! exactly once, outputs remembered until they expire. SQLite on one host; in a fleet,
//! PostgreSQL (`postgres`), since a job accepted by one host runs on another and its
//! status may be asked of a third.

pub mod postgres;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use postgres::PgJobs;
use sqlite::SqliteJobs;

/// A job: which function, on which staged input, where to reply. The API tier writes it
/// here and sends it over the jobs queue; workers read it from there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub tenant: String,
    /// The API key it came with (for usage records).
    #[serde(default)]
    pub key_id: String,
    /// The request that created it, so the worker's logs join the API's.
    #[serde(default)]
    pub request_id: String,
    /// Component id from the manifest.
    pub function: String,
    /// HTTP method the function is invoked with.
    pub method: String,
    /// Path and query the function is invoked with.
    pub path_and_query: String,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    /// Staging key of the input bytes.
    pub input: String,
    /// Queue the completion goes to; `None` for jobs nobody waits on.
    pub reply_to: Option<String>,
    /// When the API accepted it (ms since the epoch), for queue-wait accounting.
    pub submitted_ms: u64,
    /// W3C `traceparent` of the API request that made it: the worker's span continues
    /// that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// A second copy, sent because the first seemed stuck: its completion goes to every
    /// partition of the reply queue, and may arrive after the first copy's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hedge: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Done,
    Failed,
}

impl JobStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "done" => Self::Done,
            "failed" => Self::Failed,
            _ => Self::Queued,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobRecord {
    pub job: Job,
    pub status: JobStatus,
    /// Status of the function's answer (or of the failure).
    pub http_status: Option<u16>,
    pub content_type: Option<String>,
    /// Staging key of the output (the function's body, error bodies included).
    pub output: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub expires_ms: Option<u64>,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub enum Finish {
    Answered {
        http_status: u16,
        content_type: Option<String>,
        output: String,
        expires_ms: u64,
    },
    Failed {
        http_status: u16,
        code: String,
        message: String,
    },
}

#[derive(Clone)]
pub struct JobStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(Arc<SqliteJobs>),
    Postgres(Arc<PgJobs>),
}

#[derive(Debug, thiserror::Error)]
#[error("job store: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string())
    }
}

impl JobStore {
    /// The fleet's job store in PostgreSQL; `host` names this host's jobs (see
    /// [`JobStore::unfinished`]).
    pub async fn postgres(url: &str, host: &str) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Postgres(Arc::new(PgJobs::open(url, host).await?)),
        })
    }

    /// The embedded job store: one SQLite file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Sqlite(Arc::new(SqliteJobs::open(path)?)),
        })
    }

    pub async fn insert(&self, job: &Job) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.insert(job).await,
            Backend::Postgres(pg) => pg.insert(job).await,
        }
    }

    /// Forgets a job that was never accepted (its message could not be queued).
    pub async fn forget(&self, id: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.forget(id).await,
            Backend::Postgres(pg) => pg.forget(id).await,
        }
    }

    /// Records how a job ended, only if it has not ended yet. Returns whether this call
    /// was the one that finished it (a redelivered job finishes at most once).
    pub async fn finish(&self, id: &str, finish: Finish, now_ms: u64) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.finish(id, finish, now_ms).await,
            Backend::Postgres(pg) => pg.finish(id, finish, now_ms).await,
        }
    }

    /// The job, if it exists and belongs to `tenant` (another tenant's job does not exist).
    pub async fn get(&self, id: &str, tenant: &str) -> Result<Option<JobRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.get(id, tenant).await,
            Backend::Postgres(pg) => pg.get(id, tenant).await,
        }
    }

    pub async fn status(&self, id: &str) -> Result<Option<JobStatus>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.status(id).await,
            Backend::Postgres(pg) => pg.status(id).await,
        }
    }

    /// Jobs accepted and not finished: after a restart they are offered to the queue again
    /// (de-duplicated by job id), so a crash between acceptance and enqueueing loses none.
    /// In a fleet, only the jobs this host (by its id) accepted.
    pub async fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.unfinished().await,
            Backend::Postgres(pg) => pg.unfinished().await,
        }
    }
}
