//! The whole service against a minimal sharp server, end to end: imgfleet (`imgfleet up` on
//! its embedded defaults: auth-check, queue, WASM resize, audit, metering) and
//! `bench/sharp/server.mjs` (sharp only resizes) each pinned to core 0 in turn, a closed-loop
//! generator (4 connections, a random photo per request) pinned to core 1. Printed per job
//! on the mixed input-kind set, per input kind for the 300 px JPEG job, and for a 1-pixel
//! image (the service's own cost): requests/s and the server's CPU per request (from
//! /proc/<pid>/stat, every thread of the process), as ratios measured in one run. The
//! servers take turns job by job and kind by kind, the order alternating between rounds,
//! so a drift of the machine's speed reaches both.
//!
//! `cargo bench --profile ci -p imgfleet-tests --bench versus_sharp [-- --seconds N
//! --kind-seconds N --rounds N --clients N]` (needs the components, `./dev.sh build-wasm`;
//! the `imgfleet` binary of the same profile or `IMGFLEET_BIN`; `./dev.sh photos`; and sharp
//! in bench/sharp, which `./dev.sh bench` installs).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imgfleet_tests::bench::{arg, pin_to_cpu, record};
use imgfleet_tests::host::{Host, repo_root};
use imgfleet_tests::images::{self, Rng};
use imgfleet_tests::photos::{KINDS, KindPhoto, kind_set};

const JOBS: [(&str, &str); 4] = [
    ("300 px JPEG q80", "w=300&fmt=jpeg&q=80"),
    ("1200 px JPEG q80", "w=1200&fmt=jpeg&q=80"),
    ("300 px WebP q80", "w=300&fmt=webp&q=80"),
    ("300 px AVIF q60", "w=300&fmt=avif&q=60"),
];
/// The job measured per input kind.
const KIND_JOB: &str = "w=300&fmt=jpeg&q=80";

/// One server under load: where to send, how, and which process to pin and measure.
struct Server {
    url: String,
    auth: Option<String>,
    pid: u32,
}

/// A phase's figures for one server.
#[derive(Default, Clone, Copy)]
struct Tally {
    requests: usize,
    errors: usize,
    seconds: f64,
    cpu_seconds: f64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.seconds += other.seconds;
        self.cpu_seconds += other.cpu_seconds;
    }
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    fn cpu_ms(&self) -> f64 {
        self.cpu_seconds * 1e3 / self.requests.max(1) as f64
    }
}

/// User + system CPU seconds of every thread of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's stat");
    // Fields after the command name, which may hold spaces: state is the first, utime the
    // twelfth, stime the thirteenth.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// Pins every thread of `pid` to `core` (threads made later inherit it from their maker).
fn pin(pid: u32, core: usize) {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset (util-linux)");
    assert!(status.success(), "taskset failed for {pid}");
}

/// The closed loop: `clients` connections, each sending a random one of `photos` and
/// waiting for the answer, for `seconds`.
fn load(
    server: &Server,
    photos: &[&[u8]],
    query: &str,
    clients: usize,
    seconds: f64,
    seed: u64,
) -> Tally {
    let url = format!("{}?{query}", server.url);
    let cpu_before = cpu_seconds(server.pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let (requests, errors) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let url = url.clone();
                s.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(60)))
                        .build()
                        .into();
                    let mut rng = Rng::new(seed * 1000 + c as u64 + 1);
                    let (mut ok, mut failed) = (0usize, 0usize);
                    while Instant::now() < deadline {
                        let photo = photos[rng.below(photos.len() as u64) as usize];
                        let mut request = agent.post(&url);
                        if let Some(auth) = &server.auth {
                            request = request.header("authorization", auth);
                        }
                        match request.send(photo) {
                            Ok(mut resp) => {
                                let status = resp.status().as_u16();
                                let body =
                                    resp.body_mut().with_config().limit(64 << 20).read_to_vec();
                                if status == 200 && body.is_ok_and(|b| !b.is_empty()) {
                                    ok += 1;
                                } else {
                                    failed += 1;
                                }
                            }
                            Err(_) => failed += 1,
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    });
    Tally {
        requests,
        errors,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds(server.pid) - cpu_before,
    }
}

/// Runs one phase on both servers, `rounds` times, the order alternating; (imgfleet, sharp).
fn compare(
    servers: &[Server; 2],
    photos: &[&[u8]],
    query: &str,
    clients: usize,
    seconds: f64,
    rounds: usize,
) -> [Tally; 2] {
    let mut tallies = [Tally::default(); 2];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            // Unmeasured warm-up: connections, caches, the first instance.
            load(&servers[i], photos, query, clients, 0.3, round as u64);
            let t = load(&servers[i], photos, query, clients, seconds, round as u64);
            tallies[i].add(t);
        }
    }
    tallies
}

