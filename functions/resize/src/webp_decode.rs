//! WebP decoding with libwebp (already linked for encoding), shrunk on load: libwebp's
//! rescaler takes each reconstructed row straight down to 1/2, 1/4 or 1/8 of the size and
//! writes it into our bitmap, so the full-size picture is never held, and the Lanczos
//! filter finishes from at least the output's resolution (as for JPEG, `shrink`). libwebp is
//! the decoder browsers and libvips use; the pure-Rust one `image` brings took 3-5× as long.

use crate::codec::{Bitmap, Layout};
use crate::error::{ErrorCode, ResizeError};
use libwebp_sys as webp;

/// Decodes a still WebP at 1/`factor` of its size. `Ok(None)` for an animation, which
/// the general decoder handles (its first frame).
pub(crate) fn decode(
    bytes: &[u8],
    factor: u32,
    max_alloc: u64,
) -> Result<Option<Bitmap>, ResizeError> {
    let mut config = webp::WebPDecoderConfig::new().map_err(|()| {
        ResizeError::new(
            ErrorCode::Internal,
            "libwebp's decoder version does not match",
        )
    })?;
    // SAFETY: `bytes` is a live slice; libwebp only reads `len` bytes of it.
    let status = unsafe { webp::WebPGetFeatures(bytes.as_ptr(), bytes.len(), &mut config.input) };
    check(status)?;
    if config.input.has_animation != 0 {
        return Ok(None);
    }
    let (width, height) = (
        u32::try_from(config.input.width).unwrap_or(0),
        u32::try_from(config.input.height).unwrap_or(0),
    );
    let factor = factor.max(1);
    let (out_w, out_h) = (width.div_ceil(factor), height.div_ceil(factor));
    let layout = if config.input.has_alpha != 0 {
        Layout::Rgba8
    } else {
        Layout::Rgb8
    };
    let stride = out_w as usize * layout.channels();
    let size = stride * out_h as usize;
    if size as u64 > max_alloc || size == 0 {
        return Err(ResizeError::new(
            ErrorCode::MemoryLimitExceeded,
            format!(
                "decoding needs more memory than allowed: {size} bytes, the limit is {max_alloc}"
            ),
        ));
    }
    let mut pixels = vec![0u8; size];
    if factor > 1 {
        config.options.use_scaling = 1;
        config.options.scaled_width = out_w as i32;
        config.options.scaled_height = out_h as i32;
    }
    config.output.colorspace = if layout == Layout::Rgba8 {
        webp::WEBP_CSP_MODE::MODE_RGBA
    } else {
        webp::WEBP_CSP_MODE::MODE_RGB
    };
    config.output.is_external_memory = 1;
    config.output.u.RGBA = webp::WebPRGBABuffer {
        rgba: pixels.as_mut_ptr(),
        stride: stride as i32,
        size,
    };
    // SAFETY: the output buffer is `pixels`, `size` bytes of rows of `stride` for the
    // `out_w`×`out_h` picture libwebp was told to produce; it outlives the call. Freeing the
    // decoder buffer releases only libwebp's own memory (external memory is left alone).
    let status = unsafe {
        let status = webp::WebPDecode(bytes.as_ptr(), bytes.len(), &mut config);
        webp::WebPFreeDecBuffer(&mut config.output);
        status
    };
    check(status)?;
    Ok(Some(Bitmap {
        width: out_w,
        height: out_h,
        layout,
        pixels,
    }))
}

fn check(status: webp::VP8StatusCode) -> Result<(), ResizeError> {
    use webp::VP8StatusCode as S;
    let why = match status {
        S::VP8_STATUS_OK => return Ok(()),
        S::VP8_STATUS_NOT_ENOUGH_DATA => "the WebP is truncated",
        S::VP8_STATUS_UNSUPPORTED_FEATURE => "the WebP uses a feature libwebp does not decode",
        S::VP8_STATUS_OUT_OF_MEMORY => {
            return Err(ResizeError::new(
                ErrorCode::MemoryLimitExceeded,
                "decoding the WebP needs more memory than the function has",
            ));
        }
        _ => "the WebP's data is malformed",
    };
    Err(ResizeError::new(
        ErrorCode::CorruptImage,
        format!("the image could not be decoded: {why}"),
    ))
}
