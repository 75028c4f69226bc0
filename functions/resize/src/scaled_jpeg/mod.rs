//! A fast JPEG decoder for shrink-on-load: baseline (and extended sequential) Huffman
//! JPEGs, greyscale or three-component, decoded straight to 1/2, 1/4 or 1/8 of their size.
//!
//! Entropy decoding is where a shrunk decode spends its time (every coefficient's code
//! must be read even when only the DC term is used), so this decoder reads the data eight
//! bytes at a time and most coefficients in one table lookup, keeps only the frequencies
//! the reduced inverse DCT uses (moving over the others two or three to a lookup), and
//! decodes subsampled chroma with a larger reduced transform (up to 4-point; beyond that,
//! a 4-point one with each pixel repeated) instead of upsampling a small one afterwards. It is deliberately narrow: anything else
//! (progressive, CMYK, 12-bit, multi-scan files, corrupt or truncated data) answers `None`
//! and the general decoder takes over, so an unusual file costs time, never correctness.

mod bits;
mod headers;
mod huffman;
mod idct;

use bits::BitReader;
use headers::Headers;
use huffman::{Ac, HuffmanTable, Skipped};
use idct::Bases;

use crate::codec::{Bitmap, Layout};

/// Natural (row-major) index of each zigzag position.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];
/// Where a coefficient the reduced transform does not use is written (and ignored).
const UNUSED: u8 = 64;

/// One component's share of the decode.
struct Plane<'h> {
    dc: &'h HuffmanTable,
    ac: &'h HuffmanTable,
    quant: &'h [u16; 64],
    /// Blocks per MCU across and down.
    h: usize,
    v: usize,
    /// Pixels each block's transform gives across and down...
    nx: usize,
    ny: usize,
    /// ...and how many times each is repeated to reach the luma's resolution.
    rx: usize,
    ry: usize,
    /// Per zigzag position: the coefficient's natural index if used, else `UNUSED`.
    slot: [u8; 64],
    /// The last zigzag position the transform uses; the rest of a block is only skipped.
    last_used: usize,
    pixels: Vec<u8>,
    stride: usize,
    prediction: i32,
}

