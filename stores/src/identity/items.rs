//! A tenant's delivery records, kept beside its keys: origins (where signed GET URLs fetch
//! their sources) and URL signing keys. Every backend stores them the same way — one row
//! per item, keyed by kind and id, written with its change-log entry — so hosts follow an
//! addition or a removal exactly as they follow keys.

use serde::{Deserialize, Serialize};

use super::{Change, StoreError};

/// Where a tenant's images come from, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OriginRecord {
    pub tenant: String,
    pub name: String,
    pub source: OriginSource,
    #[serde(default)]
    pub cache: CachePolicy,
    /// Removed origins stay as tombstones so that followers learn of the removal.
    #[serde(default)]
    pub removed: bool,
    pub created_ms: u64,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OriginSource {
    /// Sources are `base_url` + the URL's source path.
    Http {
        base_url: String,
        /// Lets the origin resolve to loopback, private or link-local addresses (refused
        /// otherwise, after DNS resolution): for origins inside the operator's network.
        #[serde(default)]
        allow_private: bool,
    },
    /// Sources are objects `prefix` + the URL's (decoded) source path in `bucket`, read
    /// with the host's AWS credentials.
    S3 {
        bucket: String,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        region: Option<String>,
        /// Another S3-compatible endpoint (path-style addressing).
        #[serde(default)]
        endpoint: Option<String>,
    },
}

/// How long browsers and CDNs may keep an output of this origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CachePolicy {
    pub max_age_secs: u64,
    /// `Cache-Control: immutable`: for origins whose objects never change under a name.
    #[serde(default)]
    pub immutable: bool,
}

impl CachePolicy {
    /// The `Cache-Control` of a delivered image: `public, max-age=N[, immutable]`.
    pub fn cache_control(&self) -> String {
        let mut cc = format!("public, max-age={}", self.max_age_secs);
        if self.immutable {
            cc.push_str(", immutable");
        }
        cc
    }
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            max_age_secs: 86_400,
            immutable: false,
        }
    }
}

/// A key that signs a tenant's image URLs. Separate from API keys: it grants only GETs of
/// what it signed, and web pages' build steps hold it, not programs calling the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UrlKeyRecord {
    pub tenant: String,
    pub key_id: String,
    /// The HMAC secret, hex. Verifying a signature needs the secret itself (not a hash of
    /// it), so the identity store holds it as it holds any key material.
    pub secret: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub revoked: bool,
    pub created_ms: u64,
    pub version: u64,
}

/// A purge of cached results: every host treats the entries of `tenant` from `origin`
/// whose source path is `path` (or starts with it, for a prefix) made before `at_ms` as
/// misses. Purges are history, never undone; following them through the change log is what
/// makes one reach every host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurgeRecord {
    pub tenant: String,
    pub id: String,
    pub origin: String,
    /// A source path as signed URLs carry it (percent-encoded), or a prefix of such paths.
    pub path: String,
    #[serde(default)]
    pub prefix: bool,
    /// Entries made up to this time (Unix ms) are reached: the purge's own time plus a
    /// margin for hosts' clocks running apart.
    pub at_ms: u64,
    pub created_ms: u64,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    Origin(OriginRecord),
    UrlKey(UrlKeyRecord),
    Purge(PurgeRecord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Origin,
    UrlKey,
    Purge,
}

impl ItemKind {
    /// The kind's name in store rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::UrlKey => "url_key",
            Self::Purge => "purge",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::UrlKey => "URL key",
            Self::Purge => "purge",
        }
    }
}

