//! Mixed traffic from several clients (synchronous resizes and asynchronous jobs) and the
//! checks every failure scenario makes of what the clients saw: clear errors within the
//! request budget, every accepted job finished, usage equal to service.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::host::{DEFAULT_TENANT, binary, try_post};
use crate::images;

/// What a client may wait at most for any answer: the host's own budget for a request
/// (twice the 10 s deadline plus 2 s), and a margin.
pub const BUDGET: Duration = Duration::from_secs(25);

#[derive(Debug, Clone)]
pub struct Sent {
    pub request_id: String,
    /// `None`: no answer (connection refused or reset).
    pub status: Option<u16>,
    pub code: Option<String>,
    pub took: Duration,
    /// When the answer (or the failure) came.
    pub at: Instant,
    /// The job id of an accepted asynchronous job.
    pub job: Option<String>,
}

/// Clients sending until stopped; the base URL can change (a restarted host).
pub struct Load {
    stop: Arc<AtomicBool>,
    bases: Arc<RwLock<Vec<String>>>,
    clients: Vec<JoinHandle<Vec<Sent>>>,
}

pub fn small_jpeg() -> Vec<u8> {
    images::jpeg(&images::photo(64, 48, 7), 80)
}

pub fn send(base: &str, key: &str, path: &str, request_id: &str, body: &[u8]) -> Sent {
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
                at: Instant::now(),
                job,
            }
        }
        Err(_) => Sent {
            request_id: request_id.to_string(),
            status: None,
            code: None,
            took,
            at: Instant::now(),
            job: None,
        },
    }
}

impl Load {
    /// `clients` threads; every third request of each is an asynchronous job.
    pub fn start(base: &str, key: &str, clients: usize, body: Vec<u8>, query: &str) -> Self {
        Self::spread(&[base], key, clients, body, query)
    }

    /// As [`Load::start`], each client taking the hosts in turn (a load balancer's round
    /// robin).
    pub fn spread(bases: &[&str], key: &str, clients: usize, body: Vec<u8>, query: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let base = Arc::new(RwLock::new(
            bases.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
        ));
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
                        let url = {
                            let bases = base.read().unwrap();
                            bases[(c + n) % bases.len()].clone()
                        };
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
            bases: base,
            clients,
        }
    }

    /// Open-loop load: a request every `1 / rate` seconds whatever became of the earlier
    /// ones (each on a thread of its own), taking the hosts in turn, every third an
    /// asynchronous job. A stalled request holds back no other, so latency is what a
    /// stream of independent users sees, not what one waiting client lets through.
    pub fn open_loop(bases: &[&str], key: &str, rate: f64, body: Vec<u8>, query: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let base = Arc::new(RwLock::new(
            bases.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
        ));
        let body = Arc::new(body);
        let (key, query) = (key.to_string(), query.to_string());
        let (flag, hosts) = (stop.clone(), base.clone());
        let dispatcher = std::thread::spawn(move || {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let started = Instant::now();
            let mut senders = Vec::new();
            for n in 0usize.. {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                // On schedule, not after the previous send: arrivals do not wait for answers.
                let due = started + interval * n as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let path = if n % 3 == 2 {
                    format!("/v1/jobs?{query}")
                } else {
                    format!("/v1/resize?{query}")
                };
                let url = {
                    let bases = hosts.read().unwrap();
                    bases[n % bases.len()].clone()
                };
                let (key, body) = (key.clone(), body.clone());
                senders.push(std::thread::spawn(move || {
                    send(&url, &key, &path, &format!("open-{n}"), &body)
                }));
            }
            senders
                .into_iter()
                .map(|s| s.join().expect("a sender"))
                .collect()
        });
        Self {
            stop,
            bases: base,
            clients: vec![dispatcher],
        }
    }

    /// Sends to these hosts from now on (a host restarted on another port, or gone).
    pub fn retarget(&self, bases: &[&str]) {
        *self.bases.write().unwrap() = bases.iter().map(|b| b.to_string()).collect();
    }

    pub fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        self.clients
            .into_iter()
            .flat_map(|c| c.join().expect("a load client"))
            .collect()
    }
}

/// Answers by status and code, for the report.
pub fn tally(sent: &[Sent]) -> BTreeMap<String, usize> {
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
pub fn assert_clear_errors(scenario: &str, sent: &[Sent], allowed: &[&str]) {
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
pub fn recovery(base: &str, key: &str, within: Duration) -> Duration {
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
pub fn assert_jobs_finish(
    scenario: &str,
    h_base: &str,
    key: &str,
    sent: &[Sent],
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let auth = format!("Bearer {key}");
    let mut n = 0;
    for job in sent.iter().filter_map(|s| s.job.as_ref()) {
        loop {
            // A served request too: named so that the usage check knows it.
            n += 1;
            let id = format!("probe-status-{n}");
            let r = crate::host::request(
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

/// Where `imgfleet usage export` finds the usage store.
pub enum UsageAt<'a> {
    DataDir(&'a std::path::Path),
    Database(&'a str),
}

/// The raw usage records of the default tenant, as billing exports them.
pub fn exported_usage(at: &UsageAt) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(binary());
    cmd.arg("usage");
    match at {
        UsageAt::DataDir(dir) => cmd.arg("--data-dir").arg(dir),
        UsageAt::Database(url) => cmd.args(["--database-url", url]),
    };
    let out = cmd
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
pub fn assert_usage_exact(scenario: &str, data: &UsageAt, sent: &[Sent]) {
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
    // The submission each run belongs to (a run carries its submission's request id).
    let mut submitted_by: BTreeMap<&str, &str> = BTreeMap::new();
    for r in &records {
        let id = r["id"].as_str().unwrap();
        if id.starts_with("run-") {
            *runs.entry(id).or_default() += 1;
            submitted_by.insert(id, r["request_id"].as_str().unwrap_or_default());
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
        // A job whose 202 was lost with a killed host was still accepted (it was durable
        // before the answer) and runs after the restart; any other run is a phantom.
        let unanswered_submission = submitted_by
            .get(run)
            .is_some_and(|request| unanswered.contains(*request));
        assert!(
            jobs.contains(*run) || unanswered_submission,
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

pub fn report(scenario: &str, sent: &[Sent], recovered: Duration) {
    let slowest = sent.iter().map(|s| s.took).max().unwrap_or_default();
    println!(
        "{scenario}: {} requests, answers {:?}, slowest {slowest:?}, recovered {recovered:?} after the dependency returned",
        sent.len(),
        tally(sent)
    );
}

/// The longest time between `from` and `until` (when the load was told to stop) in which
/// no request got a successful answer: the service's interruption as clients saw it. After
/// `until` no new request is sent, so a request still running then (it ends with its own
/// answer, judged elsewhere) does not stretch the interruption.
pub fn longest_gap_without_success(sent: &[Sent], from: Instant, until: Instant) -> Duration {
    let mut times: Vec<Instant> = sent
        .iter()
        .filter(|s| matches!(s.status, Some(200 | 202)))
        .map(|s| s.at)
        .filter(|t| (from..=until).contains(t))
        .collect();
    times.sort();
    let mut longest = Duration::ZERO;
    let mut last = from;
    for t in times {
        longest = longest.max(t - last);
        last = t;
    }
    longest.max(until.saturating_duration_since(last))
}
