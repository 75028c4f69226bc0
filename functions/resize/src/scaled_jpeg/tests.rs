//! The fast decoder against jpeg-decoder's own DCT-domain scaling of the same files, over
//! the layouts encoders write; and its refusals, which hand the file to the general decoder.

use super::decode;
use crate::codec::{Bitmap, Layout};
use imgfleet_tests::quality::psnr_of_samples as psnr;
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

fn photo(width: u32, height: u32) -> Vec<u8> {
    imgfleet_tests::images::photo(width, height, 7).into_raw()
}

fn encode(width: u16, height: u16, grey: bool, sampling: SamplingFactor, restart: u16) -> Vec<u8> {
    let rgb = photo(u32::from(width), u32::from(height));
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&mut out, 85);
    encoder.set_sampling_factor(sampling);
    if restart > 0 {
        encoder.set_restart_interval(restart);
    }
    if grey {
        let luma: Vec<u8> = rgb
            .chunks(3)
            .map(|p| ((u32::from(p[0]) * 3 + u32::from(p[1]) * 6 + u32::from(p[2])) / 10) as u8)
            .collect();
        encoder
            .encode(&luma, width, height, ColorType::Luma)
            .unwrap();
    } else {
        encoder.encode(&rgb, width, height, ColorType::Rgb).unwrap();
    }
    out
}

/// jpeg-decoder's decode of `jpeg` at 1/`factor`.
fn reference(jpeg: &[u8], factor: u16) -> (u16, u16, Vec<u8>) {
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    d.read_info().unwrap();
    let info = d.info().unwrap();
    let (w, h) = d
        .scale(info.width.div_ceil(factor), info.height.div_ceil(factor))
        .unwrap();
    (w, h, d.decode().unwrap())
}

fn check(jpeg: &[u8], factor: u32, layout: Layout, label: &str) -> f64 {
    let got: Bitmap = decode(jpeg, factor, u64::MAX).unwrap_or_else(|| panic!("{label}: refused"));
    let (w, h, want) = reference(jpeg, factor as u16);
    assert_eq!(
        (got.width, got.height),
        (u32::from(w), u32::from(h)),
        "{label}"
    );
    assert_eq!(got.layout, layout, "{label}");
    let db = psnr(&got.pixels, &want);
    // Both are reduced inverse DCTs of the same coefficients; they differ in rounding and in
    // how subsampled chroma reaches full size.
    assert!(db > 42.0, "{label}: {db:.1} dB against jpeg-decoder");
    db
}

#[test]
fn matches_the_reference_decoder_for_every_sampling_and_scale() {
    let samplings = [
        ("4:4:4", SamplingFactor::F_1_1),
        ("4:2:0", SamplingFactor::F_2_2),
        ("4:2:2", SamplingFactor::F_2_1),
        ("4:4:0", SamplingFactor::F_1_2),
    ];
    for (name, sampling) in samplings {
        // Sizes that are not multiples of the MCU, so edge blocks are cropped.
        let jpeg = encode(517, 389, false, sampling, 0);
        for factor in [2, 4, 8] {
            check(
                &jpeg,
                factor,
                Layout::Rgb8,
                &format!("{name} at 1/{factor}"),
            );
        }
    }
}

#[test]
fn decodes_greyscale_and_restart_intervals() {
    let grey = encode(301, 203, true, SamplingFactor::F_1_1, 0);
    for factor in [2, 4, 8] {
        check(&grey, factor, Layout::L8, &format!("grey at 1/{factor}"));
    }
    for restart in [1, 3, 17] {
        let jpeg = encode(400, 300, false, SamplingFactor::F_2_2, restart);
        check(&jpeg, 4, Layout::Rgb8, &format!("restart every {restart}"));
        let grey = encode(400, 300, true, SamplingFactor::F_1_1, restart);
        check(
            &grey,
            8,
            Layout::L8,
            &format!("grey, restart every {restart}"),
        );
    }
}

