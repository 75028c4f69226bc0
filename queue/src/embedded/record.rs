//! The log's records and their framing: `[len u32 LE][crc32 u32 LE][payload]`. A frame whose
//! length or checksum does not add up is damage: at the end of the log, the torn tail of a
//! crash; followed by valid frames, damage in the middle (a flipped bit, a write cut short),
//! which the scan steps over to the next frame that adds up.

use bytes::Bytes;

use crate::Attributes;

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Names queue index `queue` (records refer to queues by index).
    Queue {
        queue: u32,
        name: String,
    },
    Sent(Sent),
    /// A delivery; `count` is the message's receive count after it.
    Received {
        queue: u32,
        seq: u64,
        count: u32,
    },
    Deleted {
        queue: u32,
        seq: u64,
    },
    /// The sequence counter, so ids never repeat after a compaction.
    NextSeq(u64),
    /// A de-duplication id still inside its window (written by compaction).
    Dedup {
        queue: u32,
        id: String,
        seq: u64,
        at_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub queue: u32,
    pub seq: u64,
    pub sent_at_ms: u64,
    pub delay_ms: u64,
    pub receive_count: u32,
    /// Sent with `Durability::Synced`: its deliveries are logged durably too.
    pub synced: bool,
    pub group: Option<String>,
    pub dedup_id: Option<String>,
    pub attributes: Attributes,
    pub body: Bytes,
}

const QUEUE: u8 = 1;
const SENT: u8 = 2;
const RECEIVED: u8 = 3;
const DELETED: u8 = 4;
const NEXT_SEQ: u8 = 5;
const DEDUP: u8 = 6;

