//! A usage record: everything billing may ever want to know about one request.

use serde::{Deserialize, Serialize};

/// One side (input or output) of a request. Zero / `None` when there was no image (an
/// error before decoding, a job status poll).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSide {
    pub bytes: u64,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
}

impl ImageSide {
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Unique per request, chosen by the host (never by the client): the de-duplication key.
    pub id: String,
    /// The request's `X-Request-Id` (possibly the client's), to join with logs and audit.
    #[serde(default)]
    pub request_id: String,
    pub tenant: String,
    pub key_id: String,
    pub at_ms: u64,
    /// The route that was called, e.g. `/v1/resize`.
    pub route: String,
    pub status: u16,
    pub input: ImageSide,
    pub output: ImageSide,
    /// CPU time of the function invocation, measured by the host.
    pub cpu_ns: u64,
    pub wall_ns: u64,
    pub queue_ns: u64,
    /// Bytes read from the tenant's origin for a signed GET (uploads: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub origin_bytes: u64,
    /// A signed GET answered `304 Not Modified`: revalidated with the origin, nothing
    /// resized or sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_modified: bool,
    /// For a signed GET: whether its image came from the result cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheUse>,
}

/// How a delivered image was made, as billing and capacity planning see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheUse {
    /// Served from the result cache (this host's, the fleet's, or a result another request
    /// was making at the same moment): no fetch of the source, no resize.
    Hit,
    /// Made for this request: fetched and resized.
    Miss,
    /// The cached result served after the origin confirmed its source unchanged (a
    /// conditional request): no resize.
    Revalidated,
}

impl CacheUse {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Revalidated => "revalidated",
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What travels on the usage queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub id: String,
    pub records: Vec<UsageRecord>,
}
