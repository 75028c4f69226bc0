//! A fleet's staging area: a JetStream object store, replicated like the queue, so a job
//! accepted by one host can run on any other and its output be fetched from the host that
//! accepted it. Entries carry their expiry; the bucket's own maximum age removes what
//! nobody deleted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use async_nats::jetstream::stream::{self, StorageType, Stream};
use bytes::Bytes;

use crate::clock::now_ms;
use crate::staging::StagingError;
use imgfleet_queue::health::Health;
use imgfleet_queue::jetstream::JetStream;
use imgfleet_queue::leaders;

const BUCKET: &str = "imgfleet_staging";
/// How long an entry can live at most, whatever its own time to live (a day, as the AWS
/// deployment's staging bucket).
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const NOT_FOUND_GRACE: Duration = Duration::from_secs(2);
/// How long a failing call is retried: a leader election in the cluster takes seconds.
const FAILOVER_GRACE: Duration = Duration::from_secs(8);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// One direct get of a read (an entry's description or one chunk): a healthy replica
/// answers in milliseconds.
const READ_STEP: Duration = Duration::from_millis(750);
/// One write to one of several buckets before the next is tried: long enough for a
/// healthy cluster, short against a leader election.
const PARTITION_ATTEMPT: Duration = Duration::from_millis(1500);

/// One object store bucket, and its stream for reads any replica can answer.
struct Bucket {
    name: String,
    store: ObjectStore,
    stream: Stream,
    /// Its size as last read.
    used: AtomicU64,
}

/// The fleet's staging, over one bucket or several (`--nats-partitions`). With several, a
/// write goes to a bucket that answers (its index leads the key), so a bucket whose
/// leader is being replaced does not stall new work; and every read is a direct get, which
/// any replica serves, so reading needs no leader at all.
#[derive(Clone)]
pub struct SharedStaging {
    buckets: Arc<Vec<Bucket>>,
    health: Arc<Health>,
    next: Arc<AtomicUsize>,
    capacity_bytes: u64,
}

fn io(e: impl std::fmt::Display) -> StagingError {
    StagingError::Io(std::io::Error::other(e.to_string()))
}

/// The buckets' names: one keeps the name of an unpartitioned fleet.
fn bucket_names(partitions: usize) -> Vec<String> {
    match partitions {
        0 | 1 => vec![BUCKET.to_string()],
        n => (0..n).map(|i| format!("{BUCKET}_p{i}")).collect(),
    }
}

impl SharedStaging {
    pub async fn open(
        js: &JetStream,
        capacity_bytes: u64,
        partitions: usize,
    ) -> Result<Self, StagingError> {
        let names = bucket_names(partitions);
        let share = capacity_bytes / names.len() as u64;
        let mut buckets = Vec::with_capacity(names.len());
        for name in names {
            buckets.push(open_bucket(js, name, share).await?);
        }
        leaders::keep_spread(
            js.clone(),
            buckets
                .iter()
                .map(|b| leaders::Partition {
                    stream: format!("OBJ_{}", b.name),
                    consumer: None,
                    companion: None,
                })
                .collect(),
        )
        .await;
        let staging = Self {
            health: Arc::new(Health::new(buckets.len())),
            buckets: Arc::new(buckets),
            next: Arc::new(AtomicUsize::new(0)),
            capacity_bytes,
        };
        staging.refresh_used().await;
        Ok(staging)
    }

