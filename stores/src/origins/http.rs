//! HTTP(S) origins: `base_url` + the URL's source path, fetched as a public fetcher must be
//! — every address checked after DNS resolution (no loopback, private, link-local or
//! cloud-metadata address unless the origin allows private addresses), redirects followed
//! only within the origin and only a few times, no credentials or cookies sent, a byte cap
//! enforced while the body streams in, and the whole fetch inside its time budget.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

use super::{
    Capped, FetchError, FetchLimits, Fetched, Source, Validator, may_be_image, next_chunk, sendable,
};

type Connector = hyper_rustls::HttpsConnector<HttpConnector<CheckedResolver>>;

/// Fetches from HTTP(S) origins; one per process (it pools connections).
#[derive(Clone)]
pub struct HttpOrigins {
    public: Client<Connector, Empty<Bytes>>,
    private: Client<Connector, Empty<Bytes>>,
}

impl HttpOrigins {
    pub fn new(connect_timeout: std::time::Duration) -> Self {
        Self {
            public: client(false, connect_timeout),
            private: client(true, connect_timeout),
        }
    }

    /// Fetches `base_url` + `source` (percent-encoded, checked by the URL's parser);
    /// conditional on `known` when given.
    pub async fn fetch(
        &self,
        base_url: &str,
        allow_private: bool,
        source: &str,
        known: Option<&Validator>,
        limits: &FetchLimits,
    ) -> Result<Fetched, FetchError> {
        let client = if allow_private {
            &self.private
        } else {
            &self.public
        };
        let url = format!("{base_url}{source}");
        tokio::time::timeout(
            limits.total,
            fetch_following(client, base_url, allow_private, url, known, limits),
        )
        .await
        .unwrap_or(Err(FetchError::Timeout))
    }
}

fn client(
    allow_private: bool,
    connect_timeout: std::time::Duration,
) -> Client<Connector, Empty<Bytes>> {
    let mut http = HttpConnector::new_with_resolver(CheckedResolver { allow_private });
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no system root certificates: HTTPS origins will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("the provider supports TLS 1.2 and 1.3")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector)
}

async fn fetch_following(
    client: &Client<Connector, Empty<Bytes>>,
    base_url: &str,
    allow_private: bool,
    mut url: String,
    known: Option<&Validator>,
    limits: &FetchLimits,
) -> Result<Fetched, FetchError> {
    for _ in 0..=limits.max_redirects {
        let uri: Uri = url
            .parse()
            .map_err(|e| FetchError::Origin(format!("`{url}` is not a URL: {e}")))?;
        check_literal_host(&uri, allow_private)?;
        let mut req = Request::get(uri)
            .header(header::USER_AGENT, "imgfleet")
            .header(header::ACCEPT, "image/*");
        match known {
            Some(Validator::ETag(tag)) => req = req.header(header::IF_NONE_MATCH, tag.as_str()),
            Some(Validator::LastModified(date)) => {
                req = req.header(header::IF_MODIFIED_SINCE, date.as_str())
            }
            _ => {}
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| FetchError::Origin(e.to_string()))?;
        let resp = client.request(req).await.map_err(client_error)?;
        let status = resp.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| FetchError::Redirect(format!("{status} without a Location")))?;
            url = within_origin(base_url, &url, location)?;
            continue;
        }
        return match status {
            StatusCode::NOT_MODIFIED if known.is_some() => Ok(Fetched::NotModified),
            StatusCode::OK => read_source(resp, limits).await.map(Fetched::Source),
            StatusCode::NOT_FOUND | StatusCode::GONE => Err(FetchError::NotFound),
            other => Err(FetchError::Origin(format!("the origin answered {other}"))),
        };
    }
    Err(FetchError::Redirect(format!(
        "more than {} redirects",
        limits.max_redirects
    )))
}

