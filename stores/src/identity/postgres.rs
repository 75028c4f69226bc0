//! The fleet's identity store: PostgreSQL, shared by every host. Same records and change
//! log as the embedded store; writers take one advisory lock per transaction, so versions
//! are handed out in commit order and a follower reading `changes_since` can never skip a
//! change that commits late.

use async_trait::async_trait;
use imgfleet_auth::{KeyRecord, Quota, TenantRecord};
use tokio_postgres::Transaction;

use super::items::item_id;
use super::{Change, IdentityStore, Item, ItemKind, ItemWrite, NewKey, StoreError, TenantUpdate};
use crate::clock::now_ms;
use crate::pg_call;
use crate::postgres::Pg;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS imgfleet_tenants (id TEXT PRIMARY KEY, record TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS imgfleet_keys (
        key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, record TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS imgfleet_keys_by_tenant ON imgfleet_keys (tenant);
    CREATE TABLE IF NOT EXISTS imgfleet_items (
        kind TEXT NOT NULL, id TEXT NOT NULL, tenant TEXT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (kind, id));
    CREATE TABLE IF NOT EXISTS imgfleet_changes (
        version BIGINT PRIMARY KEY, at_ms BIGINT NOT NULL, change TEXT NOT NULL);";

/// Key of the advisory lock every identity write holds until it commits.
const WRITE_LOCK: i64 = 0x1a6f_1ee7_0002;

pub struct PostgresIdentityStore {
    pg: Pg,
}

impl PostgresIdentityStore {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            pg: Pg::open(url, SCHEMA)
                .await
                .map_err(StoreError::Unavailable)?,
        })
    }

    /// Applies `update` to a tenant (or creates it) and logs the change, atomically.
    async fn write_tenant(
        &self,
        id: &str,
        update: TenantUpdate,
    ) -> Result<TenantRecord, StoreError> {
        update.validate(id)?;
        pg_call!(&self.pg, unavailable, |c| {
            let tx = begin_write(c).await?;
            let current: Option<TenantRecord> =
                read_json(&tx, "SELECT record FROM imgfleet_tenants WHERE id = $1", id).await?;
            let mut record = update.apply(id, current)?;
            record.version = log_change(&tx, |v| {
                record.version = v;
                Change::Tenant(record.clone())
            })
            .await?;
            tx.execute(
                "INSERT INTO imgfleet_tenants (id, record) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                &[&record.id, &to_json(&record)],
            )
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(record)
        })
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

async fn begin_write(c: &mut tokio_postgres::Client) -> Result<Transaction<'_>, StoreError> {
    let tx = c.transaction().await.map_err(unavailable)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
        .await
        .map_err(unavailable)?;
    Ok(tx)
}

/// Appends a change; `build` receives its version. Returns the version.
async fn log_change(
    tx: &Transaction<'_>,
    build: impl FnOnce(u64) -> Change,
) -> Result<u64, StoreError> {
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM imgfleet_changes",
            &[],
        )
        .await
        .map_err(unavailable)?;
    let version: i64 = row.get(0);
    let change = build(version as u64);
    tx.execute(
        "INSERT INTO imgfleet_changes (version, at_ms, change) VALUES ($1, $2, $3)",
        &[&version, &(now_ms() as i64), &to_json(&change)],
    )
    .await
    .map_err(unavailable)?;
    Ok(version as u64)
}

async fn read_json<T: serde::de::DeserializeOwned>(
    tx: &Transaction<'_>,
    sql: &str,
    arg: &str,
) -> Result<Option<T>, StoreError> {
    let row = tx.query_opt(sql, &[&arg]).await.map_err(unavailable)?;
    row.map(|r| from_json(r.get(0))).transpose()
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("identity records serialise")
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Unavailable(format!("corrupt record: {e}")))
}

fn all_json<T: serde::de::DeserializeOwned>(
    rows: Vec<tokio_postgres::Row>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(|r| from_json(r.get(0))).collect()
}

#[async_trait]
impl IdentityStore for PostgresIdentityStore {
    async fn create_tenant(&self, id: &str) -> Result<TenantRecord, StoreError> {
        self.write_tenant(id, TenantUpdate::Create).await
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        pg_call!(&self.pg, unavailable, |c| {
            let rows = c
                .query("SELECT record FROM imgfleet_tenants ORDER BY id", &[])
                .await
                .map_err(unavailable)?;
            all_json(rows)
        })
    }

    async fn set_disabled(&self, id: &str, disabled: bool) -> Result<TenantRecord, StoreError> {
        self.write_tenant(id, TenantUpdate::SetDisabled(disabled))
            .await
    }

    async fn set_quota(&self, id: &str, quota: Quota) -> Result<TenantRecord, StoreError> {
        self.write_tenant(id, TenantUpdate::SetQuota(quota)).await
    }

