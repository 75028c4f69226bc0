//! The decision itself.

use serde::{Deserialize, Serialize};

use crate::credential::{parse_authorization, verify};
use crate::record::{KeyRecord, Quota, Scope, TenantRecord, Usage};

/// Everything one check needs. The host finds `key` by the key id in the header and `tenant`
/// by the key's tenant; either may be missing when nothing matches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRequest {
    pub authorization: Option<String>,
    pub scope: Scope,
    pub key: Option<KeyRecord>,
    pub tenant: Option<TenantRecord>,
    #[serde(default)]
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub tenant: String,
    pub key_id: String,
    pub quota: Quota,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow(Grant),
    Deny(Denial),
}

/// Why a request is refused. Codes are stable and documented in docs/API.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    CredentialMissing,
    CredentialScheme,
    CredentialMalformed(String),
    /// No such key, or the secret does not match (indistinguishable on purpose).
    KeyUnknown,
    KeyRevoked,
    TenantDisabled,
    ScopeDenied(Scope),
    /// A monthly allowance is used up; names which one.
    QuotaExceeded(Allowance),
}

/// The monthly allowances a tenant's quota can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    Bytes,
    Pixels,
}

impl Allowance {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bytes => "bytes",
            Self::Pixels => "pixels",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Bytes, Self::Pixels]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

impl Denial {
    pub fn code(&self) -> &'static str {
        match self {
            Self::CredentialMissing => "credential_missing",
            Self::CredentialScheme => "credential_scheme",
            Self::CredentialMalformed(_) => "credential_malformed",
            Self::KeyUnknown => "key_unknown",
            Self::KeyRevoked => "key_revoked",
            Self::TenantDisabled => "tenant_disabled",
            Self::ScopeDenied(_) => "scope_denied",
            Self::QuotaExceeded(_) => "quota_exceeded",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::CredentialMissing
            | Self::CredentialScheme
            | Self::CredentialMalformed(_)
            | Self::KeyUnknown
            | Self::KeyRevoked => 401,
            Self::TenantDisabled | Self::ScopeDenied(_) => 403,
            Self::QuotaExceeded(_) => 429,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::CredentialMissing => {
                "send an API key: Authorization: Bearer ifk_<key id>_<secret>".into()
            }
            Self::CredentialScheme => "the Authorization scheme must be Bearer".into(),
            Self::CredentialMalformed(why) => why.clone(),
            Self::KeyUnknown => "the API key is not valid".into(),
            Self::KeyRevoked => "the API key has been revoked".into(),
            Self::TenantDisabled => "the account is disabled".into(),
            Self::ScopeDenied(scope) => {
                format!("the API key does not have the `{}` scope", scope.as_str())
            }
            Self::QuotaExceeded(what) => {
                format!("the monthly {} allowance is used up", what.as_str())
            }
        }
    }

    /// What a typed denial names (a scope, an allowance), for the wire: the message is
    /// for people and may change.
    pub fn detail(&self) -> Option<&'static str> {
        match self {
            Self::ScopeDenied(scope) => Some(scope.as_str()),
            Self::QuotaExceeded(what) => Some(what.as_str()),
            _ => None,
        }
    }

    /// Rebuilds a denial from its code, message and [`detail`](Self::detail) (as it
    /// crosses the component boundary); `None` for what this version does not know.
    pub fn from_wire(code: &str, message: String, detail: Option<&str>) -> Option<Self> {
        Some(match code {
            "credential_missing" => Self::CredentialMissing,
            "credential_scheme" => Self::CredentialScheme,
            "credential_malformed" => Self::CredentialMalformed(message),
            "key_unknown" => Self::KeyUnknown,
            "key_revoked" => Self::KeyRevoked,
            "tenant_disabled" => Self::TenantDisabled,
            "scope_denied" => Self::ScopeDenied(Scope::parse(detail?)?),
            "quota_exceeded" => Self::QuotaExceeded(Allowance::parse(detail?)?),
            _ => return None,
        })
    }
}

pub fn check(req: &CheckRequest) -> Decision {
    match decide(req) {
        Ok(grant) => Decision::Allow(grant),
        Err(denial) => Decision::Deny(denial),
    }
}

/// What a tenant may do whatever the credential: not while disabled, nor past a monthly
/// allowance. Signed URLs (which carry no API key) are held to the same.
pub fn tenant_allows(tenant: &TenantRecord, usage: &Usage) -> Result<(), Denial> {
    if tenant.disabled {
        return Err(Denial::TenantDisabled);
    }
    let quota = &tenant.quota;
    if quota.monthly_bytes.is_some_and(|max| usage.bytes >= max) {
        return Err(Denial::QuotaExceeded(Allowance::Bytes));
    }
    if quota.monthly_pixels.is_some_and(|max| usage.pixels >= max) {
        return Err(Denial::QuotaExceeded(Allowance::Pixels));
    }
    Ok(())
}

