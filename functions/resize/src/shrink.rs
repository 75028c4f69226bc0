//! JPEG shrink-on-load: when the output is much smaller than the photo, decode it at 1/2,
//! 1/4 or 1/8 of its size by scaling in the DCT domain (a reduced inverse DCT per block)
//! instead of decoding every pixel and throwing most away. The shrunk decode keeps at least
//! the output's resolution (as libvips' shrink-on-load does) and the Lanczos filter
//! finishes from there: the DCT-domain shrink is itself an average over each block's share,
//! so it adds no aliasing (tests/quality.rs holds outputs to a full-decode reference).

use crate::codec::{Bitmap, Layout};
use crate::error::{ErrorCode, ResizeError};
use crate::geometry::Plan;
use crate::scaled_jpeg;

/// How much finer than the output the shrunk decode must stay, per axis. A margin of 2
/// scored the same against the full-decode reference, and decoding at 1/2 instead of 1/4
/// takes about 1.6× as long.
const MARGIN: f64 = 1.0;

/// The largest of 1, 2, 4, 8 that keeps `MARGIN`× the output's resolution, for a plan on
/// an image of `oriented` size.
pub(crate) fn factor(oriented: (u32, u32), plan: &Plan) -> u32 {
    let (src_w, src_h) = plan
        .crop
        .map_or((f64::from(oriented.0), f64::from(oriented.1)), |c| {
            (c.width, c.height)
        });
    // Source pixels per output pixel, on the axis that needs the most detail.
    let ratio = (src_w / f64::from(plan.scaled.0)).min(src_h / f64::from(plan.scaled.1));
    [8, 4, 2]
        .into_iter()
        .find(|&d| ratio >= f64::from(d) * MARGIN)
        .unwrap_or(1)
}

/// Decodes `bytes` (a JPEG) at 1/`factor` scale, as stored. `None` when neither decoder can
/// shrink it (CMYK, 16-bit), so the caller decodes in full instead.
pub(crate) fn decode(
    bytes: &[u8],
    factor: u32,
    max_alloc: u64,
) -> Result<Option<Bitmap>, ResizeError> {
    if let Some(bitmap) = scaled_jpeg::decode(bytes, factor, max_alloc) {
        return Ok(Some(bitmap));
    }
    // Progressive, multi-scan or damaged files: the general decoder, which also gives
    // the error a damaged file deserves.
    let (format, width, height, pixels) = general_scaled(bytes, factor, max_alloc)?;
    let layout = match format {
        jpeg_decoder::PixelFormat::L8 => Layout::L8,
        jpeg_decoder::PixelFormat::RGB24 => Layout::Rgb8,
        _ => return Ok(None),
    };
    Ok(Some(Bitmap {
        width,
        height,
        layout,
        pixels,
    }))
}

/// jpeg-decoder's decode at 1/`factor` of the stored size (its scaled inverse DCT), in the
/// pixel format the file's components give: (format, width, height, samples).
pub(crate) fn general_scaled(
    bytes: &[u8],
    factor: u32,
    max_alloc: u64,
) -> Result<(jpeg_decoder::PixelFormat, u32, u32, Vec<u8>), ResizeError> {
    let corrupt = |e: jpeg_decoder::Error| {
        ResizeError::new(
            ErrorCode::CorruptImage,
            format!("the image could not be decoded: {e}"),
        )
    };
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.set_max_decoding_buffer_size(usize::try_from(max_alloc).unwrap_or(usize::MAX));
    decoder.read_info().map_err(corrupt)?;
    let info = decoder
        .info()
        .ok_or_else(|| ResizeError::new(ErrorCode::CorruptImage, "the JPEG has no frame header"))?;
    let factor = u16::try_from(factor).unwrap_or(1).max(1);
    let (width, height) = decoder
        .scale(info.width.div_ceil(factor), info.height.div_ceil(factor))
        .map_err(corrupt)?;
    let pixels = decoder.decode().map_err(corrupt)?;
    let (width, height) = (u32::from(width), u32::from(height));
    if pixels.len() != width as usize * height as usize * info.pixel_format.pixel_bytes() {
        return Err(ResizeError::new(
            ErrorCode::CorruptImage,
            "the image could not be decoded: its data is shorter than its header says",
        ));
    }
    Ok((info.pixel_format, width, height, pixels))
}

#[cfg(test)]
mod tests {
    use super::factor;
    use crate::geometry::{Crop, Plan};

    fn plan(scaled: (u32, u32), crop: Option<Crop>) -> Plan {
        Plan {
            crop,
            scaled,
            canvas: scaled,
            offset: (0, 0),
        }
    }

    #[test]
    fn shrinks_only_while_the_output_resolution_remains() {
        let photo = (4000, 3000);
        assert_eq!(factor(photo, &plan((250, 187), None)), 8);
        assert_eq!(factor(photo, &plan((500, 375), None)), 8);
        assert_eq!(
            factor(photo, &plan((501, 376), None)),
            4,
            "8 would leave less than the output"
        );
        assert_eq!(factor(photo, &plan((1000, 750), None)), 4);
        assert_eq!(factor(photo, &plan((1200, 900), None)), 2);
        assert_eq!(factor(photo, &plan((2001, 1501), None)), 1);
        assert_eq!(factor(photo, &plan((4000, 3000), None)), 1);
        // A crop keeps the crop's resolution: 1000 source pixels into 300 is 3.3x.
        let crop = Crop {
            left: 1500.0,
            top: 1000.0,
            width: 1000.0,
            height: 1000.0,
        };
        assert_eq!(factor(photo, &plan((300, 300), Some(crop))), 2);
        assert_eq!(factor(photo, &plan((600, 600), Some(crop))), 1);
        // Stretched (fill): the axis needing the most detail decides.
        assert_eq!(factor(photo, &plan((2000, 100), None)), 2);
        assert_eq!(factor(photo, &plan((2001, 100), None)), 1);
    }
}
