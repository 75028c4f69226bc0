//! SQLite keeps writing to a database file that was removed (unlinked) or swapped while it
//! was open, and those writes vanish with the old inode. A store checks before each use
//! that its path still names the file it opened, and is unavailable until it does again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct FileGuard {
    path: PathBuf,
    /// Device and inode of the file that was opened.
    id: (u64, u64),
}

fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

impl FileGuard {
    /// Remembers the file `path` names now (call right after opening it).
    pub fn new(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            id: file_id(path)?,
        })
    }

    /// Why the file cannot be used, if it is gone or no longer the one that was opened.
    pub fn check(&self) -> Result<(), String> {
        match file_id(&self.path) {
            Ok(id) if id == self.id => Ok(()),
            Ok(_) => Err(format!(
                "{} was replaced while open; restart to use the new file",
                self.path.display()
            )),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FileGuard;

    #[test]
    fn a_removed_or_replaced_file_is_refused_until_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        std::fs::write(&path, b"x").unwrap();
        let guard = FileGuard::new(&path).unwrap();
        assert!(guard.check().is_ok());
        let aside = dir.path().join("aside");
        std::fs::rename(&path, &aside).unwrap();
        assert!(guard.check().unwrap_err().contains("store.sqlite"));
        std::fs::write(&path, b"x").unwrap();
        assert!(guard.check().unwrap_err().contains("replaced"));
        std::fs::rename(&aside, &path).unwrap();
        assert!(guard.check().is_ok(), "the same file put back");
    }
}
