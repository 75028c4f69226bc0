//! Making signed image URLs: the query in its canonical form (one URL per output), the
//! source path percent-encoded, the whole signed with a URL key.

use anyhow::Context;
use imgfleet_auth::signed_url::{parse_url_key, sign};
use imgfleet_resize::ResizeParams;

/// The signed path for the source `path` (as a file name, not yet encoded) in `origin`,
/// resized with `query` (as for `POST /v1/resize`), signed with `shown_key`
/// (`ifu_<key id>_<secret>`), expiring at `expires` (unix seconds) if given.
pub fn sign_url(
    shown_key: &str,
    tenant: &str,
    origin: &str,
    query: &str,
    expires: Option<u64>,
    path: &str,
) -> anyhow::Result<String> {
    let (key_id, secret) = parse_url_key(shown_key)
        .context("the URL key is not of the form ifu_<8 hex digits>_<64 hex digits>")?;
    let params =
        ResizeParams::from_query(query).map_err(|e| anyhow::anyhow!("the query: {}", e.message))?;
    let source = encode_path(path.trim_start_matches('/'));
    anyhow::ensure!(!source.is_empty(), "the source path is empty");
    Ok(sign(
        &secret,
        tenant,
        key_id,
        &params.canonical_query(),
        expires,
        origin,
        &source,
    ))
}

/// Percent-encodes each segment of a path, keeping the slashes between them: everything
/// but unreserved characters is encoded, so any file name makes a valid, unambiguous URL.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgfleet_auth::signed_url::parse;

    const KEY: &str =
        "ifu_0f3a9c21_0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn signed_urls_carry_the_canonical_query_and_an_encoded_path() {
        let url = sign_url(
            KEY,
            "acme",
            "photos",
            "h=20&w=10&q=80",
            Some(5),
            "2024/a cat+é.jpg",
        )
        .unwrap();
        let parsed = parse(&url).unwrap();
        assert_eq!(parsed.query, "w=10&h=20");
        assert_eq!(parsed.source, "2024/a%20cat%2B%C3%A9.jpg");
        assert_eq!(parsed.expires, Some(5));
        assert_eq!(parsed.verify(&[0; 32], 1), Ok(()));
    }

    #[test]
    fn bad_keys_and_queries_are_refused_with_a_reason() {
        for (key, query) in [("ifu_x", "w=10"), (KEY, "w=0"), (KEY, "fit=cover")] {
            assert!(
                sign_url(key, "acme", "photos", query, None, "a.jpg").is_err(),
                "{key} {query}"
            );
        }
    }
}
