//! The resize pipeline: check, probe, plan, decode, resample, encode.

use std::time::{Duration, Instant};

use fast_image_resize::{self as fr, images::Image};
use image::metadata::Orientation;

use crate::cmyk_jpeg;
use crate::codec::{self, Bitmap, Layout};
use crate::colour;
use crate::encode::{self, Effort};
use crate::error::{ErrorCode, ResizeError};
use crate::geometry::{self, Crop, Plan};
use crate::limits::Limits;
use crate::params::{FormatChoice, ImageFormat, OutputFormat, ResizeParams, negotiate};
use crate::shrink;
use crate::webp_decode;

/// Format, size and byte count of one side of a resize: what metering bills on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFacts {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub decode: Duration,
    pub resize: Duration,
    pub encode: Duration,
}

#[derive(Debug, Clone)]
pub struct Resized {
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
    pub input: ImageFacts,
    pub output: ImageFacts,
    pub timings: Timings,
}

/// Resizes `input` as `params` ask. `accept` is the request's `Accept` header, used only
/// by `fmt=auto`.
/// What `resize` would refuse before decoding: the query, an empty or oversized body, a
/// format it does not read, a header over the limits, an output it cannot make. Cheap (the
/// header only), so a queued job is checked with it when submitted: a request that can
/// never succeed is refused at once rather than failing later.
pub fn precheck(input: &[u8], query: &str, limits: &Limits) -> Result<(), ResizeError> {
    let params = ResizeParams::from_query(query)?;
    check_size(input, limits)?;
    let probe = codec::probe(input, limits)?;
    geometry::plan(probe.oriented(), &params, limits.max_output_side)?;
    Ok(())
}

fn check_size(input: &[u8], limits: &Limits) -> Result<(), ResizeError> {
    if input.is_empty() {
        return Err(ResizeError::new(
            ErrorCode::EmptyBody,
            "the request body is empty; send the image bytes",
        ));
    }
    if input.len() as u64 > limits.max_input_bytes {
        return Err(ResizeError::new(
            ErrorCode::InputTooLarge,
            format!(
                "the image is {} bytes; the limit is {}",
                input.len(),
                limits.max_input_bytes
            ),
        ));
    }
    Ok(())
}

pub fn resize(
    input: &[u8],
    params: &ResizeParams,
    accept: Option<&str>,
    limits: &Limits,
) -> Result<Resized, ResizeError> {
    check_size(input, limits)?;
    let started = Instant::now();
    let mut probe = codec::probe(input, limits)?;
    let icc = probe.icc.take();
    let input_format = probe.format;
    let oriented = probe.oriented();
    let plan = geometry::plan(oriented, params, limits.max_output_side)?;
    let format = match params.format {
        FormatChoice::Input => OutputFormat::same_as(input_format),
        FormatChoice::Auto => negotiate(accept, input_format),
        FormatChoice::Fixed(f) => f,
    };
    let shrink = match input_format {
        ImageFormat::Jpeg | ImageFormat::Webp => shrink::factor(oriented, &plan),
        _ => 1,
    };
    let orientation = probe.orientation;
    let bitmap = if input_format == ImageFormat::Jpeg && cmyk_jpeg::is_cmyk(input) {
        // Inks, shrunk in the DCT domain like any JPEG, through the profile.
        codec::guarded(|| {
            cmyk_jpeg::decode(input, shrink, limits.max_decode_alloc, icc.as_deref())
        })?
    } else {
        let shrunk = match input_format {
            ImageFormat::Webp => webp_decode::decode(input, shrink, limits.max_decode_alloc)?,
            ImageFormat::Jpeg if shrink > 1 => {
                codec::guarded(|| shrink::decode(input, shrink, limits.max_decode_alloc))?
            }
            _ => None,
        };
        let bitmap = match shrunk {
            Some(b) => b,
            None => codec::decode(probe)?,
        };
        colour::to_srgb(bitmap, icc.as_deref())
    };
    let decoded = Instant::now();

    // Without a crop the EXIF turn is applied after resampling, to the small output: cheaper,
    // and the decoded bitmap is never held twice. A crop is planned on the image as
    // displayed, so an image to be cropped is turned first.
    let (bitmap, turn_later) = if plan.crop.is_some() {
        (
            codec::orient(bitmap, orientation),
            Orientation::NoTransforms,
        )
    } else {
        (bitmap, orientation)
    };
    let turned = |(w, h): (u32, u32)| {
        if codec::swaps_sides(turn_later) {
            (h, w)
        } else {
            (w, h)
        }
    };
    let displayed = turned((bitmap.width, bitmap.height));
    let plan = plan.for_source(oriented, displayed);
    let bitmap = if plan.resamples(displayed) {
        resample(bitmap, plan.crop, turned(plan.scaled))?
    } else {
        bitmap
    };
    let bitmap = codec::orient(bitmap, turn_later);
    let bitmap = if plan.canvas == plan.scaled {
        bitmap
    } else {
        pad(bitmap, &plan, format)
    };
    let bitmap = if format == OutputFormat::Jpeg {
        codec::flatten(bitmap)
    } else {
        bitmap
    };
    let resized = Instant::now();

    let effort = Effort {
        quality: params.quality,
        speed: params.speed,
    };
    let bytes = encode::encode(&bitmap, format, effort)?;
    let encoded = Instant::now();

    Ok(Resized {
        input: ImageFacts {
            format: input_format,
            width: oriented.0,
            height: oriented.1,
            bytes: input.len() as u64,
        },
        output: ImageFacts {
            format: format.as_image_format(),
            width: bitmap.width,
            height: bitmap.height,
            bytes: bytes.len() as u64,
        },
        format,
        bytes,
        timings: Timings {
            decode: decoded - started,
            resize: resized - decoded,
            encode: encoded - resized,
        },
    })
}