/// An item's id within its kind: names and key ids are unique per tenant.
pub fn item_id(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

impl Item {
    pub fn kind(&self) -> ItemKind {
        match self {
            Self::Origin(_) => ItemKind::Origin,
            Self::UrlKey(_) => ItemKind::UrlKey,
            Self::Purge(_) => ItemKind::Purge,
        }
    }

    pub fn tenant(&self) -> &str {
        match self {
            Self::Origin(o) => &o.tenant,
            Self::UrlKey(k) => &k.tenant,
            Self::Purge(p) => &p.tenant,
        }
    }

    pub fn id(&self) -> String {
        match self {
            Self::Origin(o) => item_id(&o.tenant, &o.name),
            Self::UrlKey(k) => item_id(&k.tenant, &k.key_id),
            Self::Purge(p) => item_id(&p.tenant, &p.id),
        }
    }

    pub fn version(&self) -> u64 {
        match self {
            Self::Origin(o) => o.version,
            Self::UrlKey(k) => k.version,
            Self::Purge(p) => p.version,
        }
    }

    pub fn set_version(&mut self, version: u64) {
        match self {
            Self::Origin(o) => o.version = version,
            Self::UrlKey(k) => k.version = version,
            Self::Purge(p) => p.version = version,
        }
    }

    /// Removed origins and revoked keys.
    pub fn retired(&self) -> bool {
        match self {
            Self::Origin(o) => o.removed,
            Self::UrlKey(k) => k.revoked,
            Self::Purge(_) => false,
        }
    }

    pub fn change(&self) -> Change {
        match self {
            Self::Origin(o) => Change::Origin(o.clone()),
            Self::UrlKey(k) => Change::UrlKey(k.clone()),
            Self::Purge(p) => Change::Purge(p.clone()),
        }
    }
}

/// A write to one item, decided on its current state inside the store's transaction.
#[derive(Debug, Clone)]
pub enum ItemWrite {
    /// Adds an item; a live one of the same id is a conflict (a removed origin's name may
    /// be used again).
    Create(Item),
    /// Removes an origin or revokes a URL key (a purge cannot be undone).
    Retire,
}

impl ItemWrite {
    /// Refuses what no store may write, before any transaction starts.
    pub fn validate(&self) -> Result<(), StoreError> {
        let Self::Create(item) = self else {
            return Ok(());
        };
        match item {
            Item::Origin(o) => validate_origin(o),
            Item::UrlKey(k) => {
                if k.key_id.len() != 8 || !k.key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(StoreError::Invalid("a URL key id is 8 hex digits".into()));
                }
                Ok(())
            }
            Item::Purge(p) => {
                if !super::valid_tenant_id(&p.origin) {
                    return Err(StoreError::Invalid(format!(
                        "origin name `{}` is not an origin's name",
                        p.origin
                    )));
                }
                if p.path.len() > 2048 || p.path.contains(['\n', '\r']) {
                    return Err(StoreError::Invalid(
                        "a purge's path is at most 2048 bytes on one line".into(),
                    ));
                }
                if !p.prefix && p.path.is_empty() {
                    return Err(StoreError::Invalid(
                        "a purge names a path, or a prefix (\"prefix\": true; empty for the whole origin)".into(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The item's new state given its current one; `None`: nothing to write (retiring
    /// what is already retired).
    pub fn apply(
        self,
        kind: ItemKind,
        id: &str,
        current: Option<Item>,
    ) -> Result<Option<Item>, StoreError> {
        match (self, current) {
            (Self::Retire, _) if kind == ItemKind::Purge => {
                Err(StoreError::Invalid("a purge cannot be undone".into()))
            }
            (Self::Create(_), Some(c)) if !c.retired() || kind == ItemKind::UrlKey => Err(
                StoreError::Conflict(format!("{} `{id}` already exists", kind.noun())),
            ),
            (Self::Create(item), _) => Ok(Some(item)),
            (Self::Retire, None) => Err(StoreError::NotFound(format!("no {} `{id}`", kind.noun()))),
            (Self::Retire, Some(c)) if c.retired() => Ok(None),
            (Self::Retire, Some(mut c)) => {
                match &mut c {
                    Item::Origin(o) => o.removed = true,
                    Item::UrlKey(k) => k.revoked = true,
                    Item::Purge(_) => {}
                }
                Ok(Some(c))
            }
        }
    }
}

/// Origin names appear in URLs: short lower-case words, like tenant ids.
fn validate_origin(o: &OriginRecord) -> Result<(), StoreError> {
    if !super::valid_tenant_id(&o.name) {
        return Err(StoreError::Invalid(format!(
            "origin name `{}`: use 1-64 of a-z, 0-9, '-' and '_', starting with a letter or digit",
            o.name
        )));
    }
    match &o.source {
        OriginSource::Http { base_url, .. } => {
            let ok = (base_url.starts_with("http://") || base_url.starts_with("https://"))
                && base_url.ends_with('/')
                && !base_url.contains(['?', '#', '@'])
                && base_url.split("://").nth(1).is_some_and(|r| r.len() > 1);
            if !ok {
                return Err(StoreError::Invalid(format!(
                    "base_url `{base_url}`: an http:// or https:// URL ending in '/', without credentials, query or fragment"
                )));
            }
        }
        OriginSource::S3 { bucket, .. } => {
            let ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !ok {
                return Err(StoreError::Invalid(format!(
                    "bucket `{bucket}` is not an S3 bucket name"
                )));
            }
        }
    }
    if o.cache.max_age_secs > 365 * 86_400 {
        return Err(StoreError::Invalid(
            "max_age_secs is at most a year (31536000)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(name: &str, base_url: &str) -> Item {
        Item::Origin(OriginRecord {
            tenant: "acme".into(),
            name: name.into(),
            source: OriginSource::Http {
                base_url: base_url.into(),
                allow_private: false,
            },
            cache: CachePolicy::default(),
            removed: false,
            created_ms: 1,
            version: 0,
        })
    }

    #[test]
    fn origins_are_checked_before_any_write() {
        assert!(
            ItemWrite::Create(origin("photos", "https://img.example.com/"))
                .validate()
                .is_ok()
        );
        for (name, url) in [
            ("Photos", "https://img.example.com/"),
            ("photos", "ftp://img.example.com/"),
            ("photos", "https://img.example.com"),
            ("photos", "https://user:pw@img.example.com/"),
            ("photos", "https://img.example.com/?a=1/"),
            ("photos", "https:///"),
        ] {
            assert!(
                matches!(
                    ItemWrite::Create(origin(name, url)).validate(),
                    Err(StoreError::Invalid(_))
                ),
                "{name} {url}"
            );
        }
    }

    #[test]
    fn a_removed_origins_name_can_be_used_again_but_a_live_one_cannot() {
        let live = origin("photos", "https://a.example/");
        let again = ItemWrite::Create(live.clone()).apply(
            ItemKind::Origin,
            "acme/photos",
            Some(live.clone()),
        );
        assert!(matches!(again, Err(StoreError::Conflict(_))));
        let removed = ItemWrite::Retire
            .apply(ItemKind::Origin, "acme/photos", Some(live.clone()))
            .unwrap()
            .unwrap();
        assert!(removed.retired());
        assert!(
            ItemWrite::Retire
                .apply(ItemKind::Origin, "acme/photos", Some(removed.clone()))
                .unwrap()
                .is_none()
        );
        let back = ItemWrite::Create(live)
            .apply(ItemKind::Origin, "acme/photos", Some(removed))
            .unwrap()
            .unwrap();
        assert!(!back.retired());
        assert!(matches!(
            ItemWrite::Retire.apply(ItemKind::UrlKey, "acme/00000000", None),
            Err(StoreError::NotFound(_))
        ));
    }
}
