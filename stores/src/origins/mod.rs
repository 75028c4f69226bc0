//! The origins port: a tenant's source images, read on demand for signed GET URLs.
//! Backends side by side: `http` (an HTTP(S) base URL, fetched with the safety a public
//! fetcher needs) and `s3` (a bucket and prefix). Both are bounded in time and size,
//! revalidate by the source's validator, and name each way a fetch can fail, so the API can
//! answer each with its own status.

pub mod etag;
#[cfg(feature = "http-origins")]
pub mod http;
#[cfg(feature = "s3")]
pub mod s3;

use std::time::Duration;

use bytes::Bytes;

/// What identifies one version of a source: the origin's `ETag`, else its `Last-Modified`,
/// else a digest of the bytes (an origin that gives neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validator {
    ETag(String),
    LastModified(String),
    Digest(String),
}

impl Validator {
    /// One line: `e:<etag>`, `m:<date>` or `d:<hex>`.
    pub fn encode(&self) -> String {
        match self {
            Self::ETag(v) => format!("e:{v}"),
            Self::LastModified(v) => format!("m:{v}"),
            Self::Digest(v) => format!("d:{v}"),
        }
    }

    /// Reads [`encode`](Self::encode)'s form back; `None` for anything else, or for a value
    /// that could not be sent back as a header (it came from a client).
    pub fn decode(s: &str) -> Option<Self> {
        let (kind, value) = s.split_once(':')?;
        if !sendable(value) {
            return None;
        }
        match kind {
            "e" => Some(Self::ETag(value.to_string())),
            "m" => Some(Self::LastModified(value.to_string())),
            "d" => Some(Self::Digest(value.to_string())),
            _ => None,
        }
    }

    /// The digest validator of `bytes`.
    pub fn digest_of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        let d = sha2::Sha256::digest(bytes);
        Self::Digest(imgfleet_auth::credential::hex(&d[..16]))
    }
}

/// Whether a validator can go back to an origin as a header value: short, visible ASCII.
pub fn sendable(value: &str) -> bool {
    !value.is_empty() && value.len() <= 256 && value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[derive(Debug, Clone)]
pub struct Source {
    pub bytes: Bytes,
    pub validator: Validator,
}

#[derive(Debug, Clone)]
pub enum Fetched {
    Source(Source),
    /// The source still matches the validator the fetch was given.
    NotModified,
}

/// Bounds of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub max_bytes: u64,
    pub connect_timeout: Duration,
    /// The whole fetch, redirects and body included.
    pub total: Duration,
    /// The longest silence while reading the body.
    pub read_timeout: Duration,
    pub max_redirects: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 * 1024 * 1024,
            connect_timeout: Duration::from_secs(2),
            total: Duration::from_secs(8),
            read_timeout: Duration::from_secs(3),
            max_redirects: 3,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("the origin has no such source")]
    NotFound,
    #[error("the origin failed: {0}")]
    Origin(String),
    #[error("the origin did not answer in time")]
    Timeout,
    #[error("the source is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the origin answered with {0}, not an image")]
    NotAnImage(String),
    #[error("the origin's address is not allowed: {0}")]
    AddressRefused(String),
    #[error("the origin redirected badly: {0}")]
    Redirect(String),
}

impl FetchError {
    /// The HTTP status and stable code a client is answered with (docs/DELIVERY.md).
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            Self::NotFound => (404, "source_not_found"),
            Self::Timeout => (504, "origin_timeout"),
            Self::TooLarge { .. } => (413, "source_too_large"),
            Self::NotAnImage(_) => (415, "not_an_image"),
            Self::AddressRefused(_) => (502, "origin_address_refused"),
            Self::Redirect(_) => (502, "origin_redirect"),
            Self::Origin(_) => (502, "origin_error"),
        }
    }
}

/// A source's bytes as they stream in, refused as soon as they pass the cap (a length the
/// origin declared is not trusted).
struct Capped {
    buf: bytes::BytesMut,
    max: u64,
}

