//! Identity, data plane: this host's copy of the identity records, fed from the store's
//! change log by a follower task. Reads never touch the store, so authentication keeps
//! working (on the last known data) while the store is away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use imgfleet_auth::{KeyRecord, TenantRecord};
use tokio::sync::{Notify, watch};

use imgfleet_stores::identity::admin::MAX_PURGES;
use imgfleet_stores::identity::items::item_id;
use imgfleet_stores::identity::{Change, IdentityStore, OriginRecord, PurgeRecord, UrlKeyRecord};
use imgfleet_stores::results::{Header, Purge};

/// Default replication-lag SLA: a change is in force on every host within this time.
pub const DEFAULT_SLA: Duration = Duration::from_secs(1);
/// How often the follower asks the store for changes (well inside the SLA).
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
const BATCH: usize = 1000;

#[derive(Default)]
struct Snapshot {
    keys: HashMap<String, KeyRecord>,
    tenants: HashMap<String, TenantRecord>,
    /// By `tenant/name`, removed ones included.
    origins: HashMap<String, OriginRecord>,
    /// By `tenant/key id`, revoked ones included.
    url_keys: HashMap<String, UrlKeyRecord>,
    /// By tenant.
    purges: HashMap<String, Purges>,
}

/// A tenant's purges of cached results, the newest [`MAX_PURGES`] of them; what older ones
/// reached is kept as a floor: every entry made before it is a miss.
#[derive(Default)]
struct Purges {
    ids: std::collections::HashSet<String>,
    rules: Vec<Purge>,
    floor_ms: u64,
}

impl Purges {
    fn add(&mut self, p: &PurgeRecord) {
        if !self.ids.insert(p.id.clone()) {
            return;
        }
        self.rules.push(Purge {
            origin: p.origin.clone(),
            path: p.path.clone(),
            prefix: p.prefix,
            at_ms: p.at_ms,
        });
        if self.rules.len() > MAX_PURGES {
            self.rules.sort_by_key(|r| std::cmp::Reverse(r.at_ms));
            for old in self.rules.drain(MAX_PURGES..) {
                self.floor_ms = self.floor_ms.max(old.at_ms);
            }
        }
    }

    fn reach(&self, header: &Header) -> bool {
        header.created_ms <= self.floor_ms || self.rules.iter().any(|r| r.reaches(header))
    }
}

/// What a signed URL names, as last seen: its tenant, the URL key that signed it and the
/// origin of its source.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    pub tenant: Option<TenantRecord>,
    pub url_key: Option<UrlKeyRecord>,
    pub origin: Option<OriginRecord>,
}

/// Inserts `record` unless the map holds a version at least as new: replaying or reordering
/// the log cannot go backwards.
fn keep_newer<T: Clone>(
    map: &mut HashMap<String, T>,
    id: String,
    record: &T,
    version: fn(&T) -> u64,
) {
    if map
        .get(&id)
        .is_none_or(|old| version(old) < version(record))
    {
        map.insert(id, record.clone());
    }
}

pub struct AuthCache {
    snapshot: RwLock<Snapshot>,
    version: watch::Sender<u64>,
    /// When the cache last matched the store (the end of a successful poll).
    synced_at: Mutex<Option<Instant>>,
    sla: Duration,
    nudge: Notify,
}

impl AuthCache {
    pub fn new(sla: Duration) -> Arc<Self> {
        Arc::new(Self {
            snapshot: RwLock::default(),
            version: watch::channel(0).0,
            synced_at: Mutex::new(None),
            sla,
            nudge: Notify::new(),
        })
    }

    /// The key named `key_id` and its tenant, as last seen.
    pub fn lookup(&self, key_id: &str) -> (Option<KeyRecord>, Option<TenantRecord>) {
        let s = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        let key = s.keys.get(key_id).cloned();
        let tenant = key.as_ref().and_then(|k| s.tenants.get(&k.tenant).cloned());
        (key, tenant)
    }

