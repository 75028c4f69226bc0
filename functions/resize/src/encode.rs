//! Encoders, one per output format, each the fast, well-kept one for its job: jpeg-encoder
//! (4:2:0 below quality 90, each 2×2 block's chroma averaged, standard Huffman tables),
//! libwebp for lossy WebP, rav1e (through `image`) for AVIF, `image`'s PNG encoder.

use image::ImageEncoder;

use crate::codec::{Bitmap, Layout};
use crate::error::{ErrorCode, ResizeError};
use crate::jpeg_rows::Rgb420;
use crate::params::OutputFormat;

/// How hard to compress: the request's `q` and, for AVIF, `speed`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Effort {
    pub quality: u8,
    pub speed: u8,
}

pub(crate) fn encode(
    bitmap: &Bitmap,
    format: OutputFormat,
    effort: Effort,
) -> Result<Vec<u8>, ResizeError> {
    let failed = |e: String| {
        ResizeError::new(
            ErrorCode::Internal,
            format!("encoding {format:?} failed: {e}"),
        )
    };
    match format {
        OutputFormat::Jpeg => jpeg(bitmap, effort.quality).map_err(failed),
        OutputFormat::Png => png(bitmap).map_err(failed),
        OutputFormat::Webp => webp(bitmap, effort.quality).map_err(failed),
        OutputFormat::Avif => avif(bitmap, effort).map_err(failed),
    }
}

fn jpeg(bitmap: &Bitmap, quality: u8) -> Result<Vec<u8>, String> {
    let color = match bitmap.layout {
        Layout::L8 => jpeg_encoder::ColorType::Luma,
        Layout::Rgb8 => jpeg_encoder::ColorType::Rgb,
        // The pipeline flattens alpha onto white before a JPEG is written.
        Layout::La8 | Layout::Rgba8 => return Err("JPEG input must be flattened first".into()),
    };
    let (w, h) = dimensions_u16(bitmap)?;
    let mut out = Vec::with_capacity(bitmap.pixels.len() / 8);
    // Optimised Huffman tables are left off: jpeg-encoder 0.7.1 writes tables for flat
    // images that decoders read as the wrong colour (white came back green).
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
    // Below quality 90 the encoder writes 4:2:0 (as libjpeg). Where it has no vector code
    // of its own (WASM, ARM), `Rgb420` prepares the averaged chroma faster than it does;
    // on x86 its AVX2 conversion is faster still.
    let prepared = !cfg!(any(target_arch = "x86", target_arch = "x86_64"));
    let done = if prepared && color == jpeg_encoder::ColorType::Rgb && quality < 90 {
        encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
        encoder.set_chroma_subsampling_method(jpeg_encoder::ChromaSubsamplingMethod::Nearest);
        encoder.encode_image(Rgb420 {
            pixels: &bitmap.pixels,
            width: w,
            height: h,
        })
    } else {
        encoder.encode(&bitmap.pixels, w, h, color)
    };
    done.map_err(|e| e.to_string())?;
    Ok(out)
}

fn dimensions_u16(bitmap: &Bitmap) -> Result<(u16, u16), String> {
    match (u16::try_from(bitmap.width), u16::try_from(bitmap.height)) {
        (Ok(w), Ok(h)) => Ok((w, h)),
        _ => Err(format!(
            "{}x{} is beyond the format's 65535 px",
            bitmap.width, bitmap.height
        )),
    }
}

fn png(bitmap: &Bitmap) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write_image(
        image::codecs::png::PngEncoder::new_with_quality(
            &mut out,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::Adaptive,
        ),
        bitmap,
    )?;
    Ok(out)
}

/// Runs one of the `image` crate's encoders over a bitmap.
fn write_image(encoder: impl ImageEncoder, bitmap: &Bitmap) -> Result<(), String> {
    encoder
        .write_image(
            &bitmap.pixels,
            bitmap.width,
            bitmap.height,
            bitmap.layout.color_type(),
        )
        .map_err(|e| e.to_string())
}

fn webp(bitmap: &Bitmap, quality: u8) -> Result<Vec<u8>, String> {
    let colour = as_colour(bitmap);
    let (w, h) = (
        i32::try_from(bitmap.width).map_err(|e| e.to_string())?,
        i32::try_from(bitmap.height).map_err(|e| e.to_string())?,
    );
    let alpha = colour.layout.has_alpha();
    let stride = w * colour.layout.channels() as i32;
    let expected = usize::try_from(stride).unwrap_or(0) * usize::try_from(h).unwrap_or(0);
    if colour.pixels.len() != expected {
        return Err("the bitmap's length does not match its size".into());
    }
    let mut output: *mut u8 = std::ptr::null_mut();
    // SAFETY: `pixels` holds `h` rows of `stride` bytes (checked above) and outlives the
    // call; libwebp allocates `output`, which is copied and then freed with WebPFree.
    let len = unsafe {
        let encode = if alpha {
            libwebp_sys::WebPEncodeRGBA
        } else {
            libwebp_sys::WebPEncodeRGB
        };
        encode(
            colour.pixels.as_ptr(),
            w,
            h,
            stride,
            f32::from(quality),
            &mut output,
        )
    };
    if len == 0 || output.is_null() {
        return Err("libwebp refused the image (too large for WebP's 16383 px?)".into());
    }
    // SAFETY: libwebp returned `len` bytes at `output`; freed right after the copy.
    let bytes = unsafe {
        let bytes = std::slice::from_raw_parts(output, len).to_vec();
        libwebp_sys::WebPFree(output.cast());
        bytes
    };
    Ok(bytes)
}

fn avif(bitmap: &Bitmap, effort: Effort) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write_image(
        image::codecs::avif::AvifEncoder::new_with_speed_quality(
            &mut out,
            effort.speed,
            effort.quality,
        ),
        &as_colour(bitmap),
    )?;
    Ok(out)
}

/// Grey bitmaps as RGB(A): the WebP and AVIF encoders take colour only.
fn as_colour(bitmap: &Bitmap) -> std::borrow::Cow<'_, Bitmap> {
    let layout = match bitmap.layout {
        Layout::L8 => Layout::Rgb8,
        Layout::La8 => Layout::Rgba8,
        Layout::Rgb8 | Layout::Rgba8 => return std::borrow::Cow::Borrowed(bitmap),
    };
    let pixels = match bitmap.layout {
        Layout::L8 => bitmap.pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        _ => bitmap
            .pixels
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
    };
    std::borrow::Cow::Owned(Bitmap {
        layout,
        pixels,
        ..*bitmap
    })
}
