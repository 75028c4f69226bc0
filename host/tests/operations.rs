//! The operator's tools, run as the binary is run: `imgfleet bench load` against a real
//! host, and `imgfleet capacity` on benchmark output.

use std::process::Command;

use imgfleet_tests::host::{Host, binary};

fn imgfleet(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("running imgfleet");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `imgfleet bench load` against `h` with `args` (rates, target, key); returns its
/// stdout and stderr and the steps it wrote as JSON, and checks that it wrote a plot.
fn load_run(h: &Host, args: &[&str]) -> (String, String, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let (json, svg) = (dir.path().join("load.json"), dir.path().join("load.svg"));
    let mut all = vec![
        "bench",
        "load",
        "--url",
        &h.base,
        "--path",
        "/v1/resize?w=64",
    ];
    all.extend_from_slice(args);
    all.extend([
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let (ok, stdout, stderr) = imgfleet(&all);
    assert!(ok, "{stdout}\n{stderr}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("p99"), "{plot}");
    let steps = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (stdout, stderr, steps)
}

#[test]
fn the_load_generator_keeps_its_arrival_rate_and_reports_each_step() {
    let h = Host::start("spin.toml", &[]);
    let (stdout, stderr, steps) = load_run(
        &h,
        &[
            "--key",
            &h.key,
            "--start-rps",
            "10",
            "--step-rps",
            "15",
            "--max-rps",
            "40",
            "--step-seconds",
            "2",
            "--p99-target-ms",
            "20000",
            "--max-duration-seconds",
            "60",
        ],
    );
    let offered: Vec<f64> = steps
        .iter()
        .map(|s| s["offered_rps"].as_f64().unwrap())
        .collect();
    assert_eq!(offered, [10.0, 25.0, 40.0]);
    for s in &steps {
        // Open loop: what is sent depends on the rate and the time, never on the answers.
        let rate = s["offered_rps"].as_f64().unwrap();
        assert_eq!(s["sent"].as_f64().unwrap(), rate * 2.0, "{s}");
        assert_eq!(s["ok"], s["sent"], "every request resized: {s}");
        assert_eq!(s["verdict"], "held");
        assert!(s["p50_ms"].as_f64().unwrap() <= s["p99_ms"].as_f64().unwrap());
    }
    assert!(stdout.contains("| offered req/s |"), "{stdout}");
    assert!(stdout.contains("no tip-over up to 40 req/s"), "{stdout}");
    assert!(stderr.contains("step 3/3"), "progress is shown: {stderr}");

    // A target nobody can meet tips over at once; the ramp stops after it.
    let (stdout, _, steps) = load_run(
        &h,
        &[
            "--key",
            &h.key,
            "--start-rps",
            "5",
            "--step-rps",
            "5",
            "--max-rps",
            "50",
            "--step-seconds",
            "1",
            "--p99-target-ms",
            "0.001",
            "--steps-after-tip",
            "0",
        ],
    );
    assert_eq!(steps.len(), 1, "{stdout}");
    assert_eq!(steps[0]["verdict"], "slow_p99");
    assert!(
        stdout.contains("tip-over: already at the first step, 5 req/s"),
        "{stdout}"
    );

    // Without a key every request is refused: a step with errors does not hold.
    let (stdout, _, steps) = load_run(
        &h,
        &[
            "--key-file",
            "/nonexistent",
            "--start-rps",
            "5",
            "--step-rps",
            "0",
            "--max-rps",
            "5",
            "--step-seconds",
            "1",
        ],
    );
    assert_eq!(steps[0]["verdict"], "errors", "{stdout}");
    assert_eq!(steps[0]["refused_status"], 401);
}

#[test]
fn the_load_generator_only_sends_to_this_machine() {
    for url in [
        "http://10.1.2.3:8080",
        "http://example.com",
        "https://127.0.0.1:8443",
    ] {
        let (ok, _, stderr) = imgfleet(&[
            "bench",
            "load",
            "--url",
            url,
            "--max-rps",
            "10",
            "--step-seconds",
            "1",
        ]);
        assert!(!ok, "{url} was accepted");
        assert!(stderr.contains("only"), "{stderr}");
    }
}

#[test]
fn capacity_sizes_the_fleet_from_benchmark_output() {
    let dir = tempfile::tempdir().unwrap();
    let bench = dir.path().join("resize.json");
    std::fs::write(
        &bench,
        r#"{"measured_at":"2026-11-28T12:00:00Z","job":"w=300&fmt=jpeg&q=80","photos":12,
            "avg_input_kb":235.0,"native_per_core":80.0,"wasm_per_core":40.0}"#,
    )
    .unwrap();
    let (ok, stdout, stderr) = imgfleet(&[
        "capacity",
        "--rps",
        "10000",
        "--cores-per-host",
        "32",
        "--headroom",
        "0.2",
        "--bench-file",
        bench.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    // 10000 / (32 × 0.8 × per-core), rounded up.
    assert!(
        stdout.contains("| reference design | 10.0 | 256 | 40 | 41 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| imgfleet, WASM (as deployed) | 40.0 | 1024 | 10 | 11 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| imgfleet, native | 80.0 | 2048 | 5 | 6 |"),
        "{stdout}"
    );

    // Half the requests answered by the result cache: hits cost 1/3000 s of a core.
    let (ok, stdout, stderr) = imgfleet(&[
        "capacity",
        "--rps",
        "10000",
        "--hit-ratio",
        "0.5",
        "--hits-per-core",
        "3000",
        "--bench-file",
        bench.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("50.0 % hits") && stdout.contains("5000 resizes/s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| reference design | 10.0 | 256 | 40 | 41 |"),
        "the reference design resizes every request: {stdout}"
    );
    assert!(
        stdout.contains("| imgfleet, WASM (as deployed) | 78.9 | 2021 | 5 | 6 |"),
        "{stdout}"
    );

    let (ok, _, stderr) = imgfleet(&[
        "capacity",
        "--rps",
        "10000",
        "--headroom",
        "1.5",
        "--bench-file",
        bench.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("--headroom"), "{stderr}");
    let (ok, _, stderr) = imgfleet(&[
        "capacity",
        "--rps",
        "100",
        "--bench-file",
        dir.path().join("none.json").to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("no resize benchmark output"),
        "{stderr}"
    );
}
