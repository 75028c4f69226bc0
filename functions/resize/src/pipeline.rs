//! The resize pipeline: check, probe, plan, decode, resample, encode.

use std::time::{Duration, Instant};

use fast_image_resize::{self as fr, images::Image};

use crate::codec::{self, Bitmap, Layout};
use crate::colour;
use crate::encode::{self, Effort};
use crate::error::{ErrorCode, ResizeError};
use crate::geometry::{self, Plan};
use crate::limits::Limits;
use crate::params::{FormatChoice, ImageFormat, OutputFormat, ResizeParams, negotiate};
use crate::shrink;

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
pub fn resize(
    input: &[u8],
    params: &ResizeParams,
    accept: Option<&str>,
    limits: &Limits,
) -> Result<Resized, ResizeError> {
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
        ImageFormat::Jpeg => shrink::factor(oriented, &plan),
        _ => 1,
    };
    let shrunk = if shrink > 1 {
        let orientation = probe.orientation;
        codec::guarded(|| shrink::decode(input, shrink, orientation, limits.max_decode_alloc))?
    } else {
        None
    };
    let bitmap = match shrunk {
        Some(b) => b,
        None => codec::decode(probe)?,
    };
    let bitmap = colour::to_srgb(bitmap, icc.as_deref());
    let decoded = Instant::now();
    let plan = plan.for_source(oriented, (bitmap.width, bitmap.height));

    let bitmap = if plan.is_identity((bitmap.width, bitmap.height)) {
        bitmap
    } else {
        resample(bitmap, &plan, format)?
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

fn resample(bitmap: Bitmap, plan: &Plan, format: OutputFormat) -> Result<Bitmap, ResizeError> {
    let layout = bitmap.layout;
    let src = Image::from_vec_u8(
        bitmap.width,
        bitmap.height,
        bitmap.pixels,
        pixel_type(layout),
    )
    .map_err(|e| internal(format!("source bitmap: {e}")))?;
    let mut dst = Image::new(plan.scaled.0, plan.scaled.1, pixel_type(layout));
    let mut options =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3));
    if let Some(c) = plan.crop {
        options = options.crop(c.left, c.top, c.width, c.height);
    }
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| internal(format!("resampling: {e}")))?;
    let scaled = Bitmap {
        width: plan.scaled.0,
        height: plan.scaled.1,
        layout,
        pixels: dst.into_vec(),
    };
    Ok(if plan.canvas == plan.scaled {
        scaled
    } else {
        pad(scaled, plan, format)
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
