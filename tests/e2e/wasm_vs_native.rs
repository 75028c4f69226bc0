//! The WASM component (through the host) and the native library give the same result.
//!
//! Tolerance: identical dimensions; on lossless (PNG) output every channel of every pixel
//! within 2 levels of 255 (4 where an ICC profile is applied) and PSNR of at least 50 dB.
//! The two builds run the same code, but the resampler's and the colour engine's SIMD paths
//! differ (AVX2/SSE4.1 natively, simd128 in WASM) and may round differently by a level or
//! two.

use imgfleet_resize::{Limits, ResizeParams, resize};
use imgfleet_tests::colour::{self, Tagged};
use imgfleet_tests::host::Host;
use imgfleet_tests::images::{self, decode};
use imgfleet_tests::quality::{decode_with_sharp, max_abs_diff, psnr};

/// The inputs whose colours go through an ICC profile.
const TAGGED: [&str; 3] = ["cmyk swop", "adobe rgb", "grey gamma 1.8"];

fn tagged(photo: &image::RgbImage, kind: Tagged) -> Vec<u8> {
    let (w, h) = photo.dimensions();
    colour::tagged_jpeg(&colour::from_srgb(photo, kind), w, h, kind, 85)
}

/// A lossy WebP at the image's own size (encoded natively).
fn webp(png: &[u8]) -> Vec<u8> {
    let width = decode(png).width();
    let params = ResizeParams::from_query(&format!("w={width}&fmt=webp&q=85")).unwrap();
    resize(png, &params, None, &Limits::default())
        .unwrap()
        .bytes
}

#[test]
fn wasm_and_native_agree() {
    let h = Host::start("spin.toml", &[]);
    let photo = images::photo(900, 600, 21);
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("jpeg", images::jpeg(&photo, 85)),
        (
            "png rgba",
            images::png_rgba(&images::half_transparent(640, 480)),
        ),
        (
            "exif 8",
            images::with_exif_orientation(&images::jpeg(&photo, 85), 8),
        ),
        // The colour-managed and libwebp decodes, compiled for WASM as well.
        ("cmyk swop", tagged(&photo, Tagged::Ycck)),
        ("adobe rgb", tagged(&photo, Tagged::AdobeRgb)),
        ("grey gamma 1.8", tagged(&photo, Tagged::Grey)),
        ("webp", webp(&images::png_rgb(&photo))),
        (
            "webp rgba",
            webp(&images::png_rgba(&images::half_transparent(640, 480))),
        ),
    ];
    for (name, input) in &inputs {
        for query in [
            "w=300&fmt=png",
            "w=200&h=200&fit=cover&fmt=png",
            "w=250&h=100&fit=contain&fmt=png",
        ] {
            let params = ResizeParams::from_query(query).unwrap();
            let native = resize(input, &params, None, &Limits::default()).unwrap();
            let wasm = h.post(&format!("/v1/resize?{query}"), input, &[]);
            assert_eq!(wasm.status, 200, "{name} {query}");
            let (n, w) = (decode(&native.bytes), decode(&wasm.body));
            assert_eq!(
                (n.width(), n.height()),
                (w.width(), w.height()),
                "{name} {query}"
            );
            let (diff, db) = (max_abs_diff(&n, &w), psnr(&n, &w));
            let tolerance = if TAGGED.contains(name) { 4 } else { 2 };
            assert!(
                diff <= tolerance,
                "{name} {query}: max channel difference {diff}"
            );
            assert!(db >= 50.0, "{name} {query}: PSNR {db:.1} dB");
        }
    }
    // Lossy output: same size and visually the same, through every lossy encoder (libwebp
    // is C compiled for WASM; the AVIF encoder's thread pool must fall back to the one
    // thread a function has).
    for (query, decoder) in [
        (
            "w=300&fmt=jpeg&q=85",
            decode as fn(&[u8]) -> image::DynamicImage,
        ),
        ("w=300&fmt=webp&q=85", decode),
        ("w=300&fmt=avif&q=85&speed=10", decode_with_sharp),
    ] {
        let native = resize(
            &inputs[0].1,
            &ResizeParams::from_query(query).unwrap(),
            None,
            &Limits::default(),
        )
        .unwrap();
        let wasm = h.post(&format!("/v1/resize?{query}"), &inputs[0].1, &[]);
        assert_eq!(wasm.status, 200, "{query}");
        let db = psnr(&decoder(&native.bytes), &decoder(&wasm.body));
        assert!(db >= 40.0, "{query}: outputs differ, PSNR {db:.1} dB");
    }
}
