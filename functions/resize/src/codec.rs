//! Decoding and encoding, on top of the `image` crate, in the four 8-bit pixel layouts
//! the resampler works in.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, metadata::Orientation};

use crate::error::{ErrorCode, ResizeError};
use crate::limits::Limits;
use crate::params::ImageFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    L8,
    La8,
    Rgb8,
    Rgba8,
}

impl Layout {
    pub(crate) fn channels(self) -> usize {
        match self {
            Self::L8 => 1,
            Self::La8 => 2,
            Self::Rgb8 => 3,
            Self::Rgba8 => 4,
        }
    }

    pub(crate) fn has_alpha(self) -> bool {
        matches!(self, Self::La8 | Self::Rgba8)
    }

    pub(crate) fn with_alpha(self) -> Self {
        match self {
            Self::L8 | Self::La8 => Self::La8,
            Self::Rgb8 | Self::Rgba8 => Self::Rgba8,
        }
    }

    pub(crate) fn color_type(self) -> image::ExtendedColorType {
        match self {
            Self::L8 => image::ExtendedColorType::L8,
            Self::La8 => image::ExtendedColorType::La8,
            Self::Rgb8 => image::ExtendedColorType::Rgb8,
            Self::Rgba8 => image::ExtendedColorType::Rgba8,
        }
    }
}

/// An 8-bit bitmap, tightly packed, rows top to bottom.
#[derive(Debug, Clone)]
pub(crate) struct Bitmap {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub pixels: Vec<u8>,
}

/// What the header says, known before any pixel is decoded.
pub(crate) struct Probe<'a> {
    pub format: ImageFormat,
    /// Size as stored, before EXIF orientation.
    pub stored: (u32, u32),
    pub orientation: Orientation,
    /// The embedded ICC profile, if any (see `colour`).
    pub icc: Option<Vec<u8>>,
    decoder: Box<dyn ImageDecoder + 'a>,
}

impl Probe<'_> {
    /// Size as displayed, after EXIF orientation.
    pub fn oriented(&self) -> (u32, u32) {
        let (w, h) = self.stored;
        if swaps_sides(self.orientation) {
            (h, w)
        } else {
            (w, h)
        }
    }
}

fn image_format(f: image::ImageFormat) -> Option<ImageFormat> {
    match f {
        image::ImageFormat::Jpeg => Some(ImageFormat::Jpeg),
        image::ImageFormat::Png => Some(ImageFormat::Png),
        image::ImageFormat::WebP => Some(ImageFormat::Webp),
        image::ImageFormat::Gif => Some(ImageFormat::Gif),
        _ => None,
    }
}

fn decode_error(e: image::ImageError) -> ResizeError {
    match e {
        image::ImageError::Limits(l) => ResizeError::new(
            ErrorCode::MemoryLimitExceeded,
            format!("decoding needs more memory than allowed: {l}"),
        ),
        image::ImageError::Unsupported(u) => {
            ResizeError::new(ErrorCode::UnsupportedFormat, u.to_string())
        }
        other => ResizeError::new(
            ErrorCode::CorruptImage,
            format!("the image could not be decoded: {other}"),
        ),
    }
}

/// Reads the header only: format, size and orientation, with pixel and allocation limits
/// already armed in the decoder.
pub(crate) fn probe<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Probe<'a>, ResizeError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .expect("reading from memory cannot fail");
    let format = reader.format().and_then(image_format).ok_or_else(|| {
        ResizeError::new(
            ErrorCode::UnsupportedFormat,
            "the body is not a JPEG, PNG, WebP or GIF image",
        )
    })?;
    if format == ImageFormat::Jpeg && !jpeg_has_end(bytes) {
        // The JPEG decoder would paint the missing part grey and call it a success.
        return Err(ResizeError::new(
            ErrorCode::CorruptImage,
            "the JPEG is truncated (no end-of-image marker)",
        ));
    }
    if format == ImageFormat::Jpeg && !jpeg_sampling_supported(bytes) {
        // The decoder writes past its row buffers on these (a panic natively, a trap in
        // WASM); no mainstream encoder produces them.
        return Err(ResizeError::new(
            ErrorCode::CorruptImage,
            "the JPEG's sampling factors are invalid (a component is sampled finer than the first)",
        ));
    }
    let mut reader = reader;
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_decode_alloc);
    reader.limits(image_limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let stored = decoder.dimensions();
    let pixels = u64::from(stored.0) * u64::from(stored.1);
    if pixels > limits.max_input_pixels {
        return Err(ResizeError::new(
            ErrorCode::TooManyPixels,
            format!(
                "the image is {}x{} ({pixels} pixels); the limit is {} pixels",
                stored.0, stored.1, limits.max_input_pixels
            ),
        ));
    }
    if pixels == 0 {
        return Err(ResizeError::new(
            ErrorCode::CorruptImage,
            "the image has no pixels",
        ));
    }
    // A malformed EXIF block should not fail an otherwise good image.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    // Likewise a malformed profile: the image is shown as sRGB then.
    let icc = decoder.icc_profile().ok().flatten();
    Ok(Probe {
        format,
        stored,
        orientation,
        icc,
        decoder: Box::new(decoder),
    })
}