/// Decodes `data` at 1/`factor` (2, 4 or 8) of its size: `ceil(width / factor)` by
/// `ceil(height / factor)`, as stored (no EXIF turn). `None` when this decoder does not
/// handle the file or finds it damaged.
pub(crate) fn decode(data: &[u8], factor: u32, max_alloc: u64) -> Option<Bitmap> {
    let n = match factor {
        2 => 4,
        4 => 2,
        8 => 1,
        _ => return None,
    };
    let headers = headers::parse(data)?;
    let rgb_ids = headers.components.iter().map(|c| c.id).eq(*b"RGB");
    if headers.components.len() == 3 && (headers.adobe_transform == Some(0) || rgb_ids) {
        return None;
    }
    let hmax = headers.components.iter().map(|c| c.h).max()?;
    let vmax = headers.components.iter().map(|c| c.v).max()?;
    let interleaved = headers.components.len() > 1;
    let (mcux, mcuy) = if interleaved {
        (
            headers.width.div_ceil(8 * hmax),
            headers.height.div_ceil(8 * vmax),
        )
    } else {
        (headers.width.div_ceil(8), headers.height.div_ceil(8))
    };
    let (plane_w, plane_h) = if interleaved {
        (mcux * hmax * n, mcuy * vmax * n)
    } else {
        (mcux * n, mcuy * n)
    };
    let (out_w, out_h) = (
        (headers.width * n).div_ceil(8),
        (headers.height * n).div_ceil(8),
    );
    // In u64: on wasm32 the product of two 16-bit sides can overflow usize.
    let planes_bytes = plane_w as u64 * plane_h as u64 * headers.components.len() as u64;
    if planes_bytes + out_w as u64 * out_h as u64 * 3 > max_alloc {
        return None;
    }
    let mut planes = Vec::with_capacity(headers.components.len());
    for c in &headers.components {
        let (h, v) = if interleaved { (c.h, c.v) } else { (1, 1) };
        if hmax % c.h != 0 || vmax % c.v != 0 {
            return None;
        }
        let (nx, ny) = if interleaved {
            (n * hmax / c.h, n * vmax / c.v)
        } else {
            (n, n)
        };
        // Sampling ratios of 3 (rare, legal) would need 3- or 6-point transforms.
        if nx > 8 || ny > 8 || !nx.is_power_of_two() || !ny.is_power_of_two() {
            return None;
        }
        // Only at 1/2: chroma at half the luma's resolution, a 4-point transform repeated
        // twice, costs a fraction of an 8-point one, and a 1/2 decode is chosen only when
        // the resampler then averages at least two pixels into one.
        let (nx, rx) = if nx == 8 { (4, 2) } else { (nx, 1) };
        let (ny, ry) = if ny == 8 { (4, 2) } else { (ny, 1) };
        let mut slot = [UNUSED; 64];
        for (k, s) in slot.iter_mut().enumerate() {
            let natural = ZIGZAG[k];
            if natural % 8 < nx && natural / 8 < ny {
                *s = natural as u8;
            }
        }
        let last_used = slot.iter().rposition(|&s| s != UNUSED).unwrap_or(0);
        planes.push(Plane {
            dc: headers.dc[c.dc].as_ref()?,
            ac: headers.ac[c.ac].as_ref()?,
            quant: headers.quant[c.quant].as_ref()?,
            h,
            v,
            nx,
            ny,
            rx,
            ry,
            slot,
            last_used,
            pixels: vec![0; plane_w * plane_h],
            stride: plane_w,
            prediction: 0,
        });
    }
    decode_scan(&headers, &mut planes, mcux, mcuy)?;
    Some(to_bitmap(planes, out_w, out_h))
}

fn decode_scan(headers: &Headers, planes: &mut [Plane], mcux: usize, mcuy: usize) -> Option<()> {
    let bases = Bases::new();
    let mut block = [0u8; 64];
    let mut reader = BitReader::new(headers.scan);
    let mut coefficients = [0i32; 65];
    let interval = headers.restart_interval;
    for mcu in 0..mcux * mcuy {
        if interval > 0 && mcu > 0 && mcu % interval == 0 {
            let marker = 0xD0 + ((mcu / interval - 1) % 8) as u8;
            if !reader.restart(marker) {
                return None;
            }
            for p in planes.iter_mut() {
                p.prediction = 0;
            }
        }
        let (mx, my) = (mcu % mcux, mcu / mcux);
        for p in planes.iter_mut() {
            for by in 0..p.v {
                for bx in 0..p.h {
                    let only_dc = decode_block(&mut reader, p, &mut coefficients)?;
                    let x = (mx * p.h + bx) * p.nx * p.rx;
                    let y = (my * p.v + by) * p.ny * p.ry;
                    let at = y * p.stride + x;
                    let used: &[i32; 64] = coefficients[..64].try_into().expect("64 coefficients");
                    if p.rx == 1 && p.ry == 1 {
                        bases.transform(used, p.nx, p.ny, &mut p.pixels[at..], p.stride, only_dc);
                    } else {
                        bases.transform(used, p.nx, p.ny, &mut block, 8, only_dc);
                        repeat(&block, p, at);
                    }
                    if only_dc && !idct::always_transformed(p.nx, p.ny) {
                        coefficients[0] = 0;
                    } else {
                        idct::fill(0, p.nx, p.ny, &mut coefficients, 8);
                    }
                }
            }
        }
    }
    (!reader.overran()).then_some(())
}

