//! Four-component JPEGs (CMYK and YCCK, from print workflows and stock libraries): decoded
//! to ink amounts and turned into sRGB through their embedded profile (`colour`). The
//! general decoder's own CMYK → RGB assumes ideal inks, which shows a press profile's muted
//! colours as vivid ones.

use crate::codec::{Bitmap, jpeg_frame, jpeg_segments};
use crate::colour;
use crate::error::{ErrorCode, ResizeError};
use crate::shrink;

/// Whether the frame header declares four components.
pub(crate) fn is_cmyk(bytes: &[u8]) -> bool {
    jpeg_frame(bytes).and_then(|frame| frame.get(5).copied()) == Some(4)
}

/// Adobe's APP14 segment: its writers store inks inverted (Photoshop's convention), the
/// rare files without it store them as they are.
fn has_adobe_marker(bytes: &[u8]) -> bool {
    jpeg_segments(bytes).any(|(marker, _, payload)| marker == 0xEE && payload.starts_with(b"Adobe"))
}

/// Decodes a four-component JPEG at 1/`factor` (1, 2, 4 or 8) of its stored size into sRGB.
pub(crate) fn decode(
    bytes: &[u8],
    factor: u32,
    max_alloc: u64,
    icc: Option<&[u8]>,
) -> Result<Bitmap, ResizeError> {
    let (format, width, height, mut ink) = shrink::general_scaled(bytes, factor, max_alloc)?;
    if format != jpeg_decoder::PixelFormat::CMYK32 {
        return Err(ResizeError::new(
            ErrorCode::UnsupportedFormat,
            "the JPEG's four components are not 8-bit CMYK",
        ));
    }
    // jpeg-decoder undoes Adobe's inversion (for CMYK and YCCK alike) and inverts
    // everything else, so its output is ink only for Adobe files.
    if !has_adobe_marker(bytes) {
        ink.iter_mut().for_each(|v| *v = 255 - *v);
    }
    Ok(colour::cmyk_to_srgb(width, height, ink, icc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(ink: &[u8], width: u16, height: u16, kind: jpeg_encoder::ColorType) -> Vec<u8> {
        let mut out = Vec::new();
        let encoder = jpeg_encoder::Encoder::new(&mut out, 100);
        encoder.encode(ink, width, height, kind).unwrap();
        out
    }

    /// Flat patches of known inks, 16×16 each, so that JPEG's loss stays small.
    fn patches() -> (Vec<[u8; 4]>, Vec<u8>) {
        let inks: Vec<[u8; 4]> = vec![
            [0, 0, 0, 0],
            [255, 0, 0, 0],
            [0, 200, 50, 0],
            [20, 40, 60, 100],
            [0, 0, 0, 255],
        ];
        let mut pixels = Vec::new();
        for row in 0..16 {
            let _ = row;
            for ink in &inks {
                for _ in 0..16 {
                    pixels.extend_from_slice(ink);
                }
            }
        }
        (inks, pixels)
    }

    #[test]
    fn adobe_cmyk_and_ycck_decode_to_the_inks_they_were_written_with() {
        let (inks, pixels) = patches();
        let width = (inks.len() * 16) as u16;
        for kind in [
            jpeg_encoder::ColorType::Cmyk,
            jpeg_encoder::ColorType::CmykAsYcck,
        ] {
            let jpeg = encode(&pixels, width, 16, kind);
            assert!(is_cmyk(&jpeg) && has_adobe_marker(&jpeg));
            // No profile: ideal inks, so each patch's sRGB is known.
            let out = decode(&jpeg, 1, u64::MAX, None).unwrap();
            assert_eq!((out.width, out.height), (u32::from(width), 16));
            for (i, ink) in inks.iter().enumerate() {
                let at = (8 * out.width as usize + i * 16 + 8) * 3;
                let white = 255.0 - f64::from(ink[3]);
                for c in 0..3 {
                    let want = (255.0 - f64::from(ink[c])) * white / 255.0;
                    let got = f64::from(out.pixels[at + c]);
                    assert!(
                        (want - got).abs() <= 4.0,
                        "{kind:?} ink {ink:?} channel {c}: {got} != {want}"
                    );
                }
            }
            // Shrunk decodes keep the same colours.
            let half = decode(&jpeg, 2, u64::MAX, None).unwrap();
            assert_eq!((half.width, half.height), (out.width / 2, 8));
        }
    }

    #[test]
    fn a_broken_or_foreign_profile_falls_back_to_ideal_inks() {
        let (_, pixels) = patches();
        let jpeg = encode(&pixels, 80, 16, jpeg_encoder::ColorType::Cmyk);
        let plain = decode(&jpeg, 1, u64::MAX, None).unwrap();
        let srgb = moxcms::ColorProfile::new_srgb().encode().unwrap();
        for icc in [&b"not a profile"[..], &srgb[..16], &srgb] {
            assert_eq!(
                decode(&jpeg, 1, u64::MAX, Some(icc)).unwrap().pixels,
                plain.pixels
            );
        }
    }

    #[test]
    fn three_component_jpegs_are_not_cmyk() {
        let jpeg = {
            let mut out = Vec::new();
            jpeg_encoder::Encoder::new(&mut out, 90)
                .encode(&[10; 8 * 8 * 3], 8, 8, jpeg_encoder::ColorType::Rgb)
                .unwrap();
            out
        };
        assert!(!is_cmyk(&jpeg));
        assert!(!is_cmyk(b"\xFF\xD8 not much"));
    }
}
