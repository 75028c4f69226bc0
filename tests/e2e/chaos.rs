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

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use imgfleet_tests::host::{DEFAULT_TENANT, Host, binary, get, repo_root, try_post};
use imgfleet_tests::images;

/// What a client may wait at most for any answer: the host's own budget for a request
/// (twice the 10 s deadline plus 2 s), and a margin.
const BUDGET: Duration = Duration::from_secs(25);

#[derive(Debug, Clone)]
struct Sent {
    request_id: String,
    /// `None`: no answer (connection refused or reset).
    status: Option<u16>,
    code: Option<String>,
    took: Duration,
    /// The job id of an accepted asynchronous job.
    job: Option<String>,
}

/// Clients sending until stopped; the base URL can change (a restarted host).
struct Load {
    stop: Arc<AtomicBool>,
    base: Arc<RwLock<String>>,
    clients: Vec<JoinHandle<Vec<Sent>>>,
}

fn small_jpeg() -> Vec<u8> {
    images::jpeg(&images::photo(64, 48, 7), 80)
}

fn send(base: &str, key: &str, path: &str, request_id: &str, body: &[u8]) -> Sent {
    let started = Instant::now();
    let auth = format!("Bearer {key}");
    let headers = [
        ("authorization", auth.as_str()),
        ("x-request-id", request_id),
    ];
    let answer = try_post(&format!("{base}{path}"), body, &headers, BUDGET + BUDGET);
    let took = started.elapsed();
    match answer {
        Ok(r) => {
            let json: Option<serde_json::Value> = serde_json::from_slice(&r.body).ok();
            let code = json
                .as_ref()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
            let job = (r.status == 202)
                .then(|| {
                    json.as_ref()
                        .and_then(|v| v["id"].as_str().map(str::to_string))
                })
                .flatten();
            Sent {
                request_id: request_id.to_string(),
                status: Some(r.status),
                code,
                took,
                job,
            }
        }
        Err(_) => Sent {
            request_id: request_id.to_string(),
            status: None,
            code: None,
            took,
            job: None,
        },
    }
}

impl Load {
    /// `clients` threads; every third request of each is an asynchronous job.
    fn start(base: &str, key: &str, clients: usize, body: Vec<u8>, query: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let base = Arc::new(RwLock::new(base.to_string()));
        let body = Arc::new(body);
        let clients = (0..clients)
            .map(|c| {
                let (stop, base, body) = (stop.clone(), base.clone(), body.clone());
                let (key, query) = (key.to_string(), query.to_string());
                std::thread::spawn(move || {
                    let mut sent = Vec::new();
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let path = if n % 3 == 2 {
                            format!("/v1/jobs?{query}")
                        } else {
                            format!("/v1/resize?{query}")
                        };
                        let url = base.read().unwrap().clone();
                        let s = send(&url, &key, &path, &format!("chaos-{c}-{n}"), &body);
                        let pause = if s.status.is_none() { 100 } else { 20 };
                        sent.push(s);
                        std::thread::sleep(Duration::from_millis(pause));
                    }
                    sent
                })
            })
            .collect();
        Self {
            stop,
            base,
            clients,
        }
    }

    fn retarget(&self, base: &str) {
        *self.base.write().unwrap() = base.to_string();
    }

    fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        self.clients
            .into_iter()
            .flat_map(|c| c.join().expect("a load client"))
            .collect()
    }
}

/// Answers by status and code, for the report.
fn tally(sent: &[Sent]) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for s in sent {
        let key = match (s.status, &s.code) {
            (None, _) => "no answer".to_string(),
            (Some(st), Some(code)) => format!("{st} {code}"),
            (Some(st), None) => st.to_string(),
        };
        *t.entry(key).or_default() += 1;
    }
    t
}

/// No hangs, and every refusal says why. `allowed` are the error codes this scenario may
/// produce (as `"<status> <code>"`).
fn assert_clear_errors(scenario: &str, sent: &[Sent], allowed: &[&str]) {
    for s in sent {
        assert!(
            s.took <= BUDGET,
            "{scenario}: {} waited {:?} (budget {BUDGET:?})",
            s.request_id,
            s.took
        );
        if let Some(status) = s.status.filter(|st| *st >= 400) {
            let code = s.code.as_deref().unwrap_or_else(|| {
                panic!(
                    "{scenario}: {} got {status} without an error code",
                    s.request_id
                )
            });
            let label = format!("{status} {code}");
            assert!(
                allowed.contains(&label.as_str()),
                "{scenario}: {} got {label}",
                s.request_id
            );
        }
    }
}