/// Decodes one block's coefficients into `coefficients` (dequantized, natural order, only
/// those the plane's transform uses). Whether only the DC term is non-zero among them;
/// `None` for data no table decodes.
#[inline]
fn decode_block(
    reader: &mut BitReader,
    p: &mut Plane,
    coefficients: &mut [i32; 65],
) -> Option<bool> {
    if reader.count() < 32 {
        reader.refill();
    }
    p.prediction = p.prediction.wrapping_add(p.dc.decode_dc(reader)?);
    coefficients[0] = p.prediction.wrapping_mul(i32::from(p.quant[0]));
    let mut only_dc = true;
    let mut k = 1usize;
    while k < 64 {
        if k > p.last_used {
            match p.ac.skip_ac(reader, k) {
                Skipped::End => break,
                Skipped::Slow(at) => k = at,
            }
        }
        if reader.count() < 32 {
            reader.refill();
        }
        let (run, value) = match p.ac.decode_ac(reader)? {
            Ac::Coefficient { run, value } => (run, value),
            Ac::Symbol(symbol) => {
                let (run, size) = (u32::from(symbol >> 4), u32::from(symbol & 15));
                if size == 0 {
                    if run == 15 {
                        k += 16;
                        continue;
                    }
                    break;
                }
                (run, reader.receive_extend(size))
            }
        };
        k += run as usize;
        if k > 63 {
            return None;
        }
        // Written either way (an unused one to the spare last entry): whether a position
        // is used follows the data's runs, a branch no predictor learns.
        let slot = p.slot[k];
        coefficients[usize::from(slot)] = value.wrapping_mul(i32::from(p.quant[k]));
        only_dc &= slot == UNUSED;
        k += 1;
    }
    Some(only_dc)
}

/// Writes a transformed block into its plane with each pixel repeated `rx × ry` times.
#[inline]
fn repeat(block: &[u8; 64], p: &mut Plane, at: usize) {
    for (y, row) in block.chunks(8).take(p.ny).enumerate() {
        for r in 0..p.ry {
            let start = at + (y * p.ry + r) * p.stride;
            let out = &mut p.pixels[start..start + p.nx * p.rx];
            for (o, &v) in out.chunks_exact_mut(p.rx).zip(&row[..p.nx]) {
                // Chroma is repeated only in pairs (see `decode`); no `memset` per pixel.
                match o {
                    [a, b] => (*a, *b) = (v, v),
                    _ => o.fill(v),
                }
            }
        }
    }
}

/// Crops the planes to the image and converts YCbCr to RGB (BT.601 full range, as JFIF).
fn to_bitmap(planes: Vec<Plane>, width: usize, height: usize) -> Bitmap {
    let mut pixels;
    let layout;
    if let [y] = &planes[..] {
        layout = Layout::L8;
        pixels = Vec::with_capacity(width * height);
        for row in y.pixels.chunks(y.stride).take(height) {
            pixels.extend_from_slice(&row[..width]);
        }
    } else {
        layout = Layout::Rgb8;
        pixels = vec![0u8; width * height * 3];
        let (y, cb, cr) = (&planes[0], &planes[1], &planes[2]);
        for (row, out) in pixels.chunks_exact_mut(width * 3).enumerate() {
            let at = row * y.stride;
            let ys = &y.pixels[at..at + width];
            let cbs = &cb.pixels[at..at + width];
            let crs = &cr.pixels[at..at + width];
            for (((px, &l), &b), &r) in out.chunks_exact_mut(3).zip(ys).zip(cbs).zip(crs) {
                let l = (i32::from(l) << 16) + (1 << 15);
                let (b, r) = (i32::from(b) - 128, i32::from(r) - 128);
                px[0] = ((l + 91_881 * r) >> 16).clamp(0, 255) as u8;
                px[1] = ((l - 22_554 * b - 46_802 * r) >> 16).clamp(0, 255) as u8;
                px[2] = ((l + 116_130 * b) >> 16).clamp(0, 255) as u8;
            }
        }
    }
    Bitmap {
        width: width as u32,
        height: height as u32,
        layout,
        pixels,
    }
}

#[cfg(test)]
mod tests;
