//! Builds the benchmark photo set from real photographs (Debian wallpaper packages, fetched
//! by `./dev.sh photos`): each source becomes a landscape-or-as-shot JPEG and a 3:4 crop,
//! at sizes from 1280 to 3000 px, re-encoded so each file lands between 100 KB and 1 MB
//! (the range uploads to an image service mostly fall in). Every other crop is stored
//! sideways with EXIF orientation 6, as phones do, so auto-orientation is part of the job.
//!
//! With `--kinds <dir>` it also writes the input-kind set the end-to-end benchmark draws
//! from (see `imgfleet_tests::photos::KINDS`): each of the first sources as a baseline,
//! progressive and EXIF-rotated JPEG, a CMYK JPEG through a SWOP press profile, Adobe RGB,
//! Display P3 and grey JPEGs carrying their profiles, PNG with and without alpha, and lossy
//! WebP with and without alpha, each of them near 250 KB.
//!
//! `make-photos <source dir> <output dir> [--kinds <dir>]`

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use imgfleet_resize::{Limits, ResizeParams};
use imgfleet_tests::colour::{self, Tagged};
use imgfleet_tests::images;

const MIN_BYTES: usize = 100 << 10;
const MAX_BYTES: usize = 1 << 20;
const LONG_EDGES: [u32; 5] = [1280, 1600, 2048, 2560, 3000];

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (source, out, kinds) = match args.as_slice() {
        [source, out] => (source, out, None),
        [source, out, flag, kinds] if flag == "--kinds" => (source, out, Some(kinds)),
        _ => return Err("usage: make-photos <source dir> <output dir> [--kinds <dir>]".into()),
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut sources: Vec<PathBuf> = std::fs::read_dir(source)
        .map_err(|e| format!("{source}: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpg")))
        .collect();
    sources.sort();
    if sources.is_empty() {
        return Err(format!("no .jpg photographs in {source}"));
    }
    let mut written = 0;
    for (i, path) in sources.iter().enumerate() {
        let photo = image::open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .into_rgb8();
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let as_shot = scaled(&photo, LONG_EDGES[i % LONG_EDGES.len()]);
        written += write(&out, &stem, &as_shot, None)?;
        let crop = scaled(
            &portrait_crop(&photo),
            LONG_EDGES[(i + 2) % LONG_EDGES.len()],
        );
        if i % 2 == 0 {
            // Stored sideways; orientation 6 turns it upright for display.
            let sideways = image::imageops::rotate270(&crop);
            written += write(&out, &format!("{stem}-crop"), &sideways, Some(6))?;
        } else {
            written += write(&out, &format!("{stem}-crop"), &crop, None)?;
        }
    }
    println!("{written} photos in {}", out.display());
    if let Some(kinds) = kinds {
        write_kinds(&sources, Path::new(kinds))?;
    }
    Ok(())
}

/// How many sources each input kind is made from.
const KIND_SOURCES: usize = 4;

fn write_kinds(sources: &[PathBuf], out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut written = 0;
    for (i, path) in sources.iter().take(KIND_SOURCES).enumerate() {
        let photo = image::open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .into_rgb8();
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        // Every kind at the size that brings it near 250 KB (PNG is lossless, so smaller).
        let jpeg_size = scaled(&photo, 1600);
        let (w, h) = jpeg_size.dimensions();
        let mut files: Vec<(&str, &str, Vec<u8>)> = vec![
            ("jpeg-baseline", "jpg", images::jpeg(&jpeg_size, 85)),
            (
                "jpeg-progressive",
                "jpg",
                images::progressive_jpeg(&jpeg_size, 85),
            ),
            (
                "jpeg-rotated",
                "jpg",
                images::with_exif_orientation(
                    &images::jpeg(&image::imageops::rotate270(&jpeg_size), 85),
                    6,
                ),
            ),
        ];
        for (kind, tagged) in [
            ("jpeg-cmyk", Tagged::Cmyk),
            ("jpeg-adobergb", Tagged::AdobeRgb),
            ("jpeg-p3", Tagged::DisplayP3),
            ("jpeg-grey", Tagged::Grey),
        ] {
            let samples = colour::from_srgb(&jpeg_size, tagged);
            files.push((kind, "jpg", colour::tagged_jpeg(&samples, w, h, tagged, 85)));
        }
        let png_size = scaled(&photo, 480);
        files.push(("png", "png", images::png_rgb(&png_size)));
        files.push(("png-alpha", "png", images::png_rgba(&cut_out(&png_size))));
        let webp_size = scaled(&photo, 2400);
        let webp_width = webp_size.width();
        files.push((
            "webp",
            "webp",
            webp(&images::png_rgb(&webp_size), webp_width)?,
        ));
        files.push((
            "webp-alpha",
            "webp",
            webp(&images::png_rgba(&cut_out(&webp_size)), webp_width)?,
        ));
        for (kind, ext, bytes) in files {
            let path = out.join(format!("{kind}--{i}-{stem}.{ext}"));
            std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            written += 1;
        }
    }
    println!("{written} input-kind photos in {}", out.display());
    Ok(())
}

