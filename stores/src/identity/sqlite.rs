//! The embedded identity store: one SQLite file (WAL, synchronous=FULL). Records are kept
//! as JSON next to their key columns; every write and its change-log entry commit together.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use imgfleet_auth::{KeyRecord, Quota, TenantRecord};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::items::item_id;
use super::{Change, IdentityStore, Item, ItemKind, ItemWrite, NewKey, StoreError, TenantUpdate};
use crate::clock::now_ms;
use crate::sqlite::FileGuard;

/// How long an operation waits for a lock held by someone else before the store counts as
/// unavailable: short, so a stuck store degrades requests to the cache instead of hanging.
const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct SqliteIdentityStore {
    conn: Arc<Mutex<Opened>>,
}

struct Opened {
    conn: Connection,
    file: FileGuard,
}

impl SqliteIdentityStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            conn: Arc::new(Mutex::new(Self::connect(path)?)),
        })
    }

    fn connect(path: &Path) -> Result<Opened, StoreError> {
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        // A revocation that was acknowledged must survive a power cut.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS tenants (id TEXT PRIMARY KEY, record TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS keys (
                key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, record TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS keys_by_tenant ON keys(tenant);
             CREATE TABLE IF NOT EXISTS items (
                kind TEXT NOT NULL, id TEXT NOT NULL, tenant TEXT NOT NULL,
                record TEXT NOT NULL, PRIMARY KEY (kind, id));
             CREATE TABLE IF NOT EXISTS changes (
                version INTEGER PRIMARY KEY AUTOINCREMENT,
                at_ms INTEGER NOT NULL,
                change TEXT NOT NULL);",
        )
        .map_err(unavailable)?;
        let file = FileGuard::new(path).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Opened { conn, file })
    }

    /// The connection, provided the file it has open is still the store's file (see
    /// [`FileGuard`]): otherwise the store is unavailable until it is put back (or the host
    /// restarted on the new file).
    fn checked<'a>(&self, opened: &'a mut Opened) -> Result<&'a mut Connection, StoreError> {
        opened.file.check().map_err(StoreError::Unavailable)?;
        Ok(&mut opened.conn)
    }

    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut opened = this.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(this.checked(&mut opened)?)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    /// Applies `update` to a tenant (or creates it) and logs the change, atomically.
    async fn write_tenant(
        &self,
        id: &str,
        update: TenantUpdate,
    ) -> Result<TenantRecord, StoreError> {
        update.validate(id)?;
        let id = id.to_string();
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let current =
                read_json::<TenantRecord>(&tx, "SELECT record FROM tenants WHERE id = ?1", &id)?;
            let mut record = update.apply(&id, current)?;
            record.version = log_change(&tx, |v| {
                record.version = v;
                Change::Tenant(record.clone())
            })?;
            tx.execute(
                "INSERT INTO tenants (id, record) VALUES (?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET record = excluded.record",
                params![record.id, to_json(&record)],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(record)
        })
        .await
    }
}

/// Appends a change; `build` receives its version. Returns the version.
fn log_change(
    tx: &rusqlite::Transaction<'_>,
    build: impl FnOnce(u64) -> Change,
) -> Result<u64, StoreError> {
    tx.execute(
        "INSERT INTO changes (at_ms, change) VALUES (?1, '')",
        params![now_ms() as i64],
    )
    .map_err(unavailable)?;
    let version = tx.last_insert_rowid() as u64;
    let change = build(version);
    tx.execute(
        "UPDATE changes SET change = ?1 WHERE version = ?2",
        params![to_json(&change), version as i64],
    )
    .map_err(unavailable)?;
    Ok(version)
}

fn read_json<T: serde::de::DeserializeOwned>(
    c: &Connection,
    sql: &str,
    arg: &str,
) -> Result<Option<T>, StoreError> {
    let text: Option<String> = c
        .query_row(sql, params![arg], |r| r.get(0))
        .optional()
        .map_err(unavailable)?;
    text.map(|t| from_json(&t)).transpose()
}

fn read_all<T: serde::de::DeserializeOwned>(
    c: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = c.prepare_cached(sql).map_err(unavailable)?;
    let rows = stmt
        .query_map(args, |r| r.get::<_, String>(0))
        .map_err(unavailable)?;
    rows.map(|r| from_json(&r.map_err(unavailable)?)).collect()
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("identity records serialise")
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Unavailable(format!("corrupt record: {e}")))
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[async_trait]
impl IdentityStore for SqliteIdentityStore {
    async fn create_tenant(&self, id: &str) -> Result<TenantRecord, StoreError> {
        self.write_tenant(id, TenantUpdate::Create).await
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.with(|c| read_all(c, "SELECT record FROM tenants ORDER BY id", []))
            .await
    }

