//! The benchmark photo sets, made by `./dev.sh photos` from real photographs (see
//! `src/bin/make-photos.rs`): JPEGs of 100 KB - 1 MB in several sizes and orientations, and
//! the same photographs in every common input kind.

/// Where `./dev.sh photos` leaves the JPEG set, relative to the repository root.
pub const PHOTO_DIR: &str = "target/photos/set";
/// Where it leaves the input-kind set.
pub const KINDS_DIR: &str = "target/photos/kinds";

/// The input kinds, as the file names of [`KINDS_DIR`] start (`<kind>--<n>-<photo>.<ext>`).
pub const KINDS: [&str; 11] = [
    "jpeg-baseline",
    "jpeg-progressive",
    "jpeg-rotated",
    "jpeg-cmyk",
    "jpeg-adobergb",
    "jpeg-p3",
    "jpeg-grey",
    "png",
    "png-alpha",
    "webp",
    "webp-alpha",
];

/// One photograph of the input-kind set.
pub struct KindPhoto {
    pub kind: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The input-kind set, sorted by name; every kind must be there.
pub fn kind_set() -> Result<Vec<KindPhoto>, String> {
    let dir = crate::host::repo_root().join(KINDS_DIR);
    let missing = || {
        format!(
            "no input-kind photos in {} (run ./dev.sh photos)",
            dir.display()
        )
    };
    let mut photos = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|_| missing())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let Some(kind) = KINDS.iter().find(|k| {
            name.split_once("--")
                .is_some_and(|(prefix, _)| prefix == **k)
        }) else {
            continue;
        };
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        photos.push(KindPhoto { kind, name, bytes });
    }
    photos.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(kind) = KINDS.iter().find(|k| !photos.iter().any(|p| p.kind == **k)) {
        return Err(format!(
            "{}: no {kind} photos (run ./dev.sh photos)",
            dir.display()
        ));
    }
    Ok(photos)
}

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
