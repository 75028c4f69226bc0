//! Signed image URLs: what lets a web page point `<img src>` at imgfleet without an API key.
//!
//! ```text
//! /v1/img/{tenant}/{key id}-{signature}/{options}/{origin}/{source path}
//! /v1/img/acme/0f3a9c21-Xb3…43 chars…/w=300,fmt=webp,exp=1767225600/photos/2024/cat.jpg
//! ```
//!
//! * `options`: the resize parameters of `POST /v1/resize` in their canonical order, `,`
//!   between them instead of `&`, and optionally `exp=<unix seconds>` last;
//! * `origin`: one of the tenant's named sources; `source path`: the image's path in it,
//!   percent-encoded as in any URL;
//! * `signature`: base64url (no padding) of HMAC-SHA256, keyed with the URL key's secret
//!   (32 bytes), over `imgfleet-url-v1`, tenant, key id, options, origin and source path,
//!   each followed by a newline. Everything that decides the output is signed, the expiry
//!   too; nothing else is in the URL, so each output has one URL for caches to key on.
//!
//! Pure: the caller supplies the secret and the time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const PREFIX: &str = "/v1/img/";
/// URL key ids: 8 lower-case hex digits, unique within a tenant.
pub const URL_KEY_ID_HEX: usize = 8;
/// URL key secrets: 32 bytes, written as 64 lower-case hex digits.
pub const URL_SECRET_HEX: usize = 64;
/// How a URL key is shown to its owner, once: `ifu_<key id>_<secret>`.
pub const URL_KEY_PREFIX: &str = "ifu_";
/// Longer paths are refused before anything is parsed.
pub const MAX_PATH_BYTES: usize = 2048;
const DOMAIN: &str = "imgfleet-url-v1";
const MAC_B64_LEN: usize = 43;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl<'a> {
    pub tenant: &'a str,
    pub key_id: &'a str,
    mac: [u8; 32],
    /// The options segment as signed.
    pub options: &'a str,
    pub origin: &'a str,
    /// The source's path within its origin, percent-encoded as it appeared.
    pub source: &'a str,
    /// `POST /v1/resize`'s query for these options (`&` between them, no `exp`).
    pub query: String,
    pub expires: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Not a signed URL of this form; the message says what is wrong.
    Malformed(String),
    /// Signed with another secret, or changed after signing.
    BadSignature,
    /// Past its `exp`.
    Expired { at: u64 },
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "not a signed image URL: {why}"),
            Self::BadSignature => f.write_str("the URL's signature does not match"),
            Self::Expired { at } => write!(f, "the URL expired at {at} (unix seconds)"),
        }
    }
}

fn malformed(why: impl Into<String>) -> UrlError {
    UrlError::Malformed(why.into())
}

/// Splits a request path into its signed parts. Checks the form only: the signature is
/// checked by [`SignedUrl::verify`] once the key's secret is known.
pub fn parse(path: &str) -> Result<SignedUrl<'_>, UrlError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(malformed(format!("longer than {MAX_PATH_BYTES} bytes")));
    }
    let rest = path
        .strip_prefix(PREFIX)
        .ok_or_else(|| malformed(format!("does not start with {PREFIX}")))?;
    let mut parts = rest.splitn(5, '/');
    let mut next = |what: &str| {
        parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| malformed(format!("no {what}")))
    };
    let tenant = next("tenant")?;
    let signature = next("signature")?;
    let options = next("options")?;
    let origin = next("origin")?;
    let source = next("source path")?;
    let (key_id, mac_b64) = signature
        .split_once('-')
        .filter(|(id, mac)| is_hex(id, URL_KEY_ID_HEX) && mac.len() == MAC_B64_LEN)
        .ok_or_else(|| {
            malformed("the signature is not <8 hex digits>-<43 base64url characters>")
        })?;
    let mut mac = [0u8; 32];
    match URL_SAFE_NO_PAD.decode(mac_b64) {
        Ok(bytes) if bytes.len() == 32 => mac.copy_from_slice(&bytes),
        _ => return Err(malformed("the signature is not base64url")),
    }
    check_source(source)?;
    let (query, expires) = split_options(options)?;
    Ok(SignedUrl {
        tenant,
        key_id,
        mac,
        options,
        origin,
        source,
        query,
        expires,
    })
}

