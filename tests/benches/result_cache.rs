//! The result cache: signed GETs answered from it (authentication, audit and metering
//! included) per second and their latency, the load generator on the same machine; then a
//! Zipf-distributed workload (many distinct images, a few of them popular) against the same
//! run without the cache: hit ratio, resizes avoided, requests per second, p99.
//!
//! `cargo bench -p imgfleet-tests --bench result_cache [-- --seconds S --clients C
//! --images N --zipf-requests R --zipf-s S --cores K]` (needs the components: `./dev.sh
//! build-wasm`, and the `imgfleet` binary of the same profile).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use imgfleet_tests::bench::{arg, record};
use imgfleet_tests::host::{Host, sign_url};
use imgfleet_tests::images;
use imgfleet_tests::origin::Origin;

/// One client's connection, kept alive across its requests (as browsers and CDNs do).
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Status, and the `cache` metric of Server-Timing.
fn fetch(agent: &ureq::Agent, url: &str) -> (u16, Option<String>) {
    let resp = agent.get(url).call().expect("the request reached the host");
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| {
            t.split(',')
                .find_map(|m| m.trim().strip_prefix("cache;desc=").map(str::to_string))
        });
    let _ = resp.into_body().read_to_vec();
    (status, cache)
}

struct Run {
    took: Vec<Duration>,
    wall: Duration,
    errors: usize,
    hits: usize,
    misses: usize,
}

impl Run {
    fn rate(&self) -> f64 {
        self.took.len() as f64 / self.wall.as_secs_f64()
    }

    fn pct(&self, p: f64) -> f64 {
        let i = ((self.took.len() as f64 - 1.0) * p).round() as usize;
        self.took[i].as_secs_f64() * 1e3
    }
}

/// `clients` threads, each with its own connection, sending the URLs `pick(client, i)`
/// names until `stop` (time) or `per_client` requests.
fn drive(
    clients: usize,
    per_client: usize,
    for_at_most: Duration,
    pick: Arc<dyn Fn(usize, usize) -> String + Send + Sync>,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (pick, stop) = (pick.clone(), stop.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut out = (Vec::new(), 0, 0, 0);
                for i in 0..per_client {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let url = pick(c, i);
                    let t = Instant::now();
                    let (status, cache) = fetch(&agent, &url);
                    out.0.push(t.elapsed());
                    match (status, cache.as_deref()) {
                        (200, Some("miss")) => out.2 += 1,
                        (200, _) => out.1 += 1,
                        _ => out.3 += 1,
                    }
                }
                out
            })
        })
        .collect();
    let deadline = started + for_at_most;
    while Instant::now() < deadline && threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let mut run = Run {
        took: Vec::new(),
        wall: Duration::ZERO,
        errors: 0,
        hits: 0,
        misses: 0,
    };
    for t in threads {
        let (took, hits, misses, errors) = t.join().expect("a client thread");
        run.took.extend(took);
        run.hits += hits;
        run.misses += misses;
        run.errors += errors;
    }
    run.wall = started.elapsed();
    run.took.sort();
    run
}

