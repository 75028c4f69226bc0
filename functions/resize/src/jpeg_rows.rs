//! RGB as the rows jpeg-encoder reads for a 4:2:0 JPEG, with each 2×2 block's chroma
//! averaged here, once, from its summed RGB. The encoder is then told to take each block's
//! first chroma value (`ChromaSubsamplingMethod::Nearest`) instead of averaging: its
//! averaging divides every chroma value by a run-time count and converts each pixel's
//! chroma first, a quarter of which is needed.

use jpeg_encoder::{ImageBuffer, JpegColorType};

/// Only rows and columns of even index carry chroma (the ones sampling reads); the others
/// are filled with a neutral value. Use with `SamplingFactor::F_2_2` and
/// `ChromaSubsamplingMethod::Nearest` only.
pub(crate) struct Rgb420<'a> {
    pub pixels: &'a [u8],
    pub width: u16,
    pub height: u16,
}

/// BT.601 full range in 16-bit fixed point (JFIF), as the encoder's own conversion.
const Y: [i32; 3] = [19_595, 38_470, 7_471];
const CB: [i32; 3] = [-11_059, -21_709, 32_768];
const CR: [i32; 3] = [32_768, -27_439, -5_329];

#[inline]
fn luma(p: &[u8]) -> u8 {
    let v = Y[0] * i32::from(p[0]) + Y[1] * i32::from(p[1]) + Y[2] * i32::from(p[2]);
    ((v + 0x7FFF) >> 16) as u8
}

/// A chroma value from the RGB sums of four pixels (hence 18 bits of scale).
#[inline]
fn chroma(k: &[i32; 3], sums: [i32; 3]) -> u8 {
    let v = k[0] * sums[0] + k[1] * sums[1] + k[2] * sums[2] + (128 << 18) + (1 << 17);
    (v >> 18).clamp(0, 255) as u8
}

impl ImageBuffer for Rgb420<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let (w, h) = (usize::from(self.width), usize::from(self.height));
        let row = |y: usize| &self.pixels[y * w * 3..(y + 1) * w * 3];
        let top = row(usize::from(y));
        // Each row's values written into space made once: an `extend` per value or per
        // pair checks capacity every time, which costs more than the conversion.
        let [ys, cb, cr, _] = buffers;
        for (out, p) in grow(ys, w, 0).iter_mut().zip(top.chunks_exact(3)) {
            *out = luma(p);
        }
        let (cb, cr) = (grow(cb, w, 128), grow(cr, w, 128));
        if y % 2 == 1 {
            return;
        }
        // The last row and column of an odd size pair with themselves, as the encoder's
        // padding repeats them.
        let bottom = row((usize::from(y) + 1).min(h - 1));
        let pairs = top
            .chunks(6)
            .zip(bottom.chunks(6))
            .zip(cb.chunks_mut(2).zip(cr.chunks_mut(2)));
        for ((t, b), (cb, cr)) in pairs {
            // An odd width's last column (three bytes) counts twice.
            let second = if t.len() == 6 { 3 } else { 0 };
            let sums: [i32; 3] = std::array::from_fn(|c| {
                [t[c], t[second + c], b[c], b[second + c]]
                    .into_iter()
                    .map(i32::from)
                    .sum()
            });
            set(cb, chroma(&CB, sums));
            set(cr, chroma(&CR, sums));
        }
    }
}

/// Both values of a pair (one at an odd width's end), without a `memset` call for them.
#[inline]
fn set(pair: &mut [u8], v: u8) {
    match pair {
        [a, b] => (*a, *b) = (v, v),
        [a] => *a = v,
        _ => {}
    }
}

/// Lengthens `v` by `n` values of `fill` and gives the new part.
fn grow(v: &mut Vec<u8>, n: usize, fill: u8) -> &mut [u8] {
    let start = v.len();
    v.resize(start + n, fill);
    &mut v[start..]
}

#[cfg(test)]
mod tests {
    use super::Rgb420;
    use imgfleet_tests::quality::psnr_of_samples as psnr;
    use jpeg_encoder::{ChromaSubsamplingMethod, ColorType, Encoder, SamplingFactor};

    fn decode(jpeg: &[u8]) -> Vec<u8> {
        jpeg_decoder::Decoder::new(jpeg).decode().unwrap()
    }

    #[test]
    fn prepared_chroma_encodes_like_the_encoders_own_averaging() {
        // Odd sizes: the last row and column pair with themselves.
        for (w, h) in [(301u16, 203u16), (64, 48), (17, 9), (1, 1)] {
            let rgb = imgfleet_tests::images::photo(u32::from(w), u32::from(h), 3).into_raw();
            let mut own = Vec::new();
            let mut encoder = Encoder::new(&mut own, 80);
            encoder.set_sampling_factor(SamplingFactor::F_2_2);
            encoder.set_chroma_subsampling_method(ChromaSubsamplingMethod::Average);
            encoder.encode(&rgb, w, h, ColorType::Rgb).unwrap();
            let mut prepared = Vec::new();
            let mut encoder = Encoder::new(&mut prepared, 80);
            encoder.set_sampling_factor(SamplingFactor::F_2_2);
            encoder.set_chroma_subsampling_method(ChromaSubsamplingMethod::Nearest);
            encoder
                .encode_image(Rgb420 {
                    pixels: &rgb,
                    width: w,
                    height: h,
                })
                .unwrap();
            let (own, prepared) = (decode(&own), decode(&prepared));
            assert_eq!(own.len(), prepared.len());
            let db = psnr(&own, &prepared);
            assert!(db > 45.0, "{w}x{h}: {db:.1} dB");
            let (to_source, own_to_source) = (psnr(&prepared, &rgb), psnr(&own, &rgb));
            assert!(
                to_source > own_to_source - 0.2,
                "{w}x{h}: {to_source:.2} dB vs {own_to_source:.2} dB from the source"
            );
        }
    }
}
