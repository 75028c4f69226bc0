//! Image comparison for tests: PSNR over RGB.

use image::DynamicImage;

/// Peak signal-to-noise ratio between two images of the same size, in dB (higher is
/// closer; `f64::INFINITY` for identical images).
pub fn psnr(a: &DynamicImage, b: &DynamicImage) -> f64 {
    assert_eq!(
        (a.width(), a.height()),
        (b.width(), b.height()),
        "PSNR needs equal sizes"
    );
    psnr_of_samples(a.to_rgb8().as_raw(), b.to_rgb8().as_raw())
}

/// PSNR between two buffers of 8-bit samples of the same layout.
pub fn psnr_of_samples(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "PSNR needs equal sizes");
    let se: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let mse = se / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// Largest per-channel difference between two images of the same size.
pub fn max_abs_diff(a: &DynamicImage, b: &DynamicImage) -> u8 {
    let (a, b) = (a.to_rgba8(), b.to_rgba8());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| x.abs_diff(y))
        .max()
        .unwrap_or(0)
}

/// Decodes an image with sharp (libvips, installed in bench/sharp by `./dev.sh test`): the
/// independent decoder for formats this workspace only writes (AVIF).
pub fn decode_with_sharp(bytes: &[u8]) -> DynamicImage {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = crate::host::repo_root().join("bench/sharp");
    assert!(
        dir.join("node_modules/sharp").exists(),
        "sharp is not installed in {} (./dev.sh test installs it)",
        dir.display()
    );
    let mut child = Command::new("node")
        .arg(dir.join("decode.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running node");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("writing to node");
    let out = child.wait_with_output().expect("node output");
    assert!(out.status.success(), "sharp could not decode the image");
    image::load_from_memory(&out.stdout).expect("sharp wrote a PNG")
}
