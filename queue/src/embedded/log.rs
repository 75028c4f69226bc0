//! The append-only log and its writer thread. Every state change is appended in the order
//! it was made; writes that ask for it are acknowledged only after `fdatasync`, and all
//! writes waiting at that moment share one sync (group commit).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use tokio::sync::oneshot;

use super::record::{Record, decode_all};

pub const LOG_FILE: &str = "queue.log";
/// Buffered writes become durable at most this long after they were made.
const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Bytes gathered into one write before syncing, at most.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

pub type Ack = oneshot::Sender<Result<(), String>>;

pub enum Op {
    /// Framed records; `ack` (if any) is answered once they are synced.
    Append { bytes: Vec<u8>, ack: Option<Ack> },
    /// Replace the whole log with `snapshot` (framed records describing the live state).
    Compact { snapshot: Vec<u8>, ack: Option<Ack> },
}

/// Reads the log, cuts off a torn tail and returns the records in it.
pub fn recover(dir: &Path) -> std::io::Result<(Vec<Record>, File, u64)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(LOG_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let (records, valid) = decode_all(&buf);
    if valid < buf.len() {
        tracing::warn!(path = %path.display(), dropped_bytes = buf.len() - valid, "queue log had a torn tail; cutting it off");
        file.set_len(valid as u64)?;
        file.sync_all()?;
    }
    file.seek(SeekFrom::End(0))?;
    Ok((records, file, valid as u64))
}

pub fn start_writer(dir: PathBuf, file: File) -> Sender<Op> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("queue-log".into())
        .spawn(move || writer_loop(dir, file, rx))
        .expect("spawning the queue log writer");
    tx
}

fn writer_loop(dir: PathBuf, mut file: File, rx: Receiver<Op>) {
    let mut dirty = false;
    let mut batch = Vec::with_capacity(1 << 20);
    let mut acks: Vec<Ack> = Vec::new();
    loop {
        let first = if dirty {
            match rx.recv_timeout(FLUSH_INTERVAL) {
                Ok(op) => Some(op),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => break,
            }
        };
        let Some(first) = first else {
            // Quiet period: make buffered writes durable.
            let _ = file.sync_data();
            dirty = false;
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
                    let result = flush(&mut file, &mut batch, !acks.is_empty());
                    answer(&mut acks, &result);
                    let result = compact(&dir, &mut file, &snapshot);
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
        let result = flush(&mut file, &mut batch, must_sync);
        dirty = !must_sync || result.is_err();
        answer(&mut acks, &result);
    }
    let _ = file.write_all(&batch);
    let _ = file.sync_data();
}

fn flush(file: &mut File, batch: &mut Vec<u8>, sync: bool) -> std::io::Result<()> {
    if !batch.is_empty() {
        let r = file.write_all(batch);
        batch.clear();
        r?;
    }
    if sync { file.sync_data() } else { Ok(()) }
}

fn answer(acks: &mut Vec<Ack>, result: &std::io::Result<()>) {
    for ack in acks.drain(..) {
        let _ = ack.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    }
}

fn compact(dir: &Path, file: &mut File, snapshot: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{LOG_FILE}.compacting"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(snapshot)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(LOG_FILE))?;
    // The rename itself must survive a crash.
    File::open(dir)?.sync_all()?;
    *file = OpenOptions::new().append(true).open(dir.join(LOG_FILE))?;
    Ok(())
}
