//! Chaos, with real processes. Under a steady mixed load (synchronous resizes and
//! asynchronous jobs from several clients) a dependency is taken away, then given back.
//! Every scenario shows the same four things:
//! - clients get clear errors — an HTTP status with a JSON error code, within the request
//!   budget — or, when the host itself is killed, a refused connection; never a hang;
//! - the service recovers by itself once the dependency is back (time measured, printed);
//! - no accepted job (202) is lost: each one finishes;
//! - usage equals the requests served, exactly: every answered request is counted once
//!   (joined on its request id), a request that got no answer at most once, every finished
//!   job's run once, and nothing else.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imgfleet_tests::host::{Host, get, repo_root};
use imgfleet_tests::images;
use imgfleet_tests::traffic::{
    Load, Sent, UsageAt, assert_clear_errors, assert_jobs_finish, assert_usage_exact, recovery,
    report, send, small_jpeg, tally,
};

/// `GET /v1/usage` as a served request the usage check knows about.
fn usage_query(h: &Host, n: usize) -> imgfleet_tests::host::Reply {
    let auth = format!("Bearer {}", h.key);
    let id = format!("probe-usage-{n}");
    imgfleet_tests::host::request(
        "GET",
        &h.url("/v1/usage"),
        &[],
        &[
            ("authorization", auth.as_str()),
            ("x-request-id", id.as_str()),
        ],
    )
}

#[test]
fn kill_9_of_a_host_mid_load() {
    let h = Host::start("spin.toml", &[]);
    let key = h.key.clone();
    let load = Load::start(&h.base, &key, 3, small_jpeg(), "w=24");
    std::thread::sleep(Duration::from_secs(3));
    let data = h.kill_9();
    std::thread::sleep(Duration::from_secs(1));
    let h = Host::start_in(data, "spin.toml", &[], &[]);
    let recovered = recovery(&h.base, &key, Duration::from_secs(30));
    load.retarget(&[&h.base]);
    std::thread::sleep(Duration::from_secs(3));
    let sent = load.finish();
    report("kill -9", &sent, recovered);
    assert!(
        sent.iter().any(|s| s.status.is_none()),
        "the kill was not noticed by any client"
    );
    assert_clear_errors("kill -9", &sent, &[]);
    assert_jobs_finish("kill -9", &h.base, &key, &sent, Duration::from_secs(60));
    assert_usage_exact("kill -9", &UsageAt::DataDir(h.data.path()), &sent);
}

#[test]
fn the_identity_store_away_mid_load() {
    let h = Host::start("spin.toml", &[]);
    let load = Load::start(&h.base, &h.key, 3, small_jpeg(), "w=24");
    std::thread::sleep(Duration::from_secs(2));
    let store = h.data.path().join("identity.sqlite");
    let aside = h.data.path().join("identity.sqlite.away");
    std::fs::rename(&store, &aside).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Management fails clearly; customers' cached keys keep working (checked below: no
    // request of the load may fail).
    let r = h.admin(
        "POST",
        "/admin/tenants",
        Some(serde_json::json!({"id": "late"})),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "identity_store_unavailable")
    );
    std::thread::sleep(Duration::from_secs(2));
    std::fs::rename(&aside, &store).unwrap();
    let back = Instant::now();
    loop {
        let r = h.admin(
            "POST",
            "/admin/tenants",
            Some(serde_json::json!({"id": "late"})),
        );
        if r.status == 201 || r.status == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "admin writes did not recover: {}",
            r.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let recovered = back.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let sent = load.finish();
    report("identity store away", &sent, recovered);
    assert_clear_errors("identity store away", &sent, &[]);
    assert_jobs_finish(
        "identity store away",
        &h.base,
        &h.key,
        &sent,
        Duration::from_secs(60),
    );
    assert_usage_exact(
        "identity store away",
        &UsageAt::DataDir(h.data.path()),
        &sent,
    );
}

