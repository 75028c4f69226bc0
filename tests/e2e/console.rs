//! The web console in a real browser (Debian's headless Chromium, driven by puppeteer-core
//! from `tests/console/console.mjs`): sign in, a resize round trip through the playground,
//! a signed URL made in the page and loaded from the host, usage charts drawn from the
//! numbers `/v1/usage` gives, the admin views; a screenshot per page checked for what it
//! shows; no console error, exception or failed request anywhere.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use imgfleet_tests::host::{ADMIN_TOKEN, DEFAULT_TENANT, Host, repo_root};
use imgfleet_tests::images;
use imgfleet_tests::origin::Origin;

fn chromium() -> String {
    std::env::var("IMGFLEET_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Runs the browser walk and returns what it saw.
fn walk(input: serde_json::Value) -> serde_json::Value {
    let dir = repo_root().join("tests/console");
    assert!(
        dir.join("node_modules/puppeteer-core").exists(),
        "tests/console/node_modules is missing: ./dev.sh test installs it (npm ci)"
    );
    let out = Command::new("node")
        .current_dir(&dir)
        .arg("console.mjs")
        .arg(input.to_string())
        .output()
        .expect("running node (./dev.sh test installs it)");
    assert!(
        out.status.success(),
        "the console walk failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

/// The tenant's usage as `/v1/usage` gives it, once at least `requests` are folded in.
fn folded_usage(h: &Host, requests: u64) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let v = h.get("/v1/usage?granularity=hour").json();
        let total: u64 = v["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["requests"].as_u64().unwrap())
            .sum();
        if total >= requests {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "usage not folded after 60 s: {v}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A screenshot that shows something: its size, and more than a blank page's few colours.
fn check_screenshot(path: &Path, at_least_colours: usize) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert!(
        img.width() >= 1280 && img.height() >= 600,
        "{}",
        path.display()
    );
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() >= at_least_colours,
        "{} shows {} colours: blank?",
        path.display(),
        colours.len()
    );
}

fn sum(values: &serde_json::Value) -> f64 {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum()
}

#[test]
fn the_console_resizes_signs_charts_usage_and_shows_the_admin_views() {
    let h = Host::start("spin.toml", &[]);
    let origin = Origin::start();
    origin.put(
        "/img/photos/boat.jpg",
        images::jpeg(&images::photo(1200, 800, 5), 85),
    );
    h.add_origin(serde_json::json!({
        "name": "site", "type": "http", "base_url": format!("{}/img/", origin.base),
        "allow_private": true,
    }));
    let (_, url_key) = h.url_key();
    // Some usage to chart: four resizes of known sizes.
    let src = images::jpeg(&images::photo(640, 480, 7), 85);
    for w in [100, 120, 140, 160] {
        assert_eq!(h.post(&format!("/v1/resize?w={w}"), &src, &[]).status, 200);
    }
    let usage = folded_usage(&h, 4);

    let scratch = tempfile::tempdir().unwrap();
    let upload = scratch.path().join("upload.jpg");
    std::fs::write(&upload, images::jpeg(&images::photo(900, 600, 11), 85)).unwrap();
    let shots = scratch.path().join("shots");
    std::fs::create_dir(&shots).unwrap();
    let seen = walk(serde_json::json!({
        "chromium": chromium(),
        "profile": scratch.path().join("profile"),
        "base": h.base,
        "api_key": h.key,
        "admin_token": ADMIN_TOKEN,
        "tenant": DEFAULT_TENANT,
        "url_key": url_key,
        "origin": "site",
        "source_path": "photos/boat.jpg",
        "image_path": upload,
        "width": 300,
        "signed_width": 240,
        "out_dir": shots,
    }));

    assert_eq!(seen["errors"], serde_json::json!([]), "{seen:#}");
    // Credentials live in the tab's session only, and are gone after signing out.
    assert_eq!(seen["local_storage_keys"], serde_json::json!([]));
    assert_eq!(seen["cookies"], 0);
    assert_eq!(seen["session_after_signout"], serde_json::json!([]));

    let pages = &seen["pages"];
    assert_eq!(pages["signin"]["title"], "imgfleet console");
    let play = &pages["playground"];
    assert_eq!(play["natural"], serde_json::json!([300, 200]), "{play}");
    assert!(play["facts"].as_str().unwrap().contains("image/png"));
    let timings: Vec<&str> = play["timing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0].as_str().unwrap())
        .collect();
    for name in ["auth", "wasm", "decode", "resize", "encode"] {
        assert!(timings.contains(&name), "no {name} in {timings:?}");
    }
    // The bytes the page reports are the host's answer to the same request.
    let upload_bytes = std::fs::read(&upload).unwrap();
    let direct = h.post("/v1/resize?w=300&fmt=png", &upload_bytes, &[]);
    assert_eq!(play["bytes"].as_u64().unwrap(), direct.body.len() as u64);

    let urls = &pages["urls"];
    assert_eq!(urls["natural"], serde_json::json!([240, 160]), "{urls}");
    assert!(
        urls["url"]
            .as_str()
            .unwrap()
            .contains("/w=240,fmt=webp/site/photos/boat.jpg"),
        "{urls}"
    );
    assert!(urls["facts"].as_str().unwrap().contains("image/webp"));

    // The charts hold the API's numbers: at least what was folded before the walk, at most
    // what is folded after it (the walk's own requests, and the reads of usage that waited
    // for the fold, are folded while it runs).
    let after = h.get("/v1/usage?granularity=hour").json();
    let total = |usage: &serde_json::Value, field: &str| -> f64 {
        let buckets = usage["buckets"].as_array().unwrap();
        buckets.iter().map(|b| b[field].as_f64().unwrap()).sum()
    };
    let api = |field: &str| total(&usage, field);
    let charts = pages["usage"]["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 4);
    let requests = sum(&charts[0]["bars"]);
    assert!(
        requests >= api("requests") && requests <= total(&after, "requests"),
        "chart {requests} vs API {} before the walk and {} after",
        api("requests"),
        total(&after, "requests")
    );
    assert_eq!(
        pages["usage"]["requests"].as_f64().unwrap(),
        requests,
        "the total above the charts"
    );
    let bytes_in = sum(&charts[1]["bars"]);
    assert!(
        bytes_in >= api("bytes_in"),
        "{bytes_in} vs {}",
        api("bytes_in")
    );
    assert!(sum(&charts[3]["bars"]) > 0.0, "no CPU charted");
    assert!(charts[0]["drawn"].as_u64().unwrap() >= 1);
    // Every hour of the two days shown, empty ones included.
    assert!(charts[0]["bars"].as_array().unwrap().len() >= 48);

    let admin = &pages["admin"];
    assert!(
        admin["tenants"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(DEFAULT_TENANT))
    );
    assert_eq!(admin["origins"], serde_json::json!(["site"]));
    assert!(admin["keys"].as_u64().unwrap() >= 1);
    let audit = admin["audit"].as_array().unwrap();
    assert!(
        audit.iter().any(|r| r[0]
            .as_str()
            .unwrap()
            .starts_with("POST /v1/resize?w=300&fmt=png")),
        "the playground's resize is in the audit log: {audit:?}"
    );

    // Screenshots: the sign-in page is mostly text; the others show images and charts.
    check_screenshot(
        Path::new(pages["signin"]["screenshot"].as_str().unwrap()),
        8,
    );
    for page in ["playground", "urls"] {
        check_screenshot(Path::new(pages[page]["screenshot"].as_str().unwrap()), 500);
    }
    for page in ["usage", "admin"] {
        check_screenshot(Path::new(pages[page]["screenshot"].as_str().unwrap()), 20);
    }
}

#[test]
fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let h = Host::start("spin.toml", &[]);
    for (path, ty) in [
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let r = imgfleet_tests::host::get(&h.url(path));
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(ty), "{path}");
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    // The page loads nothing from elsewhere.
    let page = String::from_utf8(imgfleet_tests::host::get(&h.url("/console")).body).unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
}
