//! A host's result cache on its own disk: one file per entry under `<dir>/<2 hex>/<key>`,
//! capped in bytes, the least recently used entries evicted first, kept across restarts.
//!
//! A file is written under a `.part` name and renamed into place, so a write cut short (a
//! crash, kill -9, a full disk) never sits under an entry's name; and every read checks the
//! entry's checksum, so a file damaged later (a torn page after a power cut, a disk error, a
//! hand) is a miss and is removed. Nothing is synced: a cache entry lost is only a miss.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Entry, Header, valid_key};

const PART: &str = ".part";
/// What a header read at start-up may take from a file (the header is small).
const HEADER_PEEK: u64 = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskStats {
    pub entries: usize,
    pub bytes: u64,
    pub evicted: u64,
    pub damaged: u64,
}

struct Indexed {
    size: u64,
    /// Recency: higher is more recent.
    tick: u64,
}

struct Index {
    entries: HashMap<String, Indexed>,
    by_tick: BTreeMap<u64, String>,
    next_tick: u64,
    bytes: u64,
    evicted: u64,
    damaged: u64,
}

impl Index {
    fn touch(&mut self, key: &str) -> bool {
        let tick = self.next_tick;
        let Some(e) = self.entries.get_mut(key) else {
            return false;
        };
        self.next_tick += 1;
        self.by_tick.remove(&e.tick);
        e.tick = tick;
        self.by_tick.insert(tick, key.to_string());
        true
    }

    fn insert(&mut self, key: String, size: u64) {
        self.remove(&key);
        let tick = self.next_tick;
        self.next_tick += 1;
        self.by_tick.insert(tick, key.clone());
        self.entries.insert(key, Indexed { size, tick });
        self.bytes += size;
    }

    fn remove(&mut self, key: &str) -> bool {
        let Some(e) = self.entries.remove(key) else {
            return false;
        };
        self.by_tick.remove(&e.tick);
        self.bytes -= e.size;
        true
    }

    /// The least recently used keys to drop for `bytes` to fit under `cap`.
    fn evict_for(&mut self, cap: u64) -> Vec<String> {
        let mut out = Vec::new();
        while self.bytes > cap {
            let Some((_, key)) = self.by_tick.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&key) {
                self.bytes -= e.size;
                self.evicted += 1;
            }
            out.push(key);
        }
        out
    }
}

#[derive(Clone)]
pub struct DiskResults {
    dir: PathBuf,
    cap_bytes: u64,
    index: Arc<Mutex<Index>>,
}

impl DiskResults {
    /// Opens (or creates) the cache in `dir`: entries of earlier runs are indexed by their
    /// headers, oldest modification first; unfinished writes are removed; files that are
    /// not entries are left alone and not counted.
    pub fn open(dir: &Path, cap_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for shard in std::fs::read_dir(dir)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(shard.path())? {
                let file = file?;
                let name = file.file_name().to_string_lossy().into_owned();
                if name.ends_with(PART) {
                    let _ = std::fs::remove_file(file.path());
                    continue;
                }
                if !valid_key(&name) || peek_header(&file.path()).is_none() {
                    continue;
                }
                let meta = file.metadata()?;
                found.push((meta.modified().ok(), name, meta.len()));
            }
        }
        found.sort();
        let mut index = Index {
            entries: HashMap::new(),
            by_tick: BTreeMap::new(),
            next_tick: 0,
            bytes: 0,
            evicted: 0,
            damaged: 0,
        };
        for (_, key, size) in found {
            index.insert(key, size);
        }
        let cache = Self {
            dir: dir.to_path_buf(),
            cap_bytes,
            index: Arc::new(Mutex::new(index)),
        };
        // A smaller cap than the last run's.
        let evicted = cache.lock().evict_for(cap_bytes);
        for key in evicted {
            let _ = std::fs::remove_file(cache.path(&key));
        }
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(key)
    }

    pub fn stats(&self) -> DiskStats {
        let i = self.lock();
        DiskStats {
            entries: i.entries.len(),
            bytes: i.bytes,
            evicted: i.evicted,
            damaged: i.damaged,
        }
    }

    pub fn cap_bytes(&self) -> u64 {
        self.cap_bytes
    }

    /// The entry under `key`, checked; `None` for a miss, and for a damaged entry (which is
    /// removed).
    pub async fn get(&self, key: &str) -> Option<Entry> {
        if !valid_key(key) || !self.lock().touch(key) {
            return None;
        }
        let path = self.path(key);
        let read = tokio::task::spawn_blocking(move || std::fs::read(path)).await;
        match read {
            Ok(Ok(bytes)) => match Entry::decode(&bytes) {
                Some(entry) => Some(entry),
                None => {
                    tracing::warn!(key, "a cached result is damaged; it is removed, not served");
                    self.lock().damaged += 1;
                    self.remove(key).await;
                    None
                }
            },
            // Removed under us (a purge, an operator): forget it.
            Ok(Err(_)) | Err(_) => {
                self.lock().remove(key);
                None
            }
        }
    }

    /// Stores `entry` under `key` (replacing any), then evicts down to the cap. A failed
    /// write (a full disk) leaves no file behind and is only logged: the cache is optional.
    pub async fn put(&self, key: &str, entry: &Entry) {
        if !valid_key(key) {
            return;
        }
        let bytes = entry.encode();
        let size = bytes.len() as u64;
        if size > self.cap_bytes {
            return;
        }
        let path = self.path(key);
        let written = tokio::task::spawn_blocking(move || write_entry(&path, &bytes)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, key, "a result could not be cached");
                return;
            }
            Err(_) => return,
        }
        let evicted = {
            let mut i = self.lock();
            i.insert(key.to_string(), size);
            i.evict_for(self.cap_bytes)
        };
        if !evicted.is_empty() {
            let paths: Vec<PathBuf> = evicted.iter().map(|k| self.path(k)).collect();
            let _ = tokio::task::spawn_blocking(move || {
                for p in paths {
                    let _ = std::fs::remove_file(p);
                }
            })
            .await;
        }
    }

    pub async fn remove(&self, key: &str) {
        if !valid_key(key) {
            return;
        }
        self.lock().remove(key);
        let path = self.path(key);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
    }
}

