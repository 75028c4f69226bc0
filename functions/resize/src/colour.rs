//! Colour management: a photo whose embedded ICC profile describes a colour space other
//! than sRGB (Adobe RGB, Display P3, ProPhoto from cameras and phones) is converted to sRGB
//! once decoded — at the shrunk size, so the pass stays cheap — because outputs carry no
//! profile and every browser shows untagged images as sRGB.

use moxcms::{ColorProfile, DataColorSpace, Layout as CmsLayout, ProfileText, TransformOptions};

use crate::codec::{Bitmap, Layout};

/// `bitmap` in sRGB. Unchanged when there is no profile, when it already is sRGB, or when
/// it cannot be used: a broken or unsupported profile does not fail an image (browsers
/// ignore those too), and CMYK profiles are not applied (the decoder has already turned
/// CMYK into RGB). Grey images keep their values.
pub(crate) fn to_srgb(bitmap: Bitmap, icc: Option<&[u8]>) -> Bitmap {
    let Some(icc) = icc else {
        return bitmap;
    };
    let layout = match bitmap.layout {
        Layout::Rgb8 => CmsLayout::Rgb,
        Layout::Rgba8 => CmsLayout::Rgba,
        Layout::L8 | Layout::La8 => return bitmap,
    };
    let Ok(profile) = ColorProfile::new_from_slice(icc) else {
        return bitmap;
    };
    if profile.color_space != DataColorSpace::Rgb || is_srgb(&profile) {
        return bitmap;
    }
    let srgb = ColorProfile::new_srgb();
    let Ok(transform) =
        profile.create_transform_8bit(layout, &srgb, layout, TransformOptions::default())
    else {
        return bitmap;
    };
    let mut pixels = vec![0u8; bitmap.pixels.len()];
    if transform.transform(&bitmap.pixels, &mut pixels).is_err() {
        return bitmap;
    }
    Bitmap { pixels, ..bitmap }
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