    pub fn used_bytes(&self) -> u64 {
        self.buckets
            .iter()
            .map(|b| b.used.load(Ordering::Relaxed))
            .sum()
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// Reads the buckets' sizes (the sweeper calls this; puts add to them between reads).
    /// A bucket that does not answer keeps its last size.
    pub async fn refresh_used(&self) {
        let reads = self.buckets.iter().map(|b| async move {
            let mut stream = b.stream.clone();
            if let Ok(Ok(info)) = tokio::time::timeout(ATTEMPT_TIMEOUT, stream.info()).await {
                b.used.store(info.state.bytes, Ordering::Relaxed);
            }
        });
        futures_util::future::join_all(reads).await;
    }

    /// The key of an entry written to bucket `index`.
    fn key(&self, index: usize, name: &str) -> String {
        if self.buckets.len() == 1 {
            name.to_string()
        } else {
            format!("{index}-{name}")
        }
    }

    /// The bucket and object name a key stands for.
    fn locate<'k>(&self, key: &'k str) -> Option<(&Bucket, &'k str)> {
        if self.buckets.len() == 1 {
            return Some((&self.buckets[0], key));
        }
        let (index, name) = key.split_once('-')?;
        Some((self.buckets.get(index.parse::<usize>().ok()?)?, name))
    }

