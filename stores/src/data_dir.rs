//! One owner per data directory: an exclusive lock on `<dir>/imgfleet.lock`, held for the
//! life of the process and released by the kernel however it ends. The file names its
//! holder, so a second host can say who has the directory.
//!
//! Architecture invariant: only one `imgfleet up` appends to a data directory's queue log,
//! audit log and staging area. The offline commands (tenants, keys, usage) do not take the
//! lock: they only touch the SQLite stores, which several processes share safely.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = "imgfleet.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "data directory {dir} is in use by another imgfleet ({holder}); stop it, or give this one another --data-dir"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("locking data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Held while the process owns the directory; dropping it (or dying) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the directory, or says who has it. `holder` describes this process to the
    /// next one that tries (e.g. its pid and address).
    pub fn acquire(dir: &Path, holder: &str) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim() {
                    "" => "holder unknown".to_string(),
                    t => t.to_string(),
                };
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        // Who holds it is a courtesy to the next process: the lock holds without it (a full
        // disk must not keep the owner from starting).
        let _ = writeln!(file, "{holder}");
        Ok(Self { _file: file })
    }
}

/// This process, as a lock holder: pid, start time and what it was asked to listen on.
pub fn holder(listen: &str) -> String {
    format!(
        "pid {}, listening on {listen}, since {} ms after the epoch",
        std::process::id(),
        crate::clock::now_ms()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_with_the_holder_named_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path(), "pid 1, listening on a").unwrap();
        let err = DataDirLock::acquire(dir.path(), "pid 2").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("pid 1, listening on a"), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        drop(first);
        let second = DataDirLock::acquire(dir.path(), "pid 2").unwrap();
        let again = DataDirLock::acquire(dir.path(), "pid 3").unwrap_err();
        assert!(again.to_string().contains("pid 2"), "{again}");
        drop(second);
    }
}
