//! Native correctness of the resize pipeline on generated images.

use image::GenericImageView;
use imgfleet_resize::params::FormatChoice;
use imgfleet_resize::{ErrorCode, Fit, Limits, OutputFormat, ResizeParams, resize};
use imgfleet_tests::images::{self, decode, has_metadata};

fn params(query: &str) -> ResizeParams {
    ResizeParams::from_query(query).unwrap()
}

fn run(input: &[u8], query: &str) -> imgfleet_resize::Resized {
    resize(input, &params(query), None, &Limits::default())
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn run_err(input: &[u8], query: &str) -> ErrorCode {
    resize(input, &params(query), None, &Limits::default())
        .unwrap_err()
        .code
}

#[test]
fn every_fit_mode_gives_the_promised_size_and_aspect() {
    let src = images::jpeg(&images::photo(1200, 800, 1), 85);
    let cases = [
        ("w=300&h=300&fit=inside", (300, 200)),
        ("w=300&h=300&fit=contain", (300, 300)),
        ("w=300&h=300&fit=cover", (300, 300)),
        ("w=300&h=300&fit=fill", (300, 300)),
        ("w=600", (600, 400)),
        ("h=100", (150, 100)),
        ("w=5000&fit=inside", (1200, 800)),
        ("w=2400&fit=inside&enlarge=1", (2400, 1600)),
        ("w=2400&h=2400&fit=cover", (2400, 2400)),
    ];
    for (query, size) in cases {
        let out = run(&src, query);
        let img = decode(&out.bytes);
        assert_eq!(img.dimensions(), size, "{query}");
        assert_eq!(
            (out.output.width, out.output.height),
            size,
            "{query}: reported facts"
        );
    }
}

#[test]
fn contain_pads_with_transparency_or_white_and_keeps_the_picture_centred() {
    let src = images::jpeg(&images::photo(400, 200, 2), 90);
    let png = decode(&run(&src, "w=100&h=100&fit=contain&fmt=png").bytes).to_rgba8();
    assert_eq!(png.get_pixel(50, 5)[3], 0, "padding is transparent in PNG");
    assert_eq!(png.get_pixel(50, 50)[3], 255, "the picture is opaque");
    let jpg = decode(&run(&src, "w=100&h=100&fit=contain&fmt=jpeg").bytes).to_rgb8();
    assert!(
        jpg.get_pixel(50, 5).0.iter().all(|&c| c > 245),
        "padding is white in JPEG"
    );
}

#[test]
fn cover_crops_the_centre() {
    // Left third red, middle third green, right third blue; a square cover keeps green.
    let src = image::RgbImage::from_fn(300, 100, |x, _| match x / 100 {
        0 => image::Rgb([255, 0, 0]),
        1 => image::Rgb([0, 255, 0]),
        _ => image::Rgb([0, 0, 255]),
    });
    let out = decode(&run(&images::png_rgb(&src), "w=50&h=50&fit=cover").bytes).to_rgb8();
    let c = out.get_pixel(25, 25).0;
    assert!(
        c[1] > 200 && c[0] < 50 && c[2] < 50,
        "centre is green: {c:?}"
    );
    let edge = out.get_pixel(1, 25).0;
    assert!(
        edge[1] > 150,
        "the crop does not reach the red third: {edge:?}"
    );
}

#[test]
fn every_input_format_converts_to_every_output_format() {
    let photo = images::photo(320, 240, 3);
    let rgba = images::half_transparent(320, 240);
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("baseline jpeg", images::jpeg(&photo, 85)),
        ("progressive jpeg", images::progressive_jpeg(&photo, 85)),
        ("cmyk jpeg", images::cmyk_jpeg(&photo, 90)),
        ("png rgba", images::png_rgba(&rgba)),
        ("png 16-bit", images::png16(&photo)),
        ("png palette", images::png_palette(320, 240)),
        ("png grey+alpha", images::png_grey_alpha(320, 240)),
        ("webp", images::webp(&rgba)),
        ("gif", images::gif(&rgba)),
    ];
    for (name, bytes) in &inputs {
        for (fmt, mime, guessed) in [
            ("jpeg", "image/jpeg", image::ImageFormat::Jpeg),
            ("png", "image/png", image::ImageFormat::Png),
            ("webp", "image/webp", image::ImageFormat::WebP),
        ] {
            let out = run(bytes, &format!("w=160&fmt={fmt}"));
            assert_eq!(
                image::guess_format(&out.bytes).unwrap(),
                guessed,
                "{name} -> {fmt}"
            );
            assert_eq!(out.format.as_image_format().mime(), mime);
            assert_eq!(
                decode(&out.bytes).dimensions(),
                (160, 120),
                "{name} -> {fmt}"
            );
        }
        // AVIF: no decoder here (tests/quality.rs checks its pixels through sharp).
        let out = run(bytes, "w=160&fmt=avif&speed=10");
        assert_eq!(
            image::guess_format(&out.bytes).unwrap(),
            image::ImageFormat::Avif,
            "{name} -> avif"
        );
        assert_eq!(out.format.as_image_format().mime(), "image/avif");
        assert_eq!(
            images::avif_dimensions(&out.bytes),
            Some((160, 120)),
            "{name} -> avif"
        );
    }
}

