//! Authentication on the request path: the `Authorization` header, this host's auth cache
//! and the auth-check component decide; then the tenant's request rate is enforced here
//! (the token buckets are per-host state, which a pure function cannot keep).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use imgfleet_auth::credential::MAX_HEADER_BYTES;
use imgfleet_auth::http::WireDecision;
use imgfleet_auth::rate::TokenBucket;
use imgfleet_auth::{
    CheckRequest, Decision, Denial, Grant, Scope, TenantRecord, parse_authorization,
};

use super::auth_cache::AuthCache;
use super::monthly::MonthUsage;
use crate::execution::runtime::{Runtime, WarmPool};
use imgfleet_stores::clock::now_ms;

/// The manifest component that makes the decisions.
pub const AUTH_COMPONENT: &str = "auth-check";
/// Budget of one decision; it normally takes microseconds.
const CHECK_DEADLINE: Duration = Duration::from_millis(250);

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Denied(Denial),
    RateLimited {
        retry_after_ms: u64,
    },
    /// The decision could not be made (the component failed): the request is refused, never
    /// let through.
    Unavailable(String),
}

pub struct Gate {
    pub cache: Arc<AuthCache>,
    pub usage: MonthUsage,
    warm: WarmPool,
    rates: Mutex<HashMap<String, TokenBucket>>,
}

impl Gate {
    pub fn new(
        runtime: Arc<Runtime>,
        cache: Arc<AuthCache>,
        max_warm: usize,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            runtime.has_function(AUTH_COMPONENT),
            "the manifest has no `{AUTH_COMPONENT}` component; every request is authenticated by it"
        );
        Ok(Self {
            cache,
            usage: MonthUsage::default(),
            warm: WarmPool::new(runtime.clone(), AUTH_COMPONENT, max_warm),
            rates: Mutex::default(),
        })
    }

    /// Decides on one request: who it is from and whether it may go on.
    pub async fn check(
        &self,
        authorization: Option<&[u8]>,
        scope: Scope,
    ) -> Result<Grant, Refusal> {
        let now = now_ms();
        let key_id = parse_authorization(authorization)
            .ok()
            .map(|c| c.key_id.to_string());
        let (key, tenant) = key_id.map(|id| self.cache.lookup(&id)).unwrap_or_default();
        let usage = tenant
            .as_ref()
            .map(|t| self.usage.get(&t.id, now))
            .unwrap_or_default();
        // Anything longer is refused for its length alone; no need to ship all of it.
        let authorization = authorization
            .map(|h| String::from_utf8_lossy(&h[..h.len().min(MAX_HEADER_BYTES + 1)]).into_owned());
        let request = CheckRequest {
            authorization,
            scope,
            key,
            tenant,
            usage,
        };
        let grant = match self.decide(&request).await? {
            Decision::Allow(grant) => grant,
            Decision::Deny(denial) => return Err(Refusal::Denied(denial)),
        };
        self.take_rate(&grant.tenant, grant.quota.requests_per_second, now)?;
        Ok(grant)
    }

    /// Admits a request whose credential was checked elsewhere (a signed URL): the tenant's
    /// state, monthly allowances and request rate, as for an API key.
    pub fn admit_tenant(&self, tenant: &TenantRecord) -> Result<(), Refusal> {
        let now = now_ms();
        let usage = self.usage.get(&tenant.id, now);
        imgfleet_auth::decision::tenant_allows(tenant, &usage).map_err(Refusal::Denied)?;
        self.take_rate(&tenant.id, tenant.quota.requests_per_second, now)
    }

    fn take_rate(&self, tenant: &str, rate: Option<f64>, now: u64) -> Result<(), Refusal> {
        let Some(rate) = rate else {
            return Ok(());
        };
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = rates
            .entry(tenant.to_string())
            .or_insert_with(|| TokenBucket::full(rate, now));
        bucket
            .take(rate, now)
            .map_err(|retry_after_ms| Refusal::RateLimited { retry_after_ms })
    }

    async fn decide(&self, request: &CheckRequest) -> Result<Decision, Refusal> {
        let body = serde_json::to_vec(request).map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let (status, body) = self
            .warm
            .post(Bytes::from(body), CHECK_DEADLINE)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "auth-check failed; instance retired");
                Refusal::Unavailable(e.to_string())
            })?;
        if status != http::StatusCode::OK {
            return Err(Refusal::Unavailable(format!(
                "auth-check answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        serde_json::from_slice::<WireDecision>(&body)
            .ok()
            .and_then(WireDecision::into_decision)
            .ok_or_else(|| Refusal::Unavailable("auth-check gave an unreadable decision".into()))
    }
}
