//! A fleet's staging area: a JetStream object store, replicated like the queue, so a job
//! accepted by one host can run on any other and its output be fetched from the host that
//! accepted it. Entries carry their expiry; the bucket's own maximum age removes what
//! nobody deleted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::object_store::{self, ObjectStore};
use async_nats::jetstream::stream::{self, StorageType, Stream};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
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
/// How long a read waits on the replica that took it before the stream's leader is asked
/// too: a healthy replica answers in milliseconds.
const READ_HEDGE: Duration = Duration::from_millis(150);
/// How long after a late direct get a bucket's reads ask its leader at once, alongside
/// the direct get: while one replica hangs, a read need not lose [`READ_HEDGE`] each time
/// its get is routed there (a worker with one slot loses that much of its time).
const LATE_FOR: Duration = Duration::from_secs(5);
/// One write to one of several buckets before the next is tried: long enough for a
/// healthy cluster, short against a leader election.
const PARTITION_ATTEMPT: Duration = Duration::from_millis(1500);
/// How long a write to one of several buckets may go unanswered before the next bucket is
/// written alongside it, besides the time its bytes take ([`hedge_after`]): a healthy bucket
/// answers in milliseconds.
const HEDGE_AFTER: Duration = Duration::from_millis(200);

/// When a write of `size` bytes is late enough to write another bucket alongside it: a
/// large image takes its time (counted at 100 MB/s), and writing it twice for nothing
/// would double the cluster's work.
fn hedge_after(size: usize) -> Duration {
    HEDGE_AFTER + Duration::from_micros(size as u64 / 100)
}

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
    js: jetstream::Context,
    buckets: Arc<Vec<Bucket>>,
    health: Arc<Health>,
    /// Per bucket, a direct get was late lately ([`LATE_FOR`]): the cluster is routing
    /// some of them to a replica that hangs, so reads ask the leader at once too.
    late_reads: Arc<Health>,
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
            js: js.context.clone(),
            health: Arc::new(Health::new(buckets.len())),
            late_reads: Arc::new(Health::with_down_for(buckets.len(), LATE_FOR)),
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

    /// Whether entries are spread over several buckets (each led by its own node), so that
    /// one can be staged again away from the bucket that holds it.
    pub fn is_spread(&self) -> bool {
        self.buckets.len() > 1
    }

    /// The bucket (its index) and object name a key stands for.
    fn locate<'k>(&self, key: &'k str) -> Option<(usize, &'k str)> {
        if self.buckets.len() == 1 {
            return Some((0, key));
        }
        let (index, name) = key.split_once('-')?;
        let index = index.parse::<usize>().ok()?;
        (index < self.buckets.len()).then_some((index, name))
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
        let expires = (now_ms() + ttl.as_millis() as u64).to_string();
        // With one bucket, writing the same name again replaces a half-written attempt.
        let single = uuid::Uuid::now_v7().simple().to_string();
        let started = tokio::time::Instant::now();
        loop {
            let first = self.next.fetch_add(1, Ordering::Relaxed);
            let failure = match self.put_spread(&bytes, &expires, first, &single).await {
                Ok(key) => return Ok(key),
                Err(None) => return Err(full()),
                Err(Some(failure)) => failure,
            };
            if started.elapsed() >= FAILOVER_GRACE {
                return Err(failure);
            }
            tracing::debug!(error = %failure, "staging write failed; retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One round of writes over the buckets, those that failed lately last: a bucket that
    /// has not answered within [`hedge_after`] gets the next one written alongside it (a
    /// bucket whose leader hangs answers nothing for as long as it hangs), and one that
    /// fails or is full, at once; once all have been, each is written again in turn. The
    /// first write to land is kept, the others are removed and their buckets tried last
    /// for a while.
    /// `Err(None)`: every bucket was full.
    async fn put_spread(
        &self,
        bytes: &Bytes,
        expires: &str,
        first: usize,
        single: &str,
    ) -> Result<String, Option<StagingError>> {
        use futures_util::StreamExt;
        let hedge_after = hedge_after(bytes.len());
        let order = self.health.order(first);
        // Each bucket may be written a second time once every one has been: writes sent on
        // a connection to a server that hung are lost with it, and only a write sent
        // after the client has moved to another server can land.
        let again = if self.buckets.len() > 1 {
            &order[..]
        } else {
            &[]
        };
        let mut untried = order.iter().chain(again).copied();
        let mut writes = futures_util::stream::FuturesUnordered::new();
        let mut under_way: Vec<(usize, String)> = Vec::new();
        let mut failure = None;
        let mut start_next = |writes: &mut futures_util::stream::FuturesUnordered<_>,
                              under_way: &mut Vec<(usize, String)>| {
            let Some(index) = untried.next() else {
                return false;
            };
            // With several buckets, an abandoned write is removed in the background, so a
            // later write must not share its name.
            let name = match self.buckets.len() {
                1 => single.to_string(),
                _ => uuid::Uuid::now_v7().simple().to_string(),
            };
            under_way.push((index, self.key(index, &name)));
            writes.push(self.write(index, name, bytes.clone(), expires.to_string()));
            true
        };
        start_next(&mut writes, &mut under_way);
        loop {
            let written = tokio::select! {
                written = writes.next() => written,
                () = tokio::time::sleep(hedge_after), if self.buckets.len() > 1 => {
                    start_next(&mut writes, &mut under_way);
                    continue;
                }
            };
            let Some((index, key, result)) = written else {
                // Nothing under way and nothing left to try.
                return Err(failure);
            };
            under_way.retain(|(_, k)| *k != key);
            match result {
                Ok(()) => {
                    self.buckets[index]
                        .used
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    // Slower than another bucket by a hedge: tried last for a while, as a
                    // bucket that failed is.
                    for (slower, other) in &under_way {
                        if *slower != index {
                            self.health.mark_down(*slower);
                        }
                        self.remove(other);
                    }
                    return Ok(key);
                }
                // A bucket's byte limit is its share of the fleet's staging capacity;
                // servers out of storage are full as well. Another bucket may have room.
                Err(None) => {}
                Err(Some(e)) => {
                    self.health.mark_down(index);
                    if self.buckets.len() > 1 {
                        // Chunks of the abandoned write may have landed; nothing reads them.
                        self.remove(&key);
                    }
                    failure = Some(e);
                }
            }
            start_next(&mut writes, &mut under_way);
        }
    }

    /// Writes `bytes` as `name` to bucket `index`, within one attempt: its index, key and
    /// outcome (`Err(None)`: the bucket is full).
    fn write(
        &self,
        index: usize,
        name: String,
        bytes: Bytes,
        expires: String,
    ) -> impl std::future::Future<Output = (usize, String, Result<(), Option<StagingError>>)> + '_
    {
        let attempt = match self.buckets.len() {
            1 => ATTEMPT_TIMEOUT,
            _ => PARTITION_ATTEMPT,
        };
        let key = self.key(index, &name);
        async move {
            let put = put_object(&self.js, &self.buckets[index], name, expires, &bytes);
            let result = match tokio::time::timeout(attempt, put).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) if imgfleet_queue::jetstream::is_full(&e) => Err(None),
                Ok(Err(e)) => Err(Some(io(e))),
                Err(_) => Err(Some(io("no answer from the staging object store"))),
            };
            (index, key, result)
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

    /// Reads an entry by direct gets, which any replica answers, so reading needs no
    /// leader; each get is bounded on its own ([`READ_STEP`]). A replica can hang rather
    /// than fail (a stopped process keeps its connections open), and the cluster may go on
    /// routing direct gets to it: a read that has not come back within [`READ_HEDGE`] is
    /// made again through the stream's leader alongside, and the first to arrive is kept;
    /// for a while after that ([`LATE_FOR`]), the bucket's reads ask both at once.
    /// A direct read that fails at once (a replica a moment behind the write) goes to the
    /// leader straight away.
    async fn read(&self, key: &str) -> Result<Bytes, StagingError> {
        let (index, name) = self
            .locate(key)
            .ok_or_else(|| StagingError::NotFound(key.to_string()))?;
        let bucket = &self.buckets[index];
        let direct = read_entry(bucket, name, key, Via::Replica);
        tokio::pin!(direct);
        let early = if self.late_reads.is_down(index) {
            None
        } else {
            tokio::select! {
                read = &mut direct => Some(read),
                () = tokio::time::sleep(READ_HEDGE) => {
                    self.late_reads.mark_down(index);
                    None
                }
            }
        };
        let leader = read_entry(bucket, name, key, Via::Leader);
        match early {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(direct)) => leader.await.map_err(|leader| either(direct, leader)),
            None => {
                tokio::pin!(leader);
                tokio::select! {
                    read = &mut direct => match read {
                        Ok(bytes) => Ok(bytes),
                        Err(direct) => leader.await.map_err(|leader| either(direct, leader)),
                    },
                    read = &mut leader => match read {
                        Ok(bytes) => Ok(bytes),
                        Err(leader) => direct.await.map_err(|direct| either(direct, leader)),
                    },
                }
            }
        }
    }

    /// Deletes in the background: callers free entries on their way out.
    pub fn remove(&self, key: &str) {
        let Some((index, name)) = self.locate(key) else {
            return;
        };
        let store = self.buckets[index].store.clone();
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

/// Chunks of a staged entry, as the object store writes them.
const CHUNK_BYTES: usize = 128 * 1024;

/// Writes `bytes` as object `name` of `bucket`, in the object store's own layout (chunks,
/// then the description that names them), all to the bucket's leader. Unlike the object
/// store's `put`, it does not first look up an earlier object of that name (names are
/// never reused here): that lookup is a direct get, which the cluster may route to a
/// replica that hangs, stalling writes to every bucket.
async fn put_object(
    js: &jetstream::Context,
    bucket: &Bucket,
    name: String,
    expires: String,
    bytes: &Bytes,
) -> Result<(), String> {
    let nuid = uuid::Uuid::now_v7().simple().to_string();
    let chunk_subject = format!("$O.{}.C.{nuid}", bucket.name);
    // Published back to back on one connection, so stored in order; acknowledged together.
    let mut acks = Vec::new();
    for chunk in bytes.chunks(CHUNK_BYTES) {
        let ack = js
            .publish(chunk_subject.clone(), bytes.slice_ref(chunk))
            .await
            .map_err(|e| e.to_string())?;
        acks.push(ack.into_future());
    }
    let chunks = acks.len();
    for ack in futures_util::future::join_all(acks).await {
        ack.map_err(|e| e.to_string())?;
    }
    let info = object_store::ObjectInfo {
        name: name.clone(),
        description: Some(expires),
        metadata: Default::default(),
        headers: None,
        options: Some(object_store::ObjectOptions {
            max_chunk_size: Some(CHUNK_BYTES),
            link: None,
        }),
        bucket: bucket.name.clone(),
        nuid,
        size: bytes.len(),
        chunks,
        modified: None,
        digest: None,
        deleted: false,
    };
    let mut headers = async_nats::HeaderMap::new();
    // The newest description of a name replaces the others, as the object store does.
    headers.insert("Nats-Rollup", "sub");
    let meta = serde_json::to_vec(&info).map_err(|e| e.to_string())?;
    js.publish_with_headers(meta_subject(&bucket.name, &name), headers, meta.into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Where the object store keeps an object's description: its name, base64url.
fn meta_subject(bucket: &str, name: &str) -> String {
    format!("$O.{bucket}.M.{}", URL_SAFE.encode(name))
}

/// Which servers a read asks.
#[derive(Clone, Copy)]
enum Via {
    /// Direct gets: any replica answers.
    Replica,
    /// The stream's leader, which has every acknowledged write.
    Leader,
}

/// Of two failed reads, the verdict: not found if either found nothing (the leader has
/// every write, and a replica a moment behind is retried by the caller), else the first.
fn either(first: StagingError, second: StagingError) -> StagingError {
    match (&first, &second) {
        (StagingError::NotFound(_), _) => first,
        (_, StagingError::NotFound(_)) => second,
        _ => first,
    }
}

/// One get of a read, within [`READ_STEP`]; `missing` tells the errors that mean the entry
/// (or this replica's copy of it) is not there.
async fn step<T, E: std::fmt::Display>(
    key: &str,
    get: impl std::future::Future<Output = Result<T, E>>,
    missing: impl Fn(&E) -> bool,
) -> Result<T, StagingError> {
    match tokio::time::timeout(READ_STEP, get).await {
        Err(_) => Err(io("no answer from the staging object store")),
        Ok(Err(e)) if missing(&e) => Err(StagingError::NotFound(key.to_string())),
        Ok(Err(e)) => Err(io(e)),
        Ok(Ok(got)) => Ok(got),
    }
}

/// A leader's get found no message.
fn no_message(e: &stream::LastRawMessageError) -> bool {
    matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound)
}

/// Reads entry `name` of `bucket` (its description, then its chunks in order) through
/// `via`, each step within [`READ_STEP`].
async fn read_entry(
    bucket: &Bucket,
    name: &str,
    key: &str,
    via: Via,
) -> Result<Bytes, StagingError> {
    let not_found = || StagingError::NotFound(key.to_string());
    let info = match via {
        Via::Replica => {
            step(key, bucket.store.info(name), |e| {
                matches!(e.kind(), object_store::InfoErrorKind::NotFound)
            })
            .await?
        }
        Via::Leader => {
            let subject = meta_subject(&bucket.name, name);
            let meta = step(
                key,
                bucket.stream.get_last_raw_message_by_subject(&subject),
                no_message,
            )
            .await?;
            serde_json::from_slice::<object_store::ObjectInfo>(&meta.payload).map_err(io)?
        }
    };
    let expires: Option<u64> = info.description.as_deref().and_then(|d| d.parse().ok());
    if info.deleted || expires.is_some_and(|t| t <= now_ms()) {
        return Err(not_found());
    }
    let chunks = format!("$O.{}.C.{}", bucket.name, info.nuid);
    let mut buf = Vec::with_capacity(info.size);
    let mut seq = 0;
    for _ in 0..info.chunks {
        let chunk = match via {
            Via::Replica => {
                let get = bucket
                    .stream
                    .direct_get_next_for_subject(chunks.as_str(), Some(seq + 1));
                // Not found: a replica that has not caught up with the write yet.
                step(key, get, |e| {
                    matches!(e.kind(), stream::DirectGetErrorKind::NotFound)
                })
                .await?
            }
            Via::Leader => {
                let get = bucket
                    .stream
                    .get_first_raw_message_by_subject(chunks.as_str(), seq + 1);
                step(key, get, no_message).await?
            }
        };
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