#[test]
fn an_animated_gif_gives_its_first_frame() {
    let frame = |c: [u8; 4]| image::RgbaImage::from_pixel(64, 64, image::Rgba(c));
    let gif = images::animated_gif(&[frame([255, 0, 0, 255]), frame([0, 0, 255, 255])]);
    let out = decode(&run(&gif, "w=32").bytes).to_rgba8();
    let px = out.get_pixel(16, 16).0;
    assert!(
        px[0] > 240 && px[2] < 15,
        "the first (red) frame, got {px:?}"
    );
}

#[test]
fn grey_and_alpha_keep_their_values_and_transparency() {
    let src = images::png_grey_alpha(320, 240);
    for fmt in ["png", "webp"] {
        let out = decode(&run(&src, &format!("w=160&fmt={fmt}&q=95")).bytes).to_rgba8();
        let left = out.get_pixel(40, 60);
        // Grey stays grey: R = G = B (within lossy rounding), at the ramp's value.
        assert!(left[0].abs_diff(left[1]) <= 3 && left[1].abs_diff(left[2]) <= 3);
        assert!(left[0].abs_diff(64) <= 6, "{fmt}: {left:?}");
        assert_eq!(left[3], 255, "{fmt}: opaque half");
        assert_eq!(out.get_pixel(140, 60)[3], 0, "{fmt}: transparent half");
    }
}

/// A Display P3 photo's colours, as sRGB: what the output must hold.
fn p3_to_srgb(rgb: [u8; 3]) -> [u8; 3] {
    use moxcms::{ColorProfile, Layout, TransformOptions};
    let t = ColorProfile::new_display_p3()
        .create_transform_8bit(
            Layout::Rgb,
            &ColorProfile::new_srgb(),
            Layout::Rgb,
            TransformOptions::default(),
        )
        .unwrap();
    let mut out = [0u8; 3];
    t.transform(&rgb, &mut out).unwrap();
    out
}

#[test]
fn icc_profiles_are_converted_to_srgb() {
    let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
    let colour = [200u8, 120, 60];
    let want = p3_to_srgb(colour);
    // Unconverted output would be off by this much: the test can tell the two apart.
    assert!(want.iter().zip(colour).any(|(a, b)| a.abs_diff(b) > 10));
    let flat = image::RgbImage::from_pixel(256, 256, image::Rgb(colour));
    for (name, bytes, tolerance) in [
        ("png", images::png_with_icc(&flat, p3.clone()), 2),
        (
            "jpeg",
            images::jpeg_with_icc(&images::jpeg(&flat, 95), &p3),
            4,
        ),
    ] {
        // 256 -> 32 px also takes the JPEG through shrink-on-load.
        let out = decode(&run(&bytes, "w=32&fmt=png").bytes).to_rgb8();
        let got = out.get_pixel(16, 16).0;
        assert!(
            got.iter()
                .zip(want)
                .all(|(a, b)| a.abs_diff(b) <= tolerance),
            "{name}: got {got:?}, sRGB of the P3 colour is {want:?}"
        );
    }
}

#[test]
fn cmyk_and_progressive_jpegs_keep_their_colours() {
    let photo = image::DynamicImage::ImageRgb8(images::photo(320, 240, 4));
    for (name, bytes) in [
        ("cmyk", images::cmyk_jpeg(photo.as_rgb8().unwrap(), 95)),
        (
            "progressive",
            images::progressive_jpeg(photo.as_rgb8().unwrap(), 95),
        ),
    ] {
        let out = decode(&run(&bytes, "w=320&fmt=png").bytes);
        let psnr = imgfleet_tests::quality::psnr(&out, &photo);
        assert!(
            psnr > 28.0,
            "{name}: PSNR {psnr:.1} dB against the original"
        );
    }
}