impl Capped {
    fn new(declared: Option<u64>, max: u64) -> Self {
        let room = declared.unwrap_or(64 * 1024).min(max) as usize;
        Self {
            buf: bytes::BytesMut::with_capacity(room),
            max,
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        if (self.buf.len() + chunk.len()) as u64 > self.max {
            return Err(FetchError::TooLarge { limit: self.max });
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// The next chunk of a body, or the end, unless the origin stays silent past `silence`.
async fn next_chunk<T, E: std::fmt::Display>(
    silence: Duration,
    next: impl std::future::Future<Output = Option<Result<T, E>>>,
) -> Result<Option<T>, FetchError> {
    match tokio::time::timeout(silence, next).await {
        Err(_) => Err(FetchError::Timeout),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(FetchError::Origin(format!("reading the source: {e}"))),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
    }
}

/// Whether a content type can be an image (a missing one is left to the decoder).
pub fn may_be_image(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    !(essence.starts_with("text/")
        || essence == "application/json"
        || essence == "application/xml"
        || essence == "application/xhtml+xml"
        || essence == "application/javascript")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_round_trip_and_client_junk_is_refused() {
        for v in [
            Validator::ETag("\"abc\"".into()),
            Validator::LastModified("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            Validator::digest_of(b"x"),
        ] {
            assert_eq!(Validator::decode(&v.encode()), Some(v));
        }
        for bad in [
            "",
            "e:",
            "x:1",
            "e:a\r\nSet-Cookie: x",
            &format!("e:{}", "a".repeat(300)),
        ] {
            assert_eq!(Validator::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_source_past_its_cap_is_refused_whatever_length_it_declared() {
        let mut small = Capped::new(Some(1), 8);
        small.push(b"12345").unwrap();
        small.push(b"678").unwrap();
        assert_eq!(&small.finish()[..], b"12345678");
        let mut over = Capped::new(Some(4), 8);
        over.push(b"12345").unwrap();
        assert_eq!(over.push(b"6789"), Err(FetchError::TooLarge { limit: 8 }));
    }

    #[test]
    fn html_and_json_are_not_images_but_unknown_types_may_be() {
        assert!(!may_be_image(Some("text/html; charset=utf-8")));
        assert!(!may_be_image(Some("application/json")));
        assert!(may_be_image(Some("image/jpeg")));
        assert!(may_be_image(Some("application/octet-stream")));
        assert!(may_be_image(None));
    }
}

/// Every kind of origin behind one call, with one set of limits.
#[cfg(all(feature = "http-origins", feature = "s3"))]
#[derive(Clone)]
pub struct Origins {
    http: http::HttpOrigins,
    s3: s3::S3Origins,
    pub limits: FetchLimits,
}

#[cfg(all(feature = "http-origins", feature = "s3"))]
impl Origins {
    pub fn new(limits: FetchLimits) -> Self {
        Self {
            http: http::HttpOrigins::new(limits.connect_timeout),
            s3: s3::S3Origins::new(None),
            limits,
        }
    }

    /// Reads `source` (the URL's source path, percent-encoded) from `origin`, conditional
    /// on `known` when given.
    pub async fn fetch(
        &self,
        origin: &crate::identity::OriginRecord,
        source: &str,
        known: Option<&Validator>,
    ) -> Result<Fetched, FetchError> {
        use crate::identity::OriginSource;
        match &origin.source {
            OriginSource::Http {
                base_url,
                allow_private,
            } => {
                self.http
                    .fetch(base_url, *allow_private, source, known, &self.limits)
                    .await
            }
            OriginSource::S3 {
                bucket,
                prefix,
                region,
                endpoint,
            } => {
                let key = imgfleet_auth::signed_url::percent_decode(source)
                    .ok_or_else(|| FetchError::Origin("the source path is not UTF-8".into()))?;
                self.s3
                    .fetch(bucket, prefix, region, endpoint, &key, known, &self.limits)
                    .await
            }
        }
    }
}
