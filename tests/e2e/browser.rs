//! A real browser (Debian's headless Chromium) on a page served from 127.0.0.1 whose
//! `<img>` and `srcset` tags point at signed URLs over an HTTP origin and an S3 origin
//! (moto): every image decodes at the width its URL asks for (the 2x candidate on a 2x
//! screen), a tampered and an expired URL fail as 403s, and a second visit is answered
//! from the browser's cache, or with 304s where the origin's max-age is 0 — counted on the
//! server from its usage records.

use std::process::Command;
use std::time::{Duration, Instant};

use imgfleet_tests::host::{Host, sign_url};
use imgfleet_tests::images;
use imgfleet_tests::origin::{Origin, put_s3_object};
use imgfleet_tests::traffic::{UsageAt, exported_usage};

fn chromium() -> String {
    std::env::var("IMGFLEET_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Loads `url` in headless Chromium with the profile in `profile` and returns the text of
/// the page's `#result` once its scripts are done.
fn visit(url: &str, profile: &std::path::Path) -> serde_json::Value {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--force-device-scale-factor=2",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("running {} ({e}): ./dev.sh test installs it", chromium()));
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    let result = dom
        .split("<pre id=\"result\">")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
        .unwrap_or_else(|| panic!("no result on the page: {dom}"));
    serde_json::from_str(&result.replace("&quot;", "\""))
        .unwrap_or_else(|e| panic!("{e}: {result}"))
}

/// The tenant's signed GETs the host has metered so far, as (status, not modified).
fn metered_gets(h: &Host, at_least: usize) -> Vec<(u64, bool)> {
    let started = Instant::now();
    loop {
        let gets: Vec<(u64, bool)> = exported_usage(&UsageAt::DataDir(h.data.path()))
            .iter()
            .filter(|r| r["route"].as_str() == Some("/v1/img/{*rest}"))
            .map(|r| {
                (
                    r["status"].as_u64().unwrap_or(0),
                    r["not_modified"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        if gets.len() >= at_least || started.elapsed() > Duration::from_secs(20) {
            return gets;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_browser_shows_signed_images_refuses_bad_ones_and_revisits_from_its_cache() {
    let endpoint = std::env::var("IMGFLEET_TEST_SQS_ENDPOINT")
        .expect("IMGFLEET_TEST_SQS_ENDPOINT: ./dev.sh test starts moto_server");
    let bucket = format!("imgfleet-browser-{}", std::process::id());
    let photo = images::jpeg(&images::photo(900, 600, 21), 85);
    put_s3_object(&endpoint, &bucket, "pics/boat.jpg", &photo);
    let h = Host::start_with_env(
        "spin.toml",
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let origin = Origin::start();
    origin.put(
        "/img/cat.jpg",
        images::jpeg(&images::photo(1200, 800, 3), 85),
    );
    for (name, max_age) in [("web", 3600), ("fresh", 0)] {
        h.add_origin(serde_json::json!({
            "name": name, "type": "http", "base_url": format!("{}/img/", origin.base),
            "allow_private": true, "max_age_secs": max_age,
        }));
    }
    h.add_origin(serde_json::json!({
        "name": "archive", "type": "s3", "bucket": bucket, "prefix": "pics/",
        "region": "us-east-1", "endpoint": endpoint, "max_age_secs": 3600,
    }));
    let (_, key) = h.url_key();
    // Whole URLs: the page is served from another origin (the test's own server).
    let sign = |origin: &str, query: &str, file: &str, extra: &[&str]| {
        let base = ["--base", h.base.as_str()];
        sign_url(&key, origin, query, file, &[&base[..], extra].concat())
    };

    let one_x = sign("web", "w=200&fmt=webp", "cat.jpg", &[]);
    let two_x = sign("web", "w=400&fmt=webp", "cat.jpg", &[]);
    let s3 = sign("archive", "w=150", "boat.jpg", &[]);
    let fresh = sign("fresh", "w=120", "cat.jpg", &[]);
    let tampered = one_x.replace("w=200", "w=201");
    let expired = sign("web", "w=90", "cat.jpg", &["--expires-in", "0"]);
    // The tags are written by the page's script, so the 2x candidate is chosen against
    // the screen's real pixel ratio (the parser's preload scan may run before it is set).
    let images = serde_json::json!([
        { "id": "srcset", "src": one_x, "srcset": format!("{one_x} 1x, {two_x} 2x") },
        { "id": "s3", "src": s3 },
        { "id": "fresh", "src": fresh },
        { "id": "tampered", "src": tampered },
        { "id": "expired", "src": expired },
    ]);
    let page = format!(
        r#"<!doctype html><html><body>
<pre id="result"></pre>
<script>
const images = {images};
const out = {{ dpr: window.devicePixelRatio }};
Promise.all(images.map(spec => new Promise(done => {{
  const img = document.createElement("img");
  img.id = spec.id;
  img.onload = () => {{ out[spec.id] = img.naturalWidth; out[spec.id + "_src"] = img.currentSrc; done(); }};
  img.onerror = () => {{ out[spec.id] = "error"; done(); }};
  if (spec.srcset) img.srcset = spec.srcset;
  img.src = spec.src;
  document.body.appendChild(img);
}}))).then(() => {{ document.getElementById("result").textContent = JSON.stringify(out); }});
</script></body></html>"#
    );
    origin.put("/page.html", page.into_bytes());
    let page_url = format!("{}/page.html", origin.base);
    let profile = tempfile::tempdir().unwrap();

    let first = visit(&page_url, profile.path());
    // On a 2x screen the 2x candidate (400 px) is taken, and its natural width is
    // density-corrected: 200 CSS pixels.
    assert_eq!(
        first["srcset_src"],
        two_x.as_str(),
        "the 2x candidate: {first}"
    );
    assert_eq!(first["srcset"], 200, "{first}");
    assert_eq!(first["s3"], 150, "{first}");
    assert_eq!(first["fresh"], 120, "{first}");
    assert_eq!(first["tampered"], "error", "{first}");
    assert_eq!(first["expired"], "error", "{first}");
    let before = metered_gets(&h, 5);
    let count = |gets: &[(u64, bool)], status: u64| gets.iter().filter(|g| g.0 == status).count();
    assert_eq!(count(&before, 200), 3, "{before:?}");
    assert_eq!(
        count(&before, 403),
        2,
        "the tampered and expired URLs: {before:?}"
    );

    // A second visit with the same profile: fresh images come from the browser's cache;
    // the one whose origin says max-age=0 is revalidated, and the host answers 304.
    let second = visit(&page_url, profile.path());
    assert_eq!(second["srcset"], 200, "{second}");
    assert_eq!(second["s3"], 150, "{second}");
    assert_eq!(second["fresh"], 120, "{second}");
    let after = metered_gets(&h, before.len() + 3);
    let new: Vec<(u64, bool)> = after[before.len()..].to_vec();
    assert_eq!(
        count(&new, 200),
        0,
        "nothing fetched again in full: {new:?}"
    );
    assert!(
        new.iter().any(|g| g.0 == 304 && g.1),
        "the max-age=0 image was revalidated with a 304: {new:?}"
    );
    println!("first visit: {before:?}; second visit: {new:?}");
}
