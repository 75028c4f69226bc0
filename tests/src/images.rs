//! Image generators. Everything is deterministic (seeded), so a failure reproduces.

use image::{ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};

/// Small deterministic PRNG (xorshift*) so fixtures need no extra dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A photograph-like image: smooth lighting gradients, a few soft shapes, fine texture and
/// sensor noise, so JPEG sizes and codec work resemble a real photo's rather than a flat fill's.
pub fn photo(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    let blobs: Vec<(f32, f32, f32, [f32; 3])> = (0..6)
        .map(|_| {
            (
                rng.below(width as u64) as f32,
                rng.below(height as u64) as f32,
                (width.min(height) as f32) * (0.1 + rng.below(30) as f32 / 100.0),
                [
                    rng.below(255) as f32,
                    rng.below(255) as f32,
                    rng.below(255) as f32,
                ],
            )
        })
        .collect();
    let base = [
        rng.below(120) as f32 + 60.0,
        rng.below(120) as f32 + 60.0,
        rng.below(120) as f32 + 60.0,
    ];
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let mut c = [
            base[0] * (0.6 + 0.4 * fx),
            base[1] * (0.7 + 0.3 * fy),
            base[2] * (1.0 - 0.3 * fx * fy),
        ];
        for (bx, by, r, col) in &blobs {
            let d2 = ((x as f32 - bx).powi(2) + (y as f32 - by).powi(2)) / (r * r);
            let w = (-d2).exp();
            for i in 0..3 {
                c[i] = c[i] * (1.0 - w) + col[i] * w;
            }
        }
        let texture = ((x as f32 * 0.35).sin() * (y as f32 * 0.23).cos()) * 6.0;
        let noise = (hash2(x, y, seed) % 17) as f32 - 8.0;
        Rgb(c.map(|v| (v + texture + noise).clamp(0.0, 255.0) as u8))
    })
}

fn hash2(x: u32, y: u32, seed: u64) -> u64 {
    let mut h = (x as u64) << 32 | y as u64;
    h ^= seed;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h.wrapping_mul(0xc4ce_b9fe_1a85_ec53) >> 40
}

/// An image whose top-left quadrant is red and the rest blue: where the red ends up
/// tells which way the image was turned.
pub fn quadrant_marker(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        if x < width / 2 && y < height / 2 {
            Rgb([230, 20, 20])
        } else {
            Rgb([20, 20, 230])
        }
    })
}

pub fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("encoding a JPEG fixture");
    out
}

pub fn progressive_jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, quality);
    enc.set_progressive(true);
    enc.encode(
        img.as_raw(),
        img.width() as u16,
        img.height() as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .expect("encoding a progressive JPEG fixture");
    out
}

/// A CMYK JPEG (Adobe APP14, as print workflows write them) of the given RGB image.
pub fn cmyk_jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let cmyk: Vec<u8> = img
        .pixels()
        .flat_map(|Rgb([r, g, b])| {
            let k = 255 - *r.max(g).max(b);
            let ch = |c: u8| {
                if k == 255 {
                    0
                } else {
                    ((255 - c - k) as u32 * 255 / (255 - k) as u32) as u8
                }
            };
            [ch(*r), ch(*g), ch(*b), k]
        })
        .collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(
            &cmyk,
            img.width() as u16,
            img.height() as u16,
            jpeg_encoder::ColorType::Cmyk,
        )
        .expect("encoding a CMYK JPEG fixture");
    out
}

/// Inserts an EXIF block carrying `orientation` (1..=8) right after the JPEG's SOI marker.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "not a JPEG");
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2A\x00\x00\x00\x08"); // big-endian TIFF, IFD at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let payload_len = 2 + 6 + tiff.len();
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&(payload_len as u16).to_be_bytes());
    out.extend_from_slice(b"Exif\x00\x00");
    out.extend_from_slice(&tiff);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Embeds an ICC profile right after the JPEG's SOI marker (one APP2 `ICC_PROFILE` chunk,
/// as cameras write profiles under 64 KB).
pub fn jpeg_with_icc(jpeg: &[u8], icc: &[u8]) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "not a JPEG");
    let payload_len = 2 + 12 + 2 + icc.len();
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE2];
    out.extend_from_slice(&(payload_len as u16).to_be_bytes());
    out.extend_from_slice(b"ICC_PROFILE\x00");
    out.extend_from_slice(&[1, 1]); // chunk 1 of 1
    out.extend_from_slice(icc);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// An RGB PNG carrying an ICC profile (iCCP chunk).
pub fn png_with_icc(img: &RgbImage, icc: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = image::codecs::png::PngEncoder::new(&mut out);
    encoder
        .set_icc_profile(icc)
        .expect("PNG takes ICC profiles");
    encoder
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("encoding a PNG fixture");
    out
}

