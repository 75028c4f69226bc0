//! `/metrics` tells what happened: requests by route and status, function times, queues,
//! the auth cache, metering, memory; logs and traces follow one request through every hop.

use std::time::{Duration, Instant};

use imgfleet_tests::collector::Collector;
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
    // Every resize decodes into its linear memory: well over the 1 MiB bucket.
    assert!(
        sample(&text, "imgfleet_function_memory_peak_bytes_sum", &[fun]) > Some(5.0 * 1048576.0)
    );
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
    assert_eq!(
        sample(
            &text,
            "imgfleet_queue_oldest_message_seconds",
            &[r#"queue="jobs""#]
        ),
        Some(0.0),
        "every job is done and deleted"
    );
    assert_eq!(sample(&text, "imgfleet_auth_cache_stale", &[]), Some(0.0));
    assert!(sample(&text, "imgfleet_auth_cache_lag_seconds", &[]) < Some(1.0));
    assert!(sample(&text, "imgfleet_usage_outbox_oldest_seconds", &[]).is_some());
    assert!(sample(&text, "imgfleet_process_resident_bytes", &[]) > Some(1e6));
    assert_eq!(sample(&text, "imgfleet_slots_busy", &[]), Some(0.0));
}

/// The JSON log lines that mention `needle`, parsed.
fn log_lines(path: &std::path::Path, needle: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Names of the spans a line was logged in: its own and its parents'.
fn span_names(line: &serde_json::Value) -> Vec<String> {
    let own = line["span"]["name"].as_str().map(str::to_string);
    let parents = line["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(str::to_string));
    own.into_iter().chain(parents).collect()
}

#[test]
fn one_request_id_follows_a_request_through_every_hop() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("host.log");
    let h = Host::start_logging_to(
        &log,
        "spin.toml",
        &["--log-format", "json", "--log-spans"],
        &[("IMGFLEET_LOG", "info,imgfleet_host::metering=debug")],
    );
    let src = images::jpeg(&images::photo(64, 48, 9), 80);
    let sync_id = "trace-sync-0001";
    let r = h.post("/v1/resize?w=8", &src, &[("x-request-id", sync_id)]);
    assert_eq!(r.status, 200);
    let async_id = "trace-async-0001";
    let r = h.post("/v1/jobs?w=8", &src, &[("x-request-id", async_id)]);
    assert_eq!(r.status, 202);
    let job = r.json()["id"].as_str().unwrap().to_string();

    // Every hop, each within the 5 s the pipeline needs at most on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(15);
    for id in [sync_id, async_id] {
        let wanted = ["request", "auth", "enqueue", "job", "invoke", "meter"];
        loop {
            let seen: std::collections::BTreeSet<String> =
                log_lines(&log, id).iter().flat_map(span_names).collect();
            let missing: Vec<_> = wanted.iter().filter(|w| !seen.contains(**w)).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: no {missing:?} span carries the request id; seen {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // The API's span names the job, and the worker's job span names the request: the two
    // halves of a queued request can be joined either way.
    let lines = log_lines(&log, async_id);
    let request = lines
        .iter()
        .find(|l| l["span"]["name"] == "request" && l["span"]["id"] == async_id)
        .expect("the request span");
    assert_eq!(request["span"]["job"], job.as_str());
    assert_eq!(request["span"]["tenant"], "tenant-a");
    assert_eq!(request["span"]["status"], 202);
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["name"] == "job" && l["span"]["id"] == job.as_str())
    );
    let counted = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "usage counted")
        .count();
    assert_eq!(counted, 2, "the submission and the run are both metered");
}

/// Waits until the collector holds spans named `names` of `trace`, and returns them.
pub fn exported_trace(
    collector: &Collector,
    trace: &str,
    names: &[&str],
) -> Vec<imgfleet_tests::collector::Span> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<_> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace)
            .collect();
        if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace}: wanted {names:?}, exported {spans:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The client's W3C trace continues through the API, the queue, the worker and the
/// function's run, in the logs and in the spans exported over OTLP; the response says
/// which span answered; a request without a usable `traceparent` starts a trace of its own.
#[test]
fn a_clients_trace_crosses_the_queue_into_the_logs_and_an_otlp_collector() {
    let collector = Collector::start();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("host.log");
    let h = Host::start_logging_to(
        &log,
        "spin.toml",
        &["--log-format", "json", "--otlp-endpoint", &collector.base],
        &[("IMGFLEET_LOG", "info"), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    let src = images::jpeg(&images::photo(64, 48, 9), 80);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = h.post(
        "/v1/resize?w=8",
        &src,
        &[("traceparent", &format!("00-{trace}-{client_span}-01"))],
    );
    assert_eq!(r.status, 200);
    let answered = r
        .header("traceresponse")
        .expect("traceresponse")
        .to_string();
    let fields: Vec<&str> = answered.split('-').collect();
    assert_eq!((fields[0], fields[1], fields[3]), ("00", trace, "01"));

    let spans = exported_trace(
        &collector,
        trace,
        &["request", "auth", "enqueue", "job", "invoke"],
    );
    let named = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
    let (request, job, invoke) = (named("request"), named("job"), named("invoke"));
    assert_eq!(
        request.parent_id, client_span,
        "the client's span is the parent"
    );
    assert_eq!(
        request.span_id, fields[2],
        "traceresponse names the request's span"
    );
    assert_eq!(named("auth").parent_id, request.span_id);
    assert_eq!(named("enqueue").parent_id, request.span_id);
    assert_eq!(
        job.parent_id, request.span_id,
        "the job continues the request"
    );
    assert_eq!(invoke.parent_id, job.span_id);
    assert_eq!(request.service, "imgfleet");
    assert_eq!(job.attribute("tenant"), Some("tenant-a"));

    // The logs carry the same ids: the request's line names the worker's span.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let lines = log_lines(&log, trace);
        if let Some(l) = lines
            .into_iter()
            .find(|l| l["span"]["name"] == "request" && !l["span"]["worker_span"].is_null())
        {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no request log line names the trace"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(line["span"]["trace_id"], trace);
    assert_eq!(line["span"]["span_id"], request.span_id.as_str());
    assert_eq!(
        line["span"]["worker_span"],
        format!("00-{trace}-{}-01", job.span_id).as_str()
    );

    // No traceparent, or a broken one: a new trace, still answered and exported.
    for header in [
        None,
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
    ] {
        let headers: Vec<(&str, &str)> = header.map(|v| ("traceparent", v)).into_iter().collect();
        let r = h.post("/v1/resize?w=8", &src, &headers);
        assert_eq!(r.status, 200);
        let fresh = r
            .header("traceresponse")
            .unwrap()
            .split('-')
            .nth(1)
            .unwrap()
            .to_string();
        assert_ne!(fresh, trace);
        assert_ne!(fresh, "0".repeat(32));
        let spans = exported_trace(&collector, &fresh, &["request", "job"]);
        let request = spans.iter().find(|s| s.name == "request").unwrap();
        assert_eq!(request.parent_id, "", "a root span");
    }
}