/// A Zipf(s) sampler over ranks 0..n by inverse CDF, from a fixed-seed generator: the
/// same sequence for both runs.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    fn rank(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// xorshift64*: deterministic, enough for a workload's draws.
fn uniform(seed: &mut u64) -> f64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    (seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

/// Sources and widths: `images` distinct outputs over `sources` photos.
const SOURCES: usize = 100;

fn setup(h: &Host, origin: &Origin) -> String {
    h.add_origin(serde_json::json!({
        "name": "web", "type": "http", "base_url": format!("{}/img/", origin.base),
        "allow_private": true, "max_age_secs": 86_400,
    }));
    h.url_key().1
}

fn main() {
    let seconds = arg("--seconds", 8) as u64;
    let clients = arg("--clients", 8);
    let images = arg("--images", 10_000);
    let zipf_requests = arg("--zipf-requests", 6_000);
    let zipf_s = arg("--zipf-s-percent", 100) as f64 / 100.0;
    let cores = arg("--cores", 2).to_string();

    let origin = Origin::start();
    for i in 0..SOURCES {
        origin.put(
            &format!("/img/p{i}.jpg"),
            images::jpeg(&images::photo(640, 427, i as u64), 82),
        );
    }

    // 1. Hits: one popular thumbnail, already made; from memory, and from disk alone
    // (`--memory-cache-mb 0`), taking turns.
    let tiers = [("memory", "64"), ("disk", "0")];
    let hosts: Vec<(Host, String)> = tiers
        .iter()
        .map(|(_, mb)| {
            let h = Host::start("spin.toml", &["--cores", &cores, "--memory-cache-mb", mb]);
            let key = setup(&h, &origin);
            let url = h.url(&sign_url(&key, "web", "w=300&fmt=jpeg", "p0.jpg", &[]));
            (h, url)
        })
        .collect();
    let mut hit_rows = Vec::new();
    for c in [clients / 2, clients, clients * 2] {
        for ((tier, _), (_, url)) in tiers.iter().zip(&hosts) {
            let url = url.clone();
            let warm = drive(1, 20, Duration::from_secs(30), {
                let url = url.clone();
                Arc::new(move |_, _| url.clone())
            });
            assert_eq!(warm.errors, 0);
            let run = drive(
                c,
                usize::MAX,
                Duration::from_secs(seconds),
                Arc::new(move |_, _| url.clone()),
            );
            assert_eq!(run.errors, 0, "every hit answered 200");
            hit_rows.push((*tier, c, run));
        }
    }
    drop(hosts);

    // 2. Zipf over `images` outputs (SOURCES photos × widths), the same draws twice.
    let zipf = Zipf::new(images, zipf_s);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let ranks: Arc<Vec<usize>> = Arc::new(
        (0..zipf_requests)
            .map(|_| zipf.rank(uniform(&mut seed)))
            .collect(),
    );
    let mut zipf_rows = Vec::new();
    for (label, extra) in [
        ("with the result cache", vec!["--cores", &cores]),
        (
            "without (--result-cache-mb 0 --memory-cache-mb 0)",
            vec![
                "--cores",
                &cores,
                "--result-cache-mb",
                "0",
                "--memory-cache-mb",
                "0",
            ],
        ),
    ] {
        let h = Host::start("spin.toml", &extra);
        let key = setup(&h, &origin);
        let urls: Arc<Vec<String>> = Arc::new(
            (0..images)
                .map(|r| {
                    let (src, width) = (r % SOURCES, 100 + r / SOURCES);
                    h.url(&sign_url(
                        &key,
                        "web",
                        &format!("w={width}&fmt=jpeg"),
                        &format!("p{src}.jpg"),
                        &[],
                    ))
                })
                .collect(),
        );
        let per_client = zipf_requests.div_ceil(clients);
        let (ranks, urls2) = (ranks.clone(), urls.clone());
        let run = drive(
            clients,
            per_client,
            Duration::from_secs(600),
            Arc::new(move |c, i| {
                let n = (c * per_client + i).min(ranks.len() - 1);
                urls2[ranks[n]].clone()
            }),
        );
        assert_eq!(run.errors, 0, "{label}: every request answered 200");
        zipf_rows.push((label, run));
    }

    println!(
        "\nCache hits: one 300 px JPEG thumbnail by signed GET, authentication, audit and usage records included; {cores}-core host, the clients on the same machine, {seconds} s per row\n"
    );
    println!("| tier | clients | hits/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|");
    let mut figures = Vec::new();
    for (tier, c, run) in &hit_rows {
        println!(
            "| {tier} | {c} | {:.0} | {:.2} | {:.2} |",
            run.rate(),
            run.pct(0.5),
            run.pct(0.99)
        );
        figures.push(serde_json::json!({
            "tier": tier, "clients": c, "hits_per_s": run.rate(), "p50_ms": run.pct(0.5), "p99_ms": run.pct(0.99),
        }));
    }
    println!(
        "\nZipf (s = {zipf_s}) over {images} distinct outputs ({SOURCES} photos of 640×427 × {} widths), {zipf_requests} requests from {clients} clients, the same draws in both runs\n",
        images / SOURCES
    );
    println!(
        "| run | hit ratio | resizes | resizes avoided | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let mut zipf_figures = Vec::new();
    for (label, run) in &zipf_rows {
        let n = run.hits + run.misses;
        let ratio = run.hits as f64 / n as f64;
        println!(
            "| {label} | {:.1} % | {} | {} | {:.0} | {:.1} | {:.1} |",
            ratio * 100.0,
            run.misses,
            n - run.misses,
            run.rate(),
            run.pct(0.5),
            run.pct(0.99)
        );
        zipf_figures.push(serde_json::json!({
            "run": label, "hit_ratio": ratio, "resizes": run.misses, "requests": n,
            "req_per_s": run.rate(), "p50_ms": run.pct(0.5), "p99_ms": run.pct(0.99),
        }));
    }
    let file = record(
        "result_cache",
        serde_json::json!({ "hits": figures, "zipf": zipf_figures, "cores": cores }),
    );
    println!("\nwritten to {}", file.display());
}
