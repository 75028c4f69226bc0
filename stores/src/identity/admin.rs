//! Management-plane operations shared by the admin API and the `imgfleet` CLI: what goes
//! into the store, how keys are minted, and what an operator is shown.

use imgfleet_auth::credential::{mint, secret_hash};
use imgfleet_auth::{KeyRecord, Scope};
use serde::Serialize;

use super::items::CachePolicy;
use super::{
    IdentityStore, Item, ItemKind, ItemWrite, NewKey, OriginRecord, OriginSource, PurgeRecord,
    StoreError, UrlKeyRecord,
};
use crate::clock::now_ms;

/// A freshly minted key: the only time the full secret exists outside the client.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    /// Give this to the customer; it is not stored and cannot be shown again.
    pub api_key: String,
    #[serde(flatten)]
    pub record: PublicKey,
}

/// A key as listed: everything but the hash.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicKey {
    pub key_id: String,
    pub tenant: String,
    pub scopes: Vec<Scope>,
    pub revoked: bool,
    pub label: Option<String>,
    pub created_ms: u64,
    pub version: u64,
}

impl From<KeyRecord> for PublicKey {
    fn from(k: KeyRecord) -> Self {
        Self {
            key_id: k.key_id,
            tenant: k.tenant,
            scopes: k.scopes,
            revoked: k.revoked,
            label: k.label,
            created_ms: k.created_ms,
            version: k.version,
        }
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random source");
    buf
}

pub async fn create_key(
    store: &dyn IdentityStore,
    tenant: &str,
    scopes: Option<Vec<Scope>>,
    label: Option<String>,
) -> Result<CreatedKey, StoreError> {
    let scopes = scopes.unwrap_or_else(|| Scope::ALL.to_vec());
    if scopes.is_empty() {
        return Err(StoreError::Invalid("a key needs at least one scope".into()));
    }
    if label.as_ref().is_some_and(|l| l.len() > 200) {
        return Err(StoreError::Invalid("a label is at most 200 bytes".into()));
    }
    let (key_id, api_key) = mint(random_bytes(), random_bytes());
    let secret = api_key.rsplit('_').next().unwrap_or_default();
    let record = store
        .insert_key(NewKey {
            key_id,
            tenant: tenant.to_string(),
            secret_hash: secret_hash(secret),
            scopes,
            label,
            created_ms: now_ms(),
        })
        .await?;
    Ok(CreatedKey {
        api_key,
        record: record.into(),
    })
}

/// The admin credential: `ifa_` + 64 hex digits (distinct from tenant keys by prefix).
pub fn new_admin_token() -> String {
    format!(
        "ifa_{}",
        imgfleet_auth::credential::hex(&random_bytes::<32>())
    )
}

/// A new origin as the admin API and the CLI take it: `{"name": "photos", "type": "http",
/// "base_url": "https://img.example.com/"}` or `{"name": "s3", "type": "s3", "bucket": "b",
/// "prefix": "web/"}`, optionally with `max_age_secs` and `immutable`.
#[derive(Debug, Clone, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewOrigin {
    pub name: String,
    #[serde(flatten)]
    pub source: OriginSource,
    #[serde(default)]
    pub max_age_secs: Option<u64>,
    #[serde(default)]
    pub immutable: bool,
}

pub async fn add_origin(
    store: &dyn IdentityStore,
    tenant: &str,
    new: NewOrigin,
) -> Result<OriginRecord, StoreError> {
    let cache = CachePolicy {
        max_age_secs: new
            .max_age_secs
            .unwrap_or(CachePolicy::default().max_age_secs),
        immutable: new.immutable,
    };
    let item = Item::Origin(OriginRecord {
        tenant: tenant.to_string(),
        name: new.name.clone(),
        source: new.source,
        cache,
        removed: false,
        created_ms: now_ms(),
        version: 0,
    });
    match store
        .write_item(tenant, ItemKind::Origin, &new.name, ItemWrite::Create(item))
        .await?
    {
        Item::Origin(o) => Ok(o),
        other => Err(unexpected(other)),
    }
}

pub async fn remove_origin(
    store: &dyn IdentityStore,
    tenant: &str,
    name: &str,
) -> Result<OriginRecord, StoreError> {
    match store
        .write_item(tenant, ItemKind::Origin, name, ItemWrite::Retire)
        .await?
    {
        Item::Origin(o) => Ok(o),
        other => Err(unexpected(other)),
    }
}

/// The tenant's origins in force (removed ones are history).
pub async fn origins(
    store: &dyn IdentityStore,
    tenant: &str,
) -> Result<Vec<OriginRecord>, StoreError> {
    let items = store.items(tenant, ItemKind::Origin).await?;
    Ok(items
        .into_iter()
        .filter_map(|i| match i {
            Item::Origin(o) if !o.removed => Some(o),
            _ => None,
        })
        .collect())
}

/// A freshly made URL signing key: the only time its secret is shown.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedUrlKey {
    /// `ifu_<key id>_<secret>`: what `imgfleet url sign --key` and signing code take. Shown
    /// once; the store keeps the secret to verify signatures, but no API returns it again.
    pub url_key: String,
    #[serde(flatten)]
    pub record: PublicUrlKey,
}

