//! Signed GET delivery against `POST /v1/resize` for the same work, side by side in one run
//! on one host: the same 1200×800 JPEG resized to 300 px wide JPEG, once uploaded by the
//! client and once fetched by the host from an HTTP origin on 127.0.0.1; then `304`
//! revalidations (the origin asked by its validator, nothing resized), per second and per
//! core of the host.
//!
//! `cargo bench -p imgfleet-tests --bench delivery [-- --requests N --clients C --cores K]`
//! (needs the components: `./dev.sh build-wasm`, and the `imgfleet` binary of the same
//! profile).

use std::sync::Arc;
use std::time::{Duration, Instant};

use imgfleet_tests::bench::{arg, record};
use imgfleet_tests::host::{Host, request, sign_url};
use imgfleet_tests::images;
use imgfleet_tests::origin::Origin;

struct Row {
    name: &'static str,
    status: u16,
    took: Vec<Duration>,
    wall: Duration,
}

/// `requests` calls of `call` from `clients` threads; every answer must have `status`.
fn run(
    name: &'static str,
    status: u16,
    requests: usize,
    clients: usize,
    call: Arc<dyn Fn() -> u16 + Send + Sync>,
) -> Row {
    let started = Instant::now();
    let per = requests.div_ceil(clients);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let call = call.clone();
            std::thread::spawn(move || {
                (0..per)
                    .map(|_| {
                        let t = Instant::now();
                        let got = call();
                        assert_eq!(got, status, "{name}");
                        t.elapsed()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut took: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a client thread"))
        .collect();
    took.sort();
    Row {
        name,
        status,
        took,
        wall: started.elapsed(),
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let requests = arg("--requests", 400);
    let clients = arg("--clients", 4);
    let cores = arg("--cores", 2);
    let cores_arg = cores.to_string();
    // The result cache off and nothing kept fresh: every GET fetches and resizes, every
    // revalidation asks the origin (the result cache has its own benchmark).
    let h = Arc::new(Host::start(
        "spin.toml",
        &[
            "--cores",
            &cores_arg,
            "--result-cache-mb",
            "0",
            "--memory-cache-mb",
            "0",
        ],
    ));
    let origin = Origin::start();
    let photo = images::jpeg(&images::photo(1200, 800, 11), 85);
    origin.put("/img/photo.jpg", photo.clone());
    h.add_origin(serde_json::json!({
        "name": "web", "type": "http", "base_url": format!("{}/img/", origin.base),
        "allow_private": true, "max_age_secs": 0,
    }));
    let (_, key) = h.url_key();
    let path = sign_url(&key, "web", "w=300&fmt=jpeg", "photo.jpg", &[]);
    let url = h.url(&path);
    let first = request("GET", &url, b"", &[]);
    assert_eq!(first.status, 200);
    let tag = first.header("etag").unwrap().to_string();

    let post = {
        let h = h.clone();
        let photo = photo.clone();
        Arc::new(move || h.post("/v1/resize?w=300&fmt=jpeg", &photo, &[]).status)
            as Arc<dyn Fn() -> u16 + Send + Sync>
    };
    let get = {
        let url = url.clone();
        Arc::new(move || request("GET", &url, b"", &[]).status)
            as Arc<dyn Fn() -> u16 + Send + Sync>
    };
    let revalidate = {
        let url = url.clone();
        Arc::new(move || request("GET", &url, b"", &[("if-none-match", &tag)]).status)
            as Arc<dyn Fn() -> u16 + Send + Sync>
    };
    // Warm both paths, then measure them in turn, twice, interleaved.
    run("warm-up", 200, clients * 4, clients, post.clone());
    run("warm-up", 200, clients * 4, clients, get.clone());
    let mut rows = Vec::new();
    for _ in 0..2 {
        rows.push(run(
            "POST /v1/resize (upload)",
            200,
            requests,
            clients,
            post.clone(),
        ));
        rows.push(run(
            "GET signed URL (origin fetch)",
            200,
            requests,
            clients,
            get.clone(),
        ));
        rows.push(run(
            "GET + If-None-Match (304)",
            304,
            requests,
            clients,
            revalidate.clone(),
        ));
    }
    println!(
        "\n1200×800 JPEG → w=300 JPEG, {requests} requests × {clients} clients per row, host with {cores} cores (one machine: clients and origin share it)\n"
    );
    println!(
        "| path | status | req/s | req/s per core | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|"
    );
    let mut figures = Vec::new();
    for row in &rows {
        let rate = row.took.len() as f64 / row.wall.as_secs_f64();
        println!(
            "| {} | {} | {rate:.0} | {:.0} | {:.1} | {:.1} |",
            row.name,
            row.status,
            rate / cores as f64,
            pct(&row.took, 0.5),
            pct(&row.took, 0.99)
        );
        figures.push(serde_json::json!({
            "path": row.name, "req_per_s": rate, "per_core": rate / cores as f64,
            "p50_ms": pct(&row.took, 0.5), "p99_ms": pct(&row.took, 0.99),
        }));
    }
    let file = record(
        "delivery",
        serde_json::json!({ "rows": figures, "cores": cores }),
    );
    println!("\nwritten to {}", file.display());
}
