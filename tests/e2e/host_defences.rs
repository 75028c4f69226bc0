//! The host's defences against misbehaving functions: deadline, memory cap, traps, and a
//! graceful shutdown that finishes what is in flight.

use std::time::{Duration, Instant};

use imgfleet_tests::host::{Host, post};
use imgfleet_tests::images;

fn still_serves(h: &Host) {
    let src = images::jpeg(&images::photo(200, 100, 3), 80);
    let r = h.post("/v1/resize?w=50", &src, &[]);
    assert_eq!(r.status, 200, "the host keeps serving resizes");
    assert_eq!(h.get("/healthz").status, 200);
}

#[test]
fn an_endless_loop_is_stopped_at_the_deadline() {
    let h = Host::start("tests/fixtures/hog.toml", &["--deadline-ms", "1000"]);
    let started = Instant::now();
    let r = h.post("/hog/spin", b"", &[]);
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (504, "deadline_exceeded")
    );
    assert!(
        took >= Duration::from_millis(950),
        "stopped too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stopped too late: {took:?}");
    still_serves(&h);
}

#[test]
fn a_memory_hog_hits_its_cap_and_the_host_survives() {
    let h = Host::start("tests/fixtures/hog.toml", &["--memory-mb", "64"]);
    let r = h.post("/hog/grow", b"", &[]);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "memory_limit_exceeded")
    );
    still_serves(&h);
}

#[test]
fn a_trapping_function_is_an_error_not_a_crash() {
    let mut h = Host::start("tests/fixtures/hog.toml", &[]);
    let r = h.post("/hog/panic", b"", &[]);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "function_failed")
    );
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        !body.contains("wasm backtrace"),
        "internals leaked to the client: {body}"
    );
    assert!(h.alive());
    still_serves(&h);
}

#[test]
fn sigterm_finishes_requests_in_flight() {
    let h = Host::start("tests/fixtures/hog.toml", &[]);
    let url = h.url("/hog/slow");
    let auth = format!("Bearer {}", h.key);
    let in_flight = std::thread::spawn(move || post(&url, b"", &[("authorization", &auth)]));
    std::thread::sleep(Duration::from_millis(400));
    assert!(h.terminate(), "imgfleet exits cleanly on SIGTERM");
    let r = in_flight.join().unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, b"done".as_slice()));
}