/// A URL key as listed: everything but the secret.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicUrlKey {
    pub key_id: String,
    pub tenant: String,
    pub label: Option<String>,
    pub revoked: bool,
    pub created_ms: u64,
    pub version: u64,
}

impl From<UrlKeyRecord> for PublicUrlKey {
    fn from(k: UrlKeyRecord) -> Self {
        Self {
            key_id: k.key_id,
            tenant: k.tenant,
            label: k.label,
            revoked: k.revoked,
            created_ms: k.created_ms,
            version: k.version,
        }
    }
}

/// How many URL keys a tenant may have in force at once: enough to rotate (sign with the
/// new one while pages carrying the old one's URLs are still cached) without a pile-up.
pub const MAX_ACTIVE_URL_KEYS: usize = 5;

pub async fn create_url_key(
    store: &dyn IdentityStore,
    tenant: &str,
    label: Option<String>,
) -> Result<CreatedUrlKey, StoreError> {
    use imgfleet_auth::credential::hex;
    use imgfleet_auth::signed_url::URL_KEY_PREFIX;
    if label.as_ref().is_some_and(|l| l.len() > 200) {
        return Err(StoreError::Invalid("a label is at most 200 bytes".into()));
    }
    let active = url_keys(store, tenant)
        .await?
        .iter()
        .filter(|k| !k.revoked)
        .count();
    if active >= MAX_ACTIVE_URL_KEYS {
        return Err(StoreError::Conflict(format!(
            "tenant `{tenant}` has {active} URL keys in force (at most {MAX_ACTIVE_URL_KEYS}); revoke one first"
        )));
    }
    // Ids are short (they are in every URL) and unique per tenant: a clash is drawn again.
    for _ in 0..8 {
        let key_id = hex(&random_bytes::<4>());
        let secret = hex(&random_bytes::<32>());
        let item = Item::UrlKey(UrlKeyRecord {
            tenant: tenant.to_string(),
            key_id: key_id.clone(),
            secret: secret.clone(),
            label: label.clone(),
            revoked: false,
            created_ms: now_ms(),
            version: 0,
        });
        match store
            .write_item(tenant, ItemKind::UrlKey, &key_id, ItemWrite::Create(item))
            .await
        {
            Ok(Item::UrlKey(k)) => {
                return Ok(CreatedUrlKey {
                    url_key: format!("{URL_KEY_PREFIX}{key_id}_{secret}"),
                    record: k.into(),
                });
            }
            Ok(other) => return Err(unexpected(other)),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(
        "could not draw a free URL key id".into(),
    ))
}

pub async fn url_keys(
    store: &dyn IdentityStore,
    tenant: &str,
) -> Result<Vec<PublicUrlKey>, StoreError> {
    let items = store.items(tenant, ItemKind::UrlKey).await?;
    Ok(items
        .into_iter()
        .filter_map(|i| match i {
            Item::UrlKey(k) => Some(k.into()),
            _ => None,
        })
        .collect())
}

pub async fn revoke_url_key(
    store: &dyn IdentityStore,
    tenant: &str,
    key_id: &str,
) -> Result<PublicUrlKey, StoreError> {
    match store
        .write_item(tenant, ItemKind::UrlKey, key_id, ItemWrite::Retire)
        .await?
    {
        Item::UrlKey(k) => Ok(k.into()),
        other => Err(unexpected(other)),
    }
}

/// A purge as the admin API and the CLI take it: `{"origin": "photos", "path":
/// "cats/tom.jpg"}`, or `"prefix": true` for every path starting with `path` (an empty one:
/// the whole origin).
#[derive(Debug, Clone, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewPurge {
    pub origin: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub prefix: bool,
}

/// How far hosts' clocks may run apart: a purge reaches entries made up to this long after
/// it, so that none made before it escapes on a host whose clock is ahead.
pub const PURGE_CLOCK_MARGIN_MS: u64 = 2_000;

/// How many purges a tenant's record keeps: each is checked on every cached read.
pub const MAX_PURGES: usize = 1_000;

pub async fn purge(
    store: &dyn IdentityStore,
    tenant: &str,
    new: NewPurge,
) -> Result<PurgeRecord, StoreError> {
    let now = now_ms();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let item = Item::Purge(PurgeRecord {
        tenant: tenant.to_string(),
        id: id.clone(),
        origin: new.origin,
        path: new.path.trim_start_matches('/').to_string(),
        prefix: new.prefix,
        at_ms: now + PURGE_CLOCK_MARGIN_MS,
        created_ms: now,
        version: 0,
    });
    match store
        .write_item(tenant, ItemKind::Purge, &id, ItemWrite::Create(item))
        .await?
    {
        Item::Purge(p) => Ok(p),
        other => Err(unexpected(other)),
    }
}

pub async fn purges(
    store: &dyn IdentityStore,
    tenant: &str,
) -> Result<Vec<PurgeRecord>, StoreError> {
    let items = store.items(tenant, ItemKind::Purge).await?;
    Ok(items
        .into_iter()
        .filter_map(|i| match i {
            Item::Purge(p) => Some(p),
            _ => None,
        })
        .collect())
}

fn unexpected(item: Item) -> StoreError {
    StoreError::Unavailable(format!(
        "the store returned a {} for another kind",
        item.kind().as_str()
    ))
}
