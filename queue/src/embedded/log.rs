//! The append-only log and its writer thread. Every state change is appended in the order
//! it was made; writes that ask for it are acknowledged only after `fdatasync`, and all
//! writes waiting at that moment share one sync (group commit).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use tokio::sync::oneshot;

use super::record::{Record, scan};

pub const LOG_FILE: &str = "queue.log";
/// Buffered writes become durable at most this long after they were made.
const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Bytes gathered into one write before syncing, at most.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// While writes fail, how often the writer appends a record that changes nothing (a
/// sequence floor of 0) to learn whether the disk takes writes again.
const PROBE_EVERY: Duration = Duration::from_millis(500);

pub type Ack = oneshot::Sender<Result<(), String>>;

pub enum Op {
    /// Framed records; `ack` (if any) is answered once they are synced.
    Append { bytes: Vec<u8>, ack: Option<Ack> },
    /// Replace the whole log with `snapshot` (framed records describing the live state).
    Compact { snapshot: Vec<u8>, ack: Option<Ack> },
}

/// What recovery found wrong with the log and what it did about it; all zero for a log
/// written and closed normally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogDamage {
    /// Bytes of a torn tail (a crash mid-write), cut off.
    pub torn_tail_bytes: u64,
    /// Bytes in the middle of the log that held no valid frame; the records there are
    /// lost, the log was rewritten without them.
    pub damaged_bytes: u64,
    /// Frames with a valid checksum holding a record this version cannot read; skipped.
    pub unreadable_records: u64,
    /// Where the log as found was kept for inspection, when it was damaged in the middle
    /// or held unreadable records.
    pub kept_copy: Option<PathBuf>,
}

/// Reads the log and returns the records in it. A torn tail is cut off; damage in the
/// middle is stepped over (the log as found is kept beside it as `queue.log.damaged-<ms>`
/// and the log rewritten from what was read), so later appends never follow damage.
pub fn recover(dir: &Path) -> std::io::Result<(Vec<Record>, File, u64, LogDamage)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(LOG_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let found = scan(&buf);
    let mut damage = LogDamage {
        damaged_bytes: found.damaged.iter().map(|(a, b)| (b - a) as u64).sum(),
        unreadable_records: found.unreadable as u64,
        ..LogDamage::default()
    };
    if damage.damaged_bytes > 0 || damage.unreadable_records > 0 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let copy = dir.join(format!("{LOG_FILE}.damaged-{ms}"));
        std::fs::copy(&path, &copy)?;
        damage.kept_copy = Some(copy);
    }
    let mut valid = found.end as u64;
    if damage.damaged_bytes > 0 {
        let mut rewritten = Vec::with_capacity(buf.len());
        for r in &found.records {
            r.encode_into(&mut rewritten);
        }
        replace(dir, &mut file, &rewritten)?;
        valid = rewritten.len() as u64;
    } else if found.end < buf.len() {
        damage.torn_tail_bytes = (buf.len() - found.end) as u64;
        file.set_len(valid)?;
        file.sync_all()?;
    }
    if damage != LogDamage::default() {
        tracing::error!(
            path = %path.display(),
            torn_tail_bytes = damage.torn_tail_bytes,
            damaged_bytes = damage.damaged_bytes,
            unreadable_records = damage.unreadable_records,
            kept_copy = ?damage.kept_copy,
            "queue log was damaged; recovered what was readable"
        );
    }
    file.seek(SeekFrom::End(0))?;
    Ok((found.records, file, valid, damage))
}

/// Whether the writer can still write: the last error while writes fail, `Err("stopped")`
/// once its thread is gone.
#[derive(Clone)]
pub struct WriterHealth(Arc<Mutex<(Result<(), String>, bool)>>);

impl Default for WriterHealth {
    fn default() -> Self {
        Self(Arc::new(Mutex::new((Ok(()), false))))
    }
}

impl WriterHealth {
    pub fn get(&self) -> Result<(), String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// The writer thread is gone: nothing will be written again.
    pub fn stopped(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    fn set(&self, state: Result<(), String>) {
        let mut current = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !current.1 {
            current.0 = state;
        }
    }
}

/// Marks the writer stopped when its thread ends, however it ends (a panic included).
struct StoppedOnDrop(WriterHealth);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.set(Err("the queue log writer has stopped".into()));
        self.0.0.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
    }
}

