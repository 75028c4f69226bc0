//! Asynchronous jobs: accepted durably, finished exactly once, outputs that expire, and
//! nothing lost when the host is killed mid-flight.

use std::time::{Duration, Instant};

use imgfleet_tests::host::Host;
use imgfleet_tests::images;

fn submit(h: &Host, query: &str, body: &[u8]) -> String {
    let r = h.post(&format!("/v1/jobs?{query}"), body, &[]);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    id
}

/// Polls until the job is no longer queued; returns its status document.
fn settle(h: &Host, id: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let r = h.get(&format!("/v1/jobs/{id}"));
        assert_eq!(r.status, 200, "status of {id}");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if v["status"] != "queued" {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still queued after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_job_runs_and_its_output_can_be_fetched_until_it_expires() {
    let h = Host::start("spin.toml", &["--job-output-ttl-secs", "2"]);
    let src = images::jpeg(&images::photo(800, 600, 3), 85);
    let id = submit(&h, "w=200&fmt=png", &src);
    let v = settle(&h, &id, Duration::from_secs(30));
    assert_eq!(
        (v["status"].as_str(), v["http_status"].as_u64()),
        (Some("done"), Some(200))
    );
    let out = h.get(&format!("/v1/jobs/{id}/output"));
    assert_eq!(out.status, 200);
    assert_eq!(out.header("content-type"), Some("image/png"));
    let img = images::decode(&out.body);
    assert_eq!((img.width(), img.height()), (200, 150));
    // Unknown ids (and, once tenants exist, other tenants' ids) are simply not found.
    let r = h.get("/v1/jobs/no-such-job");
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    std::thread::sleep(Duration::from_millis(2500));
    let r = h.get(&format!("/v1/jobs/{id}/output"));
    assert_eq!((r.status, r.error_code().as_str()), (410, "output_expired"));
}

/// What the function refuses only once it decodes (a damaged body behind a sound header)
/// ends the job with the function's error; what it would refuse from the header alone is
/// refused at submission (tests/e2e/contract.rs).
#[test]
fn a_damaged_image_finishes_with_the_functions_error() {
    let h = Host::start("spin.toml", &[]);
    let mut png = images::png_rgb(&images::photo(300, 200, 3));
    // Flip bytes well inside the image data: the header still reads, the data does not.
    let middle = png.len() / 2;
    for b in &mut png[middle..middle + 64] {
        *b ^= 0xa5;
    }
    let id = submit(&h, "w=100", &png);
    let v = settle(&h, &id, Duration::from_secs(30));
    assert_eq!(
        (v["status"].as_str(), v["http_status"].as_u64()),
        (Some("done"), Some(422)),
        "{v}"
    );
    let r = h.get(&format!("/v1/jobs/{id}/output"));
    assert_eq!((r.status, r.error_code().as_str()), (422, "corrupt_image"));
}

#[test]
fn a_poison_job_is_retried_then_fails_with_a_reason() {
    let h = Host::start("tests/fixtures/poison.toml", &[]);
    let started = Instant::now();
    let id = submit(&h, "hog=panic", b"x");
    let v = settle(&h, &id, Duration::from_secs(30));
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "function_failed", "{v}");
    // Three deliveries with pauses of 1 s and 2 s between them.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "gave up after {:?}",
        started.elapsed()
    );
    let r = h.get(&format!("/v1/jobs/{id}/output"));
    assert_eq!((r.status, r.error_code().as_str()), (500, "job_failed"));
}

#[test]
fn kill_9_mid_flight_loses_no_job_and_finishes_none_twice() {
    let h = Host::start("spin.toml", &["--cores", "1"]);
    let src = images::jpeg(&images::photo(1600, 1200, 9), 85);
    let ids: Vec<String> = (0..16)
        .map(|i| submit(&h, &format!("w={}", 100 + i), &src))
        .collect();
    // Let some finish, then pull the plug while others are running or waiting.
    let first = settle(&h, &ids[0], Duration::from_secs(30));
    assert_eq!(first["status"], "done");
    let data = h.kill_9();
    let h = Host::start_in(data, "spin.toml", &["--cores", "1"], &[]);
    let after = settle(&h, &ids[0], Duration::from_secs(5));
    assert_eq!(
        after["finished_ms"], first["finished_ms"],
        "a finished job was finished again"
    );
    for (i, id) in ids.iter().enumerate() {
        let v = settle(&h, id, Duration::from_secs(120));
        assert_eq!(v["status"], "done", "job {i}: {v}");
        let out = h.get(&format!("/v1/jobs/{id}/output"));
        assert_eq!(out.status, 200, "job {i}");
        assert_eq!(images::decode(&out.body).width(), 100 + i as u32, "job {i}");
    }
}