async fn read_source(
    resp: http::Response<hyper::body::Incoming>,
    limits: &FetchLimits,
) -> Result<Source, FetchError> {
    let headers = resp.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !may_be_image(content_type) {
        return Err(FetchError::NotAnImage(
            content_type.unwrap_or("").to_string(),
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes) {
        return Err(FetchError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let header_validator = header_text(headers, header::ETAG)
        .map(Validator::ETag)
        .or_else(|| header_text(headers, header::LAST_MODIFIED).map(Validator::LastModified));
    let mut body = resp.into_body();
    let mut capped = Capped::new(declared, limits.max_bytes);
    while let Some(frame) = next_chunk(limits.read_timeout, body.frame()).await? {
        if let Ok(data) = frame.into_data() {
            capped.push(&data)?;
        }
    }
    let bytes = capped.finish();
    let validator = header_validator.unwrap_or_else(|| Validator::digest_of(&bytes));
    Ok(Source { bytes, validator })
}

/// A header's value when it can be sent back as one (validators go back to the origin).
fn header_text(headers: &http::HeaderMap, name: header::HeaderName) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    sendable(v).then(|| v.to_string())
}

fn client_error(e: hyper_util::client::legacy::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(refused) = io.get_ref().and_then(|i| i.downcast_ref::<Refused>()) {
                return FetchError::AddressRefused(refused.0.clone());
            }
            if io.kind() == std::io::ErrorKind::TimedOut {
                return FetchError::Timeout;
            }
        }
        source = err.source();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(err) = source {
        text = format!("{text}: {err}");
        source = err.source();
    }
    FetchError::Origin(text)
}

/// Resolves `location` against `current` and keeps it inside the origin: same scheme, host
/// and port, under the base URL's path, no dot segments.
fn within_origin(base_url: &str, current: &str, location: &str) -> Result<String, FetchError> {
    let next = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        let scheme = current.split("://").next().unwrap_or("http");
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        let (scheme, rest) = current.split_once("://").unwrap_or(("http", current));
        let authority = rest.split('/').next().unwrap_or("");
        format!("{scheme}://{authority}{location}")
    } else {
        let dir = &current[..current.rfind('/').map_or(current.len(), |i| i + 1)];
        format!("{dir}{location}")
    };
    let path = next
        .strip_prefix(base_url)
        .ok_or_else(|| FetchError::Redirect(format!("to `{next}`, outside the origin")))?;
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.split('/').any(|s| {
        matches!(
            s.to_ascii_lowercase().as_str(),
            "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
        )
    }) {
        return Err(FetchError::Redirect(format!(
            "to `{next}`, which climbs out of the origin"
        )));
    }
    Ok(next)
}

/// A URL whose host is an IP address is not resolved, so its address is checked here.
fn check_literal_host(uri: &Uri, allow_private: bool) -> Result<(), FetchError> {
    let Some(host) = uri.host() else {
        return Err(FetchError::Origin(format!("`{uri}` has no host")));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>()
        && !allow_private
        && !is_public(ip)
    {
        return Err(FetchError::AddressRefused(format!(
            "{ip} is not a public address"
        )));
    }
    Ok(())
}

/// Whether an address is on the public internet: not loopback, private, shared (CGNAT),
/// link-local (cloud metadata lives there), unspecified, multicast or reserved, in IPv4 or
/// IPv6 (IPv4-mapped addresses judged as IPv4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
    }
}

/// Why an origin's address was refused (carried through the connector's I/O error).
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// DNS that hands the connector only the addresses an origin may use.
#[derive(Clone)]
struct CheckedResolver {
    allow_private: bool,
}

impl tower_service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if allowed.is_empty() {
                let addrs: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
                return Err(std::io::Error::other(Refused(format!(
                    "{} resolves to {}, not a public address",
                    name.as_str(),
                    addrs.join(", ")
                ))));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn redirects_stay_inside_the_origin() {
        let base = "http://img.example.com/photos/";
        let current = "http://img.example.com/photos/a/b.jpg";
        for (location, to) in [
            ("c.jpg", "http://img.example.com/photos/a/c.jpg"),
            ("/photos/x.jpg", "http://img.example.com/photos/x.jpg"),
            (
                "http://img.example.com/photos/y.jpg",
                "http://img.example.com/photos/y.jpg",
            ),
            (
                "//img.example.com/photos/z.jpg",
                "http://img.example.com/photos/z.jpg",
            ),
        ] {
            assert_eq!(
                within_origin(base, current, location).unwrap(),
                to,
                "{location}"
            );
        }
        for location in [
            "/other/x.jpg",
            "http://evil.example/photos/x.jpg",
            "https://img.example.com/photos/x.jpg",
            "http://img.example.com.evil/photos/x.jpg",
            "../../secret",
            "/photos/../secret",
            "/photos/%2e%2e/secret",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            assert!(
                matches!(
                    within_origin(base, current, location),
                    Err(FetchError::Redirect(_))
                ),
                "{location}"
            );
        }
    }

    #[test]
    fn literal_private_hosts_are_refused_unless_allowed() {
        let uri: Uri = "http://127.0.0.1:8080/x.jpg".parse().unwrap();
        assert!(matches!(
            check_literal_host(&uri, false),
            Err(FetchError::AddressRefused(_))
        ));
        assert!(check_literal_host(&uri, true).is_ok());
        let uri: Uri = "http://[::1]/x.jpg".parse().unwrap();
        assert!(check_literal_host(&uri, false).is_err());
    }
}
