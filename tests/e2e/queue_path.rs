//! Requests travel API → jobs queue → worker → completions queue → API; these tests check
//! that path's behaviour under load and on the SQS backend.

use std::time::{Duration, Instant};

use imgfleet_tests::host::Host;
use imgfleet_tests::images;

/// One slot, 1.5 s jobs, a 2 s deadline: once the service time is known, the host admits
/// only what it can finish in time and refuses the rest at once with Retry-After.
#[test]
fn overload_is_refused_early_not_queued_to_time_out() {
    let h = Host::start(
        "tests/fixtures/hog.toml",
        &["--cores", "1", "--deadline-ms", "2000"],
    );
    // Teach the host how long a job takes.
    for _ in 0..3 {
        assert_eq!(h.post("/hog/slow", b"", &[]).status, 200);
    }
    let results: Vec<(u16, Duration, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let h = &h;
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(20 * i));
                    let started = Instant::now();
                    let r = h.post("/hog/slow", b"", &[]);
                    (
                        r.status,
                        started.elapsed(),
                        r.header("retry-after").map(str::to_string),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let served: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(
        served.len() + refused.len(),
        results.len(),
        "only 200 or 503: {results:?}"
    );
    assert!(!served.is_empty() && !refused.is_empty(), "{results:?}");
    for (_, took, retry_after) in &refused {
        assert!(*took < Duration::from_millis(500), "refusal took {took:?}");
        assert!(
            retry_after
                .as_deref()
                .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1))
        );
    }
    for (_, took, _) in &served {
        assert!(
            *took < Duration::from_secs(6),
            "an admitted request took {took:?}"
        );
    }
}

/// The host on AWS's services instead of its embedded ones: SQS between API and workers,
/// identity and usage in DynamoDB (moto_server from `./dev.sh test` speaks both). Tenants
/// made through the admin API are in the tables the CLI reads; usage reaches DynamoDB.
/// (One test: hosts sharing moto's `jobs` queue would take each other's jobs.)
#[test]
fn resizes_with_sqs_between_api_and_workers_and_dynamodb_stores() {
    let endpoint = std::env::var("IMGFLEET_TEST_SQS_ENDPOINT")
        .expect("IMGFLEET_TEST_SQS_ENDPOINT is not set: run the tests with ./dev.sh test, which starts moto_server");
    let id = format!("ddb-{}", std::process::id());
    let database = format!("dynamodb://{id}?endpoint={endpoint}&region=us-east-1");
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let h = Host::start_with_env(
        "spin.toml",
        &[
            "--queue",
            "sqs",
            "--sqs-endpoint",
            &endpoint,
            "--sqs-region",
            "us-east-1",
            "--host-id",
            &id,
            "--database-url",
            &database,
        ],
        &env,
    );
    let src = images::jpeg(&images::photo(320, 240, 3), 85);
    for w in [40, 80, 120] {
        let r = h.post(&format!("/v1/resize?w={w}"), &src, &[]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let img = images::decode(&r.body);
        assert_eq!((img.width(), img.height()), (w, w * 3 / 4));
    }
    let r = h.post("/v1/resize?w=10&fit=banana", &src, &[]);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_parameter")
    );
    let listed = std::process::Command::new(imgfleet_tests::host::binary())
        .args(["tenants", "--database-url", &database, "list"])
        .envs(env)
        .output()
        .expect("imgfleet tenants list");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let tenants: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        tenants
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == imgfleet_tests::host::DEFAULT_TENANT),
        "{tenants}"
    );
    // The four requests (three resizes, one refused parameter: its body was read) are
    // metered into the DynamoDB usage table.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = h.get("/v1/usage?granularity=day");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let bytes_in: u64 = r.json()["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["bytes_in"].as_u64().unwrap())
            .sum();
        if bytes_in >= 4 * src.len() as u64 {
            assert_eq!(bytes_in, 4 * src.len() as u64, "counted more than once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage not in DynamoDB after 30 s: {}",
            r.json()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Tenant A floods the host with slow work; tenant B's single request is served next, not
/// after A's backlog: jobs are grouped per tenant and groups are served round robin. (Sent
/// with A's key instead, the same request waits for the whole backlog: about 10 s here.)
#[test]
fn a_flooding_tenant_does_not_starve_another() {
    const FLOOD: usize = 6;
    const JOB: Duration = Duration::from_millis(1500);
    let h = Host::start(
        "tests/fixtures/hog.toml",
        &[
            "--cores",
            "1",
            "--tenant-shards",
            "1",
            "--deadline-ms",
            "30000",
        ],
    );
    let b_key = h.tenant_key("tenant-b");
    let started = Instant::now();
    let (a_done, b_took) = std::thread::scope(|s| {
        let flood: Vec<_> = (0..FLOOD)
            .map(|_| {
                let h = &h;
                s.spawn(move || {
                    let r = h.post("/hog/slow", b"", &[]);
                    assert_eq!(r.status, 200);
                    started.elapsed()
                })
            })
            .collect();
        // B arrives once A's whole backlog is queued.
        std::thread::sleep(Duration::from_millis(300));
        let b_started = Instant::now();
        let r = h.post_as(&b_key, "/hog/slow", b"", &[]);
        assert_eq!(r.status, 200);
        let b_took = b_started.elapsed();
        let a_done: Vec<Duration> = flood.into_iter().map(|t| t.join().unwrap()).collect();
        (a_done, b_took)
    });
    // B waits for at most the job running now and one more of A's, plus its own.
    assert!(
        b_took < JOB * 3 + Duration::from_millis(500),
        "B took {b_took:?}"
    );
    let a_after_b = a_done
        .iter()
        .filter(|d| **d > b_took + Duration::from_millis(300))
        .count();
    assert!(
        a_after_b >= FLOOD - 3,
        "A finished at {a_done:?}, B after {b_took:?}"
    );
}