pub fn start_writer(
    dir: PathBuf,
    file: File,
    len: u64,
    health: WriterHealth,
) -> std::io::Result<Sender<Op>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("queue-log".into())
        .spawn(move || {
            let _stopped = StoppedOnDrop(health.clone());
            writer_loop(dir, Log { file, len }, rx, &health)
        })?;
    Ok(tx)
}

/// The open log and how long its valid content is: a write that fails part-way is cut
/// back to this, so a later write never follows half a frame.
struct Log {
    file: File,
    len: u64,
}

fn writer_loop(dir: PathBuf, mut log: Log, rx: Receiver<Op>, health: &WriterHealth) {
    let mut dirty = false;
    let mut batch = Vec::with_capacity(1 << 20);
    let mut acks: Vec<Ack> = Vec::new();
    loop {
        let failing = health.get().is_err();
        let wait = match (dirty, failing) {
            (true, _) => Some(FLUSH_INTERVAL),
            (false, true) => Some(PROBE_EVERY),
            (false, false) => None,
        };
        let first = match wait {
            Some(wait) => match rx.recv_timeout(wait) {
                Ok(op) => Some(op),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => break,
            },
        };
        let Some(first) = first else {
            if dirty {
                // Quiet period: make buffered writes durable.
                match log.file.sync_data() {
                    Ok(()) => dirty = false,
                    Err(e) => health.set(Err(e.to_string())),
                }
            } else if failing {
                let mut probe = Vec::new();
                Record::NextSeq(0).encode_into(&mut probe);
                let result = flush(&mut log, &mut probe, true);
                health.set(result.map_err(|e| e.to_string()));
            }
            continue;
        };
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Append { bytes, ack } => {
                    batch.extend_from_slice(&bytes);
                    acks.extend(ack);
                }
                Op::Compact { snapshot, ack } => {
                    // Everything before the snapshot is contained in it: write what is
                    // pending to the old file first so nothing waits on a lost write.
                    let result = flush(&mut log, &mut batch, !acks.is_empty());
                    answer(&mut acks, &result);
                    let result = replace(&dir, &mut log.file, &snapshot);
                    if result.is_ok() {
                        log.len = snapshot.len() as u64;
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(result.map_err(|e| e.to_string()));
                    }
                }
            }
            if batch.len() >= MAX_BATCH_BYTES {
                break;
            }
            next = match rx.try_recv() {
                Ok(op) => Some(op),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => None,
            };
        }
        let must_sync = !acks.is_empty();
        let wrote = !batch.is_empty();
        let result = flush(&mut log, &mut batch, must_sync);
        match &result {
            Ok(()) => {
                if wrote || must_sync {
                    health.set(Ok(()));
                }
                dirty = (dirty || wrote) && !must_sync;
            }
            Err(e) => health.set(Err(e.to_string())),
        }
        answer(&mut acks, &result);
    }
    let _ = flush(&mut log, &mut batch, true);
}

/// Appends the batch (and syncs, if asked). A write that fails is cut back off the log:
/// its records are lost (their senders hear of it, if they waited), the log stays whole.
fn flush(log: &mut Log, batch: &mut Vec<u8>, sync: bool) -> std::io::Result<()> {
    if !batch.is_empty() {
        let written = log.file.write_all(batch);
        let n = batch.len() as u64;
        batch.clear();
        if let Err(e) = written {
            let _ = log.file.set_len(log.len);
            return Err(e);
        }
        log.len += n;
    }
    if sync { log.file.sync_data() } else { Ok(()) }
}

fn answer(acks: &mut Vec<Ack>, result: &std::io::Result<()>) {
    for ack in acks.drain(..) {
        let _ = ack.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    }
}

/// Replaces the log with `content` (a compaction's snapshot, or what recovery read) by
/// writing a new file and renaming it over the log: a crash leaves one or the other whole.
fn replace(dir: &Path, file: &mut File, content: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{LOG_FILE}.compacting"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(LOG_FILE))?;
    // The rename itself must survive a crash.
    File::open(dir)?.sync_all()?;
    *file = OpenOptions::new().append(true).open(dir.join(LOG_FILE))?;
    Ok(())
}
