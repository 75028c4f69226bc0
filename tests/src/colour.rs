//! Colour-managed test images and their reference renderings, made with Little CMS (lcms2),
//! a colour engine independent of the one imgfleet uses (moxcms).
//!
//! The print and wide-gamut profiles are real ones from Debian packages, fetched by
//! `./dev.sh profiles` into [`PROFILE_DIR`]: Artifex's SWOP CMYK (ghostscript), Adobe RGB
//! (1998) (colord); Display P3 and a gamma 1.8 grey are built here.

use image::RgbImage;
use lcms2::{CIExyY, Intent, PixelFormat, Profile, ToneCurve, Transform};

/// Where `./dev.sh profiles` leaves the profiles, relative to the repository root.
pub const PROFILE_DIR: &str = "target/profiles";

/// The tagged kinds of image a colour test covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tagged {
    /// CMYK, Adobe-inverted, through the SWOP press profile.
    Cmyk,
    /// The same inks stored as YCCK (Photoshop's default for CMYK JPEGs).
    Ycck,
    AdobeRgb,
    DisplayP3,
    /// Greyscale with a gamma 1.8 curve (sRGB's is about 2.2).
    Grey,
}

impl Tagged {
    pub const ALL: [Tagged; 5] = [
        Tagged::Cmyk,
        Tagged::Ycck,
        Tagged::AdobeRgb,
        Tagged::DisplayP3,
        Tagged::Grey,
    ];

    /// The ICC profile such an image carries.
    pub fn profile(self) -> Vec<u8> {
        match self {
            Tagged::Cmyk | Tagged::Ycck => profile_file("default_cmyk.icc"),
            Tagged::AdobeRgb => profile_file("AdobeRGB1998.icc"),
            Tagged::DisplayP3 => moxcms::ColorProfile::new_display_p3()
                .encode()
                .expect("encoding Display P3"),
            Tagged::Grey => {
                let d65 = CIExyY {
                    x: 0.3127,
                    y: 0.3290,
                    Y: 1.0,
                };
                Profile::new_gray(&d65, &ToneCurve::new(1.8))
                    .and_then(|p| p.icc())
                    .expect("building a grey profile")
            }
        }
    }
}

/// A profile from [`PROFILE_DIR`]; panics with how to get it when it is missing.
pub fn profile_file(name: &str) -> Vec<u8> {
    let path = crate::host::repo_root().join(PROFILE_DIR).join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run ./dev.sh profiles, which fetches them)",
            path.display()
        )
    })
}

fn lcms(icc: &[u8]) -> Profile {
    Profile::new_icc(icc).expect("lcms2 reads the profile")
}

/// `pixels` from one profile to another through lcms2, with the perceptual intent.
fn convert<I: lcms2::Pod, O: lcms2::Pod + Default>(
    (from, format_in): (&Profile, PixelFormat),
    (to, format_out): (&Profile, PixelFormat),
    pixels: &[I],
) -> Vec<O> {
    let t = Transform::<I, O>::new(from, format_in, to, format_out, Intent::Perceptual)
        .expect("lcms2 makes the transform");
    let mut out = vec![O::default(); pixels.len()];
    t.transform_pixels(pixels, &mut out);
    out
}

/// An sRGB picture as the image `kind` holds it: its samples (4 a pixel for CMYK inks, 1 for
/// grey, 3 otherwise), converted by lcms2 with the perceptual intent.
pub fn from_srgb(img: &RgbImage, kind: Tagged) -> Vec<u8> {
    let srgb = (&Profile::new_srgb(), PixelFormat::RGB_8);
    let target = lcms(&kind.profile());
    let pixels: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    match kind {
        Tagged::Cmyk | Tagged::Ycck => {
            convert::<_, [u8; 4]>(srgb, (&target, PixelFormat::CMYK_8), &pixels).concat()
        }
        Tagged::Grey => convert::<_, u8>(srgb, (&target, PixelFormat::GRAY_8), &pixels),
        Tagged::AdobeRgb | Tagged::DisplayP3 => {
            convert::<_, [u8; 3]>(srgb, (&target, PixelFormat::RGB_8), &pixels).concat()
        }
    }
}

/// lcms2's sRGB rendering of samples in `kind`'s colour space: the reference a colour-managed
/// resize is held to.
pub fn to_srgb(samples: &[u8], width: u32, height: u32, kind: Tagged) -> RgbImage {
    let srgb = (&Profile::new_srgb(), PixelFormat::RGB_8);
    let source = lcms(&kind.profile());
    let rgb: Vec<[u8; 3]> = match kind {
        Tagged::Cmyk | Tagged::Ycck => {
            let inks: Vec<[u8; 4]> = samples
                .chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect();
            convert((&source, PixelFormat::CMYK_8), srgb, &inks)
        }
        Tagged::Grey => convert((&source, PixelFormat::GRAY_8), srgb, samples),
        Tagged::AdobeRgb | Tagged::DisplayP3 => {
            let rgb: Vec<[u8; 3]> = samples
                .chunks_exact(3)
                .map(|c| [c[0], c[1], c[2]])
                .collect();
            convert((&source, PixelFormat::RGB_8), srgb, &rgb)
        }
    };
    RgbImage::from_raw(width, height, rgb.concat()).expect("sizes match")
}

/// A JPEG of `samples` (as [`from_srgb`] made them) carrying `kind`'s profile, as the
/// software that makes such files writes them.
pub fn tagged_jpeg(samples: &[u8], width: u32, height: u32, kind: Tagged, quality: u8) -> Vec<u8> {
    let colour = match kind {
        Tagged::Cmyk => jpeg_encoder::ColorType::Cmyk,
        Tagged::Ycck => jpeg_encoder::ColorType::CmykAsYcck,
        Tagged::Grey => jpeg_encoder::ColorType::Luma,
        Tagged::AdobeRgb | Tagged::DisplayP3 => jpeg_encoder::ColorType::Rgb,
    };
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
    encoder
        .add_icc_profile(&kind.profile())
        .expect("the profile fits in APP2 segments");
    encoder
        .encode(samples, width as u16, height as u16, colour)
        .expect("encoding a tagged JPEG");
    out
}