    pub async fn put(&self, bytes: Bytes, ttl: Duration) -> Result<String, StagingError> {
        let size = bytes.len() as u64;
        let used = self.used_bytes();
        let full = || StagingError::Full {
            used,
            capacity: self.capacity_bytes,
        };
        if used + size > self.capacity_bytes {
            return Err(full());
        }
        let single = uuid::Uuid::now_v7().simple().to_string();
        let expires = (now_ms() + ttl.as_millis() as u64).to_string();
        let attempt = match self.buckets.len() {
            1 => ATTEMPT_TIMEOUT,
            _ => PARTITION_ATTEMPT,
        };
        let started = tokio::time::Instant::now();
        loop {
            let mut failure = None;
            let first = self.next.fetch_add(1, Ordering::Relaxed);
            for index in self.health.order(first) {
                let bucket = &self.buckets[index];
                // With one bucket, writing the same name again replaces a half-written
                // attempt; with several, an abandoned attempt is deleted in the background,
                // so a later attempt must not share its name.
                let name = match self.buckets.len() {
                    1 => single.clone(),
                    _ => uuid::Uuid::now_v7().simple().to_string(),
                };
                let meta = ObjectMetadata {
                    name: name.clone(),
                    description: Some(expires.clone()),
                    ..Default::default()
                };
                let mut reader = bytes.as_ref();
                let failed = match tokio::time::timeout(
                    attempt,
                    bucket.store.put(meta, &mut reader),
                )
                .await
                {
                    Ok(Ok(_)) => {
                        bucket.used.fetch_add(size, Ordering::Relaxed);
                        return Ok(self.key(index, &name));
                    }
                    // A bucket's byte limit is its share of the fleet's staging capacity;
                    // servers out of storage are full as well.
                    Ok(Err(e)) if imgfleet_queue::jetstream::is_full(&e.to_string()) => continue,
                    Ok(Err(e)) => io(e),
                    Err(_) => io("no answer from the staging object store"),
                };
                failure = Some(failed);
                self.health.mark_down(index);
                if self.buckets.len() > 1 {
                    // Chunks of the abandoned write may have landed; nothing reads them.
                    self.remove(&self.key(index, &name));
                }
            }
            let Some(failure) = failure else {
                return Err(full());
            };
            if started.elapsed() >= FAILOVER_GRACE {
                return Err(failure);
            }
            tracing::debug!(error = %failure, "staging write failed; retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads an entry written at `written_ms` (ms since the epoch).
    pub async fn get(&self, key: &str, written_ms: u64) -> Result<Bytes, StagingError> {
        // Reads may be served by a replica a moment behind the write (the host that staged
        // the entry sent its job right after): an entry not found yet is looked for again
        // until a short while after its write before it counts as gone.
        // An error is retried for longer: the store's leader may be changing.
        let started = tokio::time::Instant::now();
        let age = Duration::from_millis(now_ms().saturating_sub(written_ms));
        let grace = NOT_FOUND_GRACE.saturating_sub(age);
        loop {
            match self.read(key).await {
                Err(StagingError::NotFound(_)) if started.elapsed() < grace => {}
                Err(StagingError::Io(e)) if started.elapsed() < FAILOVER_GRACE => {
                    tracing::debug!(error = %e, "staging read failed; retrying");
                }
                other => return other,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads an entry by direct gets (its description, then its chunks in order), which
    /// any replica answers: no consumer is created, so neither the stream's leader nor the
    /// cluster's meta leader is needed. Each get is bounded on its own ([`READ_STEP`]): a
    /// replica that hangs costs one step and a retry (likely answered by another), not a
    /// whole read's budget.
    async fn read(&self, key: &str) -> Result<Bytes, StagingError> {
        let not_found = || StagingError::NotFound(key.to_string());
        let (bucket, name) = self.locate(key).ok_or_else(not_found)?;
        let read = async {
            let info = tokio::time::timeout(READ_STEP, bucket.store.info(name))
                .await
                .map_err(|_| io("no answer from the staging object store"))?
                .map_err(|e| {
                    if matches!(e.kind(), object_store::InfoErrorKind::NotFound) {
                        not_found()
                    } else {
                        io(e)
                    }
                })?;
            let expires: Option<u64> = info.description.as_deref().and_then(|d| d.parse().ok());
            if info.deleted || expires.is_some_and(|t| t <= now_ms()) {
                return Err(not_found());
            }
            let chunks = format!("$O.{}.C.{}", bucket.name, info.nuid);
            let mut buf = Vec::with_capacity(info.size);
            let mut seq = 0;
            for _ in 0..info.chunks {
                let chunk = tokio::time::timeout(
                    READ_STEP,
                    bucket
                        .stream
                        .direct_get_next_for_subject(chunks.as_str(), Some(seq + 1)),
                )
                .await
                .map_err(|_| io("no answer from the staging object store"))?
                .map_err(|e| match e.kind() {
                    // A replica that has not caught up with the write yet.
                    stream::DirectGetErrorKind::NotFound => not_found(),
                    _ => io(e),
                })?;
                seq = chunk.sequence;
                buf.extend_from_slice(&chunk.payload);
            }
            if buf.len() != info.size {
                return Err(io(format!(
                    "staged entry {key}: {} of {} bytes",
                    buf.len(),
                    info.size
                )));
            }
            Ok(Bytes::from(buf))
        };
        read.await
    }

    /// Deletes in the background: callers free entries on their way out.
    pub fn remove(&self, key: &str) {
        let Some((bucket, name)) = self.locate(key) else {
            return;
        };
        let store = bucket.store.clone();
        let (key, name) = (key.to_string(), name.to_string());
        tokio::spawn(async move {
            if let Err(e) = store.delete(&name).await
                && !matches!(e.kind(), object_store::DeleteErrorKind::NotFound)
            {
                tracing::warn!(error = %e, key, "could not delete a staged entry");
            }
        });
    }
}

/// Opens (or creates) one bucket. Hosts starting together on a cluster that is still
/// electing leaders: creating the bucket is retried (and another host may create it
/// meanwhile).
async fn open_bucket(js: &JetStream, name: String, max_bytes: u64) -> Result<Bucket, StagingError> {
    let started = tokio::time::Instant::now();
    loop {
        let attempt = async {
            let store = match js.context.get_object_store(&name).await {
                Ok(store) => store,
                Err(_) => js
                    .context
                    .create_object_store(object_store::Config {
                        bucket: name.clone(),
                        description: Some("imgfleet staging: images between hosts".into()),
                        max_age: MAX_AGE,
                        max_bytes: max_bytes as i64,
                        storage: StorageType::File,
                        num_replicas: js.replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(io)?,
            };
            let stream = js
                .context
                .get_stream(format!("OBJ_{name}"))
                .await
                .map_err(io)?;
            Ok::<_, StagingError>((store, stream))
        };
        match attempt.await {
            Ok((store, stream)) => {
                return Ok(Bucket {
                    name,
                    store,
                    stream,
                    used: AtomicU64::new(0),
                });
            }
            Err(e) if started.elapsed() < FAILOVER_GRACE => {
                tracing::debug!(error = %e, "opening a staging bucket; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
