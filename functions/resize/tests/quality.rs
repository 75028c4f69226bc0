//! Speed tricks must not cost quality: every fit mode and output format, from photos large
//! enough that the JPEG is shrunk on load, compared with a reference made the slow way —
//! a full decode and a Lanczos3 resample (the `image` crate's, independent of ours).

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView};
use imgfleet_resize::{Limits, ResizeParams, resize};
use imgfleet_tests::images::{self, decode};
use imgfleet_tests::quality::{decode_with_sharp, psnr};

/// The photo as a careful pipeline would see it: every pixel decoded.
fn full_decode(jpeg: &[u8]) -> DynamicImage {
    image::load_from_memory(jpeg).unwrap()
}

/// Lowest PSNR (dB) against the reference, per output format: PNG differs only by the
/// resampling, the lossy formats also by their own compression (q90). Measured: PNG 47–57,
/// JPEG 42–49, WebP 42–45, AVIF 43–48 dB (docs/BENCHMARKS.md); nearest-neighbour scores
/// under 34.
fn floor(fmt: &str) -> f64 {
    match fmt {
        "png" => 42.0,
        _ => 38.0,
    }
}

/// AVIF through sharp (no AVIF decoder in the workspace), the rest through `image`.
fn decode_output(fmt: &str, bytes: &[u8]) -> DynamicImage {
    match fmt {
        "avif" => decode_with_sharp(bytes),
        _ => decode(bytes),
    }
}

/// The region of `out` that holds the picture (`contain` pads around it).
fn picture(out: &DynamicImage, offset: (u32, u32), size: (u32, u32)) -> DynamicImage {
    out.crop_imm(offset.0, offset.1, size.0, size.1)
}

#[test]
fn every_fit_and_format_matches_a_full_decode_reference() {
    let photo = images::photo(2400, 1600, 17);
    let jpeg = images::jpeg(&photo, 92);
    let full = full_decode(&jpeg);
    // (query, reference picture, where it sits in the output)
    let cases: Vec<(&str, DynamicImage, (u32, u32))> = vec![
        (
            "w=300",
            full.resize_exact(300, 200, FilterType::Lanczos3),
            (0, 0),
        ),
        (
            "w=150&h=150&fit=inside",
            full.resize_exact(150, 100, FilterType::Lanczos3),
            (0, 0),
        ),
        (
            "w=200&h=200&fit=cover",
            full.crop_imm(400, 0, 1600, 1600)
                .resize_exact(200, 200, FilterType::Lanczos3),
            (0, 0),
        ),
        (
            "w=240&h=240&fit=contain",
            full.resize_exact(240, 160, FilterType::Lanczos3),
            (0, 40),
        ),
        (
            "w=300&h=80&fit=fill",
            full.resize_exact(300, 80, FilterType::Lanczos3),
            (0, 0),
        ),
        (
            "w=1000",
            full.resize_exact(1000, 667, FilterType::Lanczos3),
            (0, 0),
        ),
    ];
    for (query, reference, offset) in &cases {
        for fmt in ["jpeg", "png", "webp", "avif"] {
            let q = format!("{query}&fmt={fmt}&q=90");
            let params = ResizeParams::from_query(&q).unwrap();
            let out = resize(&jpeg, &params, None, &Limits::default()).unwrap();
            let out = picture(
                &decode_output(fmt, &out.bytes),
                *offset,
                reference.dimensions(),
            );
            let db = psnr(&out, reference);
            println!("{q}: {db:.1} dB");
            assert!(
                db >= floor(fmt),
                "{q}: PSNR {db:.1} dB against the reference"
            );
        }
    }
}

/// The floors mean something: a nearest-neighbour resize of the same photo (what a
/// careless speed-up would produce) falls below them.
#[test]
fn a_careless_resize_would_fail_the_floor() {
    let full = full_decode(&images::jpeg(&images::photo(2400, 1600, 17), 92));
    let reference = full.resize_exact(300, 200, FilterType::Lanczos3);
    let careless = full.resize_exact(300, 200, FilterType::Nearest);
    let db = psnr(&careless, &reference);
    assert!(db < floor("png"), "nearest neighbour scored {db:.1} dB");
}

/// WebP inputs are shrunk on load by libwebp's rescaler: held to the same reference (a full
/// decode by `image`'s own WebP decoder and a Lanczos3 resample), lossy and lossless, with
/// and without alpha, at each shrink factor.
#[test]
fn webp_inputs_shrunk_on_load_match_a_full_decode_reference() {
    let photo = images::photo(2400, 1600, 29);
    let rgba = image::RgbaImage::from_fn(2400, 1600, |x, y| {
        let image::Rgb([r, g, b]) = *photo.get_pixel(x, y);
        image::Rgba([r, g, b, if x < 1200 { 255 } else { 128 }])
    });
    let lossy = |png: Vec<u8>| {
        let params = ResizeParams::from_query("w=2400&fmt=webp&q=92").unwrap();
        resize(&png, &params, None, &Limits::default())
            .unwrap()
            .bytes
    };
    let inputs = [
        ("lossy", lossy(images::png_rgb(&photo))),
        ("lossy with alpha", lossy(images::png_rgba(&rgba))),
        ("lossless with alpha", images::webp(&rgba)),
    ];
    for (what, webp) in &inputs {
        let full = full_decode(webp);
        // 2400 px to 1000 (no shrink), 600 (1/2), 300 (1/4) and 150 (1/8).
        for width in [1000, 600, 300, 150] {
            let q = format!("w={width}&fmt=png");
            let params = ResizeParams::from_query(&q).unwrap();
            let out = decode(
                &resize(webp, &params, None, &Limits::default())
                    .unwrap()
                    .bytes,
            );
            let reference = full.resize_exact(width, out.height(), FilterType::Lanczos3);
            assert_eq!(out.color().has_alpha(), full.color().has_alpha(), "{what}");
            let db = psnr(&out, &reference);
            println!("{what} {q}: {db:.1} dB");
            assert!(
                db >= floor("png"),
                "{what} {q}: PSNR {db:.1} dB against the reference"
            );
        }
    }
}