fn row(label: &str, [ours, sharp]: [Tally; 2]) -> serde_json::Value {
    println!(
        "| {label} | {:.1} | {:.1} | **{:.2}×** | {:.2} | {:.2} | {:.2}× | {} / {} |",
        ours.per_second(),
        sharp.per_second(),
        ours.per_second() / sharp.per_second(),
        ours.cpu_ms(),
        sharp.cpu_ms(),
        sharp.cpu_ms() / ours.cpu_ms(),
        ours.errors,
        sharp.errors,
    );
    serde_json::json!({
        "label": label,
        "imgfleet_rps": ours.per_second(),
        "sharp_rps": sharp.per_second(),
        "ratio": ours.per_second() / sharp.per_second(),
        "imgfleet_cpu_ms": ours.cpu_ms(),
        "sharp_cpu_ms": sharp.cpu_ms(),
        "errors": [ours.errors, sharp.errors],
    })
}

fn header(what: &str) {
    println!();
    println!(
        "| {what} | imgfleet req/s | sharp req/s | imgfleet ÷ sharp | imgfleet CPU ms/req | sharp CPU ms/req | CPU ratio (sharp ÷ imgfleet) | errors (imgfleet / sharp) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
}

struct SharpServer(Child);

impl Drop for SharpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sharp() -> (SharpServer, u16, serde_json::Value) {
    let dir = repo_root().join("bench/sharp");
    assert!(
        dir.join("node_modules/sharp").exists(),
        "sharp is not installed in bench/sharp (./dev.sh bench installs it)"
    );
    let mut child = Command::new("node")
        .arg("server.mjs")
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("sharp server's first line");
    let hello: serde_json::Value = serde_json::from_str(&line).expect("sharp server's hello");
    let port = hello["port"].as_u64().expect("port") as u16;
    (SharpServer(child), port, hello["versions"].clone())
}

fn main() {
    let seconds = arg("--seconds", 8) as f64;
    let kind_seconds = arg("--kind-seconds", 3) as f64;
    let rounds = arg("--rounds", 2);
    let clients = arg("--clients", 4);
    let set = kind_set().unwrap_or_else(|e| panic!("{e}"));
    let photos: Vec<&[u8]> = set.iter().map(|p| p.bytes.as_slice()).collect();

    let host = Host::start("spin.toml", &["--cores", "1"]);
    let (_sharp, port, versions) = start_sharp();
    let servers = [
        Server {
            url: host.url("/v1/resize"),
            auth: Some(format!("Bearer {}", host.key)),
            pid: host.pid(),
        },
        Server {
            url: format!("http://127.0.0.1:{port}/resize"),
            auth: None,
            pid: _sharp.0.id(),
        },
    ];
    for s in &servers {
        pin(s.pid, 0);
    }
    pin_to_cpu(1).unwrap_or_else(|e| panic!("{e}"));
    let mean_kb =
        set.iter().map(|p| p.bytes.len()).sum::<usize>() as f64 / set.len() as f64 / 1024.0;
    println!(
        "the whole service (`imgfleet up --cores 1`, embedded defaults) vs a sharp {} (libvips {}) HTTP server, each pinned to core 0 in turn; {clients} closed-loop connections on core 1; {} photos of {} kinds (mean {mean_kb:.0} KB), random per request; {seconds} s per job, {kind_seconds} s per kind, {rounds} rounds, order alternating",
        versions["sharp"].as_str().unwrap_or("?"),
        versions["vips"].as_str().unwrap_or("?"),
        set.len(),
        KINDS.len(),
    );
    let mut figures = serde_json::json!({ "versions": versions, "jobs": [], "kinds": [] });

    header("job (every kind)");
    for (label, query) in JOBS {
        let t = compare(&servers, &photos, query, clients, seconds, rounds);
        figures["jobs"].as_array_mut().unwrap().push(row(label, t));
    }

    header("input kind (300 px JPEG q80)");
    for kind in KINDS {
        let of_kind: Vec<&[u8]> = set
            .iter()
            .filter(|p: &&KindPhoto| p.kind == kind)
            .map(|p| p.bytes.as_slice())
            .collect();
        let t = compare(&servers, &of_kind, KIND_JOB, clients, kind_seconds, rounds);
        figures["kinds"].as_array_mut().unwrap().push(row(kind, t));
    }

    header("1-pixel PNG → 1-pixel PNG");
    let pixel = images::png_rgb(&image::RgbImage::new(1, 1));
    let t = compare(
        &servers,
        &[&pixel],
        "w=1&fmt=png",
        clients,
        kind_seconds,
        rounds,
    );
    figures["one_pixel"] = row("1 px", t);
    let path = record("versus_sharp", figures);
    println!();
    println!("figures: {}", path.display());
}
