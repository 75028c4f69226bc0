//! Host overhead with a function that does nothing: API → auth → staging → jobs queue → worker →
//! slot → completions queue → API, measured from a client on the same machine.
//!
//! `cargo bench -p imgfleet-tests --bench overhead [-- --requests N]` (needs the built
//! binary and components: `./dev.sh release`).

use std::time::{Duration, Instant};

use imgfleet_tests::bench::{arg, server_timing};
use imgfleet_tests::host::Host;

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let requests = arg("--requests", 4000);
    let host = Host::start("tests/fixtures/hog.toml", &["--cores", "2"]);
    let url = host.url("/hog/noop");
    let auth = format!("Bearer {}", host.key);
    println!(
        "no-op function through the whole queued path; host with 2 slots; client on the same 2 cores"
    );
    println!();
    println!(
        "| clients | requests | req/s | latency p50 ms | p99 ms | host overhead p50 ms | p99 ms | wasm (instance + call) p50 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for clients in [1usize, 8] {
        let per = requests / clients;
        let started = Instant::now();
        let samples: Vec<(f64, f64)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|_| {
                    let url = url.clone();
                    let auth = auth.clone();
                    s.spawn(move || {
                        let agent: ureq::Agent = ureq::Agent::config_builder()
                            .http_status_as_error(false)
                            .timeout_global(Some(Duration::from_secs(30)))
                            .build()
                            .into();
                        (0..per)
                            .map(|_| {
                                let t = Instant::now();
                                let mut resp = agent
                                    .post(&url)
                                    .header("authorization", &auth)
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
        let elapsed = started.elapsed().as_secs_f64();
        // Skip the first tenth: connection set-up and warm-up.
        let steady = &samples[samples.len() / 10..];
        let mut total: Vec<f64> = steady.iter().map(|s| s.0).collect();
        let mut overhead: Vec<f64> = steady.iter().map(|s| (s.0 - s.1).max(0.0)).collect();
        let mut wasm: Vec<f64> = steady.iter().map(|s| s.1).collect();
        for v in [&mut total, &mut overhead, &mut wasm] {
            v.sort_by(|a, b| a.total_cmp(b));
        }
        println!(
            "| {clients} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            samples.len(),
            samples.len() as f64 / elapsed,
            pct(&total, 0.5),
            pct(&total, 0.99),
            pct(&overhead, 0.5),
            pct(&overhead, 0.99),
            pct(&wasm, 0.5)
        );
    }
}
