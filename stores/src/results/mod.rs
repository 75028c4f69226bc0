//! The result cache's entries: delivered images made once and served again, and the source
//! versions they were made from. Tiers keep the same encoded bytes — a host's disk
//! (`disk.rs`) and the fleet's shared store (`jetstream.rs`; S3 on AWS) — so an entry moves
//! between them unchanged and is checked the same way wherever it is read.
//!
//! Encoded form: `IFR1`, the header's length (u32, little-endian), the header (JSON), the
//! body, and a CRC-32 of everything before it (u32, little-endian). An entry whose length or
//! checksum does not add up is `None` when decoded: a damaged entry is a miss, never served.

use bytes::Bytes;
use imgfleet_metering::ImageSide;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod disk;
#[cfg(feature = "jetstream")]
pub mod jetstream;

const MAGIC: &[u8; 4] = b"IFR1";
/// Magic, header length, checksum.
const FRAME_BYTES: usize = 4 + 4 + 4;
/// A header is a few names and numbers; anything longer is damage.
const MAX_HEADER: usize = 64 * 1024;

/// What an entry is about: who may be served it and what purges reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub tenant: String,
    pub origin: String,
    /// The URL's source path, as signed (percent-encoded).
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Kind {
    /// A delivered image: its body is the image.
    Result {
        content_type: String,
        /// The source and the image as the resize saw them, for metering hits.
        #[serde(default)]
        input: ImageSide,
        #[serde(default)]
        output: ImageSide,
    },
    /// The version of a source last seen at its origin; no body.
    Source {
        /// When the origin last confirmed it (Unix ms): fresh for the origin's max-age.
        checked_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    #[serde(flatten)]
    pub subject: Subject,
    /// The source version (`Validator::encode`) a result was made from, or a source's.
    pub validator: String,
    /// When the entry was made (Unix ms): purges reach entries made before them.
    pub created_ms: u64,
    #[serde(flatten)]
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub header: Header,
    pub body: Bytes,
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).unwrap_or_default();
        let mut out = Vec::with_capacity(FRAME_BYTES + header.len() + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The entry `bytes` encode; `None` for anything damaged, truncated or foreign.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (framed, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(framed) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let (header, header_len) = Self::decode_header(framed)?;
        let body = Bytes::copy_from_slice(&framed[8 + header_len..]);
        Some(Self { header, body })
    }

    /// The header alone, unchecked: enough to index an entry without reading its body
    /// (its checksum is checked when it is read for serving).
    pub fn decode_header(bytes: &[u8]) -> Option<(Header, usize)> {
        if bytes.get(..4)? != MAGIC {
            return None;
        }
        let len = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?) as usize;
        if len > MAX_HEADER {
            return None;
        }
        let header = serde_json::from_slice(bytes.get(8..8 + len)?).ok()?;
        Some((header, len))
    }
}

/// The key of a source's version entry: one per tenant, origin and path.
pub fn source_key(subject: &Subject) -> String {
    let mut h = Sha256::new();
    for part in ["source", &subject.tenant, &subject.origin, &subject.path] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    imgfleet_auth::credential::hex(&h.finalize()[..16])
}

/// Entry keys are hex digests; anything else is not a name this cache made.
pub fn valid_key(key: &str) -> bool {
    (16..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A purge: entries of `tenant` from `origin` whose path is `path` (or starts with it, for
/// a prefix), made before `at_ms`, are misses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    pub origin: String,
    pub path: String,
    #[serde(default)]
    pub prefix: bool,
    pub at_ms: u64,
}

impl Purge {
    pub fn reaches(&self, header: &Header) -> bool {
        header.created_ms <= self.at_ms
            && header.subject.origin == self.origin
            && if self.prefix {
                header.subject.path.starts_with(&self.path)
            } else {
                header.subject.path == self.path
            }
    }
}

impl From<&crate::identity::PurgeRecord> for Purge {
    fn from(p: &crate::identity::PurgeRecord) -> Self {
        Self {
            origin: p.origin.clone(),
            path: p.path.clone(),
            prefix: p.prefix,
            at_ms: p.at_ms,
        }
    }
}

/// Whether any of a tenant's newest purges (as the DynamoDB store keeps them: at most
/// `MAX_PURGES`, newest first) reaches `header`; a full list also reaches everything made
/// before its oldest purge, which may have had older ones behind it.
pub fn reached_by(header: &Header, newest: &[crate::identity::PurgeRecord]) -> bool {
    let full = newest.len() >= crate::identity::admin::MAX_PURGES;
    let floor = newest.iter().map(|p| p.at_ms).min().filter(|_| full);
    floor.is_some_and(|f| header.created_ms <= f)
        || newest.iter().any(|p| Purge::from(p).reaches(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            header: Header {
                subject: Subject {
                    tenant: "acme".into(),
                    origin: "photos".into(),
                    path: "cats/tom.jpg".into(),
                },
                validator: "e:\"v1\"".into(),
                created_ms: 1_000,
                kind: Kind::Result {
                    content_type: "image/jpeg".into(),
                    input: ImageSide {
                        bytes: 1000,
                        format: Some("jpeg".into()),
                        width: 100,
                        height: 80,
                    },
                    output: ImageSide::default(),
                },
            },
            body: Bytes::from_static(b"\xff\xd8 not really a jpeg \xff\xd9"),
        }
    }

    #[test]
    fn entries_round_trip_and_every_damage_is_refused() {
        let e = entry();
        let bytes = e.encode();
        assert_eq!(Entry::decode(&bytes), Some(e.clone()));
        // Every truncation, and a flipped bit anywhere.
        for len in 0..bytes.len() {
            assert_eq!(Entry::decode(&bytes[..len]), None, "cut at {len}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert_eq!(Entry::decode(&bad), None, "bit flipped in byte {i}");
        }
        let source = Entry {
            header: Header {
                kind: Kind::Source { checked_ms: 7 },
                ..e.header
            },
            body: Bytes::new(),
        };
        assert_eq!(Entry::decode(&source.encode()), Some(source));
    }

    #[test]
    fn purges_reach_older_entries_by_path_or_prefix_within_their_origin() {
        let h = entry().header;
        let purge = |origin: &str, path: &str, prefix: bool, at_ms: u64| Purge {
            origin: origin.into(),
            path: path.into(),
            prefix,
            at_ms,
        };
        assert!(purge("photos", "cats/tom.jpg", false, 2_000).reaches(&h));
        assert!(purge("photos", "cats/", true, 2_000).reaches(&h));
        assert!(purge("photos", "", true, 2_000).reaches(&h));
        assert!(!purge("photos", "cats/", false, 2_000).reaches(&h));
        assert!(!purge("photos", "dogs/", true, 2_000).reaches(&h));
        assert!(!purge("other", "cats/tom.jpg", false, 2_000).reaches(&h));
        // Made after the purge: a fresh result, not reached.
        assert!(!purge("photos", "cats/tom.jpg", false, 999).reaches(&h));
    }

    #[test]
    fn source_keys_separate_tenants_origins_and_paths() {
        let s = |t: &str, o: &str, p: &str| {
            source_key(&Subject {
                tenant: t.into(),
                origin: o.into(),
                path: p.into(),
            })
        };
        let a = s("acme", "photos", "a.jpg");
        assert!(valid_key(&a));
        assert_ne!(a, s("acme2", "photos", "a.jpg"));
        assert_ne!(a, s("acme", "photos2", "a.jpg"));
        assert_ne!(a, s("acme", "photos", "a.jpg2"));
        assert!(!valid_key("../etc/passwd"));
    }
}