/// Whether an end-of-image marker follows the image's start-of-scan. Entropy-coded data
/// cannot contain `FF D9` (a data `FF` is always followed by `00`), so this is exact. The
/// scan is found by walking the segments, not by the first `FF DA` in the file: an EXIF
/// thumbnail (or any JPEG inside a metadata segment) has a scan and an end of its own.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let sos = jpeg_segments(bytes)
        .find(|&(marker, ..)| marker == 0xDA)
        .map(|(_, at, _)| at)
        // Segments that do not lead to a scan: the first one anywhere, and the decoder
        // judges the rest.
        .or_else(|| bytes.windows(2).position(|w| w == [0xFF, 0xDA]));
    let Some(sos) = sos else {
        return false;
    };
    // From the end, where the marker is in a whole file: the scan is most of the file.
    bytes[sos..].windows(2).rev().any(|w| w == [0xFF, 0xD9])
}

/// The marker segments before the first scan, as the decoders walk them: (marker, offset of
/// its `FF`, payload). The walk ends after the start-of-scan or at an impossible length.
pub(crate) fn jpeg_segments(bytes: &[u8]) -> impl Iterator<Item = (u8, usize, &[u8])> {
    let mut at = 2;
    std::iter::from_fn(move || {
        while at + 4 <= bytes.len() {
            if bytes[at] != 0xFF || bytes[at + 1] == 0xFF {
                // Fill bytes, or a segment length that lies: resynchronise on the next
                // marker, as the decoders do, so that they cannot find a segment this
                // walk missed.
                at += 1;
                continue;
            }
            let (here, marker) = (at, bytes[at + 1]);
            let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
            let segment = bytes.get(at + 4..at + 2 + len).unwrap_or_default();
            at = if marker == 0xDA || len < 2 {
                bytes.len()
            } else {
                at + 2 + len
            };
            return Some((marker, here, segment));
        }
        None
    })
}

/// The payload of the first start-of-frame segment (any SOFn; DHT, JPG and DAC share the
/// marker range but are not frames).
pub(crate) fn jpeg_frame(bytes: &[u8]) -> Option<&[u8]> {
    let is_frame = |m: u8| (0xC0..=0xCF).contains(&m) && ![0xC4, 0xC8, 0xCC].contains(&m);
    jpeg_segments(bytes)
        .find(|&(marker, ..)| is_frame(marker))
        .map(|(_, _, frame)| frame)
}

/// Whether the frame header's sampling factors are ones the decoder handles: each 1 to 4,
/// and no component sampled finer than the first (found by fuzzing:
/// fuzz/regressions/resize/jpeg-*). `true` when there is no frame header to read; the
/// decoder reports that itself.
fn jpeg_sampling_supported(bytes: &[u8]) -> bool {
    let Some(frame) = jpeg_frame(bytes) else {
        return true;
    };
    let components = frame.get(6..).unwrap_or_default().chunks_exact(3);
    let factors: Vec<(u8, u8)> = components.map(|c| (c[1] >> 4, c[1] & 0x0F)).collect();
    let Some(&(h0, v0)) = factors.first() else {
        return true;
    };
    // Four components (CMYK, YCCK) go to jpeg-decoder (`cmyk_jpeg`), which upsamples from
    // the largest factor of any component; encoders do sample K finer than C.
    let cmyk = factors.len() == 4;
    factors.iter().all(|&(h, v)| {
        (1..=4).contains(&h) && (1..=4).contains(&v) && (cmyk || (h <= h0 && v <= v0))
    })
}

