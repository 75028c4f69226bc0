//! Signed GET delivery against a real HTTP origin on 127.0.0.1: URLs made by `imgfleet url
//! sign`, images that decode at the asked width, caching headers, `304`s by revalidation,
//! tampered, expired and revoked URLs refused, rotation, origins removed, and every kind of
//! bad origin answered with its own code within the budget while the host stays up.

use std::time::{Duration, Instant};

use imgfleet_tests::host::{DEFAULT_TENANT, Host, Reply, request, sign_url as sign, within_sla};
use imgfleet_tests::images;
use imgfleet_tests::origin::{Origin, put_s3_object};

fn get(h: &Host, path: &str, headers: &[(&str, &str)]) -> Reply {
    request("GET", &h.url(path), b"", headers)
}

fn width_of(body: &[u8]) -> u32 {
    image::load_from_memory(body)
        .unwrap_or_else(|e| panic!("the answer is not an image ({e}): {} bytes", body.len()))
        .width()
}

fn start() -> (Host, Origin, String, String) {
    let h = Host::start("spin.toml", &[]);
    let origin = Origin::start();
    origin.put(
        "/img/cat.jpg",
        images::jpeg(&images::photo(640, 480, 3), 85),
    );
    origin.put(
        "/plain/dog.jpg",
        images::jpeg(&images::photo(400, 300, 4), 85),
    );
    origin.put("/img/random.jpg", vec![0x42; 5000]);
    // `live` keeps nothing fresh: every request asks the origin.
    for (name, path, max_age) in [
        ("web", "img/", 3600),
        ("plain", "plain/", 3600),
        ("bad", "bad/", 3600),
        ("live", "img/", 0),
    ] {
        h.add_origin(serde_json::json!({
            "name": name, "type": "http", "base_url": format!("{}/{path}", origin.base),
            "allow_private": true, "max_age_secs": max_age,
        }));
    }
    let (key_id, key) = h.url_key();
    (h, origin, key_id, key)
}