#[test]
fn default_output_format_follows_the_input_and_gif_becomes_png() {
    let rgba = images::half_transparent(64, 64);
    assert_eq!(run(&images::gif(&rgba), "w=32").format, OutputFormat::Png);
    assert_eq!(run(&images::webp(&rgba), "w=32").format, OutputFormat::Webp);
    assert_eq!(
        run(&images::jpeg(&images::photo(64, 64, 1), 80), "w=32").format,
        OutputFormat::Jpeg
    );
}

#[test]
fn auto_format_honours_accept() {
    let src = images::jpeg(&images::photo(64, 64, 1), 80);
    let p = ResizeParams {
        format: FormatChoice::Auto,
        ..params("w=32")
    };
    let limits = Limits::default();
    let webp = resize(&src, &p, Some("image/avif,image/webp,*/*;q=0.8"), &limits).unwrap();
    assert_eq!(webp.format, OutputFormat::Webp);
    let avif = resize(&src, &p, Some("image/avif,*/*;q=0.8"), &limits).unwrap();
    assert_eq!(avif.format, OutputFormat::Avif);
    let png = resize(&src, &p, Some("image/png"), &limits).unwrap();
    assert_eq!(png.format, OutputFormat::Png);
    let none = resize(&src, &p, None, &limits).unwrap();
    assert_eq!(none.format, OutputFormat::Jpeg);
}

#[test]
fn alpha_is_flattened_on_white_for_jpeg_and_kept_for_png() {
    let src = images::png_rgba(&images::half_transparent(200, 100));
    let jpg = decode(&run(&src, "w=200&fmt=jpeg").bytes).to_rgb8();
    assert!(
        jpg.get_pixel(190, 50).0.iter().all(|&c| c > 245),
        "transparent area becomes white"
    );
    let png = decode(&run(&src, "w=100&fmt=png").bytes).to_rgba8();
    assert_eq!(png.get_pixel(95, 25)[3], 0);
    assert_eq!(png.get_pixel(5, 25)[3], 255);
}

/// Where the red quadrant of a 200×100 marker lands after orientation `o`.
#[test]
fn exif_orientations_are_applied() {
    let marker = images::jpeg(&images::quadrant_marker(200, 100), 95);
    // (orientation, displayed size at w=100, pixel that must be red, pixel that must be blue)
    let cases = [
        (1, (100, 50), (10, 10), (90, 40)),
        (2, (100, 50), (90, 10), (10, 40)),
        (3, (100, 50), (90, 40), (10, 10)),
        (4, (100, 50), (10, 40), (90, 10)),
        (5, (100, 200), (10, 10), (90, 190)),
        (6, (100, 200), (90, 10), (10, 190)),
        (7, (100, 200), (90, 190), (10, 10)),
        (8, (100, 200), (10, 190), (90, 10)),
    ];
    // Resized without a crop (turned after resampling) and with one (turned before).
    let queries = [
        ("w=100&fmt=png", false),
        ("w=100&h=100&fit=cover&fmt=png", true),
    ];
    for ((o, size, red_at, blue_at), (query, cropped)) in cases
        .into_iter()
        .flat_map(|c| queries.into_iter().map(move |q| (c, q)))
    {
        // A centred square crop of the displayed image keeps the corners' colours where
        // they were, squeezed along the long side.
        let (size, red_at, blue_at) = if cropped {
            let squeeze = |(x, y): (u32, u32)| {
                if size.0 > size.1 {
                    (x, y * 2)
                } else {
                    (x, y / 2)
                }
            };
            ((100, 100), squeeze(red_at), squeeze(blue_at))
        } else {
            (size, red_at, blue_at)
        };
        let input = images::with_exif_orientation(&marker, o);
        let out = run(&input, query);
        let img = decode(&out.bytes).to_rgb8();
        assert_eq!(img.dimensions(), size, "orientation {o}, {query}");
        let red = img.get_pixel(red_at.0, red_at.1).0;
        let blue = img.get_pixel(blue_at.0, blue_at.1).0;
        assert!(
            red[0] > 180 && red[2] < 80,
            "orientation {o}, {query}: expected red at {red_at:?}, got {red:?}"
        );
        assert!(
            blue[2] > 180 && blue[0] < 80,
            "orientation {o}, {query}: expected blue at {blue_at:?}, got {blue:?}"
        );
        assert_eq!(
            (out.input.width, out.input.height),
            if o >= 5 { (100, 200) } else { (200, 100) }
        );
    }
}

