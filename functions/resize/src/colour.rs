//! Colour management: a photo whose embedded ICC profile describes a colour space other
//! than sRGB (Adobe RGB, Display P3, ProPhoto from cameras and phones, a grey curve, a
//! printer's CMYK) is converted to sRGB once decoded — at the shrunk size, so the pass stays
//! cheap — because outputs carry no profile and every browser shows untagged images as sRGB.

use moxcms::{
    ColorProfile, DataColorSpace, Layout as CmsLayout, ProfileText, RenderingIntent,
    TransformOptions,
};

use crate::codec::{Bitmap, Layout};

/// Perceptual, the intent profiles are made for and the one colour engines default to:
/// a printer's gamut is mapped into the screen's rather than clipped.
fn options() -> TransformOptions {
    TransformOptions {
        rendering_intent: RenderingIntent::Perceptual,
        ..TransformOptions::default()
    }
}

/// `bitmap` in sRGB. Unchanged when there is no profile, when it already is sRGB, or when
/// it cannot be used: a broken or unsupported profile does not fail an image (browsers
/// ignore those too). A grey image stays grey, its levels mapped through its profile's curve.
pub(crate) fn to_srgb(bitmap: Bitmap, icc: Option<&[u8]>) -> Bitmap {
    let Some(icc) = icc else {
        return bitmap;
    };
    let Ok(profile) = ColorProfile::new_from_slice(icc) else {
        return bitmap;
    };
    let layout = match (bitmap.layout, profile.color_space) {
        (Layout::Rgb8, DataColorSpace::Rgb) => CmsLayout::Rgb,
        (Layout::Rgba8, DataColorSpace::Rgb) => CmsLayout::Rgba,
        (Layout::L8 | Layout::La8, DataColorSpace::Gray) => return grey_to_srgb(bitmap, &profile),
        _ => return bitmap,
    };
    if is_srgb(&profile) {
        return bitmap;
    }
    let srgb = ColorProfile::new_srgb();
    let Ok(transform) = profile.create_transform_8bit(layout, &srgb, layout, options()) else {
        return bitmap;
    };
    // Row by row through one scratch row, in place: a second whole bitmap would raise the
    // resize's peak memory by the decoded size.
    let mut bitmap = bitmap;
    let row = bitmap.width as usize * bitmap.layout.channels();
    let mut scratch = vec![0u8; row];
    for line in bitmap.pixels.chunks_exact_mut(row) {
        if transform.transform(line, &mut scratch).is_err() {
            break;
        }
        line.copy_from_slice(&scratch);
    }
    bitmap
}

/// A grey image's levels as sRGB greys: its 256 levels go through the profile once, and the
/// pixels through that table (the result is neutral, so one channel of it is the level).
fn grey_to_srgb(bitmap: Bitmap, profile: &ColorProfile) -> Bitmap {
    let srgb = ColorProfile::new_srgb();
    let Ok(transform) =
        profile.create_transform_8bit(CmsLayout::Gray, &srgb, CmsLayout::Rgb, options())
    else {
        return bitmap;
    };
    let levels: Vec<u8> = (0..=255).collect();
    let mut rgb = vec![0u8; 256 * 3];
    if transform.transform(&levels, &mut rgb).is_err() {
        return bitmap;
    }
    let table: Vec<u8> = rgb.chunks_exact(3).map(|px| px[1]).collect();
    if table.iter().enumerate().all(|(i, &v)| usize::from(v) == i) {
        return bitmap;
    }
    let mut bitmap = bitmap;
    let channels = bitmap.layout.channels();
    for px in bitmap.pixels.chunks_exact_mut(channels) {
        px[0] = table[usize::from(px[0])];
    }
    bitmap
}

/// CMYK ink amounts (0 = no ink, four bytes a pixel) as an sRGB bitmap, through `icc` when it
/// is a usable CMYK profile. Without one the inks are taken as ideal ones (`R = (1-C)(1-K)`),
/// as a screen without colour management would show them.
///
/// Converted in place, row by row (three bytes a pixel written behind the four read), so
/// the inks and the colours are never both held whole.
pub(crate) fn cmyk_to_srgb(
    width: u32,
    height: u32,
    mut ink: Vec<u8>,
    icc: Option<&[u8]>,
) -> Bitmap {
    let (w, h) = (width as usize, height as usize);
    let finish = |ink: &mut Vec<u8>, row: &dyn Fn(&[u8], &mut [u8])| {
        let mut scratch = vec![0u8; w * 3];
        for y in 0..h {
            row(&ink[y * w * 4..(y + 1) * w * 4], &mut scratch);
            // Row y's colours end at 3w(y+1) <= 4w(y+1): they overwrite only inks already
            // read (this row's, or earlier rows').
            ink[y * w * 3..(y + 1) * w * 3].copy_from_slice(&scratch);
        }
        ink.truncate(w * h * 3);
        ink.shrink_to_fit();
    };
    let transform = icc
        .and_then(|icc| ColorProfile::new_from_slice(icc).ok())
        .filter(|profile| profile.color_space == DataColorSpace::Cmyk)
        .and_then(|profile| {
            let srgb = ColorProfile::new_srgb();
            profile
                .create_transform_8bit(CmsLayout::Rgba, &srgb, CmsLayout::Rgb, options())
                .ok()
        });
    let mut black = [0u8; 3];
    match transform {
        Some(transform) if transform.transform(&[255; 4], &mut black).is_ok() => {
            let table = black_point_compensation(black);
            finish(&mut ink, &|inks, rgb| {
                if transform.transform(inks, rgb).is_err() {
                    ideal_inks(inks, rgb);
                }
                rgb.iter_mut().for_each(|v| *v = table[usize::from(*v)]);
            });
        }
        _ => finish(&mut ink, &ideal_inks),
    }
    Bitmap {
        width,
        height,
        layout: Layout::Rgb8,
        pixels: ink,
    }
}