#[test]
fn a_signed_url_serves_the_resized_image_with_caching_headers_and_304s() {
    let (h, origin, _, key) = start();
    let path = sign(&key, "web", "w=160&fmt=webp", "cat.jpg", &[]);
    assert!(
        path.starts_with(&format!("/v1/img/{DEFAULT_TENANT}/")),
        "{path}"
    );
    let r = get(&h, &path, &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("image/webp"));
    assert_eq!(width_of(&r.body), 160);
    assert_eq!(r.header("cache-control"), Some("public, max-age=3600"));
    assert_eq!(r.header("vary"), None, "the format is fixed: no Vary");
    let tag = r.header("etag").expect("an ETag").to_string();
    assert!(tag.starts_with('"'), "a strong ETag: {tag}");

    // HEAD: the same headers, no body.
    let head = request("HEAD", &h.url(&path), b"", &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("etag"), Some(tag.as_str()));
    assert!(head.body.is_empty());

    // Revalidation within the origin's max-age: the source's version is fresh, so the
    // 304 comes without asking the origin.
    let asked = origin.requests("/img/cat.jpg");
    let again = get(&h, &path, &[("if-none-match", &tag)]);
    assert_eq!(again.status, 304);
    assert_eq!(again.header("etag"), Some(tag.as_str()));
    assert!(again.body.is_empty());
    assert_eq!(origin.requests("/img/cat.jpg"), asked);

    // With max-age 0, the origin is asked by its own validator and says unchanged.
    let live = sign(&key, "live", "w=160&fmt=webp", "cat.jpg", &[]);
    let first = get(&h, &live, &[]);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-control"), Some("public, max-age=0"));
    let live_tag = first.header("etag").unwrap().to_string();
    let before = origin
        .counts
        .not_modified
        .load(std::sync::atomic::Ordering::Relaxed);
    let again = get(&h, &live, &[("if-none-match", &live_tag)]);
    assert_eq!(again.status, 304);
    assert_eq!(
        origin
            .counts
            .not_modified
            .load(std::sync::atomic::Ordering::Relaxed),
        before + 1,
        "the 304 came from the origin's own revalidation"
    );

    // The source changes: the old tag no longer matches and the new image is served, at
    // once where nothing is kept fresh, and where it is, once the path is purged.
    origin.put(
        "/img/cat.jpg",
        images::jpeg(&images::photo(800, 600, 9), 85),
    );
    let changed = get(&h, &live, &[("if-none-match", &live_tag)]);
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(live_tag.as_str()));
    assert_eq!(width_of(&changed.body), 160);
    assert_eq!(get(&h, &path, &[("if-none-match", &tag)]).status, 304);
    let purged = h.admin(
        "POST",
        &format!("/admin/tenants/{DEFAULT_TENANT}/purges"),
        Some(serde_json::json!({"origin": "web", "path": "cat.jpg"})),
    );
    assert_eq!(purged.status, 201);
    let changed = get(&h, &path, &[("if-none-match", &tag)]);
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(tag.as_str()));

    // An origin without validators is revalidated by the digest of its bytes.
    let plain = sign(&key, "plain", "w=100", "dog.jpg", &[]);
    let first = get(&h, &plain, &[]);
    assert_eq!(first.status, 200);
    assert_eq!(width_of(&first.body), 100);
    let tag = first.header("etag").unwrap().to_string();
    assert_eq!(get(&h, &plain, &[("if-none-match", &tag)]).status, 304);

    // A negotiated format varies by Accept.
    let auto = sign(&key, "web", "w=120&fmt=auto", "cat.jpg", &[]);
    let webp = get(&h, &auto, &[("accept", "image/webp,*/*")]);
    assert_eq!(webp.header("content-type"), Some("image/webp"));
    assert_eq!(webp.header("vary"), Some("Accept"));
    let jpeg = get(&h, &auto, &[("accept", "image/jpeg")]);
    assert_eq!(jpeg.header("content-type"), Some("image/jpeg"));
    assert_ne!(webp.header("etag"), jpeg.header("etag"));

    // Usage: each of the 12 GETs and HEADs is metered (the meter ships within seconds),
    // with the origin bytes it read; the 304s say so.
    let started = Instant::now();
    let records = loop {
        let records = imgfleet_tests::traffic::exported_usage(
            &imgfleet_tests::traffic::UsageAt::DataDir(h.data.path()),
        );
        let n = records
            .iter()
            .filter(|r| r["route"].as_str() == Some("/v1/img/{*rest}"))
            .count();
        if n >= 12 {
            break records;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{n} of 12 GETs metered: {:?}",
            records
                .iter()
                .map(|r| (r["route"].clone(), r["status"].clone()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let gets: Vec<_> = records
        .iter()
        .filter(|r| r["route"].as_str() == Some("/v1/img/{*rest}"))
        .collect();
    assert_eq!(gets.len(), 12, "each GET metered once");
    assert!(
        gets.iter()
            .any(|r| r["not_modified"] == true && r["status"] == 304)
    );
    assert!(
        gets.iter()
            .any(|r| r["status"] == 200 && r["origin_bytes"].as_u64().unwrap_or(0) > 1000)
    );
    assert!(
        gets.iter()
            .all(|r| r["key_id"].as_str().unwrap().starts_with("url:"))
    );
}

#[test]
fn tampered_expired_revoked_and_unknown_urls_are_refused() {
    let (h, _origin, key_id, key) = start();
    let path = sign(&key, "web", "w=64", "cat.jpg", &[]);
    assert_eq!(get(&h, &path, &[]).status, 200);
    let code = |p: &str| {
        let r = get(&h, p, &[]);
        assert_eq!(
            r.header("cache-control"),
            Some("no-store"),
            "an error must not be cached: {p}"
        );
        (r.status, r.error_code())
    };
    let forbidden = |c: &str| (403, c.to_string());
    assert_eq!(
        code(&path.replace("w=64", "w=65")),
        forbidden("bad_signature")
    );
    assert_eq!(
        code(&path.replace("cat.jpg", "dog.jpg")),
        forbidden("bad_signature")
    );
    let expired = sign(&key, "web", "w=64", "cat.jpg", &["--expires-in", "0"]);
    assert_eq!(code(&expired), forbidden("url_expired"));
    let later = sign(&key, "web", "w=64", "cat.jpg", &["--expires-in", "3600"]);
    assert_eq!(get(&h, &later, &[]).status, 200);
    assert_eq!(
        code(&format!("/v1/img/{DEFAULT_TENANT}/nonsense")),
        (400, "malformed_url".into())
    );
    assert_eq!(
        code(&path.replacen(&format!("/{DEFAULT_TENANT}/"), "/nobody/", 1)),
        (404, "unknown_tenant".into())
    );
    assert_eq!(code(&format!("{path}?cb=1")), (400, "malformed_url".into()));
    // A second key for rotation; revoking the first stops its URLs within the SLA.
    let (_, second) = h.url_key();
    let rotated = sign(&second, "web", "w=64", "cat.jpg", &[]);
    assert_eq!(get(&h, &rotated, &[]).status, 200);
    let r = h.admin(
        "POST",
        &format!("/admin/tenants/{DEFAULT_TENANT}/url-keys/{key_id}/revoke"),
        None,
    );
    assert_eq!(r.status, 200);
    within_sla("the revocation", || get(&h, &path, &[]).status == 403);
    assert_eq!(code(&path), forbidden("bad_signature"));
    assert_eq!(get(&h, &rotated, &[]).status, 200);
    // A removed origin is gone for every URL naming it.
    let r = h.admin(
        "DELETE",
        &format!("/admin/tenants/{DEFAULT_TENANT}/origins/web"),
        None,
    );
    assert_eq!(r.status, 200);
    within_sla("the removal", || get(&h, &rotated, &[]).status == 404);
    assert_eq!(code(&rotated), (404, "unknown_origin".into()));
    // Non-canonical options are refused even when signed (one URL per output).
    let (second_id, secret) = imgfleet_auth::signed_url::parse_url_key(&second).expect("a URL key");
    let non_canonical = imgfleet_auth::signed_url::sign(
        &secret,
        DEFAULT_TENANT,
        second_id,
        "h=10&w=10",
        None,
        "plain",
        "dog.jpg",
    );
    assert_eq!(code(&non_canonical), (400, "non_canonical_url".into()));
}

#[test]
fn bad_origins_get_their_own_codes_within_the_budget_and_the_host_stays_up() {
    let (h, origin, _, key) = start();
    h.add_origin(serde_json::json!({
        "name": "guarded", "type": "http",
        "base_url": format!("http://localhost:{}/img/", origin.port),
    }));
    h.add_origin(serde_json::json!({
        "name": "literal", "type": "http",
        "base_url": format!("http://127.0.0.1:{}/img/", origin.port),
    }));
    let cases = [
        ("bad", "slow.jpg", 504, "origin_timeout"),
        ("bad", "dribble.jpg", 504, "origin_timeout"),
        ("bad", "huge.jpg", 413, "source_too_large"),
        ("bad", "endless.jpg", 413, "source_too_large"),
        ("bad", "loop.jpg", 502, "origin_redirect"),
        ("bad", "away.jpg", 502, "origin_redirect"),
        ("bad", "escape.jpg", 502, "origin_redirect"),
        ("bad", "page.jpg", 415, "not_an_image"),
        ("bad", "error.jpg", 502, "origin_error"),
        ("bad", "reset.jpg", 502, "origin_error"),
        ("bad", "missing.jpg", 404, "source_not_found"),
        ("web", "random.jpg", 415, "unsupported_format"),
        ("guarded", "cat.jpg", 502, "origin_address_refused"),
        ("literal", "cat.jpg", 502, "origin_address_refused"),
    ];
    for (origin_name, file, status, code) in cases {
        let path = sign(&key, origin_name, "w=64", file, &[]);
        let started = Instant::now();
        let r = get(&h, &path, &[]);
        let took = started.elapsed();
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (status, code),
            "{origin_name}/{file}"
        );
        assert!(
            took < Duration::from_secs(12),
            "{origin_name}/{file} took {took:?}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{file}");
        println!("{origin_name}/{file}: {status} {code} in {took:?}");
    }
    assert_eq!(
        origin.requests("/img/cat.jpg"),
        0,
        "an origin on a private address was fetched"
    );
    // Still serving.
    let ok = sign(&key, "web", "w=32", "cat.jpg", &[]);
    assert_eq!(get(&h, &ok, &[]).status, 200);
    assert_eq!(request("GET", &h.url("/healthz"), b"", &[]).status, 200);
}

/// The same route over an S3 origin (moto_server, which `./dev.sh test` starts): objects
/// under the origin's prefix, revalidated by their ETag, a missing key a 404.
#[test]
fn an_s3_origin_serves_signed_urls_and_revalidates() {
    let endpoint = std::env::var("IMGFLEET_TEST_SQS_ENDPOINT")
        .expect("IMGFLEET_TEST_SQS_ENDPOINT: ./dev.sh test starts moto_server");
    let bucket = format!("imgfleet-origin-{}", std::process::id());
    let photo = images::jpeg(&images::photo(500, 400, 5), 85);
    put_s3_object(&endpoint, &bucket, "web/2024/cat.jpg", &photo);
    let h = Host::start_with_env(
        "spin.toml",
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    h.add_origin(serde_json::json!({
        "name": "archive", "type": "s3", "bucket": bucket, "prefix": "web/",
        "region": "us-east-1", "endpoint": endpoint, "max_age_secs": 0,
    }));
    let (_, key) = h.url_key();
    let path = sign(&key, "archive", "w=100&fmt=png", "2024/cat.jpg", &[]);
    let r = get(&h, &path, &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(width_of(&r.body), 100);
    let tag = r.header("etag").expect("an ETag").to_string();
    assert_eq!(get(&h, &path, &[("if-none-match", &tag)]).status, 304);
    let missing = sign(&key, "archive", "w=100", "2024/none.jpg", &[]);
    let r = get(&h, &missing, &[]);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "source_not_found")
    );
}
