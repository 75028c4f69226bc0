//! Replays the fuzz targets' seed corpus and every input a fuzzer found
//! (`fuzz/regressions/<target>/`) through the same checks the fuzzers apply, on every
//! test run: a crash, once found and committed there, stays fixed.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = imgfleet_tests::host::repo_root().join("fuzz");
    let mut found = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.map(Result::unwrap) {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n != ".keep") {
                let bytes = std::fs::read(&path).unwrap();
                found.push((path, bytes));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn resize_seeds_and_regressions_hold() {
    let inputs = inputs("resize");
    assert!(inputs.len() >= 10, "the resize seed corpus is missing");
    let (mut seeds, mut resized) = (0, 0);
    for (path, data) in &inputs {
        eprintln!("{}", path.display());
        let status = checks::resize(data);
        if path.components().any(|c| c.as_os_str() == "seeds") {
            seeds += 1;
            resized += usize::from(status == 200);
        }
    }
    // Seeds are there to lead the fuzzer into the pipeline: most must get through.
    assert!(
        resized * 3 >= seeds * 2,
        "only {resized} of {seeds} seeds resize"
    );
}

#[test]
fn request_seeds_and_regressions_hold() {
    let inputs = inputs("request");
    assert!(inputs.len() >= 3, "the request seed corpus is missing");
    for (path, data) in &inputs {
        eprintln!("{}", path.display());
        checks::request(data);
    }
}

#[test]
fn queue_log_seeds_and_regressions_hold() {
    let inputs = inputs("queue_log");
    assert!(inputs.len() >= 3, "the queue_log seed corpus is missing");
    for (path, data) in &inputs {
        eprintln!("{}", path.display());
        checks::queue_log(data);
    }
}

/// The same resize inputs through the WASM component, as the host runs it: there a decoder
/// panic cannot be caught (panic = abort), so it would be a trap and a 500.
#[test]
fn resize_seeds_and_regressions_hold_inside_wasm() {
    use imgfleet_host::execution::manifest::Manifest;
    use imgfleet_host::execution::runtime::{InvokeRequest, Runtime, RuntimeConfig};

    let manifest = Manifest::load(&imgfleet_tests::host::repo_root().join("spin.toml")).unwrap();
    let runtime = Runtime::new(
        &manifest,
        RuntimeConfig {
            deadline: std::time::Duration::from_secs(30),
            memory_limit_bytes: 256 << 20,
            max_instances: 2,
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    for (path, data) in inputs("resize") {
        let mut parts = data.splitn(3, |&b| b == b'\n');
        let query = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let accept = parts.next().unwrap_or_default().to_vec();
        let body = parts.next().unwrap_or_default().to_vec();
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_bytes(&accept)
            && !accept.is_empty()
        {
            headers.insert(http::header::ACCEPT, v);
        }
        // Queries that are not a URI's are refused by the HTTP layer before any function.
        let Ok(path_and_query) = format!("/v1/resize?{query}").parse::<http::Uri>() else {
            continue;
        };
        let request = InvokeRequest {
            method: http::Method::POST,
            path_and_query: path_and_query.to_string(),
            headers,
            body: body.into(),
        };
        let status = match rt.block_on(runtime.invoke("resize", request)) {
            Ok(inv) => inv.status.as_u16(),
            Err(e) => e.status_and_code().0,
        };
        assert_ne!(status, 500, "{} traps inside WASM", path.display());
    }
}
