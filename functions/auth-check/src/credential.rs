//! API keys: `ifk_<key id>_<secret>`. The key id (16 hex digits) is public and names the
//! record; the secret (64 hex digits = 256 random bits) is shown once and only its hash is
//! stored. Secrets this long need no slow hash: guessing is hopeless, so a plain SHA-256
//! keeps every check cheap.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::decision::Denial;

pub const KEY_PREFIX: &str = "ifk_";
pub const KEY_ID_HEX: usize = 16;
pub const SECRET_HEX: usize = 64;
/// Longer `Authorization` headers are refused before any parsing.
pub const MAX_HEADER_BYTES: usize = 512;
/// Keeps this hash apart from any other SHA-256 of the same bytes.
const HASH_DOMAIN: &[u8] = b"imgfleet-api-key-v1\0";

/// A syntactically valid key taken from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential<'a> {
    pub key_id: &'a str,
    pub secret: &'a str,
}

/// Reads `Authorization: Bearer ifk_…`.
pub fn parse_authorization(header: Option<&[u8]>) -> Result<Credential<'_>, Denial> {
    let raw = header.ok_or(Denial::CredentialMissing)?;
    if raw.len() > MAX_HEADER_BYTES {
        return Err(Denial::CredentialMalformed(format!(
            "the Authorization header is longer than {MAX_HEADER_BYTES} bytes"
        )));
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| Denial::CredentialMalformed("the Authorization header is not text".into()))?
        .trim();
    if text.is_empty() {
        return Err(Denial::CredentialMissing);
    }
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denial::CredentialScheme);
    }
    parse_key(token.trim()).ok_or_else(|| {
        Denial::CredentialMalformed(format!(
            "the bearer token is not an imgfleet API key ({KEY_PREFIX}<16 hex>_<64 hex>)"
        ))
    })
}

/// Splits a key into id and secret; `None` unless it has exactly the expected shape.
pub fn parse_key(token: &str) -> Option<Credential<'_>> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    (is_hex(key_id, KEY_ID_HEX) && is_hex(secret, SECRET_HEX))
        .then_some(Credential { key_id, secret })
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A new key from caller-supplied random bytes: `(key id, full key to hand out once)`.
pub fn mint(id_bytes: [u8; 8], secret_bytes: [u8; 32]) -> (String, String) {
    let key_id = hex(&id_bytes);
    let full = format!("{KEY_PREFIX}{key_id}_{}", hex(&secret_bytes));
    (key_id, full)
}

/// What the identity store keeps instead of the secret.
pub fn secret_hash(secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update(secret.as_bytes());
    hex(&h.finalize())
}

/// Whether `secret` matches `stored_hash`, in time independent of where they differ.
pub fn verify(secret: &str, stored_hash: &str) -> bool {
    let computed = secret_hash(secret);
    computed.len() == stored_hash.len()
        && bool::from(computed.as_bytes().ct_eq(stored_hash.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        mint([1; 8], [2; 32]).1
    }

    #[test]
    fn a_minted_key_parses_back_and_verifies() {
        let (id, full) = mint([0xab; 8], [7; 32]);
        let header = format!("Bearer {full}");
        let cred = parse_authorization(Some(header.as_bytes())).unwrap();
        assert_eq!(cred.key_id, id);
        assert!(verify(cred.secret, &secret_hash(cred.secret)));
        assert!(!verify(cred.secret, &secret_hash(&"0".repeat(64))));
    }

    #[test]
    fn scheme_is_case_insensitive_and_spaces_are_trimmed() {
        let header = format!("  bEaReR   {}  ", key());
        assert!(parse_authorization(Some(header.as_bytes())).is_ok());
    }

    #[test]
    fn bad_headers_get_their_own_denials() {
        let code = |h: Option<&[u8]>| parse_authorization(h).unwrap_err().code();
        assert_eq!(code(None), "credential_missing");
        assert_eq!(code(Some(b"   ")), "credential_missing");
        assert_eq!(code(Some(b"Basic dXNlcjpwYXNz")), "credential_scheme");
        assert_eq!(code(Some(key().as_bytes())), "credential_scheme");
        assert_eq!(code(Some(b"Bearer")), "credential_malformed");
        assert_eq!(code(Some(b"Bearer not-a-key")), "credential_malformed");
        assert_eq!(code(Some(&[0xff, 0xfe, 0x20])), "credential_malformed");
        let long = format!("Bearer {}", "a".repeat(MAX_HEADER_BYTES));
        assert_eq!(code(Some(long.as_bytes())), "credential_malformed");
        // Upper-case hex, a short secret and a missing separator are not keys.
        let upper = format!("Bearer {}", key().to_uppercase());
        assert_eq!(code(Some(upper.as_bytes())), "credential_malformed");
        let short = format!("Bearer {}", &key()[..key().len() - 1]);
        assert_eq!(code(Some(short.as_bytes())), "credential_malformed");
        let joined = format!("Bearer {}", key().replacen('_', "", 2));
        assert_eq!(code(Some(joined.as_bytes())), "credential_malformed");
    }

    #[test]
    fn the_hash_is_not_the_bare_sha256_and_differs_per_secret() {
        let a = secret_hash(&"a".repeat(64));
        let b = secret_hash(&"b".repeat(64));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let bare = hex(&Sha256::digest("a".repeat(64).as_bytes()));
        assert_ne!(a, bare);
    }
}