/// The photo as a cut-out: opaque in a centred ellipse, fading to transparent at its edge.
fn cut_out(photo: &RgbImage) -> image::RgbaImage {
    let (w, h) = photo.dimensions();
    image::RgbaImage::from_fn(w, h, |x, y| {
        let dx = (f64::from(x) - f64::from(w) / 2.0) / (f64::from(w) / 2.0);
        let dy = (f64::from(y) - f64::from(h) / 2.0) / (f64::from(h) / 2.0);
        let r = (dx * dx + dy * dy).sqrt();
        let alpha = ((1.0 - r) / 0.15).clamp(0.0, 1.0);
        let image::Rgb([red, green, blue]) = *photo.get_pixel(x, y);
        image::Rgba([red, green, blue, (alpha * 255.0).round() as u8])
    })
}

/// Lossy WebP, q85, at the PNG's own width, through the service's own libwebp encoder.
fn webp(png: &[u8], width: u32) -> Result<Vec<u8>, String> {
    let params =
        ResizeParams::from_query(&format!("w={width}&fmt=webp&q=85")).map_err(|e| e.to_string())?;
    imgfleet_resize::resize(png, &params, None, &Limits::default())
        .map(|r| r.bytes)
        .map_err(|e| e.to_string())
}

/// Never enlarges: a smaller source keeps its size.
fn scaled(photo: &RgbImage, long_edge: u32) -> RgbImage {
    let (w, h) = photo.dimensions();
    if w.max(h) <= long_edge {
        return photo.clone();
    }
    let scale = f64::from(long_edge) / f64::from(w.max(h));
    let (nw, nh) = (
        (f64::from(w) * scale).round() as u32,
        (f64::from(h) * scale).round() as u32,
    );
    DynamicImage::ImageRgb8(photo.clone())
        .resize_exact(nw, nh, FilterType::Triangle)
        .into_rgb8()
}

/// The centre 3:4 (portrait) part of a landscape photo; a portrait one is kept whole.
fn portrait_crop(photo: &RgbImage) -> RgbImage {
    let (w, h) = photo.dimensions();
    let cw = (h * 3 / 4).min(w);
    image::imageops::crop_imm(photo, (w - cw) / 2, 0, cw, h).to_image()
}

/// Writes the highest quality (of 85 down to 50) that fits under 1 MB; skips a photo that
/// stays under 100 KB even at 85. Returns how many files were written.
fn write(
    out: &Path,
    name: &str,
    img: &RgbImage,
    orientation: Option<u16>,
) -> Result<usize, String> {
    for quality in (50..=85).rev().step_by(5) {
        let mut bytes = images::jpeg(img, quality);
        if let Some(o) = orientation {
            bytes = images::with_exif_orientation(&bytes, o);
        }
        if bytes.len() > MAX_BYTES {
            continue;
        }
        if bytes.len() < MIN_BYTES {
            eprintln!("skipped {name}: {} KB at q{quality}", bytes.len() >> 10);
            return Ok(0);
        }
        let (w, h) = img.dimensions();
        let path = out.join(format!("{name}-{w}x{h}-q{quality}.jpg"));
        std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(1);
    }
    eprintln!("skipped {name}: over 1 MB even at q50");
    Ok(0)
}