#[test]
fn blocks_coded_to_their_last_coefficient_decode_alike() {
    // A photo with faint noise, at quality 100: most blocks then end at position 63 without
    // an end-of-block code, the case the skip tables leave to the one-symbol path. (Strong
    // noise would not do: the reduced transforms differ from jpeg-decoder's in what high
    // frequencies they fold in, which only strong high frequencies make visible.)
    let (w, h) = (203u16, 157u16);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noisy: Vec<u8> = photo(u32::from(w), u32::from(h))
        .into_iter()
        .map(|v| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            v.saturating_add((state % 5) as u8).saturating_sub(2)
        })
        .collect();
    // 4:4:4, where both decoders treat every component alike (at 1/8 they differ on
    // subsampled chroma, by design, which noise at quality 100 brings out).
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&mut out, 100);
    encoder.set_sampling_factor(SamplingFactor::F_1_1);
    encoder.encode(&noisy, w, h, ColorType::Rgb).unwrap();
    for factor in [2, 4, 8] {
        check(&out, factor, Layout::Rgb8, &format!("noisy at 1/{factor}"));
    }
}

#[test]
fn a_flat_block_decodes_to_its_exact_colour() {
    let (w, h) = (64u16, 48u16);
    let rgb: Vec<u8> = [200u8, 40, 90].repeat(usize::from(w) * usize::from(h));
    let mut out = Vec::new();
    Encoder::new(&mut out, 95)
        .encode(&rgb, w, h, ColorType::Rgb)
        .unwrap();
    let got = decode(&out, 8, u64::MAX).expect("decoded");
    assert_eq!((got.width, got.height), (8, 6));
    for px in got.pixels.chunks(3) {
        for (c, want) in px.iter().zip([200u8, 40, 90]) {
            assert!(c.abs_diff(want) <= 2, "{px:?}");
        }
    }
}

#[test]
fn hands_progressive_truncated_and_multi_scan_files_to_the_general_decoder() {
    let rgb = photo(200, 150);
    let mut progressive = Vec::new();
    let mut encoder = Encoder::new(&mut progressive, 85);
    encoder.set_progressive(true);
    encoder.encode(&rgb, 200, 150, ColorType::Rgb).unwrap();
    assert!(decode(&progressive, 4, u64::MAX).is_none(), "progressive");

    let whole = encode(200, 150, false, SamplingFactor::F_2_2, 0);
    assert!(decode(&whole, 4, u64::MAX).is_some());
    let cut = &whole[..whole.len() * 2 / 3];
    assert!(decode(cut, 4, u64::MAX).is_none(), "truncated");
    assert!(decode(&whole, 3, u64::MAX).is_none(), "not a DCT scale");
    assert!(
        decode(&whole, 4, 1000).is_none(),
        "over the allocation limit"
    );
    assert!(
        decode(b"\xFF\xD8\xFF\xD9", 4, u64::MAX).is_none(),
        "no frame"
    );

    let mut cmyk = Vec::new();
    Encoder::new(&mut cmyk, 85)
        .encode(&[0u8; 16 * 16 * 4], 16, 16, ColorType::Cmyk)
        .unwrap();
    assert!(decode(&cmyk, 2, u64::MAX).is_none(), "CMYK");

    // Luma sampled 3× across the chroma: a ratio no power-of-two transform reaches.
    let mut thirds = encode(96, 64, false, SamplingFactor::F_1_1, 0);
    let sof = thirds
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame");
    // Marker, length, precision, height, width, count, then the first component's id and
    // its sampling byte.
    thirds[sof + 11] = 0x31;
    assert!(decode(&thirds, 8, u64::MAX).is_none(), "3:1 sampling");

    // jpeg-encoder writes 4:1:1 as one scan per component.
    let multi_scan = encode(200, 150, false, SamplingFactor::F_4_1, 0);
    assert!(
        decode(&multi_scan, 4, u64::MAX).is_none(),
        "one scan per component"
    );
}

#[test]
fn damaged_files_never_panic() {
    let whole = encode(160, 120, false, SamplingFactor::F_2_2, 4);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut decoded = 0;
    for _ in 0..3000 {
        let mut damaged = whole.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % damaged.len() as u64) as usize;
            damaged[at] = next() as u8;
        }
        if let Some(b) = decode(&damaged, [2, 4, 8][(next() % 3) as usize], u64::MAX) {
            assert_eq!(
                b.pixels.len(),
                (b.width * b.height) as usize * b.layout.channels()
            );
            decoded += 1;
        }
    }
    // Most single-byte changes land in the entropy-coded data and still decode (to wrong
    // pixels), which the general decoder would do too.
    assert!(decoded > 100, "{decoded}");
}