/// `R = (1-C)(1-K)`, and so on: inks with no profile to say better.
fn ideal_inks(inks: &[u8], rgb: &mut [u8]) {
    for (px, out) in inks.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
        let white = 255 - u32::from(px[3]);
        for (o, &c) in out.iter_mut().zip(&px[..3]) {
            *o = (((255 - u32::from(c)) * white + 127) / 255) as u8;
        }
    }
}

/// A table stretching the press's darkest black (every ink at its maximum, `black` in sRGB)
/// to the screen's black, as the perceptual intent does between a print profile and a
/// display one (Little CMS forces this black point compensation for v4 display profiles,
/// and libvips, so sharp, renders CMYK that way). Without it the deepest shadows of a
/// print file stay a washed-out grey. In XYZ it is `(X - k·white) / (1 - k)` with `k` the
/// black's luminance (at most that of L* = 50, taken neutral), which is the same affine map
/// on each linear sRGB channel.
fn black_point_compensation(black: [u8; 3]) -> [u8; 256] {
    let [r, g, b] = black.map(|v| srgb_to_linear(f64::from(v) / 255.0));
    // L* = 50 is Y = (66/116)³.
    let k = (0.2126 * r + 0.7152 * g + 0.0722 * b).min(0.184_19);
    std::array::from_fn(|v| {
        let linear = ((srgb_to_linear(v as f64 / 255.0) - k) / (1.0 - k)).max(0.0);
        (linear_to_srgb(linear) * 255.0).round() as u8
    })
}

fn srgb_to_linear(v: f64) -> f64 {
    if v <= 0.040_45 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

fn linear_to_srgb(v: f64) -> f64 {
    if v <= 0.003_130_8 {
        v * 12.92
    } else {
        1.055 * v.powf(1.0 / 2.4) - 0.055
    }
}

/// The profile most photos carry ("sRGB IEC61966-2.1" and its variants): converting to
/// sRGB from it would be a pass over every pixel that changes nothing.
fn is_srgb(profile: &ColorProfile) -> bool {
    let name = match &profile.description {
        Some(ProfileText::PlainString(s)) => s.as_str(),
        Some(ProfileText::Localizable(l)) => l.first().map_or("", |s| s.value.as_str()),
        Some(ProfileText::Description(d)) => d.ascii_string.as_str(),
        None => "",
    };
    name.to_ascii_lowercase().contains("srgb")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(pixels: Vec<u8>) -> Bitmap {
        Bitmap {
            width: (pixels.len() / 3) as u32,
            height: 1,
            layout: Layout::Rgb8,
            pixels,
        }
    }

    #[test]
    fn display_p3_pixels_become_srgb() {
        let p3 = ColorProfile::new_display_p3().encode().unwrap();
        // P3's pure red is outside sRGB: it clips to sRGB red; P3 mid-grey stays grey.
        let out = to_srgb(rgb(vec![255, 0, 0, 128, 128, 128]), Some(&p3));
        assert!(out.pixels[0] == 255 && out.pixels[1] < 20 && out.pixels[2] < 20);
        assert!(out.pixels[3..].iter().all(|&c| c.abs_diff(128) <= 2));
        // A P3 orange is a different sRGB orange.
        let out = to_srgb(rgb(vec![200, 120, 60]), Some(&p3));
        assert!(
            out.pixels[0] > 205 && out.pixels[2] < 55,
            "{:?}",
            out.pixels
        );
    }

    #[test]
    fn no_profile_srgb_or_garbage_leave_pixels_alone() {
        let px = vec![200, 120, 60];
        let srgb = ColorProfile::new_srgb().encode().unwrap();
        assert_eq!(to_srgb(rgb(px.clone()), None).pixels, px);
        assert_eq!(to_srgb(rgb(px.clone()), Some(b"not a profile")).pixels, px);
        let mut named = ColorProfile::new_srgb();
        named.description = Some(ProfileText::PlainString("sRGB IEC61966-2.1".into()));
        assert!(is_srgb(&named));
        assert_eq!(to_srgb(rgb(px.clone()), Some(&srgb)).pixels, px);
    }
}