    async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError> {
        pg_call!(&self.pg, unavailable, |c| {
            let tx = begin_write(c).await?;
            let tenant: Option<TenantRecord> = read_json(
                &tx,
                "SELECT record FROM imgfleet_tenants WHERE id = $1",
                &key.tenant,
            )
            .await?;
            if tenant.is_none() {
                return Err(StoreError::NotFound(format!("no tenant `{}`", key.tenant)));
            }
            let mut record = key.clone().into_record();
            record.version = log_change(&tx, |v| {
                record.version = v;
                Change::Key(record.clone())
            })
            .await?;
            let inserted = tx
                .execute(
                    "INSERT INTO imgfleet_keys (key_id, tenant, record) VALUES ($1, $2, $3)
                     ON CONFLICT (key_id) DO NOTHING",
                    &[&record.key_id, &record.tenant, &to_json(&record)],
                )
                .await
                .map_err(unavailable)?;
            if inserted == 0 {
                // Dropping the transaction rolls the logged change back too.
                return Err(StoreError::Conflict(format!(
                    "key id {} is taken",
                    record.key_id
                )));
            }
            tx.commit().await.map_err(unavailable)?;
            Ok(record)
        })
    }

    async fn keys(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError> {
        pg_call!(&self.pg, unavailable, |c| {
            let rows = c
                .query(
                    "SELECT record FROM imgfleet_keys WHERE tenant = $1 ORDER BY key_id",
                    &[&tenant],
                )
                .await
                .map_err(unavailable)?;
            all_json(rows)
        })
    }

    async fn revoke_key(&self, key_id: &str) -> Result<KeyRecord, StoreError> {
        pg_call!(&self.pg, unavailable, |c| {
            let tx = begin_write(c).await?;
            let mut record: KeyRecord = read_json(
                &tx,
                "SELECT record FROM imgfleet_keys WHERE key_id = $1",
                key_id,
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no key `{key_id}`")))?;
            if record.revoked {
                return Ok(record);
            }
            record.revoked = true;
            record.version = log_change(&tx, |v| {
                record.version = v;
                Change::Key(record.clone())
            })
            .await?;
            tx.execute(
                "UPDATE imgfleet_keys SET record = $1 WHERE key_id = $2",
                &[&to_json(&record), &record.key_id],
            )
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(record)
        })
    }

    async fn write_item(
        &self,
        tenant: &str,
        kind: ItemKind,
        name: &str,
        write: ItemWrite,
    ) -> Result<Item, StoreError> {
        write.validate()?;
        let id = item_id(tenant, name);
        pg_call!(&self.pg, unavailable, |c| {
            let tx = begin_write(c).await?;
            let owner: Option<TenantRecord> = read_json(
                &tx,
                "SELECT record FROM imgfleet_tenants WHERE id = $1",
                tenant,
            )
            .await?;
            if owner.is_none() {
                return Err(StoreError::NotFound(format!("no tenant `{tenant}`")));
            }
            let current: Option<Item> = tx
                .query_opt(
                    "SELECT record FROM imgfleet_items WHERE kind = $1 AND id = $2",
                    &[&kind.as_str(), &id],
                )
                .await
                .map_err(unavailable)?
                .map(|r| from_json(r.get(0)))
                .transpose()?;
            let Some(mut item) = write.clone().apply(kind, &id, current.clone())? else {
                return current.ok_or_else(|| StoreError::NotFound(format!("no `{id}`")));
            };
            let version = log_change(&tx, |v| {
                item.set_version(v);
                item.change()
            })
            .await?;
            item.set_version(version);
            tx.execute(
                "INSERT INTO imgfleet_items (kind, id, tenant, record) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kind, id) DO UPDATE SET record = excluded.record",
                &[&kind.as_str(), &id, &tenant, &to_json(&item)],
            )
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(item)
        })
    }

    async fn items(&self, tenant: &str, kind: ItemKind) -> Result<Vec<Item>, StoreError> {
        pg_call!(&self.pg, unavailable, |c| {
            let rows = c
                .query(
                    "SELECT record FROM imgfleet_items WHERE tenant = $1 AND kind = $2 ORDER BY id",
                    &[&tenant, &kind.as_str()],
                )
                .await
                .map_err(unavailable)?;
            all_json(rows)
        })
    }

    async fn changes_since(&self, version: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        pg_call!(&self.pg, unavailable, |c| {
            let rows = c
                .query(
                    "SELECT change FROM imgfleet_changes WHERE version > $1
                     ORDER BY version LIMIT $2",
                    &[&(version as i64), &(limit as i64)],
                )
                .await
                .map_err(unavailable)?;
            all_json(rows)
        })
    }
}
