//! Host overhead with a function that does nothing: API → auth → staging → jobs queue → worker →
//! slot → completions queue → API, measured from a client on the same machine.
//!
//! `cargo bench -p imgfleet-tests --bench overhead [-- --requests N] [--rounds R]
//! [--against <another imgfleet binary>]` (needs the built binary and components). Hosts take
//! turns, round by round: this build, this build exporting its spans over OTLP (to the test
//! kit's collector), and the other build when given.

use std::time::{Duration, Instant};

use imgfleet_tests::bench::{arg, server_timing};
use imgfleet_tests::collector::Collector;
use imgfleet_tests::host::Host;

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One host under test: what it is and where it listens.
struct Config {
    name: String,
    host: Host,
}

/// `n` requests from `clients` clients: (latency ms, wasm ms) per request, and req/s.
fn run(host: &Host, clients: usize, n: usize) -> (Vec<(f64, f64)>, f64) {
    let url = host.url("/hog/noop");
    let auth = format!("Bearer {}", host.key);
    let per = n / clients;
    let started = Instant::now();
    let samples: Vec<(f64, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let url = url.clone();
                let auth = auth.clone();
                s.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(30)))
                        .build()
                        .into();
                    (0..per)
                        .map(|i| {
                            // Every request joins a client's trace, as traced callers' do.
                            let parent =
                                format!("00-{:032x}-{:016x}-01", c * 1_000_000 + i + 1, i + 1);
                            let t = Instant::now();
                            let mut resp = agent
                                .post(&url)
                                .header("authorization", &auth)
                                .header("traceparent", &parent)
                                .send(&[][..])
                                .expect("request");
                            let header = resp
                                .headers()
                                .get("server-timing")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let _ = resp.body_mut().read_to_vec();
                            assert_eq!(resp.status(), 200);
                            (
                                t.elapsed().as_secs_f64() * 1e3,
                                server_timing(&header, "wasm").unwrap_or(0.0),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let rate = samples.len() as f64 / started.elapsed().as_secs_f64();
    // Skip the first tenth: connection set-up and warm-up.
    (samples[samples.len() / 10..].to_vec(), rate)
}

fn main() {
    let requests = arg("--requests", 4000);
    let rounds = arg("--rounds", 2);
    // `--against <imgfleet binary>`: another build (e.g. an earlier commit's) side by side.
    let against = std::env::args()
        .skip_while(|a| a != "--against")
        .nth(1)
        .map(std::path::PathBuf::from);
    let collector = Collector::start();
    let flags = ["--cores", "2"];
    let mut configs = Vec::new();
    if let Some(bin) = &against {
        configs.push(Config {
            name: format!("`{}`", bin.display()),
            host: Host::start_binary(bin, "tests/fixtures/hog.toml", &flags, &[]),
        });
    }
    configs.push(Config {
        name: "this build".into(),
        host: Host::start("tests/fixtures/hog.toml", &flags),
    });
    configs.push(Config {
        name: "this build, spans exported over OTLP".into(),
        host: Host::start_with_env(
            "tests/fixtures/hog.toml",
            &["--cores", "2", "--otlp-endpoint", &collector.base],
            &[],
        ),
    });
    println!(
        "no-op function through the whole queued path; hosts with 2 slots taking turns ({rounds} rounds); client on the same 2 cores; every request with a traceparent"
    );
    println!();
    println!(
        "| host | clients | requests | req/s | latency p50 ms | p99 ms | host overhead p50 ms | p99 ms | wasm (instance + call) p50 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for clients in [1usize, 8] {
        let mut results: Vec<(Vec<(f64, f64)>, f64)> = vec![(Vec::new(), 0.0); configs.len()];
        for _ in 0..rounds {
            for (c, config) in configs.iter().enumerate() {
                let (samples, rate) = run(&config.host, clients, requests / rounds);
                results[c].0.extend(samples);
                results[c].1 += rate / rounds as f64;
            }
        }
        for (config, (samples, rate)) in configs.iter().zip(results) {
            let mut total: Vec<f64> = samples.iter().map(|s| s.0).collect();
            let mut overhead: Vec<f64> = samples.iter().map(|s| (s.0 - s.1).max(0.0)).collect();
            let mut wasm: Vec<f64> = samples.iter().map(|s| s.1).collect();
            for v in [&mut total, &mut overhead, &mut wasm] {
                v.sort_by(|a, b| a.total_cmp(b));
            }
            println!(
                "| {} | {clients} | {} | {rate:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                config.name,
                samples.len(),
                pct(&total, 0.5),
                pct(&total, 0.99),
                pct(&overhead, 0.5),
                pct(&overhead, 0.99),
                pct(&wasm, 0.5)
            );
        }
    }
    let exported = collector.spans().len();
    println!();
    println!("spans the collector received: {exported}");
}
