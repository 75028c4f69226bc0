//! ETags of delivered images. An output is decided by its source's version, its canonical
//! transformation and the resize function's build; the tag names all three, and carries the
//! source's validator so that a revalidation (`If-None-Match`) can be answered by asking
//! the origin whether that version is still current — a `304` without fetching or resizing.
//!
//! Form: `"<digest>.<validator>"`, the digest a SHA-256 (16 bytes, hex) over everything
//! that decides the output, the validator base64url-encoded.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::Validator;

/// `Accept` as it decides a negotiated format: lower case, without spaces.
pub fn normalised_accept(accept: Option<&str>) -> String {
    accept
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A function build's id in tags: a digest of its code (16 hex digits).
pub fn build_of(code: &[u8]) -> String {
    imgfleet_auth::credential::hex(&Sha256::digest(code)[..8])
}

/// What decides an output besides its source's version.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub tenant: &'a str,
    pub origin: &'a str,
    pub source: &'a str,
    pub canonical_query: &'a str,
    /// The resize function's build (a digest of its component).
    pub build: &'a str,
    /// The request's `Accept`, normalised, when the format follows it (`fmt=auto`): each
    /// `Accept` seen gets its own tag, as `Vary: Accept` asks of caches.
    pub accept: Option<&'a str>,
}

fn digest(output: &Output<'_>, validator: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        output.tenant,
        output.origin,
        output.source,
        output.canonical_query,
        output.build,
        output.accept.unwrap_or(""),
        validator,
    ] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    imgfleet_auth::credential::hex(&h.finalize()[..16])
}

/// The result cache's key of `output` made from the source version `validator`: the tag's
/// digest, which covers everything that decides the output.
pub fn result_key(output: &Output<'_>, validator: &Validator) -> String {
    digest(output, &validator.encode())
}

/// What identical requests share while the source's version is still unknown: the output
/// without a version (concurrent requests for it make it once).
pub fn output_key(output: &Output<'_>) -> String {
    digest(output, "")
}

/// The strong ETag of `output` made from the source version `validator`.
pub fn etag(output: &Output<'_>, validator: &Validator) -> String {
    let v = validator.encode();
    format!("\"{}.{}\"", digest(output, &v), URL_SAFE_NO_PAD.encode(&v))
}

/// The source version named by an `If-None-Match` tag that this service made for this same
/// output (the first one in the list); `None` when no tag is ours.
pub fn revalidating(if_none_match: &str, output: &Output<'_>) -> Option<Validator> {
    if_none_match.split(',').find_map(|tag| {
        let tag = tag.trim().trim_start_matches("W/").trim_matches('"');
        let (d, v) = tag.split_once('.')?;
        let v = String::from_utf8(URL_SAFE_NO_PAD.decode(v).ok()?).ok()?;
        let validator = Validator::decode(&v)?;
        (digest(output, &v) == d).then_some(validator)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(query: &str) -> Output<'_> {
        Output {
            tenant: "acme",
            origin: "photos",
            source: "cat.jpg",
            canonical_query: query,
            build: "b1",
            accept: None,
        }
    }

    #[test]
    fn a_tag_names_its_source_version_and_only_its_own_output() {
        let v = Validator::ETag("\"abc\"".into());
        let tag = etag(&output("w=10"), &v);
        assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        assert_eq!(revalidating(&tag, &output("w=10")), Some(v.clone()));
        assert_eq!(
            revalidating(&format!("\"x\", W/{tag}"), &output("w=10")),
            Some(v.clone())
        );
        // Another transformation, build or format has another tag.
        assert_eq!(revalidating(&tag, &output("w=11")), None);
        let other_build = Output {
            build: "b2",
            ..output("w=10")
        };
        assert_eq!(revalidating(&tag, &other_build), None);
        let negotiated = Output {
            accept: Some("image/webp,*/*"),
            ..output("w=10")
        };
        assert_ne!(etag(&negotiated, &v), tag);
        // A made-up tag is not taken for ours.
        for junk in ["*", "\"\"", "\"abc.def\"", "garbage"] {
            assert_eq!(revalidating(junk, &output("w=10")), None, "{junk}");
        }
    }
}