fn decide(req: &CheckRequest) -> Result<Grant, Denial> {
    let cred = parse_authorization(req.authorization.as_deref().map(str::as_bytes))?;
    let key = req
        .key
        .as_ref()
        .filter(|k| k.key_id == cred.key_id)
        .ok_or(Denial::KeyUnknown)?;
    // The secret is checked before anything about the key is revealed.
    if !verify(cred.secret, &key.secret_hash) {
        return Err(Denial::KeyUnknown);
    }
    if key.revoked {
        return Err(Denial::KeyRevoked);
    }
    let tenant = req
        .tenant
        .as_ref()
        .filter(|t| t.id == key.tenant)
        .ok_or(Denial::KeyUnknown)?;
    if tenant.disabled {
        return Err(Denial::TenantDisabled);
    }
    if !key.scopes.contains(&req.scope) {
        return Err(Denial::ScopeDenied(req.scope));
    }
    tenant_allows(tenant, &req.usage)?;
    let quota = &tenant.quota;
    Ok(Grant {
        tenant: tenant.id.clone(),
        key_id: key.key_id.clone(),
        quota: quota.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{mint, secret_hash};

    struct Fixture {
        header: String,
        req: CheckRequest,
    }

    fn fixture() -> Fixture {
        let (key_id, full) = mint([3; 8], [9; 32]);
        let secret = full.rsplit('_').next().unwrap().to_string();
        let key = KeyRecord {
            key_id,
            tenant: "acme".into(),
            secret_hash: secret_hash(&secret),
            scopes: Scope::ALL.to_vec(),
            revoked: false,
            label: None,
            created_ms: 0,
            version: 1,
        };
        let tenant = TenantRecord {
            id: "acme".into(),
            disabled: false,
            quota: Quota::default(),
            version: 1,
        };
        let header = format!("Bearer {full}");
        Fixture {
            req: CheckRequest {
                authorization: Some(header.clone()),
                scope: Scope::Resize,
                key: Some(key),
                tenant: Some(tenant),
                usage: Usage::default(),
            },
            header,
        }
    }

    fn denial(req: &CheckRequest) -> &'static str {
        match check(req) {
            Decision::Deny(d) => d.code(),
            Decision::Allow(g) => panic!("allowed: {g:?}"),
        }
    }

    #[test]
    fn a_valid_key_is_granted_its_tenant_and_quota() {
        let mut f = fixture();
        f.req.tenant.as_mut().unwrap().quota.requests_per_second = Some(5.0);
        let Decision::Allow(grant) = check(&f.req) else {
            panic!("denied")
        };
        assert_eq!(grant.tenant, "acme");
        assert_eq!(grant.key_id, f.req.key.as_ref().unwrap().key_id);
        assert_eq!(grant.quota.requests_per_second, Some(5.0));
    }

    #[test]
    fn a_wrong_secret_looks_exactly_like_an_unknown_key() {
        let mut f = fixture();
        let mut wrong = f.header.clone();
        wrong.pop();
        wrong.push(if f.header.ends_with('0') { '1' } else { '0' });
        f.req.authorization = Some(wrong);
        assert_eq!(denial(&f.req), "key_unknown");
        // Even when the key is revoked: nothing is revealed without the secret.
        f.req.key.as_mut().unwrap().revoked = true;
        assert_eq!(denial(&f.req), "key_unknown");
    }

    #[test]
    fn a_record_for_another_key_id_is_not_used() {
        let mut f = fixture();
        f.req.key.as_mut().unwrap().key_id = "0000000000000000".into();
        assert_eq!(denial(&f.req), "key_unknown");
        f.req.key = None;
        assert_eq!(denial(&f.req), "key_unknown");
    }

    #[test]
    fn revoked_disabled_scope_and_quota_are_each_denied() {
        let mut f = fixture();
        f.req.key.as_mut().unwrap().revoked = true;
        assert_eq!(denial(&f.req), "key_revoked");

        let mut f = fixture();
        f.req.tenant.as_mut().unwrap().disabled = true;
        assert_eq!(denial(&f.req), "tenant_disabled");

        let mut f = fixture();
        f.req.key.as_mut().unwrap().scopes = vec![Scope::Jobs];
        assert_eq!(denial(&f.req), "scope_denied");
        f.req.scope = Scope::Jobs;
        assert!(matches!(check(&f.req), Decision::Allow(_)));

        let mut f = fixture();
        f.req.tenant.as_mut().unwrap().quota.monthly_bytes = Some(100);
        f.req.usage.bytes = 99;
        assert!(matches!(check(&f.req), Decision::Allow(_)));
        f.req.usage.bytes = 100;
        assert_eq!(denial(&f.req), "quota_exceeded");

        let mut f = fixture();
        f.req.tenant.as_mut().unwrap().quota.monthly_pixels = Some(10);
        f.req.usage.pixels = 10;
        assert_eq!(denial(&f.req), "quota_exceeded");
    }

    #[test]
    fn a_key_whose_tenant_record_is_missing_or_someone_elses_is_unknown() {
        let mut f = fixture();
        f.req.tenant.as_mut().unwrap().id = "other".into();
        assert_eq!(denial(&f.req), "key_unknown");
        f.req.tenant = None;
        assert_eq!(denial(&f.req), "key_unknown");
    }

    #[test]
    fn denials_survive_the_round_trip_through_the_wire() {
        for d in [
            Denial::CredentialMissing,
            Denial::CredentialScheme,
            Denial::CredentialMalformed("why".into()),
            Denial::KeyUnknown,
            Denial::KeyRevoked,
            Denial::TenantDisabled,
            Denial::ScopeDenied(Scope::Usage),
            Denial::QuotaExceeded(Allowance::Pixels),
            Denial::QuotaExceeded(Allowance::Bytes),
        ] {
            let wire = crate::http::WireDecision::from(Decision::Deny(d.clone()));
            let json = serde_json::to_string(&wire).unwrap();
            let back: crate::http::WireDecision = serde_json::from_str(&json).unwrap();
            assert_eq!(back.into_decision(), Some(Decision::Deny(d)), "{json}");
        }
        assert_eq!(Denial::from_wire("nope", String::new(), None), None);
        assert_eq!(
            Denial::from_wire("scope_denied", "the `usage` scope".into(), None),
            None,
            "the message is never parsed"
        );
    }
}