fn write_entry(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("entries live in a shard directory");
    std::fs::create_dir_all(dir)?;
    let part = path.with_extension(format!("{}{PART}", std::process::id()));
    let written = std::fs::write(&part, bytes).and_then(|()| std::fs::rename(&part, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    written
}

fn peek_header(path: &Path) -> Option<Header> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(HEADER_PEEK)
        .read_to_end(&mut head)
        .ok()?;
    Entry::decode_header(&head).map(|(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Kind, Subject};
    use bytes::Bytes;

    fn entry(path: &str, body_len: usize) -> Entry {
        Entry {
            header: Header {
                subject: Subject {
                    tenant: "acme".into(),
                    origin: "photos".into(),
                    path: path.into(),
                },
                validator: "d:00".into(),
                created_ms: 1,
                kind: Kind::Result {
                    content_type: "image/jpeg".into(),
                    input: Default::default(),
                    output: Default::default(),
                },
            },
            body: Bytes::from(vec![7u8; body_len]),
        }
    }

    fn key(i: usize) -> String {
        format!("{i:032x}")
    }

    #[tokio::test]
    async fn the_cap_holds_and_the_least_recently_used_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let one = entry("a", 1000).encode().len() as u64;
        let cache = DiskResults::open(dir.path(), one * 3).unwrap();
        for i in 0..3 {
            cache.put(&key(i), &entry("a", 1000)).await;
        }
        // 0 is used again, so 1 is the least recently used when 3 arrives.
        assert!(cache.get(&key(0)).await.is_some());
        cache.put(&key(3), &entry("a", 1000)).await;
        assert!(cache.get(&key(1)).await.is_none());
        for i in [0, 2, 3] {
            assert!(cache.get(&key(i)).await.is_some(), "{i}");
        }
        let stats = cache.stats();
        assert!(stats.bytes <= one * 3, "{stats:?}");
        assert_eq!((stats.entries, stats.evicted), (3, 1));
        // On disk as well.
        assert!(!cache.path(&key(1)).exists());
    }

    #[tokio::test]
    async fn entries_survive_a_reopen_and_damage_or_unfinished_writes_are_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskResults::open(dir.path(), 1 << 20).unwrap();
        for i in 0..4 {
            cache.put(&key(i), &entry(&format!("p{i}"), 500)).await;
        }
        // Damage one in the middle, cut another short, and leave an unfinished write.
        let mut bytes = std::fs::read(cache.path(&key(1))).unwrap();
        bytes[300] ^= 1;
        std::fs::write(cache.path(&key(1)), &bytes).unwrap();
        let bytes = std::fs::read(cache.path(&key(2))).unwrap();
        std::fs::write(cache.path(&key(2)), &bytes[..bytes.len() - 10]).unwrap();
        let part = cache.path(&key(9)).with_extension("1.part");
        std::fs::write(&part, &bytes[..100]).unwrap();
        drop(cache);

        let cache = DiskResults::open(dir.path(), 1 << 20).unwrap();
        assert!(!part.exists(), "unfinished writes are removed at start");
        assert_eq!(cache.get(&key(0)).await, Some(entry("p0", 500)));
        assert_eq!(cache.get(&key(3)).await, Some(entry("p3", 500)));
        assert_eq!(cache.get(&key(1)).await, None);
        assert_eq!(cache.get(&key(2)).await, None);
        assert_eq!(cache.get(&key(9)).await, None);
        assert_eq!(cache.stats().damaged, 2);
        assert!(!cache.path(&key(1)).exists(), "damaged entries are removed");
    }
}