/// Runs a decoder so that a bug in it cannot take the caller down: zune-jpeg's AVX2 IDCT
/// panics on some malformed JPEGs its scalar path (the one WASM builds use) refuses cleanly
/// (fuzz/regressions/resize/jpeg-*). Natively the panic is caught and answered as a corrupt
/// image; in WASM (panic = abort) the inputs known to cause one are refused before decoding.
pub(crate) fn guarded<T>(
    decode: impl FnOnce() -> Result<T, ResizeError>,
) -> Result<T, ResizeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|_| {
        Err(ResizeError::new(
            ErrorCode::CorruptImage,
            "the image could not be decoded: its data is malformed",
        ))
    })
}

/// Decodes all pixels, as stored (the pipeline applies the EXIF orientation), into an 8-bit
/// layout.
pub(crate) fn decode(probe: Probe<'_>) -> Result<Bitmap, ResizeError> {
    let image = guarded(|| DynamicImage::from_decoder(probe.decoder).map_err(decode_error))?;
    Ok(to_bitmap(image))
}

/// Whether `orientation` turns the image a quarter (width and height trade places).
pub(crate) fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// `bitmap` turned and mirrored as `orientation` says, for display.
pub(crate) fn orient(bitmap: Bitmap, orientation: Orientation) -> Bitmap {
    if orientation == Orientation::NoTransforms {
        return bitmap;
    }
    let Bitmap {
        width,
        height,
        layout,
        pixels,
    } = bitmap;
    let mut image: DynamicImage = match layout {
        Layout::L8 => image::GrayImage::from_raw(width, height, pixels).map(Into::into),
        Layout::La8 => image::GrayAlphaImage::from_raw(width, height, pixels).map(Into::into),
        Layout::Rgb8 => image::RgbImage::from_raw(width, height, pixels).map(Into::into),
        Layout::Rgba8 => image::RgbaImage::from_raw(width, height, pixels).map(Into::into),
    }
    .expect("a bitmap's length matches its size");
    image.apply_orientation(orientation);
    to_bitmap(image)
}

pub(crate) fn to_bitmap(image: DynamicImage) -> Bitmap {
    let (width, height) = (image.width(), image.height());
    let (layout, pixels) = match image {
        DynamicImage::ImageLuma8(i) => (Layout::L8, i.into_raw()),
        DynamicImage::ImageLumaA8(i) => (Layout::La8, i.into_raw()),
        DynamicImage::ImageRgb8(i) => (Layout::Rgb8, i.into_raw()),
        DynamicImage::ImageRgba8(i) => (Layout::Rgba8, i.into_raw()),
        DynamicImage::ImageLuma16(_) => (Layout::L8, image.into_luma8().into_raw()),
        DynamicImage::ImageLumaA16(_) => (Layout::La8, image.into_luma_alpha8().into_raw()),
        other if other.color().has_alpha() => (Layout::Rgba8, other.into_rgba8().into_raw()),
        other => (Layout::Rgb8, other.into_rgb8().into_raw()),
    };
    Bitmap {
        width,
        height,
        layout,
        pixels,
    }
}

/// Composites an alpha bitmap over opaque white, for formats without transparency.
pub(crate) fn flatten(bitmap: Bitmap) -> Bitmap {
    let opaque = match bitmap.layout {
        Layout::La8 => Layout::L8,
        Layout::Rgba8 => Layout::Rgb8,
        _ => return bitmap,
    };
    let channels = bitmap.layout.channels();
    let mut pixels = Vec::with_capacity(bitmap.pixels.len() / channels * (channels - 1));
    for px in bitmap.pixels.chunks_exact(channels) {
        let alpha = u32::from(px[channels - 1]);
        for &c in &px[..channels - 1] {
            // c*a + 255*(255-a), divided by 255 with rounding.
            let v = u32::from(c) * alpha + 255 * (255 - alpha);
            pixels.push(((v + 127) / 255) as u8);
        }
    }
    Bitmap {
        layout: opaque,
        pixels,
        ..bitmap
    }
}