/// How long until a synchronous resize succeeds again.
fn recovery(base: &str, key: &str, within: Duration) -> Duration {
    let started = Instant::now();
    let body = small_jpeg();
    for n in 0.. {
        let s = send(base, key, "/v1/resize?w=16", &format!("probe-{n}"), &body);
        if s.status == Some(200) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not recovered within {within:?}: last {s:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    unreachable!()
}

/// Every accepted job finishes (`done`), within `within` of now.
fn assert_jobs_finish(scenario: &str, h_base: &str, key: &str, sent: &[Sent], within: Duration) {
    let deadline = Instant::now() + within;
    let auth = format!("Bearer {key}");
    let mut n = 0;
    for job in sent.iter().filter_map(|s| s.job.as_ref()) {
        loop {
            // A served request too: named so that the usage check knows it.
            n += 1;
            let id = format!("probe-status-{n}");
            let r = imgfleet_tests::host::request(
                "GET",
                &format!("{h_base}/v1/jobs/{job}"),
                &[],
                &[
                    ("authorization", auth.as_str()),
                    ("x-request-id", id.as_str()),
                ],
            );
            let v = r.json();
            match v["status"].as_str() {
                Some("done") => break,
                Some("queued") | Some("running") => {}
                _ => panic!("{scenario}: job {job}: {v}"),
            }
            assert!(Instant::now() < deadline, "{scenario}: job {job} still {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The raw usage records of the default tenant, as billing exports them.
fn exported_usage(data: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(binary())
        .args(["usage", "--data-dir"])
        .arg(data)
        .args(["export", "--tenant", DEFAULT_TENANT, "--format", "jsonl"])
        .output()
        .expect("imgfleet usage export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Usage equals service: waits for metering to catch up, then compares record by record.
/// `probes` are the request ids of the recovery probes, which are served requests too.
fn assert_usage_exact(scenario: &str, data: &std::path::Path, sent: &[Sent]) {
    let answered: BTreeSet<&str> = sent
        .iter()
        .filter(|s| s.status.is_some())
        .map(|s| s.request_id.as_str())
        .collect();
    let unanswered: BTreeSet<&str> = sent
        .iter()
        .filter(|s| s.status.is_none())
        .map(|s| s.request_id.as_str())
        .collect();
    let jobs: BTreeSet<String> = sent
        .iter()
        .filter_map(|s| s.job.as_ref().map(|j| format!("run-{j}")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = exported_usage(data);
        let requests: BTreeSet<&str> = records
            .iter()
            .filter(|r| !r["id"].as_str().unwrap().starts_with("run-"))
            .filter_map(|r| r["request_id"].as_str())
            .collect();
        let runs = records
            .iter()
            .filter(|r| jobs.contains(r["id"].as_str().unwrap()))
            .count();
        if answered.is_subset(&requests) && runs == jobs.len() {
            // Let any duplicate that is on its way arrive before judging.
            std::thread::sleep(Duration::from_millis(1500));
            break exported_usage(data);
        }
        assert!(
            Instant::now() < deadline,
            "{scenario}: metering did not catch up: {} of {} answered requests and {runs} of {} job runs counted",
            answered.intersection(&requests).count(),
            answered.len(),
            jobs.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut per_request: BTreeMap<&str, usize> = BTreeMap::new();
    let mut runs: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &records {
        let id = r["id"].as_str().unwrap();
        if id.starts_with("run-") {
            *runs.entry(id).or_default() += 1;
        } else {
            *per_request
                .entry(r["request_id"].as_str().unwrap())
                .or_default() += 1;
        }
    }
    for (request, n) in &per_request {
        let probe = request.starts_with("probe-");
        assert!(
            answered.contains(request) || unanswered.contains(request) || probe,
            "{scenario}: usage for a request nobody sent: {request}"
        );
        assert_eq!(*n, 1, "{scenario}: {request} counted {n} times");
    }
    for request in &answered {
        assert!(
            per_request.contains_key(request),
            "{scenario}: {request} was answered but not counted"
        );
    }
    for (run, n) in &runs {
        assert!(
            jobs.contains(*run),
            "{scenario}: a run of a job never accepted: {run}"
        );
        assert_eq!(*n, 1, "{scenario}: {run} counted {n} times");
    }
    let lost_in_flight = unanswered
        .iter()
        .filter(|r| per_request.contains_key(*r))
        .count();
    println!(
        "{scenario}: usage = service: {} answered requests, {} job runs counted once each; {} of {} unanswered requests had been served when the host died",
        answered.len(),
        jobs.len(),
        lost_in_flight,
        unanswered.len()
    );
}

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

fn report(scenario: &str, sent: &[Sent], recovered: Duration) {
    let slowest = sent.iter().map(|s| s.took).max().unwrap_or_default();
    println!(
        "{scenario}: {} requests, answers {:?}, slowest {slowest:?}, recovered {recovered:?} after the dependency returned",
        sent.len(),
        tally(sent)
    );
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
    load.retarget(&h.base);
    std::thread::sleep(Duration::from_secs(3));
    let sent = load.finish();
    report("kill -9", &sent, recovered);
    assert!(
        sent.iter().any(|s| s.status.is_none()),
        "the kill was not noticed by any client"
    );
    assert_clear_errors("kill -9", &sent, &[]);
    assert_jobs_finish("kill -9", &h.base, &key, &sent, Duration::from_secs(60));
    assert_usage_exact("kill -9", h.data.path(), &sent);
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
    assert_usage_exact("identity store away", h.data.path(), &sent);
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
    assert_usage_exact("usage store away", h.data.path(), &sent);
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
    assert_usage_exact("staging full", h.data.path(), &sent);
}

/// A moto_server of this test's own, so that it can be stopped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Self {
        let bin = repo_root().join(".venv/bin/moto_server");
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
    std::thread::sleep(Duration::from_secs(5));
    moto.signal("-CONT");
    let recovered = recovery(&h.base, &h.key, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let sent = load.finish();
    report("SQS stopped", &sent, recovered);
    assert!(
        sent.iter().any(|s| s.status.is_some_and(|st| st >= 500)),
        "nobody noticed the queue was gone: {:?}",
        tally(&sent)
    );
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
    assert_usage_exact("SQS stopped", h.data.path(), &sent);
    let health = get(&h.url("/healthz"));
    assert_eq!(health.status, 200);
}
