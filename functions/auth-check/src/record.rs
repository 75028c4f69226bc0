//! The identity records auth-check decides on, as the identity store keeps them.

use serde::{Deserialize, Serialize};

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Scope {
    /// `POST /v1/resize`.
    Resize,
    /// `/v1/jobs…`: submit, status, output.
    Jobs,
    /// `GET /v1/usage`.
    Usage,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Resize, Scope::Jobs, Scope::Usage];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Resize => "resize",
            Scope::Jobs => "jobs",
            Scope::Usage => "usage",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Limits of one tenant; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quota {
    /// Sustained request rate; bursts of up to one second's worth are allowed.
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Input bytes accepted per calendar month (UTC).
    #[serde(default)]
    pub monthly_bytes: Option<u64>,
    /// Output pixels produced per calendar month (UTC).
    #[serde(default)]
    pub monthly_pixels: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantRecord {
    pub id: String,
    pub disabled: bool,
    #[serde(default)]
    pub quota: Quota,
    /// The change-log version that produced this state.
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: String,
    pub tenant: String,
    /// `credential::secret_hash` of the secret; the secret itself is never stored.
    pub secret_hash: String,
    pub scopes: Vec<Scope>,
    pub revoked: bool,
    #[serde(default)]
    pub label: Option<String>,
    pub created_ms: u64,
    pub version: u64,
}

/// What a tenant has used so far this calendar month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub pixels: u64,
}
