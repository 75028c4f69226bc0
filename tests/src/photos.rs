//! The benchmark photo set: photograph-like JPEGs of about 250 KB in the sizes and
//! orientations phones and cameras produce after a typical upload downscale.

use crate::images;

/// (name, JPEG bytes). Deterministic: the same set on every machine.
pub fn photo_set() -> Vec<(String, Vec<u8>)> {
    let shapes = [
        (1600, 1200),
        (1200, 1600),
        (1920, 1080),
        (1500, 1500),
        (2048, 1365),
        (1080, 1350),
    ];
    shapes
        .iter()
        .enumerate()
        .flat_map(|(i, &(w, h))| {
            (0..2).map(move |j| {
                let seed = (i * 10 + j) as u64;
                let bytes = images::jpeg(&images::photo(w, h, seed), 75);
                let bytes = if j == 1 {
                    images::with_exif_orientation(&bytes, 6)
                } else {
                    bytes
                };
                (
                    format!("{w}x{h}{}", if j == 1 { "-exif6" } else { "" }),
                    bytes,
                )
            })
        })
        .collect()
}