#[test]
fn metadata_is_stripped() {
    let input = images::with_exif_orientation(&images::jpeg(&images::photo(100, 100, 9), 90), 1);
    assert!(has_metadata(&input), "the fixture carries EXIF");
    for fmt in ["jpeg", "png", "webp"] {
        let out = run(&input, &format!("w=50&fmt={fmt}"));
        assert!(!has_metadata(&out.bytes), "{fmt} output carries metadata");
    }
}

#[test]
fn bad_input_gets_the_documented_code() {
    let good = images::jpeg(&images::photo(300, 200, 5), 85);
    let mut noise = vec![0u8; 4096];
    let mut rng = images::Rng::new(42);
    noise.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
    let truncated = &good[..good.len() / 3];
    assert_eq!(run_err(b"", "w=10"), ErrorCode::EmptyBody);
    assert_eq!(run_err(&noise, "w=10"), ErrorCode::UnsupportedFormat);
    assert_eq!(run_err(images::SVG, "w=10"), ErrorCode::UnsupportedFormat);
    assert_eq!(run_err(truncated, "w=10"), ErrorCode::CorruptImage);
    // A thumbnail in a metadata segment has its own scan and end marker; a truncated main
    // image is still caught.
    let thumbnail = images::jpeg(&images::photo(16, 16, 3), 80);
    let mut with_thumbnail = good[..2].to_vec();
    with_thumbnail.extend([0xFF, 0xFE]);
    with_thumbnail.extend(u16::try_from(thumbnail.len() + 2).unwrap().to_be_bytes());
    with_thumbnail.extend(&thumbnail);
    with_thumbnail.extend(&good[2..]);
    assert_eq!(run(&with_thumbnail, "w=10").output.width, 10);
    let cut = &with_thumbnail[..with_thumbnail.len() * 2 / 3];
    // Both a shrunk decode and a full one (which would paint the missing rows grey).
    for query in ["w=10", "w=300"] {
        assert_eq!(run_err(cut, query), ErrorCode::CorruptImage, "{query}");
    }
    assert_eq!(
        run_err(&images::jpeg_claiming(60000, 60000), "w=10"),
        ErrorCode::TooManyPixels
    );
    assert_eq!(
        run_err(&good, "w=9000&fit=fill&h=10"),
        ErrorCode::OutputTooLarge
    );
}

#[test]
fn lowered_limits_are_enforced() {
    let good = images::jpeg(&images::photo(300, 200, 5), 85);
    let p = params("w=10");
    let tight = |l: Limits| resize(&good, &p, None, &l).unwrap_err().code;
    let d = Limits::default();
    assert_eq!(
        tight(Limits {
            max_input_bytes: 100,
            ..d
        }),
        ErrorCode::InputTooLarge
    );
    assert_eq!(
        tight(Limits {
            max_input_pixels: 1000,
            ..d
        }),
        ErrorCode::TooManyPixels
    );
    assert_eq!(
        resize(
            &good,
            &params("w=100"),
            None,
            &Limits {
                max_output_side: 50,
                ..d
            }
        )
        .unwrap_err()
        .code,
        ErrorCode::OutputTooLarge
    );
}

#[test]
fn fit_parse_defaults_to_inside() {
    assert_eq!(params("w=1").fit, Fit::Inside);
}

/// Damaged WebPs, through libwebp: every truncation and a run of flipped bytes is a clear
/// `corrupt_image`, never a panic.
#[test]
fn damaged_webps_are_corrupt_images() {
    let photo = images::photo(640, 480, 31);
    let params = ResizeParams::from_query("w=640&fmt=webp&q=80").unwrap();
    let webp = resize(&images::png_rgb(&photo), &params, None, &Limits::default())
        .unwrap()
        .bytes;
    let small = ResizeParams::from_query("w=100").unwrap();
    for cut in (12..webp.len()).step_by(webp.len() / 40) {
        match resize(&webp[..cut], &small, None, &Limits::default()) {
            Err(e) => assert!(
                ["corrupt_image", "unsupported_format"].contains(&e.code.as_str()),
                "cut at {cut}: {e:?}"
            ),
            Ok(out) => panic!(
                "cut at {cut} of {} resized: {} bytes",
                webp.len(),
                out.bytes.len()
            ),
        }
    }
    for at in (40..webp.len()).step_by(97) {
        let mut damaged = webp.clone();
        for b in &mut damaged[at..(at + 8).min(webp.len())] {
            *b ^= 0x5A;
        }
        if let Err(e) = resize(&damaged, &small, None, &Limits::default()) {
            assert!(
                ["corrupt_image", "unsupported_format"].contains(&e.code.as_str()),
                "damage at {at}: {e:?}"
            );
        }
    }
}
