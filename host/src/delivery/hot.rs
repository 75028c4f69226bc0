//! The result cache's first tier: entries already read and checked, kept in memory up to a
//! byte cap, the least recently used dropped first. A popular thumbnail is then served
//! without a file read, a checksum pass and a copy per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use imgfleet_stores::results::Entry;

pub struct Hot {
    cap_bytes: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, (Entry, u64)>,
    by_tick: BTreeMap<u64, String>,
    next_tick: u64,
    bytes: u64,
}

fn size(entry: &Entry) -> u64 {
    entry.body.len() as u64 + 256
}

impl Hot {
    pub fn new(cap_bytes: u64) -> Self {
        Self {
            cap_bytes,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        let mut s = self.lock();
        let tick = s.next_tick;
        let (entry, old) = s.entries.get_mut(key)?;
        let old_tick = std::mem::replace(old, tick);
        let entry = entry.clone();
        s.next_tick += 1;
        s.by_tick.remove(&old_tick);
        s.by_tick.insert(tick, key.to_string());
        Some(entry)
    }

    pub fn put(&self, key: &str, entry: &Entry) {
        let n = size(entry);
        // An entry over an eighth of the tier would push out too many small ones.
        if n > self.cap_bytes / 8 {
            return;
        }
        let mut s = self.lock();
        self.forget(&mut s, key);
        let tick = s.next_tick;
        s.next_tick += 1;
        s.by_tick.insert(tick, key.to_string());
        s.entries.insert(key.to_string(), (entry.clone(), tick));
        s.bytes += n;
        while s.bytes > self.cap_bytes {
            let Some((_, oldest)) = s.by_tick.pop_first() else {
                break;
            };
            if let Some((e, _)) = s.entries.remove(&oldest) {
                s.bytes -= size(&e);
            }
        }
    }

    pub fn remove(&self, key: &str) {
        let mut s = self.lock();
        self.forget(&mut s, key);
    }

    fn forget(&self, s: &mut State, key: &str) {
        if let Some((e, tick)) = s.entries.remove(key) {
            s.by_tick.remove(&tick);
            s.bytes -= size(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgfleet_stores::results::{Header, Kind, Subject};

    fn entry(len: usize) -> Entry {
        Entry {
            header: Header {
                subject: Subject {
                    tenant: "t".into(),
                    origin: "o".into(),
                    path: "p".into(),
                },
                validator: "d:0".into(),
                created_ms: 1,
                kind: Kind::Source { checked_ms: 1 },
            },
            body: bytes::Bytes::from(vec![1u8; len]),
        }
    }

    #[test]
    fn the_cap_holds_and_recent_use_keeps_an_entry() {
        let hot = Hot::new(8 * 1256);
        for i in 0..8 {
            hot.put(&i.to_string(), &entry(1000));
        }
        assert!(hot.get("0").is_some());
        hot.put("8", &entry(1000));
        assert!(hot.get("1").is_none(), "the least recently used went");
        assert!(hot.get("0").is_some() && hot.get("8").is_some());
        assert!(hot.lock().bytes <= 8 * 1256);
        hot.put("big", &entry(5000));
        assert!(hot.get("big").is_none(), "too big for the tier");
        hot.remove("0");
        assert!(hot.get("0").is_none());
    }
}