#[test]
fn the_usage_store_away_mid_load() {
    let h = Host::start("spin.toml", &[]);
    let load = Load::start(&h.base, &h.key, 3, small_jpeg(), "w=24");
    std::thread::sleep(Duration::from_secs(2));
    let store = h.data.path().join("usage.sqlite");
    let aside = h.data.path().join("usage.sqlite.away");
    std::fs::rename(&store, &aside).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // Tenants' usage queries say so; requests are served (usage is written ahead).
    let r = usage_query(&h, 0);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "usage_unavailable")
    );
    std::thread::sleep(Duration::from_secs(2));
    std::fs::rename(&aside, &store).unwrap();
    let back = Instant::now();
    for n in 1.. {
        if usage_query(&h, n).status == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "usage queries did not recover"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let recovered = back.elapsed();
    let sent = load.finish();
    report("usage store away", &sent, recovered);
    assert_clear_errors("usage store away", &sent, &[]);
    assert_jobs_finish(
        "usage store away",
        &h.base,
        &h.key,
        &sent,
        Duration::from_secs(60),
    );
    assert_usage_exact("usage store away", &UsageAt::DataDir(h.data.path()), &sent);
}

#[test]
fn a_full_staging_area_mid_load() {
    // 1 MiB of staging and job outputs kept 3 s: the load's outputs fill it.
    let h = Host::start(
        "spin.toml",
        &["--staging-mb", "1", "--job-output-ttl-secs", "3"],
    );
    let photo = images::jpeg(&images::photo(800, 600, 3), 90);
    let load = Load::start(&h.base, &h.key, 3, photo, "w=400&fmt=jpeg&q=90");
    std::thread::sleep(Duration::from_secs(6));
    let sent = load.finish();
    let full = sent
        .iter()
        .filter(|s| s.code.as_deref() == Some("staging_full"))
        .count();
    assert!(
        full > 0,
        "the staging area never filled: {:?}",
        tally(&sent)
    );
    let recovered = recovery(&h.base, &h.key, Duration::from_secs(30));
    report("staging full", &sent, recovered);
    assert_clear_errors("staging full", &sent, &["503 staging_full"]);
    assert_jobs_finish(
        "staging full",
        &h.base,
        &h.key,
        &sent,
        Duration::from_secs(120),
    );
    assert_usage_exact("staging full", &UsageAt::DataDir(h.data.path()), &sent);
}

/// A moto_server of this test's own, so that it can be stopped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Self {
        // Where `./dev.sh test` installed it (its venv may live outside the clone).
        let bin = std::env::var_os("IMGFLEET_TEST_MOTO_SERVER")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".venv/bin/moto_server"));
        assert!(
            bin.exists(),
            "{} is missing: ./dev.sh test installs it",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, endpoint }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_sqs_server_stopped_mid_load() {
    let moto = Moto::start();
    let h = Host::start_with_env(
        "spin.toml",
        &[
            "--queue",
            "sqs",
            "--sqs-endpoint",
            &moto.endpoint,
            "--sqs-region",
            "us-east-1",
            "--host-id",
            "chaos",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    let load = Load::start(&h.base, &h.key, 3, small_jpeg(), "w=24");
    std::thread::sleep(Duration::from_secs(3));
    moto.signal("-STOP");
    // The load's clients may all be waiting on work queued before the stop (which then
    // finishes once SQS is back); requests that arrive during the stop must be refused.
    std::thread::sleep(Duration::from_millis(500));
    let stopped_at = Instant::now();
    let probes: Vec<Sent> = std::thread::scope(|s| {
        let probes: Vec<_> = ["/v1/resize?w=24", "/v1/jobs?w=24"]
            .iter()
            .enumerate()
            .map(|(n, path)| {
                let id = format!("probe-stopped-{n}");
                let h = &h;
                s.spawn(move || send(&h.base, &h.key, path, &id, &small_jpeg()))
            })
            .collect();
        probes.into_iter().map(|p| p.join().unwrap()).collect()
    });
    std::thread::sleep(Duration::from_secs(5).saturating_sub(stopped_at.elapsed()));
    moto.signal("-CONT");
    let recovered = recovery(&h.base, &h.key, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let mut sent = load.finish();
    report("SQS stopped", &sent, recovered);
    for p in &probes {
        assert_eq!(
            (p.status, p.code.as_deref()),
            (Some(503), Some("queue_unavailable")),
            "a request sent while SQS was stopped ({}, {:?})",
            p.request_id,
            p.took
        );
    }
    sent.extend(probes);
    assert_clear_errors(
        "SQS stopped",
        &sent,
        &["503 queue_unavailable", "504 deadline_exceeded"],
    );
    assert_jobs_finish(
        "SQS stopped",
        &h.base,
        &h.key,
        &sent,
        Duration::from_secs(90),
    );
    assert_usage_exact("SQS stopped", &UsageAt::DataDir(h.data.path()), &sent);
    let health = get(&h.url("/healthz"));
    assert_eq!(health.status, 200);
}