    async fn set_disabled(&self, id: &str, disabled: bool) -> Result<TenantRecord, StoreError> {
        self.write_tenant(id, TenantUpdate::SetDisabled(disabled))
            .await
    }

    async fn set_quota(&self, id: &str, quota: Quota) -> Result<TenantRecord, StoreError> {
        self.write_tenant(id, TenantUpdate::SetQuota(quota)).await
    }

    async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError> {
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let tenant = read_json::<TenantRecord>(
                &tx,
                "SELECT record FROM tenants WHERE id = ?1",
                &key.tenant,
            )?;
            if tenant.is_none() {
                return Err(StoreError::NotFound(format!("no tenant `{}`", key.tenant)));
            }
            let mut record = key.into_record();
            record.version = log_change(&tx, |v| {
                record.version = v;
                Change::Key(record.clone())
            })?;
            let inserted = tx
                .execute(
                    "INSERT INTO keys (key_id, tenant, record) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key_id) DO NOTHING",
                    params![record.key_id, record.tenant, to_json(&record)],
                )
                .map_err(unavailable)?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "key id {} is taken",
                    record.key_id
                )));
            }
            tx.commit().map_err(unavailable)?;
            Ok(record)
        })
        .await
    }

    async fn keys(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |c| {
            read_all(
                c,
                "SELECT record FROM keys WHERE tenant = ?1 ORDER BY key_id",
                params![tenant],
            )
        })
        .await
    }

    async fn revoke_key(&self, key_id: &str) -> Result<KeyRecord, StoreError> {
        let key_id = key_id.to_string();
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let mut record =
                read_json::<KeyRecord>(&tx, "SELECT record FROM keys WHERE key_id = ?1", &key_id)?
                    .ok_or_else(|| StoreError::NotFound(format!("no key `{key_id}`")))?;
            if record.revoked {
                return Ok(record);
            }
            record.revoked = true;
            record.version = log_change(&tx, |v| {
                record.version = v;
                Change::Key(record.clone())
            })?;
            tx.execute(
                "UPDATE keys SET record = ?1 WHERE key_id = ?2",
                params![to_json(&record), record.key_id],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(record)
        })
        .await
    }

    async fn write_item(
        &self,
        tenant: &str,
        kind: ItemKind,
        name: &str,
        write: ItemWrite,
    ) -> Result<Item, StoreError> {
        write.validate()?;
        let (tenant, id) = (tenant.to_string(), item_id(tenant, name));
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            if read_json::<TenantRecord>(&tx, "SELECT record FROM tenants WHERE id = ?1", &tenant)?
                .is_none()
            {
                return Err(StoreError::NotFound(format!("no tenant `{tenant}`")));
            }
            let current: Option<Item> = tx
                .query_row(
                    "SELECT record FROM items WHERE kind = ?1 AND id = ?2",
                    params![kind.as_str(), id],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .map_err(unavailable)?
                .map(|t| from_json(&t))
                .transpose()?;
            let Some(mut item) = write.apply(kind, &id, current.clone())? else {
                return current.ok_or_else(|| StoreError::NotFound(format!("no `{id}`")));
            };
            let version = log_change(&tx, |v| {
                item.set_version(v);
                item.change()
            })?;
            item.set_version(version);
            tx.execute(
                "INSERT INTO items (kind, id, tenant, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(kind, id) DO UPDATE SET record = excluded.record",
                params![kind.as_str(), id, tenant, to_json(&item)],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(item)
        })
        .await
    }

    async fn items(&self, tenant: &str, kind: ItemKind) -> Result<Vec<Item>, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |c| {
            read_all(
                c,
                "SELECT record FROM items WHERE tenant = ?1 AND kind = ?2 ORDER BY id",
                params![tenant, kind.as_str()],
            )
        })
        .await
    }

    async fn changes_since(&self, version: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.with(move |c| {
            read_all(
                c,
                "SELECT change FROM changes WHERE version > ?1 ORDER BY version LIMIT ?2",
                params![version as i64, limit as i64],
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_removed_store_is_unavailable_and_recovers_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        let store = SqliteIdentityStore::open(&path).unwrap();
        store.create_tenant("acme").await.unwrap();
        let aside = dir.path().join("aside.sqlite");
        std::fs::rename(&path, &aside).unwrap();
        assert!(matches!(
            store.create_tenant("other").await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.changes_since(0, 10).await,
            Err(StoreError::Unavailable(_))
        ));
        std::fs::rename(&aside, &path).unwrap();
        store.create_tenant("other").await.unwrap();
        assert_eq!(store.changes_since(0, 10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_store_file_replaced_underneath_is_not_written_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        let store = SqliteIdentityStore::open(&path).unwrap();
        store.create_tenant("old").await.unwrap();
        std::fs::rename(&path, dir.path().join("old.sqlite")).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            store.create_tenant("new").await,
            Err(StoreError::Unavailable(_))
        ));
    }
}
