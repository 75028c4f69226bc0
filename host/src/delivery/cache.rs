//! The result cache as the host uses it: this host's memory, then its disk, then the
//! fleet's shared store (a miss copies what a lower tier has into the ones above), every
//! entry checked against the tenant's purges before it is served. Source versions (what the origin last said a source is) are kept
//! the same way, and in memory as well: every delivered image asks for one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use imgfleet_stores::results::disk::{DiskResults, DiskStats};
use imgfleet_stores::results::jetstream::FleetResults;
use imgfleet_stores::results::{Entry, Header, Kind, Subject, source_key};

use super::hot::Hot;
use crate::data_plane::auth_cache::AuthCache;

/// Source versions held in memory; past it the map starts over (the disk keeps them).
const MEMORY_SOURCES: usize = 100_000;

#[derive(Clone)]
pub struct ResultCache {
    hot: Arc<Hot>,
    disk: DiskResults,
    fleet: Option<FleetResults>,
    identity: Arc<AuthCache>,
    sources: Arc<Mutex<HashMap<String, Header>>>,
}

impl ResultCache {
    pub fn new(
        hot: Hot,
        disk: DiskResults,
        fleet: Option<FleetResults>,
        identity: Arc<AuthCache>,
    ) -> Self {
        Self {
            hot: Arc::new(hot),
            disk,
            fleet,
            identity,
            sources: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn fleet(&self) -> Option<&FleetResults> {
        self.fleet.as_ref()
    }

    pub fn stats(&self) -> DiskStats {
        self.disk.stats()
    }

    pub fn cap_bytes(&self) -> u64 {
        self.disk.cap_bytes()
    }

    /// The entry under `key`, from this host or the fleet; `None` for a miss, for damage,
    /// and for an entry a purge reaches.
    pub async fn get(&self, key: &str) -> Option<Entry> {
        if let Some(entry) = self.hot.get(key) {
            if self.identity.purged(&entry.header) {
                self.hot.remove(key);
                self.disk.remove(key).await;
                return None;
            }
            return Some(entry);
        }
        if let Some(entry) = self.disk.get(key).await {
            if self.identity.purged(&entry.header) {
                self.disk.remove(key).await;
                return None;
            }
            self.hot.put(key, &entry);
            return Some(entry);
        }
        let entry = self.fleet.as_ref()?.get(key).await?;
        if self.identity.purged(&entry.header) {
            return None;
        }
        self.disk.put(key, &entry).await;
        self.hot.put(key, &entry);
        Some(entry)
    }

    /// Keeps `entry` on this host and, in the background, for the fleet.
    pub async fn put(&self, key: &str, entry: &Entry) {
        self.hot.put(key, entry);
        self.disk.put(key, entry).await;
        if let Some(fleet) = &self.fleet {
            fleet.put(key, entry, false);
        }
    }

    /// Keeps a result this host made, then gives back its lease on making it.
    pub async fn publish(&self, key: &str, entry: &Entry) {
        self.hot.put(key, entry);
        self.disk.put(key, entry).await;
        if let Some(fleet) = &self.fleet {
            fleet.put(key, entry, true);
        }
    }

    /// Takes the fleet's lease on making `key`: `true` when this host should make it.
    pub async fn claim(&self, key: &str, holder: &str) -> bool {
        match &self.fleet {
            Some(fleet) => fleet.claim(key, holder).await,
            None => true,
        }
    }

    /// Gives back a lease on a result whose making failed.
    pub fn release(&self, key: &str) {
        if let Some(fleet) = &self.fleet {
            fleet.release(key);
        }
    }

    /// Waits for a result another host holds the lease on, for at most the lease's life;
    /// `None`: it did not appear (its maker died or failed), so this host makes it.
    pub async fn wait_for_fleet(&self, key: &str) -> Option<Entry> {
        let fleet = self.fleet.as_ref()?;
        let until = tokio::time::Instant::now() + fleet.lease_for();
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if let Some(entry) = self.get(key).await {
                return Some(entry);
            }
            if !fleet.leased(key).await {
                // Released without a result (its making failed): one last look.
                return self.get(key).await;
            }
        }
        None
    }

    /// The version of a source last confirmed by its origin, and when.
    pub async fn source(&self, subject: &Subject) -> Option<Header> {
        let key = source_key(subject);
        let remembered = self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let header = match remembered {
            Some(h) => h,
            None => {
                let h = self.get(&key).await?.header;
                self.remember(key, h.clone());
                h
            }
        };
        (!self.identity.purged(&header) && header.subject == *subject).then_some(header)
    }

    /// Records that the origin confirmed `validator` as the source's version just now.
    pub async fn confirm_source(&self, subject: &Subject, validator: String, now_ms: u64) {
        let key = source_key(subject);
        let entry = Entry {
            header: Header {
                subject: subject.clone(),
                validator,
                created_ms: now_ms,
                kind: Kind::Source { checked_ms: now_ms },
            },
            body: bytes::Bytes::new(),
        };
        self.remember(key.clone(), entry.header.clone());
        self.put(&key, &entry).await;
    }

    fn remember(&self, key: String, header: Header) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.len() >= MEMORY_SOURCES {
            sources.clear();
        }
        sources.insert(key, header);
    }
}
