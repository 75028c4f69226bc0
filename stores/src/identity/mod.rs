//! The identity store port, management plane: the authoritative store of tenants, API keys
//! and quotas, and its change log. Every write appends one versioned change; hosts follow the
//! log into their auth caches. Backends side by side: `sqlite` (one host), `postgres` (a
//! fleet), `dynamodb` (AWS); `admin` mints keys for any of them.

pub mod admin;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod items;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use async_trait::async_trait;
use imgfleet_auth::{KeyRecord, Quota, TenantRecord};
use serde::{Deserialize, Serialize};

pub use items::{Item, ItemKind, ItemWrite, OriginRecord, OriginSource, PurgeRecord, UrlKeyRecord};

/// One entry of the change log: the full new state of one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "lowercase")]
pub enum Change {
    Tenant(TenantRecord),
    Key(KeyRecord),
    Origin(OriginRecord),
    #[serde(rename = "url_key")]
    UrlKey(UrlKeyRecord),
    Purge(PurgeRecord),
}

impl Change {
    pub fn version(&self) -> u64 {
        match self {
            Change::Tenant(t) => t.version,
            Change::Key(k) => k.version,
            Change::Origin(o) => o.version,
            Change::UrlKey(k) => k.version,
            Change::Purge(p) => p.version,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or is locked; reads fall back to the cache.
    #[error("the identity store is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

/// A key as the store receives it: the secret is already reduced to its hash.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key_id: String,
    pub tenant: String,
    pub secret_hash: String,
    pub scopes: Vec<imgfleet_auth::Scope>,
    pub label: Option<String>,
    pub created_ms: u64,
}

impl NewKey {
    /// The key's first record (its version is set when the change is logged).
    pub fn into_record(self) -> KeyRecord {
        KeyRecord {
            key_id: self.key_id,
            tenant: self.tenant,
            secret_hash: self.secret_hash,
            scopes: self.scopes,
            revoked: false,
            label: self.label,
            created_ms: self.created_ms,
            version: 0,
        }
    }
}

#[async_trait]
pub trait IdentityStore: Send + Sync {
    async fn create_tenant(&self, id: &str) -> Result<TenantRecord, StoreError>;
    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;
    async fn set_disabled(&self, id: &str, disabled: bool) -> Result<TenantRecord, StoreError>;
    async fn set_quota(&self, id: &str, quota: Quota) -> Result<TenantRecord, StoreError>;
    /// Fails with `NotFound` when the tenant does not exist.
    async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError>;
    async fn keys(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError>;
    async fn revoke_key(&self, key_id: &str) -> Result<KeyRecord, StoreError>;
    /// Adds, removes or revokes one of a tenant's origins or URL keys, named `name` within
    /// the tenant (see [`items`]). Fails with `NotFound` when the tenant does not exist.
    async fn write_item(
        &self,
        tenant: &str,
        kind: ItemKind,
        name: &str,
        write: ItemWrite,
    ) -> Result<Item, StoreError>;
    /// A tenant's items of `kind`, retired ones included, ordered by name.
    async fn items(&self, tenant: &str, kind: ItemKind) -> Result<Vec<Item>, StoreError>;
    /// Changes with a version above `version`, oldest first, at most `limit`.
    async fn changes_since(&self, version: u64, limit: usize) -> Result<Vec<Change>, StoreError>;
}

/// A change to one tenant, decided on its current record (none when it does not exist
/// yet). Both stores apply these inside their write transaction.
#[derive(Debug, Clone)]
pub enum TenantUpdate {
    Create,
    SetDisabled(bool),
    SetQuota(Quota),
}

impl TenantUpdate {
    /// Refuses what no store may write, before any transaction starts.
    pub fn validate(&self, id: &str) -> Result<(), StoreError> {
        match self {
            Self::Create if !valid_tenant_id(id) => Err(StoreError::Invalid(format!(
                "tenant id `{id}`: use 1-64 of a-z, 0-9, '-' and '_', starting with a letter or digit"
            ))),
            Self::SetQuota(q)
                if q.requests_per_second
                    .is_some_and(|r| !(r.is_finite() && r >= 0.0)) =>
            {
                Err(StoreError::Invalid(
                    "requests_per_second must be a number ≥ 0".into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The tenant's new record (its version is set when the change is logged).
    pub fn apply(
        self,
        id: &str,
        current: Option<TenantRecord>,
    ) -> Result<TenantRecord, StoreError> {
        match (self, current) {
            (Self::Create, Some(_)) => Err(StoreError::Conflict(format!(
                "tenant `{id}` already exists"
            ))),
            (Self::Create, None) => Ok(TenantRecord {
                id: id.to_string(),
                disabled: false,
                quota: Quota::default(),
                version: 0,
            }),
            (_, None) => Err(StoreError::NotFound(format!("no tenant `{id}`"))),
            (Self::SetDisabled(disabled), Some(t)) => Ok(TenantRecord { disabled, ..t }),
            (Self::SetQuota(quota), Some(t)) => Ok(TenantRecord { quota, ..t }),
        }
    }
}

/// Tenant ids appear in URLs, queue groups and logs: short, lower-case, unambiguous.
pub fn valid_tenant_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_short_lower_case_words() {
        for ok in ["acme", "a", "team-7", "x_y", &"a".repeat(64)] {
            assert!(valid_tenant_id(ok), "{ok}");
        }
        for bad in ["", "Acme", "-a", "a b", "a/b", "a#1", "é", &"a".repeat(65)] {
            assert!(!valid_tenant_id(bad), "{bad}");
        }
    }
}
