//! A fleet's staging area: a JetStream object store, replicated like the queue, so a job
//! accepted by one host can run on any other and its output be fetched from the host that
//! accepted it. Entries carry their expiry; the bucket's own maximum age removes what
//! nobody deleted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use async_nats::jetstream::stream::StorageType;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::jobs::now_ms;
use crate::queue::jetstream::JetStream;
use crate::staging::StagingError;

const BUCKET: &str = "imgfleet_staging";
/// How long an entry can live at most, whatever its own time to live (a day, as the AWS
/// deployment's staging bucket).
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const NOT_FOUND_GRACE: Duration = Duration::from_secs(2);
/// How long a failing call is retried: a leader election in the cluster takes seconds.
const FAILOVER_GRACE: Duration = Duration::from_secs(8);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct SharedStaging {
    store: ObjectStore,
    capacity_bytes: u64,
    /// The bucket's size as last read (it is shared: other hosts fill it too).
    used: Arc<AtomicU64>,
    stream: String,
    js: JetStream,
}

fn io(e: impl std::fmt::Display) -> StagingError {
    StagingError::Io(std::io::Error::other(e.to_string()))
}

impl SharedStaging {
    pub async fn open(js: &JetStream, capacity_bytes: u64) -> Result<Self, StagingError> {
        // Hosts starting together on a cluster that is still electing leaders: creating
        // the bucket is retried (and another host may create it meanwhile).
        let started = tokio::time::Instant::now();
        let store = loop {
            let attempt = match js.context.get_object_store(BUCKET).await {
                Ok(store) => Ok(store),
                Err(_) => js
                    .context
                    .create_object_store(object_store::Config {
                        bucket: BUCKET.into(),
                        description: Some("imgfleet staging: images between hosts".into()),
                        max_age: MAX_AGE,
                        max_bytes: capacity_bytes as i64,
                        storage: StorageType::File,
                        num_replicas: js.replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(io),
            };
            match attempt {
                Ok(store) => break store,
                Err(e) if started.elapsed() < FAILOVER_GRACE => {
                    tracing::debug!(error = %e, "opening the staging bucket; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let staging = Self {
            store,
            capacity_bytes,
            used: Arc::new(AtomicU64::new(0)),
            stream: format!("OBJ_{BUCKET}"),
            js: js.clone(),
        };
        staging.refresh_used().await;
        Ok(staging)
    }

    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// Reads the bucket's size (the sweeper calls this; puts add to it between reads).
    pub async fn refresh_used(&self) {
        if let Ok(mut stream) = self.js.context.get_stream(&self.stream).await
            && let Ok(info) = stream.info().await
        {
            self.used.store(info.state.bytes, Ordering::Relaxed);
        }
    }

    pub async fn put(&self, bytes: Bytes, ttl: Duration) -> Result<String, StagingError> {
        let size = bytes.len() as u64;
        let used = self.used_bytes();
        if used + size > self.capacity_bytes {
            return Err(StagingError::Full {
                used,
                capacity: self.capacity_bytes,
            });
        }
        let key = uuid::Uuid::now_v7().simple().to_string();
        let meta = ObjectMetadata {
            name: key.clone(),
            description: Some((now_ms() + ttl.as_millis() as u64).to_string()),
            ..Default::default()
        };
        let started = tokio::time::Instant::now();
        loop {
            let mut reader = bytes.as_ref();
            let failure = match tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                self.store.put(meta.clone(), &mut reader),
            )
            .await
            {
                Ok(Ok(_)) => {
                    self.used.fetch_add(size, Ordering::Relaxed);
                    return Ok(key);
                }
                // The bucket's byte limit is the fleet's staging capacity.
                Ok(Err(e)) if e.to_string().contains("maximum bytes") => {
                    return Err(StagingError::Full {
                        used,
                        capacity: self.capacity_bytes,
                    });
                }
                Ok(Err(e)) => io(e),
                Err(_) => io("no answer from the staging object store"),
            };
            // Writing the same name again replaces a half-written attempt.
            if started.elapsed() >= FAILOVER_GRACE {
                return Err(failure);
            }
            tracing::debug!(error = %failure, "staging write failed; retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StagingError> {
        // Reads may be served by a replica a moment behind the write (the host that staged
        // the entry sent its job right after): an entry not found yet is looked for again
        // for a short while before it counts as gone.
        // An error is retried for longer: the store's leader may be changing.
        let started = tokio::time::Instant::now();
        loop {
            match self.read(key).await {
                Err(StagingError::NotFound(_)) if started.elapsed() < NOT_FOUND_GRACE => {}
                Err(StagingError::Io(e)) if started.elapsed() < FAILOVER_GRACE => {
                    tracing::debug!(error = %e, "staging read failed; retrying");
                }
                other => return other,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn read(&self, key: &str) -> Result<Bytes, StagingError> {
        let read = async {
            let mut object = self.store.get(key).await.map_err(|e| {
                if matches!(e.kind(), object_store::GetErrorKind::NotFound) {
                    StagingError::NotFound(key.to_string())
                } else {
                    io(e)
                }
            })?;
            let expires: Option<u64> = object
                .info
                .description
                .as_deref()
                .and_then(|d| d.parse().ok());
            if expires.is_some_and(|t| t <= now_ms()) {
                return Err(StagingError::NotFound(key.to_string()));
            }
            let mut buf = Vec::with_capacity(object.info.size);
            object.read_to_end(&mut buf).await.map_err(io)?;
            Ok(Bytes::from(buf))
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| Err(io("no answer from the staging object store")))
    }

    /// Deletes in the background: callers free entries on their way out.
    pub fn remove(&self, key: &str) {
        let store = self.store.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            if let Err(e) = store.delete(&key).await
                && !matches!(e.kind(), object_store::DeleteErrorKind::NotFound)
            {
                tracing::warn!(error = %e, key, "could not delete a staged entry");
            }
        });
    }
}