    /// The records a signed URL of `tenant`, signed by `key_id`, from `origin` depends on.
    pub fn delivery(&self, tenant: &str, key_id: &str, origin: &str) -> Delivery {
        let s = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        Delivery {
            tenant: s.tenants.get(tenant).cloned(),
            url_key: s.url_keys.get(&item_id(tenant, key_id)).cloned(),
            origin: s.origins.get(&item_id(tenant, origin)).cloned(),
        }
    }

    /// Whether a purge of its tenant reaches a cached entry: then it is a miss.
    pub fn purged(&self, header: &Header) -> bool {
        let s = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        s.purges
            .get(&header.subject.tenant)
            .is_some_and(|p| p.reach(header))
    }

    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// How far behind the store this cache may be: time since it last matched.
    pub fn lag(&self) -> Option<Duration> {
        self.synced_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    /// Past the SLA without a successful sync: still serving, but possibly outdated.
    pub fn stale(&self) -> bool {
        self.lag().is_none_or(|lag| lag > self.sla)
    }

    pub fn sla(&self) -> Duration {
        self.sla
    }

    fn apply(&self, changes: &[Change]) {
        let mut s = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        for change in changes {
            // Records carry their version, so replaying or reordering cannot go backwards.
            match change {
                Change::Tenant(t) => keep_newer(&mut s.tenants, t.id.clone(), t, |t| t.version),
                Change::Key(k) => keep_newer(&mut s.keys, k.key_id.clone(), k, |k| k.version),
                Change::Origin(o) => {
                    keep_newer(&mut s.origins, item_id(&o.tenant, &o.name), o, |o| {
                        o.version
                    })
                }
                Change::UrlKey(k) => {
                    keep_newer(&mut s.url_keys, item_id(&k.tenant, &k.key_id), k, |k| {
                        k.version
                    })
                }
                Change::Purge(p) => s.purges.entry(p.tenant.clone()).or_default().add(p),
            }
        }
        drop(s);
        if let Some(last) = changes.last() {
            self.version
                .send_replace(self.version().max(last.version()));
        }
    }

    /// Brings the cache up to date with the store, once.
    pub async fn sync(
        &self,
        store: &dyn IdentityStore,
    ) -> Result<(), imgfleet_stores::identity::StoreError> {
        let started = Instant::now();
        loop {
            let changes = store.changes_since(self.version(), BATCH).await?;
            self.apply(&changes);
            if changes.len() < BATCH {
                break;
            }
        }
        *self.synced_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(started);
        Ok(())
    }

    /// Asks the follower to poll now (after a write on this host).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Waits until the cache has applied `version`, or `timeout` passes. Lets an admin write
    /// answer only once this host enforces it.
    pub async fn wait_for(&self, version: u64, timeout: Duration) -> bool {
        let mut rx = self.version.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|v| *v >= version))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Follows the store's change log for as long as the process lives.
    pub fn spawn_follower(
        self: &Arc<Self>,
        store: Arc<dyn IdentityStore>,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                fail::fail_point!("auth-follower");
                match cache.sync(store.as_ref()).await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!(version = cache.version(), "identity store reachable again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "identity store unreachable; serving cached identities");
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                    () = cache.nudge.notified() => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgfleet_stores::identity::NewKey;
    use imgfleet_stores::identity::sqlite::SqliteIdentityStore;

    fn key(id: &str, tenant: &str) -> NewKey {
        NewKey {
            key_id: id.into(),
            tenant: tenant.into(),
            secret_hash: "h".into(),
            scopes: imgfleet_auth::Scope::ALL.to_vec(),
            label: None,
            created_ms: 0,
        }
    }

    #[tokio::test]
    async fn the_cache_follows_the_change_log_and_never_goes_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteIdentityStore::open(&dir.path().join("i.sqlite")).unwrap();
        let cache = AuthCache::new(Duration::from_secs(1));
        assert!(cache.stale(), "never synced");
        store.create_tenant("acme").await.unwrap();
        store.insert_key(key("k1", "acme")).await.unwrap();
        cache.sync(&store).await.unwrap();
        assert!(!cache.stale());
        assert_eq!(cache.version(), 2);
        let (k, t) = cache.lookup("k1");
        assert_eq!(
            (k.unwrap().revoked, t.unwrap().id),
            (false, "acme".to_string())
        );
        assert_eq!(cache.lookup("k2"), (None, None));

        store.revoke_key("k1").await.unwrap();
        cache.sync(&store).await.unwrap();
        assert!(cache.lookup("k1").0.unwrap().revoked);
        // Replaying an older change (as a re-read log would) does not undo the revocation.
        let old = store.changes_since(0, 10).await.unwrap();
        cache.apply(&old[..2]);
        assert!(cache.lookup("k1").0.unwrap().revoked);
        assert_eq!(cache.version(), 3);
    }

    #[tokio::test]
    async fn the_follower_picks_changes_up_and_waiters_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteIdentityStore::open(&dir.path().join("i.sqlite")).unwrap());
        let cache = AuthCache::new(Duration::from_secs(1));
        cache.spawn_follower(store.clone());
        let t = store.create_tenant("acme").await.unwrap();
        assert!(cache.wait_for(t.version, Duration::from_secs(2)).await);
        assert!(
            !cache
                .wait_for(t.version + 1, Duration::from_millis(200))
                .await
        );
    }

    #[tokio::test]
    async fn origins_and_url_keys_are_followed_and_so_are_their_removals() {
        use imgfleet_stores::identity::admin::{NewOrigin, add_origin, create_url_key};
        use imgfleet_stores::identity::{ItemKind, ItemWrite, OriginSource};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteIdentityStore::open(&dir.path().join("i.sqlite")).unwrap();
        store.create_tenant("acme").await.unwrap();
        let origin = NewOrigin {
            name: "photos".into(),
            source: OriginSource::Http {
                base_url: "https://img.example.com/".into(),
                allow_private: false,
            },
            max_age_secs: None,
            immutable: false,
        };
        add_origin(&store, "acme", origin).await.unwrap();
        let key = create_url_key(&store, "acme", None).await.unwrap();
        let cache = AuthCache::new(Duration::from_secs(1));
        cache.sync(&store).await.unwrap();
        let found = cache.delivery("acme", &key.record.key_id, "photos");
        assert_eq!(found.tenant.unwrap().id, "acme");
        assert!(!found.origin.unwrap().removed);
        let url_key = found.url_key.unwrap();
        assert!(key.url_key.ends_with(&url_key.secret));
        // Names are per tenant: another tenant's lookup finds nothing.
        assert!(
            cache
                .delivery("other", &key.record.key_id, "photos")
                .origin
                .is_none()
        );
        store
            .write_item("acme", ItemKind::Origin, "photos", ItemWrite::Retire)
            .await
            .unwrap();
        store
            .write_item(
                "acme",
                ItemKind::UrlKey,
                &key.record.key_id,
                ItemWrite::Retire,
            )
            .await
            .unwrap();
        cache.sync(&store).await.unwrap();
        let found = cache.delivery("acme", &key.record.key_id, "photos");
        assert!(found.origin.unwrap().removed);
        assert!(found.url_key.unwrap().revoked);
    }

    #[tokio::test]
    async fn a_cache_that_cannot_sync_keeps_its_data_and_turns_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        let store = SqliteIdentityStore::open(&path).unwrap();
        store.create_tenant("acme").await.unwrap();
        store.insert_key(key("k1", "acme")).await.unwrap();
        let cache = AuthCache::new(Duration::from_millis(50));
        cache.sync(&store).await.unwrap();
        std::fs::rename(&path, dir.path().join("away")).unwrap();
        assert!(cache.sync(&store).await.is_err());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(cache.stale());
        assert!(cache.lookup("k1").0.is_some());
    }
}