fn pixel_type(layout: Layout) -> fr::PixelType {
    match layout {
        Layout::L8 => fr::PixelType::U8,
        Layout::La8 => fr::PixelType::U8x2,
        Layout::Rgb8 => fr::PixelType::U8x3,
        Layout::Rgba8 => fr::PixelType::U8x4,
    }
}

fn resample(bitmap: Bitmap, crop: Option<Crop>, size: (u32, u32)) -> Result<Bitmap, ResizeError> {
    let layout = bitmap.layout;
    let mut src = Image::from_vec_u8(
        bitmap.width,
        bitmap.height,
        bitmap.pixels,
        pixel_type(layout),
    )
    .map_err(|e| internal(format!("source bitmap: {e}")))?;
    let mut dst = Image::new(size.0, size.1, pixel_type(layout));
    // Alpha is premultiplied in place here rather than by the resizer, which would hold a
    // premultiplied copy of the whole source beside it.
    let mul_div = fr::MulDiv::default();
    if layout.has_alpha() {
        mul_div
            .multiply_alpha_inplace(&mut src)
            .map_err(|e| internal(format!("premultiplying: {e}")))?;
    }
    let mut options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(crate::lanczos::filter()))
        .use_alpha(false);
    if let Some(c) = crop {
        options = options.crop(c.left, c.top, c.width, c.height);
    }
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| internal(format!("resampling: {e}")))?;
    drop(src);
    if layout.has_alpha() {
        mul_div
            .divide_alpha_inplace(&mut dst)
            .map_err(|e| internal(format!("unpremultiplying: {e}")))?;
    }
    Ok(Bitmap {
        width: size.0,
        height: size.1,
        layout,
        pixels: dst.into_vec(),
    })
}

/// Places the scaled image on the `contain` canvas: transparent padding where the output
/// format has alpha, white where it does not.
fn pad(scaled: Bitmap, plan: &Plan, format: OutputFormat) -> Bitmap {
    let layout = if format == OutputFormat::Jpeg {
        scaled.layout
    } else {
        scaled.layout.with_alpha()
    };
    let channels = layout.channels();
    let fill: &[u8] = match (layout, format) {
        (_, OutputFormat::Jpeg) => &[255, 255, 255],
        _ => &[0, 0, 0, 0],
    };
    let (cw, ch) = plan.canvas;
    let mut pixels = vec![0u8; cw as usize * ch as usize * channels];
    for px in pixels.chunks_exact_mut(channels) {
        px.copy_from_slice(&fill[..channels]);
    }
    let src_channels = scaled.layout.channels();
    let row_len = scaled.width as usize;
    for (y, row) in scaled
        .pixels
        .chunks_exact(row_len * src_channels)
        .enumerate()
    {
        let dy = y + plan.offset.1 as usize;
        let start = (dy * cw as usize + plan.offset.0 as usize) * channels;
        let dst_row = &mut pixels[start..start + row_len * channels];
        if src_channels == channels {
            dst_row.copy_from_slice(row);
        } else {
            // Opaque source gaining an alpha channel.
            for (d, s) in dst_row
                .chunks_exact_mut(channels)
                .zip(row.chunks_exact(src_channels))
            {
                d[..src_channels].copy_from_slice(s);
                d[channels - 1] = 255;
            }
        }
    }
    Bitmap {
        width: cw,
        height: ch,
        layout,
        pixels,
    }
}

fn internal(message: String) -> ResizeError {
    ResizeError::new(ErrorCode::Internal, message)
}
