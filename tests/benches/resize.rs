//! ms/image for decode, resize and encode: the native library against the same function
//! inside the host's WASM runtime, side by side in one run.
//!
//! `cargo bench -p imgfleet-tests --bench resize [-- --rounds N --width W]`
//! (`./dev.sh bench` builds the components first).

use std::time::Duration;

use bytes::Bytes;
use imgfleet_host::manifest::Manifest;
use imgfleet_host::runtime::{InvokeRequest, Runtime, RuntimeConfig};
use imgfleet_resize::{Limits, ResizeParams, resize};
use imgfleet_tests::bench::{arg, record, server_timing};
use imgfleet_tests::host::repo_root;
use imgfleet_tests::photos::photo_set;

#[derive(Default)]
struct Samples {
    decode: Vec<f64>,
    resize: Vec<f64>,
    encode: Vec<f64>,
    total: Vec<f64>,
    instantiate: Vec<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let rounds = arg("--rounds", 3);
    let width = arg("--width", 300);
    let query = format!("w={width}&fmt=jpeg&q=80");
    let photos = photo_set();
    let avg_kb =
        photos.iter().map(|(_, b)| b.len()).sum::<usize>() as f64 / photos.len() as f64 / 1024.0;
    println!(
        "photos: {} (avg {avg_kb:.0} KB, 1080-2048 px), job: {query}, rounds: {rounds}, one core each",
        photos.len()
    );

    let params = ResizeParams::from_query(&query).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut native = Samples::default();
    for _ in 0..rounds {
        for (_, bytes) in &photos {
            let started = std::time::Instant::now();
            let out = resize(bytes, &params, None, &Limits::default())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            native.total.push(ms(started.elapsed()));
            native.decode.push(ms(out.timings.decode));
            native.resize.push(ms(out.timings.resize));
            native.encode.push(ms(out.timings.encode));
        }
    }

    let manifest = Manifest::load(&repo_root().join("spin.toml"))?;
    let runtime = Runtime::new(
        &manifest,
        RuntimeConfig {
            deadline: Duration::from_secs(30),
            memory_limit_bytes: 256 << 20,
            max_instances: 8,
        },
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let mut wasm = Samples::default();
    for _ in 0..rounds {
        for (name, bytes) in &photos {
            let request = InvokeRequest {
                method: http::Method::POST,
                path_and_query: format!("/v1/resize?{query}"),
                headers: http::HeaderMap::new(),
                body: Bytes::from(bytes.clone()),
            };
            let inv = rt.block_on(runtime.invoke("resize", request))?;
            anyhow::ensure!(inv.status == 200, "{name}: status {}", inv.status);
            let header = inv
                .headers
                .get("server-timing")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            wasm.total.push(ms(inv.wall));
            wasm.instantiate.push(ms(inv.instantiate));
            wasm.decode
                .push(server_timing(header, "decode").unwrap_or(f64::NAN));
            wasm.resize
                .push(server_timing(header, "resize").unwrap_or(f64::NAN));
            wasm.encode
                .push(server_timing(header, "encode").unwrap_or(f64::NAN));
        }
    }

    println!();
    println!("| stage (median ms/image) | native | wasm (in host) | wasm / native |");
    println!("|---|---:|---:|---:|");
    let rows: [(&str, &mut Vec<f64>, &mut Vec<f64>); 4] = [
        ("decode", &mut native.decode, &mut wasm.decode),
        ("resize", &mut native.resize, &mut wasm.resize),
        ("encode", &mut native.encode, &mut wasm.encode),
        (
            "total (incl. instantiate)",
            &mut native.total,
            &mut wasm.total,
        ),
    ];
    let mut totals = (0.0, 0.0);
    for (stage, n, w) in rows {
        let (n, w) = (median(n), median(w));
        totals = (n, w);
        println!("| {stage} | {n:.2} | {w:.2} | {:.2}x |", w / n);
    }
    println!(
        "| instantiate | - | {:.3} | - |",
        median(&mut wasm.instantiate)
    );
    println!();
    let per_core = (1000.0 / totals.0, 1000.0 / totals.1);
    println!(
        "images/s per core: native {:.1}, wasm {:.1}",
        per_core.0, per_core.1
    );
    let path = record(
        "resize",
        serde_json::json!({
            "job": query,
            "photos": photos.len(),
            "avg_input_kb": avg_kb,
            "native_per_core": per_core.0,
            "wasm_per_core": per_core.1,
        }),
    );
    println!(
        "written to {} (read by `imgfleet capacity`)",
        path.display()
    );
    Ok(())
}
