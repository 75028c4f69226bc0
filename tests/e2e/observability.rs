//! `/metrics` tells what happened: requests by route and status, function times, queues,
//! the auth cache, metering, memory.

use std::time::{Duration, Instant};

use imgfleet_tests::host::{Host, get, post};
use imgfleet_tests::images;

/// The value of the first sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_requests_function_time_queues_and_metering() {
    let h = Host::start("spin.toml", &[]);
    let src = images::jpeg(&images::photo(64, 48, 5), 80);
    for _ in 0..3 {
        assert_eq!(h.post("/v1/resize?w=8", &src, &[]).status, 200);
    }
    assert_eq!(h.post("/v1/resize?w=8&fit=banana", &src, &[]).status, 400);
    assert_eq!(post(&h.url("/v1/resize?w=8"), &src, &[]).status, 401);
    let id = h.post("/v1/jobs?w=8", &src, &[]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(h.get(&format!("/v1/jobs/{id}")).status, 200);

    let resize = r#"route="/v1/resize""#;
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let r = get(&h.url("/metrics"));
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        let text = String::from_utf8(r.body).unwrap();
        // Metering is eventual: wait until this run's 7 authenticated requests are stored.
        if sample(&text, "imgfleet_usage_records_stored_total", &[]).unwrap_or(0.0) >= 7.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "usage never stored:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let requests = |labels: &[&str]| sample(&text, "imgfleet_http_requests_total", labels);
    assert_eq!(requests(&[resize, r#"status="200""#]), Some(3.0), "{text}");
    assert_eq!(requests(&[resize, r#"status="400""#]), Some(1.0));
    assert_eq!(requests(&[resize, r#"status="401""#]), Some(1.0));
    assert_eq!(
        requests(&[r#"route="/v1/jobs/{id}""#, r#"status="200""#]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "imgfleet_http_request_duration_seconds_count",
            &[resize, r#"status="200""#]
        ),
        Some(3.0)
    );
    // Five function runs: three resizes, the refused parameters, the job.
    let fun = r#"function="resize""#;
    assert!(
        sample(&text, "imgfleet_function_cpu_seconds_count", &[fun]) >= Some(5.0),
        "{text}"
    );
    assert!(sample(&text, "imgfleet_function_cpu_seconds_sum", &[fun]) > Some(0.0));
    assert!(sample(&text, "imgfleet_function_instantiate_seconds_count", &[fun]) >= Some(5.0));
    assert!(sample(&text, "imgfleet_usage_ingest_lag_seconds_count", &[]) >= Some(1.0));
    assert_eq!(
        sample(
            &text,
            "imgfleet_queue_visible_messages",
            &[r#"queue="jobs""#]
        ),
        Some(0.0)
    );
    assert!(
        sample(
            &text,
            "imgfleet_queue_in_flight_messages",
            &[r#"queue="usage""#]
        )
        .is_some()
    );
    assert_eq!(sample(&text, "imgfleet_auth_cache_stale", &[]), Some(0.0));
    assert!(sample(&text, "imgfleet_auth_cache_lag_seconds", &[]) < Some(1.0));
    assert!(sample(&text, "imgfleet_usage_outbox_oldest_seconds", &[]).is_some());
    assert!(sample(&text, "imgfleet_process_resident_bytes", &[]) > Some(1e6));
    assert_eq!(sample(&text, "imgfleet_slots_busy", &[]), Some(0.0));
}