impl SignedUrl<'_> {
    /// Whether `secret` signed exactly this URL (compared in constant time) and it has not
    /// expired by `now` (unix seconds).
    pub fn verify(&self, secret: &[u8], now: u64) -> Result<(), UrlError> {
        let mut mac = keyed(secret);
        mac.update(&message(
            self.tenant,
            self.key_id,
            self.options,
            self.origin,
            self.source,
        ));
        mac.verify_slice(&self.mac)
            .map_err(|_| UrlError::BadSignature)?;
        match self.expires {
            Some(at) if at <= now => Err(UrlError::Expired { at }),
            _ => Ok(()),
        }
    }
}

/// The signed path for a canonical resize query (`w=300&fmt=webp`), optionally expiring at
/// `expires` (unix seconds). `source` is the image's path in the origin, percent-encoded.
pub fn sign(
    secret: &[u8],
    tenant: &str,
    key_id: &str,
    query: &str,
    expires: Option<u64>,
    origin: &str,
    source: &str,
) -> String {
    let mut options = query.replace('&', ",");
    if let Some(at) = expires {
        options = format!("{options},exp={at}");
    }
    let mut mac = keyed(secret);
    mac.update(&message(tenant, key_id, &options, origin, source));
    let mac = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{PREFIX}{tenant}/{key_id}-{mac}/{options}/{origin}/{source}")
}

