//! The resize function through a real host over HTTP.

use imgfleet_tests::host::{Host, Reply, raw_exchange};
use imgfleet_tests::images::{self, decode, has_metadata};

fn host() -> Host {
    Host::start("spin.toml", &["--max-input-bytes", "3000000"])
}

fn resize(h: &Host, query: &str, body: &[u8]) -> Reply {
    h.post(&format!("/v1/resize?{query}"), body, &[])
}

#[test]
fn resizes_with_the_promised_headers_and_sizes() {
    let h = host();
    let src = images::jpeg(&images::photo(1200, 800, 11), 85);
    for (query, size, mime) in [
        ("w=300&h=300&fit=inside", (300, 200), "image/jpeg"),
        ("w=300&h=300&fit=contain&fmt=png", (300, 300), "image/png"),
        ("w=300&h=300&fit=cover&fmt=webp", (300, 300), "image/webp"),
        ("w=300&h=300&fit=fill", (300, 300), "image/jpeg"),
        ("h=100", (150, 100), "image/jpeg"),
    ] {
        let r = resize(&h, query, &src);
        assert_eq!(
            r.status,
            200,
            "{query}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("content-type"), Some(mime), "{query}");
        let img = decode(&r.body);
        assert_eq!((img.width(), img.height()), size, "{query}");
        let timing = r.header("server-timing").expect("Server-Timing");
        assert!(timing.contains("wasm;dur="), "{timing}");
        assert!(timing.contains("decode;dur="), "{timing}");
        assert!(r.header("x-request-id").is_some_and(|id| !id.is_empty()));
        assert!(
            r.header("imgfleet-facts").is_none(),
            "internal header leaked"
        );
    }
}

#[test]
fn keeps_a_sane_client_request_id() {
    let h = host();
    let src = images::jpeg(&images::photo(64, 64, 1), 80);
    let r = h.post("/v1/resize?w=10", &src, &[("x-request-id", "order-42.a_b")]);
    assert_eq!(r.header("x-request-id"), Some("order-42.a_b"));
    let r = h.post(
        "/v1/resize?w=10",
        &src,
        &[("x-request-id", "no spaces allowed")],
    );
    assert_ne!(r.header("x-request-id"), Some("no spaces allowed"));
}

#[test]
fn orientation_and_metadata_over_http() {
    let h = host();
    let marker = images::jpeg(&images::quadrant_marker(200, 100), 95);
    let input = images::with_exif_orientation(&marker, 6);
    let r = resize(&h, "w=100&fmt=png", &input);
    assert_eq!(r.status, 200);
    assert!(!has_metadata(&r.body));
    let img = decode(&r.body).to_rgb8();
    assert_eq!(img.dimensions(), (100, 200));
    assert!(
        img.get_pixel(90, 10)[0] > 180,
        "orientation 6 puts the red quadrant top right"
    );
}

#[test]
fn bad_input_gets_status_and_code() {
    let h = host();
    let good = images::jpeg(&images::photo(300, 200, 5), 85);
    let mut rng = images::Rng::new(7);
    let noise: Vec<u8> = (0..5000).map(|_| rng.next_u64() as u8).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("w=10", vec![], 400, "empty_body"),
        ("w=10", noise, 415, "unsupported_format"),
        (
            "w=10",
            good[..good.len() / 2].to_vec(),
            422,
            "corrupt_image",
        ),
        (
            "w=10",
            images::jpeg_claiming(60000, 60000),
            422,
            "too_many_pixels",
        ),
        ("w=10", images::SVG.to_vec(), 415, "unsupported_format"),
        ("w=-1", good.clone(), 400, "invalid_parameter"),
        ("w=10&fit=banana", good.clone(), 400, "invalid_parameter"),
        ("w=10&q=500", good.clone(), 400, "invalid_parameter"),
        (
            "w=9000&h=10&fit=fill",
            good.clone(),
            422,
            "output_too_large",
        ),
    ];
    for (query, body, status, code) in cases {
        let r = resize(&h, query, &body);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (status, code),
            "{query} ({} bytes)",
            body.len()
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let r = h.get("/v1/resize?w=10");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    let r = h.get("/nowhere");
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    // The host is still healthy after all of that.
    assert_eq!(h.get("/healthz").status, 200);
}

#[test]
fn sixty_four_concurrent_requests_are_all_correct() {
    let h = host();
    let sizes: Vec<(u32, u32)> = (0..64)
        .map(|i| (320 + (i % 8) * 40, 240 + (i / 8) * 30))
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &(w, hh))| {
                let h = &h;
                s.spawn(move || {
                    let src = images::jpeg(&images::photo(w, hh, i as u64), 85);
                    let target = 100 + i as u32;
                    let r = resize(h, &format!("w={target}&fmt=png"), &src);
                    assert_eq!(r.status, 200, "request {i}");
                    let img = decode(&r.body);
                    let expected_h =
                        (f64::from(hh) * f64::from(target) / f64::from(w)).round() as u32;
                    assert_eq!(
                        (img.width(), img.height()),
                        (target, expected_h),
                        "request {i}"
                    );
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("a request thread panicked");
        }
    });
}

#[test]
fn oversized_bodies_are_refused_before_they_are_read() {
    let h = host();
    // Declared too large: refused on the header alone, without waiting for the body.
    let head = format!(
        "POST /v1/resize?w=10 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Length: 3000001\r\n\r\n",
        h.key
    );
    let (status, body) = raw_exchange(&h.base, &head, b"");
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("input_too_large"), "{body}");
    // Streamed (chunked) past the limit: cut off once the limit is crossed.
    let mut chunked = Vec::new();
    for _ in 0..4 {
        chunked.extend_from_slice(b"100000\r\n");
        chunked.extend(std::iter::repeat_n(0u8, 0x100000));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /v1/resize?w=10 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        h.key
    );
    let (status, body) = raw_exchange(&h.base, &head, &chunked);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("input_too_large"), "{body}");
    assert_eq!(h.get("/healthz").status, 200);
}
