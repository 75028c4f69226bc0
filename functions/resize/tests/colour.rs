//! Colour through the embedded profile: CMYK (and YCCK) through a press profile, Adobe RGB,
//! Display P3 and a grey curve each come out as sRGB, held to Little CMS's rendering of the
//! same samples (an engine independent of ours) resampled the slow way; a profile that is
//! broken is ignored, never a failure.

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use imgfleet_resize::{Limits, ResizeParams, resize};
use imgfleet_tests::colour::{self, Tagged};
use imgfleet_tests::images::{self, decode};
use imgfleet_tests::quality::psnr;

/// The bar: within 35 dB of an independent colour engine's rendering.
const FLOOR_DB: f64 = 35.0;

fn resized(jpeg: &[u8], query: &str) -> DynamicImage {
    let params = ResizeParams::from_query(query).unwrap();
    let out = resize(jpeg, &params, None, &Limits::default()).unwrap();
    decode(&out.bytes)
}

/// A photo with saturated colours, as wide gamuts and press profiles change them most.
fn picture() -> RgbImage {
    images::photo(1600, 1200, 23)
}

/// (imgfleet's output, lcms2's reference) for `kind`, at 400 px wide: shrunk on load.
fn output_and_reference(kind: Tagged, query: &str, quality: u8) -> (DynamicImage, DynamicImage) {
    let photo = picture();
    let (w, h) = photo.dimensions();
    let samples = colour::from_srgb(&photo, kind);
    let jpeg = colour::tagged_jpeg(&samples, w, h, kind, quality);
    let out = resized(&jpeg, query);
    let reference = DynamicImage::ImageRgb8(colour::to_srgb(&samples, w, h, kind)).resize_exact(
        out.width(),
        out.height(),
        FilterType::Lanczos3,
    );
    (out, reference)
}

#[test]
fn every_tagged_kind_matches_an_independent_colour_engine() {
    for kind in Tagged::ALL {
        // q95 samples every component alike; q80 subsamples (jpeg-encoder samples K finer
        // than C then, which the general decoder's check must let through for CMYK).
        for (query, quality) in [
            ("w=400&fmt=png", 95),
            ("w=1600&fmt=png", 95),
            ("w=400&fmt=png", 80),
        ] {
            let (out, reference) = output_and_reference(kind, query, quality);
            let db = psnr(&out, &reference);
            assert!(
                db >= FLOOR_DB,
                "{kind:?} {query}: {db:.1} dB against lcms2 (floor {FLOOR_DB})"
            );
        }
    }
}

/// Profiles in PNGs (iCCP) take the same path as in JPEGs.
#[test]
fn tagged_pngs_match_an_independent_colour_engine() {
    let photo = picture();
    let (w, h) = photo.dimensions();
    for kind in [Tagged::AdobeRgb, Tagged::DisplayP3] {
        let samples = colour::from_srgb(&photo, kind);
        let png = images::png_with_icc(
            &RgbImage::from_raw(w, h, samples.clone()).unwrap(),
            kind.profile(),
        );
        let out = resized(&png, "w=400&fmt=png");
        let reference = DynamicImage::ImageRgb8(colour::to_srgb(&samples, w, h, kind))
            .resize_exact(out.width(), out.height(), FilterType::Lanczos3);
        let db = psnr(&out, &reference);
        assert!(db >= FLOOR_DB, "{kind:?} PNG: {db:.1} dB against lcms2");
    }
}

/// The floor means something: taking the samples as sRGB (ignoring the profile, what the
/// service did before) scores under it for every kind whose profile changes colours.
#[test]
fn ignoring_the_profile_would_fail_the_floor() {
    for kind in Tagged::ALL {
        let photo = picture();
        let (w, h) = photo.dimensions();
        let samples = colour::from_srgb(&photo, kind);
        let reference = colour::to_srgb(&samples, w, h, kind);
        let naive: RgbImage = match kind {
            Tagged::Cmyk | Tagged::Ycck => RgbImage::from_fn(w, h, |x, y| {
                let at = ((y * w + x) * 4) as usize;
                let white = 255 - u32::from(samples[at + 3]);
                image::Rgb(std::array::from_fn(|c| {
                    ((255 - u32::from(samples[at + c])) * white / 255) as u8
                }))
            }),
            Tagged::Grey => {
                RgbImage::from_fn(w, h, |x, y| image::Rgb([samples[(y * w + x) as usize]; 3]))
            }
            Tagged::AdobeRgb | Tagged::DisplayP3 => {
                RgbImage::from_raw(w, h, samples.clone()).unwrap()
            }
        };
        let db = psnr(
            &DynamicImage::ImageRgb8(naive),
            &DynamicImage::ImageRgb8(reference),
        );
        assert!(db < FLOOR_DB, "{kind:?} without its profile: {db:.1} dB");
    }
}

#[test]
fn a_broken_profile_is_ignored_not_a_failure() {
    let photo = picture();
    let (w, h) = photo.dimensions();
    for kind in [Tagged::Cmyk, Tagged::AdobeRgb, Tagged::Grey] {
        let samples = colour::from_srgb(&photo, kind);
        let good = colour::tagged_jpeg(&samples, w, h, kind, 90);
        let untagged = {
            let mut out = Vec::new();
            let colour_type = match kind {
                Tagged::Cmyk => jpeg_encoder::ColorType::Cmyk,
                Tagged::Grey => jpeg_encoder::ColorType::Luma,
                _ => jpeg_encoder::ColorType::Rgb,
            };
            jpeg_encoder::Encoder::new(&mut out, 90)
                .encode(&samples, w as u16, h as u16, colour_type)
                .unwrap();
            out
        };
        let plain = resized(&untagged, "w=300&fmt=png");
        // The profile's tag table damaged: the image is served as if it had none.
        let icc = kind.profile();
        let at = find(&good, &icc[..64]).expect("profile embedded");
        let mut broken = good.clone();
        for b in &mut broken[at + 128..at + 160] {
            *b = 0xFF;
        }
        let out = resized(&broken, "w=300&fmt=png");
        assert_eq!(
            out.to_rgb8().as_raw(),
            plain.to_rgb8().as_raw(),
            "{kind:?} with a broken profile"
        );
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
