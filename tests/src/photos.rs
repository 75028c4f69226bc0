//! The benchmark photo set: real photographs re-encoded to 100 KB - 1 MB JPEGs in several
//! sizes and orientations, made by `./dev.sh photos` (see `src/bin/make-photos.rs`).

/// Where `./dev.sh photos` leaves the set, relative to the repository root.
pub const PHOTO_DIR: &str = "target/photos/set";

/// (file name, JPEG bytes), sorted by name.
pub fn photo_set() -> Result<Vec<(String, Vec<u8>)>, String> {
    let dir = crate::host::repo_root().join(PHOTO_DIR);
    let missing = || format!("no photographs in {} (run ./dev.sh photos)", dir.display());
    let mut photos: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map_err(|_| missing())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .map(|p| {
            let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok((
                p.file_name().unwrap_or_default().to_string_lossy().into(),
                bytes,
            ))
        })
        .collect::<Result<_, String>>()?;
    if photos.is_empty() {
        return Err(missing());
    }
    photos.sort();
    Ok(photos)
}