/// Reads `ifu_<key id>_<secret>` (as shown when the key was made) into the key id and the
/// secret's bytes.
pub fn parse_url_key(shown: &str) -> Option<(&str, Vec<u8>)> {
    let rest = shown.trim().strip_prefix(URL_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if !is_hex(id, URL_KEY_ID_HEX) || !is_hex(secret, URL_SECRET_HEX) {
        return None;
    }
    Some((id, unhex(secret)?))
}

/// A URL key's secret from its stored hex.
pub fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn keyed(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

fn message(tenant: &str, key_id: &str, options: &str, origin: &str, source: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + options.len() + source.len());
    for part in [DOMAIN, tenant, key_id, options, origin, source] {
        m.extend_from_slice(part.as_bytes());
        m.push(b'\n');
    }
    m
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `w=300,fmt=webp,exp=1767225600` → (`w=300&fmt=webp`, Some(1767225600)).
fn split_options(options: &str) -> Result<(String, Option<u64>), UrlError> {
    let mut query = Vec::new();
    let mut expires = None;
    let items: Vec<&str> = options.split(',').collect();
    for (i, item) in items.iter().enumerate() {
        if let Some(at) = item.strip_prefix("exp=") {
            if i + 1 != items.len() {
                return Err(malformed("exp= must be the last option"));
            }
            let at = at
                .parse::<u64>()
                .ok()
                .filter(|_| !at.starts_with('0'))
                .ok_or_else(|| malformed("exp= is not a time in unix seconds"))?;
            expires = Some(at);
        } else if item.is_empty() || !item.contains('=') {
            return Err(malformed(format!("option `{item}` is not name=value")));
        } else {
            query.push(*item);
        }
    }
    Ok((query.join("&"), expires))
}

/// A source path names a file inside its origin: no empty, `.` or `..` segment (once
/// decoded), no encoded slash or backslash, no control characters.
fn check_source(source: &str) -> Result<(), UrlError> {
    for segment in source.split('/') {
        let decoded = percent_decode(segment)
            .ok_or_else(|| malformed("the source path has a bad percent-encoding"))?;
        if decoded.is_empty() || decoded == "." || decoded == ".." {
            return Err(malformed(
                "the source path has an empty, `.` or `..` segment",
            ));
        }
        if decoded
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
        {
            return Err(malformed(
                "the source path has an encoded slash, a backslash or a control character",
            ));
        }
    }
    Ok(())
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];

    fn signed() -> String {
        sign(
            &SECRET,
            "acme",
            "0f3a9c21",
            "w=300&fmt=webp",
            Some(2_000_000_000),
            "photos",
            "2024/cat%20one.jpg",
        )
    }

    #[test]
    fn a_signed_url_parses_back_and_verifies() {
        let path = signed();
        assert!(path.starts_with("/v1/img/acme/0f3a9c21-"), "{path}");
        assert!(
            path.ends_with("/w=300,fmt=webp,exp=2000000000/photos/2024/cat%20one.jpg"),
            "{path}"
        );
        let url = parse(&path).unwrap();
        assert_eq!(url.tenant, "acme");
        assert_eq!(url.key_id, "0f3a9c21");
        assert_eq!(url.origin, "photos");
        assert_eq!(url.source, "2024/cat%20one.jpg");
        assert_eq!(url.query, "w=300&fmt=webp");
        assert_eq!(url.expires, Some(2_000_000_000));
        assert_eq!(url.verify(&SECRET, 1_900_000_000), Ok(()));
    }

    #[test]
    fn the_worked_example_in_the_docs_holds() {
        // docs/DELIVERY.md signs this URL by hand (Python's hmac module) with the secret
        // 00 01 02 … 1f; both must agree.
        let secret: Vec<u8> = (0u8..32).collect();
        let path = sign(
            &secret,
            "acme",
            "0f3a9c21",
            "w=300&fmt=webp",
            None,
            "photos",
            "cat.jpg",
        );
        assert_eq!(
            path,
            "/v1/img/acme/0f3a9c21-PYUruBdwjeXDLWhdz8ek2jDECz5NHaY0WTzvbXtbF_4/w=300,fmt=webp/photos/cat.jpg"
        );
    }

    #[test]
    fn any_change_to_what_decides_the_output_breaks_the_signature() {
        let path = signed();
        for (from, to) in [
            ("/acme/", "/acmf/"),
            ("w=300", "w=301"),
            ("fmt=webp", "fmt=avif"),
            ("exp=2000000000", "exp=2000000001"),
            ("/photos/", "/photoz/"),
            ("cat%20one", "cat%20two"),
        ] {
            let changed = path.replacen(from, to, 1);
            assert_ne!(changed, path);
            let url = parse(&changed).unwrap();
            assert_eq!(
                url.verify(&SECRET, 0),
                Err(UrlError::BadSignature),
                "{from} -> {to}"
            );
        }
        let url = parse(&path).unwrap();
        assert_eq!(url.verify(&[8; 32], 0), Err(UrlError::BadSignature));
    }

    #[test]
    fn an_expired_url_is_refused_even_with_a_good_signature() {
        let url_path = signed();
        let url = parse(&url_path).unwrap();
        assert_eq!(
            url.verify(&SECRET, 2_000_000_000),
            Err(UrlError::Expired { at: 2_000_000_000 })
        );
    }

    #[test]
    fn malformed_paths_are_told_apart_from_bad_signatures() {
        let good = signed();
        let mac_start = good.find('-').unwrap() + 1;
        for bad in [
            "/v1/img/acme".to_string(),
            "/v1/resize/acme/x/y/z/w".to_string(),
            good.replacen("0f3a9c21-", "0F3A9C21-", 1),
            good.replacen("0f3a9c21-", "0f3a9c2-", 1),
            format!("{}!{}", &good[..mac_start], &good[mac_start + 1..]),
            good.replacen("exp=2000000000", "exp=2000000000,w=3", 1),
            good.replacen("exp=2000000000", "exp=soon", 1),
            good.replacen("fmt=webp", "fmt", 1),
            good.replacen("2024/", "2024//", 1),
            good.replacen("2024/", "../", 1),
            good.replacen("2024/", "%2e%2e/", 1),
            good.replacen("2024/", "a%2Fb/", 1),
            good.replacen("2024/", "%zz/", 1),
            good.replacen("2024/", "a%00/", 1),
            format!("{good}/{}", "a".repeat(MAX_PATH_BYTES)),
        ] {
            assert!(
                matches!(parse(&bad), Err(UrlError::Malformed(_))),
                "{bad}: {:?}",
                parse(&bad)
            );
        }
    }

    #[test]
    fn shown_url_keys_parse() {
        let shown = format!("ifu_0f3a9c21_{}", "ab".repeat(32));
        let (id, secret) = parse_url_key(&shown).unwrap();
        assert_eq!(id, "0f3a9c21");
        assert_eq!(secret, vec![0xab; 32]);
        for bad in [
            "ifk_0f3a9c21_ab",
            "ifu_0f3a9c2_ab",
            &format!("ifu_0f3a9c21_{}", "ab".repeat(31)),
            &format!("ifu_0f3a9c21_{}", "AB".repeat(32)),
        ] {
            assert!(parse_url_key(bad).is_none(), "{bad}");
        }
    }
}
