//! The staging area: image bytes waiting for a worker (inputs) or for their client
//! (outputs). Small entries live in memory; larger ones, and every entry that must survive
//! a crash, are written to files. Entries expire: imgfleet keeps no image for long.
//!
//! A file holds the entry's bytes and their CRC-32 (4 bytes, little-endian) after them, and
//! is written under a `.part` name first: a file whose checksum fails is `Damaged`, never
//! served, and a write cut short by a crash is never found under an entry's name.
//! In a fleet the area is shared instead (`crate::staging::jetstream`): every entry goes to
//! the JetStream object store, where any host can read it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub mod jetstream;

use jetstream::SharedStaging;

#[derive(Debug, Clone, Copy)]
pub struct StagingConfig {
    /// Entries at least this large go to disk.
    pub spill_bytes: usize,
    /// Memory plus disk the staging area may hold; beyond it `put` refuses.
    pub capacity_bytes: u64,
    /// How long durable entries found at start-up are kept (their own TTL died with the
    /// process that set it).
    pub recovered_ttl: Duration,
}

impl Default for StagingConfig {
    fn default() -> Self {
        Self {
            spill_bytes: 1024 * 1024,
            capacity_bytes: 2 * 1024 * 1024 * 1024,
            recovered_ttl: Duration::from_secs(3600),
        }
    }
}

/// The share of the staging area new inputs may fill (see [`Staging::put_input`]).
pub const INPUT_SHARE: f64 = 0.75;

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("the staging area is full ({used} of {capacity} bytes in use)")]
    Full { used: u64, capacity: u64 },
    #[error("no staged entry `{0}` (it expired or was never here)")]
    NotFound(String),
    #[error("staged entry `{0}` is damaged (its checksum does not match); it is not served")]
    Damaged(String),
    #[error("staging I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A written entry's name while it is being written.
const PART: &str = ".part";
const CRC_BYTES: u64 = 4;

enum Place {
    Memory(Bytes),
    Disk(PathBuf),
}

struct Entry {
    place: Place,
    size: u64,
    expires: Instant,
}

#[derive(Clone)]
pub struct Staging {
    dir: PathBuf,
    config: StagingConfig,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    used: Arc<AtomicU64>,
    shared: Option<SharedStaging>,
}

/// Whether a staged entry must survive a crash of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Memory when small; lost in a crash (its client's connection is lost with it).
    Volatile,
    /// On disk and synced before `put` returns.
    Durable,
}

impl Staging {
    /// Opens the staging directory: volatile files of a previous run are discarded,
    /// durable ones are served again.
    pub fn open(dir: &Path, config: StagingConfig) -> std::io::Result<Self> {
        let volatile = dir.join("volatile");
        if volatile.exists() {
            std::fs::remove_dir_all(&volatile)?;
        }
        std::fs::create_dir_all(&volatile)?;
        std::fs::create_dir_all(dir.join("durable"))?;
        let mut entries = HashMap::new();
        let mut used = 0;
        let expires = Instant::now() + config.recovered_ttl;
        for file in std::fs::read_dir(dir.join("durable"))? {
            let file = file?;
            let Some(key) = file.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if key.ends_with(PART) {
                // A write a crash cut short: its `put` never returned, nobody knows the key.
                let _ = std::fs::remove_file(file.path());
                continue;
            }
            let size = file.metadata()?.len().saturating_sub(CRC_BYTES);
            used += size;
            entries.insert(
                key,
                Entry {
                    place: Place::Disk(file.path()),
                    size,
                    expires,
                },
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            entries: Arc::new(Mutex::new(entries)),
            used: Arc::new(AtomicU64::new(used)),
            shared: None,
        })
    }

    /// Every entry goes to the fleet's shared staging instead of this host's.
    pub fn with_shared(mut self, shared: SharedStaging) -> Self {
        self.shared = Some(shared);
        self
    }

    pub fn used_bytes(&self) -> u64 {
        match &self.shared {
            Some(shared) => shared.used_bytes(),
            None => self.used.load(Ordering::Relaxed),
        }
    }

    fn capacity_bytes(&self) -> u64 {
        match &self.shared {
            Some(shared) => shared.capacity_bytes(),
            None => self.config.capacity_bytes,
        }
    }