/// A grey-and-alpha PNG: a horizontal grey ramp, opaque on the left half, transparent on
/// the right.
pub fn png_grey_alpha(width: u32, height: u32) -> Vec<u8> {
    let raw: Vec<u8> = (0..width * height)
        .flat_map(|i| {
            let x = i % width;
            let grey = (x * 255 / width) as u8;
            [grey, if x < width / 2 { 255 } else { 0 }]
        })
        .collect();
    encode_png(&raw, width, height, image::ExtendedColorType::La8)
}

/// Width and height from an AVIF's `ispe` (image spatial extents) property.
pub fn avif_dimensions(avif: &[u8]) -> Option<(u32, u32)> {
    let at = avif.windows(4).position(|w| w == b"ispe")?;
    // "ispe", version and flags (4), width (4), height (4)
    let field = |o: usize| {
        avif.get(at + o..at + o + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    Some((field(8)?, field(12)?))
}

/// A JPEG whose frame header claims `width`×`height` but whose data is tiny: a
/// decompression bomb that must be refused from the header alone.
pub fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg(&photo(16, 16, 1), 80);
    let sof = bytes
        .windows(2)
        .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
        .expect("JPEG has a frame header");
    // FF C0, length (2), precision (1), height (2), width (2)
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

pub fn png_rgba(img: &RgbaImage) -> Vec<u8> {
    encode_png(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgba8,
    )
}

pub fn png_rgb(img: &RgbImage) -> Vec<u8> {
    encode_png(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
}

fn encode_png(raw: &[u8], w: u32, h: u32, ct: image::ExtendedColorType) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(raw, w, h, ct)
        .expect("encoding a PNG fixture");
    out
}

/// A 16-bit-per-channel RGB PNG of the image (each 8-bit value scaled to 16 bits).
pub fn png16(img: &RgbImage) -> Vec<u8> {
    let raw: Vec<u8> = img
        .as_raw()
        .iter()
        .flat_map(|&v| (u16::from(v) * 257).to_be_bytes())
        .collect();
    encode_png_raw(
        &raw,
        img.width(),
        img.height(),
        png::ColorType::Rgb,
        png::BitDepth::Sixteen,
        None,
    )
}

/// A palette PNG with a transparent entry: index 0 transparent, 1 red, 2 blue.
pub fn png_palette(width: u32, height: u32) -> Vec<u8> {
    let idx: Vec<u8> = (0..width * height)
        .map(|i| ((i % width) * 3 / width) as u8)
        .collect();
    encode_png_raw(
        &idx,
        width,
        height,
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        Some((vec![0, 0, 0, 255, 0, 0, 0, 0, 255], vec![0, 255, 255])),
    )
}

fn encode_png_raw(
    raw: &[u8],
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<(Vec<u8>, Vec<u8>)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some((plte, trns)) = palette {
            enc.set_palette(plte);
            enc.set_trns(trns);
        }
        let mut writer = enc.write_header().expect("PNG header");
        writer.write_image_data(raw).expect("PNG data");
    }
    out
}

/// An animated GIF, one frame per image, 100 ms each.
pub fn animated_gif(frames: &[RgbaImage]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        encoder
            .encode_frames(frames.iter().map(|f| {
                image::Frame::from_parts(f.clone(), 0, 0, image::Delay::from_numer_denom_ms(100, 1))
            }))
            .expect("encoding an animated GIF fixture");
    }
    out
}

pub fn gif(img: &RgbaImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::gif::GifEncoder::new(&mut out)
        .encode(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgba8,
        )
        .expect("encoding a GIF fixture");
    out
}

pub fn webp(img: &RgbaImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut out)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgba8,
        )
        .expect("encoding a WebP fixture");
    out
}

/// A half-transparent image: opaque photo on the left, fully transparent on the right.
pub fn half_transparent(width: u32, height: u32) -> RgbaImage {
    let p = photo(width, height, 7);
    RgbaImage::from_fn(width, height, |x, y| {
        let Rgb([r, g, b]) = *p.get_pixel(x, y);
        Rgba([r, g, b, if x < width / 2 { 255 } else { 0 }])
    })
}

pub const SVG: &[u8] = br#"<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><rect width="100" height="100"/></svg>"#;

/// Decodes any fixture or output (panics with context on failure: tests want that).
pub fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory(bytes).expect("output decodes")
}

/// Whether the bytes carry EXIF or other metadata blocks we promise to strip.
pub fn has_metadata(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w == b"Exif\x00\x00")
        || bytes.windows(4).any(|w| w == b"eXIf" || w == b"iCCP")
}
