//! Management-plane operations shared by the admin API and the `imgfleet` CLI: what goes
//! into the store, how keys are minted, and what an operator is shown.

use imgfleet_auth::credential::{mint, secret_hash};
use imgfleet_auth::{KeyRecord, Scope};
use serde::Serialize;

use super::{IdentityStore, NewKey, StoreError};
use crate::clock::now_ms;

/// A freshly minted key: the only time the full secret exists outside the client.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    /// Give this to the customer; it is not stored and cannot be shown again.
    pub api_key: String,
    #[serde(flatten)]
    pub record: PublicKey,
}

/// A key as listed: everything but the hash.
#[derive(Debug, Clone, Serialize)]
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