    /// Whether entries are spread over parts of the fleet's staging led by different nodes:
    /// an entry staged again then need not share the first one's part (and its hang). A
    /// host's own staging is one part.
    pub fn is_spread(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| s.is_spread())
    }

    /// Stages a request's input, but only while inputs fill less than
    /// [`INPUT_SHARE`] of the area: the rest is kept for the outputs of work already
    /// accepted, so that accepted work does not find the area full when it finishes.
    pub async fn put_input(
        &self,
        bytes: Bytes,
        ttl: Duration,
        keep: Keep,
    ) -> Result<String, StagingError> {
        let limit = (self.capacity_bytes() as f64 * INPUT_SHARE) as u64;
        let used = self.used_bytes();
        if used + bytes.len() as u64 > limit {
            return Err(StagingError::Full {
                used,
                capacity: self.capacity_bytes(),
            });
        }
        self.put(bytes, ttl, keep).await
    }

    pub async fn put(
        &self,
        bytes: Bytes,
        ttl: Duration,
        keep: Keep,
    ) -> Result<String, StagingError> {
        if let Some(shared) = &self.shared {
            // Replicated before `put` returns: durable whatever `keep` asks.
            return shared.put(bytes, ttl).await;
        }
        let size = bytes.len() as u64;
        let used = self.used.fetch_add(size, Ordering::Relaxed) + size;
        if used > self.config.capacity_bytes {
            self.used.fetch_sub(size, Ordering::Relaxed);
            return Err(StagingError::Full {
                used: used - size,
                capacity: self.config.capacity_bytes,
            });
        }
        let key = uuid::Uuid::now_v7().simple().to_string();
        let place = if keep == Keep::Durable || bytes.len() >= self.config.spill_bytes {
            let durable = keep == Keep::Durable;
            let path = self
                .dir
                .join(if durable { "durable" } else { "volatile" })
                .join(&key);
            let file = path.clone();
            let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                use std::io::Write;
                let mut part = file.clone().into_os_string();
                part.push(PART);
                let mut f = std::fs::File::create(&part)?;
                f.write_all(&bytes)?;
                f.write_all(&crc32fast::hash(&bytes).to_le_bytes())?;
                if durable {
                    f.sync_all()?;
                }
                std::fs::rename(&part, &file)?;
                if durable {
                    // The new name must survive too.
                    if let Some(dir) = file.parent() {
                        std::fs::File::open(dir)?.sync_all()?;
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Err(e) = written {
                self.used.fetch_sub(size, Ordering::Relaxed);
                let _ = std::fs::remove_file(&path);
                return Err(e.into());
            }
            Place::Disk(path)
        } else {
            Place::Memory(bytes)
        };
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key.clone(),
                Entry {
                    place,
                    size,
                    expires: Instant::now() + ttl,
                },
            );
        Ok(key)
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StagingError> {
        self.get_written_at(key, crate::clock::now_ms()).await
    }

    /// Reads an entry written at `written_ms` (ms since the epoch, or just before). A
    /// fleet's replicas may lag a fresh write, so an entry not found is looked for again
    /// for a moment after it was written; one written long ago and not found is gone
    /// (freed by whoever owned it), which the reader learns at once.
    pub async fn get_written_at(&self, key: &str, written_ms: u64) -> Result<Bytes, StagingError> {
        if let Some(shared) = &self.shared {
            return shared.get(key, written_ms).await;
        }
        let path = {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match entries.get(key) {
                Some(e) if e.expires > Instant::now() => match &e.place {
                    Place::Memory(b) => return Ok(b.clone()),
                    Place::Disk(p) => p.clone(),
                },
                _ => return Err(StagingError::NotFound(key.to_string())),
            }
        };
        let mut bytes = tokio::fs::read(&path).await?;
        let sealed = bytes.len() >= CRC_BYTES as usize && {
            let body = bytes.len() - CRC_BYTES as usize;
            let crc = u32::from_le_bytes([
                bytes[body],
                bytes[body + 1],
                bytes[body + 2],
                bytes[body + 3],
            ]);
            bytes.truncate(body);
            crc32fast::hash(&bytes) == crc
        };
        if !sealed {
            tracing::error!(key, path = %path.display(), "a staged entry is damaged; not serving it");
            return Err(StagingError::Damaged(key.to_string()));
        }
        Ok(Bytes::from(bytes))
    }

    pub fn remove(&self, key: &str) {
        if let Some(shared) = &self.shared {
            return shared.remove(key);
        }
        let entry = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let Some(e) = entry {
            self.release(e);
        }
    }

    fn release(&self, e: Entry) {
        self.used.fetch_sub(e.size, Ordering::Relaxed);
        if let Place::Disk(p) = e.place {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Drops expired entries; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let expired: Vec<Entry> = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<String> = entries
                .iter()
                .filter(|(_, e)| e.expires <= now)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| entries.remove(k)).collect()
        };
        let n = expired.len();
        for e in expired {
            self.release(e);
        }
        n
    }

    /// Sweeps every `every` until the process ends.
    pub fn spawn_sweeper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let staging = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match &staging.shared {
                    Some(shared) => shared.refresh_used().await,
                    None => drop(staging.sweep()),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staging(spill: usize, capacity: u64) -> (Staging, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = Staging::open(
            &dir.path().join("staging"),
            StagingConfig {
                spill_bytes: spill,
                capacity_bytes: capacity,
                recovered_ttl: Duration::from_secs(60),
            },
        )
        .unwrap();
        (s, dir)
    }

    #[tokio::test]
    async fn small_in_memory_large_on_disk_both_readable() {
        let (s, dir) = staging(100, 10_000);
        let small = s
            .put(
                Bytes::from_static(b"tiny"),
                Duration::from_secs(60),
                Keep::Volatile,
            )
            .await
            .unwrap();
        let large = s
            .put(
                Bytes::from(vec![1u8; 500]),
                Duration::from_secs(60),
                Keep::Volatile,
            )
            .await
            .unwrap();
        assert_eq!(&s.get(&small).await.unwrap()[..], b"tiny");
        assert_eq!(s.get(&large).await.unwrap().len(), 500);
        assert!(
            dir.path().join("staging/volatile").join(&large).exists(),
            "large entry spilled to disk"
        );
        assert!(!dir.path().join("staging/volatile").join(&small).exists());
        s.remove(&large);
        assert!(!dir.path().join("staging/volatile").join(&large).exists());
        assert!(matches!(
            s.get(&large).await,
            Err(StagingError::NotFound(_))
        ));
        assert_eq!(s.used_bytes(), 4);
    }

    #[tokio::test]
    async fn capacity_is_enforced_and_freed() {
        let (s, _dir) = staging(100, 1000);
        let a = s
            .put(
                Bytes::from(vec![0u8; 800]),
                Duration::from_secs(60),
                Keep::Volatile,
            )
            .await
            .unwrap();
        let full = s
            .put(
                Bytes::from(vec![0u8; 300]),
                Duration::from_secs(60),
                Keep::Volatile,
            )
            .await;
        assert!(matches!(full, Err(StagingError::Full { .. })));
        s.remove(&a);
        s.put(
            Bytes::from(vec![0u8; 300]),
            Duration::from_secs(60),
            Keep::Volatile,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn durable_entries_survive_a_restart_and_volatile_ones_do_not() {
        let (s, dir) = staging(100, 10_000);
        let kept = s
            .put(
                Bytes::from(vec![3u8; 50]),
                Duration::from_secs(60),
                Keep::Durable,
            )
            .await
            .unwrap();
        let lost = s
            .put(
                Bytes::from(vec![4u8; 500]),
                Duration::from_secs(60),
                Keep::Volatile,
            )
            .await
            .unwrap();
        let config = StagingConfig {
            spill_bytes: 100,
            capacity_bytes: 10_000,
            recovered_ttl: Duration::from_secs(60),
        };
        let reopened = Staging::open(&dir.path().join("staging"), config).unwrap();
        assert_eq!(reopened.get(&kept).await.unwrap().to_vec(), vec![3u8; 50]);
        assert!(reopened.get(&lost).await.is_err());
        assert_eq!(reopened.used_bytes(), 50);
    }

    #[tokio::test]
    async fn entries_expire() {
        let (s, _dir) = staging(100, 1000);
        let k = s
            .put(
                Bytes::from_static(b"x"),
                Duration::from_millis(50),
                Keep::Durable,
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(s.get(&k).await.is_err(), "an expired entry is not served");
        assert_eq!(s.sweep(), 1);
        assert_eq!(s.used_bytes(), 0);
    }
}