pub const FRAME_HEADER: usize = 8;
/// Larger frames are treated as corruption (a message is at most a few MiB).
const MAX_FRAME: usize = 64 * 1024 * 1024;

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn opt(&mut self, v: &Option<String>) {
        match v {
            Some(s) => {
                self.u8(1);
                self.bytes(s.as_bytes());
            }
            None => self.u8(0),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn opt(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }
}

impl Record {
    /// Appends this record, framed, to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER]);
        let mut w = Writer(out);
        match self {
            Record::Queue { queue, name } => {
                w.u8(QUEUE);
                w.u32(*queue);
                w.bytes(name.as_bytes());
            }
            Record::Sent(s) => {
                w.u8(SENT);
                w.u32(s.queue);
                w.u64(s.seq);
                w.u64(s.sent_at_ms);
                w.u64(s.delay_ms);
                w.u32(s.receive_count);
                w.u8(u8::from(s.synced));
                w.opt(&s.group);
                w.opt(&s.dedup_id);
                w.u32(s.attributes.len() as u32);
                for (k, v) in &s.attributes {
                    w.bytes(k.as_bytes());
                    w.bytes(v.as_bytes());
                }
                w.bytes(&s.body);
            }
            Record::Received { queue, seq, count } => {
                w.u8(RECEIVED);
                w.u32(*queue);
                w.u64(*seq);
                w.u32(*count);
            }
            Record::Deleted { queue, seq } => {
                w.u8(DELETED);
                w.u32(*queue);
                w.u64(*seq);
            }
            Record::NextSeq(seq) => {
                w.u8(NEXT_SEQ);
                w.u64(*seq);
            }
            Record::Dedup {
                queue,
                id,
                seq,
                at_ms,
            } => {
                w.u8(DEDUP);
                w.u32(*queue);
                w.bytes(id.as_bytes());
                w.u64(*seq);
                w.u64(*at_ms);
            }
        }
        let payload_len = out.len() - start - FRAME_HEADER;
        let crc = crc32fast::hash(&out[start + FRAME_HEADER..]);
        out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode(payload: &[u8]) -> Option<Self> {
        let mut r = Reader(payload);
        let rec = match r.u8()? {
            QUEUE => Record::Queue {
                queue: r.u32()?,
                name: r.string()?,
            },
            SENT => {
                let (queue, seq, sent_at_ms, delay_ms, receive_count) =
                    (r.u32()?, r.u64()?, r.u64()?, r.u64()?, r.u32()?);
                let synced = r.u8()? == 1;
                let (group, dedup_id) = (r.opt()?, r.opt()?);
                let mut attributes = Attributes::new();
                for _ in 0..r.u32()? {
                    let k = r.string()?;
                    attributes.insert(k, r.string()?);
                }
                Record::Sent(Sent {
                    queue,
                    seq,
                    sent_at_ms,
                    delay_ms,
                    receive_count,
                    synced,
                    group,
                    dedup_id,
                    attributes,
                    body: Bytes::copy_from_slice(r.bytes()?),
                })
            }
            RECEIVED => Record::Received {
                queue: r.u32()?,
                seq: r.u64()?,
                count: r.u32()?,
            },
            DELETED => Record::Deleted {
                queue: r.u32()?,
                seq: r.u64()?,
            },
            NEXT_SEQ => Record::NextSeq(r.u64()?),
            DEDUP => Record::Dedup {
                queue: r.u32()?,
                id: r.string()?,
                seq: r.u64()?,
                at_ms: r.u64()?,
            },
            _ => return None,
        };
        r.0.is_empty().then_some(rec)
    }
}

/// What a scan of a log found.
#[derive(Debug, Default, PartialEq)]
pub struct Scan {
    pub records: Vec<Record>,
    /// Byte ranges `[start, end)` that held no valid frame but were followed by one:
    /// damage in the middle of the log. Whatever records they held are lost.
    pub damaged: Vec<(usize, usize)>,
    /// Frames whose checksum holds but whose record this version cannot read (an unknown
    /// record type): skipped.
    pub unreadable: usize,
    /// Where the last valid frame ends; after it there is only a torn tail.
    pub end: usize,
}

/// The frame starting at `at`, if its length and checksum add up: its end and payload.
/// An empty frame is never valid (no record encodes to nothing, and zeroed space would
/// otherwise read as a run of them).
fn frame_at(buf: &[u8], at: usize) -> Option<(usize, &[u8])> {
    let header = buf.get(at..at.checked_add(FRAME_HEADER)?)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_FRAME {
        return None;
    }
    let end = at + FRAME_HEADER + len;
    let payload = buf.get(at + FRAME_HEADER..end)?;
    (crc32fast::hash(payload) == crc).then_some((end, payload))
}

/// Decodes every frame of `buf`, stepping over damage to the next frame that adds up.
pub fn scan(buf: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut at = 0;
    while at < buf.len() {
        if let Some((end, payload)) = frame_at(buf, at) {
            match Record::decode(payload) {
                Some(record) => scan.records.push(record),
                None => scan.unreadable += 1,
            }
            at = end;
            scan.end = end;
            continue;
        }
        match (at + 1..buf.len()).find(|&next| frame_at(buf, next).is_some()) {
            Some(next) => {
                scan.damaged.push((at, next));
                at = next;
            }
            None => break,
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let mut attributes = Attributes::new();
        attributes.insert("tenant".into(), "acme".into());
        vec![
            Record::Queue {
                queue: 3,
                name: "jobs".into(),
            },
            Record::Sent(Sent {
                queue: 3,
                seq: 42,
                sent_at_ms: 1_700_000_000_000,
                delay_ms: 5,
                receive_count: 2,
                synced: true,
                group: Some("acme".into()),
                dedup_id: None,
                attributes,
                body: Bytes::from_static(b"hello"),
            }),
            Record::Received {
                queue: 3,
                seq: 42,
                count: 3,
            },
            Record::Deleted { queue: 3, seq: 42 },
            Record::NextSeq(43),
            Record::Dedup {
                queue: 3,
                id: "d".into(),
                seq: 42,
                at_ms: 7,
            },
        ]
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        for r in sample() {
            r.encode_into(&mut buf);
        }
        let scan = scan(&buf);
        assert_eq!(scan.records, sample());
        assert_eq!(scan.end, buf.len());
        assert!(scan.damaged.is_empty());
    }

    fn encoded() -> Vec<u8> {
        let mut buf = Vec::new();
        for r in sample() {
            r.encode_into(&mut buf);
        }
        buf
    }

    #[test]
    fn a_torn_tail_ends_the_scan() {
        let buf = encoded();
        let torn = scan(&buf[..buf.len() - 3]);
        assert_eq!(
            torn.records.len(),
            sample().len() - 1,
            "only the torn last record is lost"
        );
        assert!(torn.damaged.is_empty());
        assert!(torn.end < buf.len() - 3);
        let mut zeroed = buf.clone();
        zeroed.extend_from_slice(&[0; 4096]);
        let zeroed = scan(&zeroed);
        assert_eq!((zeroed.records, zeroed.end), (sample(), buf.len()));
    }

    #[test]
    fn damage_in_the_middle_loses_only_the_damaged_record() {
        let buf = encoded();
        let mut flipped = buf.clone();
        flipped[FRAME_HEADER + 2] ^= 0xFF; // inside the first payload
        let s = scan(&flipped);
        assert_eq!(s.records, sample()[1..].to_vec());
        assert_eq!(s.damaged.len(), 1);
        assert_eq!(s.damaged[0].0, 0);
        assert_eq!(s.end, buf.len());
    }

    #[test]
    fn an_unknown_record_type_is_skipped_and_counted() {
        let mut buf = Vec::new();
        let payload = [0xEEu8, 1, 2, 3];
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        buf.extend_from_slice(&payload);
        buf.extend_from_slice(&encoded());
        let s = scan(&buf);
        assert_eq!((s.records, s.unreadable), (sample(), 1));
        assert!(s.damaged.is_empty());
    }
}
