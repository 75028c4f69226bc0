//! The single host under disk and process faults, with real processes and real files: a
//! second host on the same data directory, a data directory that fills up (a small tmpfs)
//! and is freed, an I/O error on the request log (injected at the file layer: EIO cannot be
//! made on demand here), damaged and duplicated queue log records between runs, and a
//! background task that dies. Each scenario checks what clients saw and that nothing was
//! served without its audit and usage record.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgfleet_tests::host::{DEFAULT_TENANT, Host, binary, get, repo_root};
use imgfleet_tests::traffic::{Sent, UsageAt, exported_usage, send, small_jpeg};

/// A tmpfs of `size_mb` mounted for the test's life (the tests run as root, as CI does;
/// elsewhere through `sudo -n`).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mb: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = unsafe_is_root();
        let mut cmd = Command::new(if root { "mount" } else { "sudo" });
        if !root {
            cmd.args(["-n", "mount"]);
        }
        let status = cmd
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root; elsewhere passwordless sudo)"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes zeros until the filesystem is full; returns the file holding them.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 256 * 1024];
        while f.write_all(&chunk).is_ok() {}
        // The last partial chunk may have gone into the page cache; anything still free is
        // taken by single bytes.
        while f.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let root = unsafe_is_root();
        let mut cmd = Command::new(if root { "umount" } else { "sudo" });
        if !root {
            cmd.args(["-n", "umount"]);
        }
        let _ = cmd.arg("-l").arg(self.dir.path()).status();
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn readyz(h: &Host) -> (u16, serde_json::Value) {
    let r = get(&h.url("/readyz"));
    let body = serde_json::from_slice(&r.body).unwrap_or_default();
    (r.status, body)
}

fn healthz(h: &Host) -> (u16, serde_json::Value) {
    let r = get(&h.url("/healthz"));
    let body = serde_json::from_slice(&r.body).unwrap_or_default();
    (r.status, body)
}

/// Waits for `/readyz` to give `status`; returns its body.
fn await_ready(h: &Host, status: u16, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (s, body) = readyz(h);
        if s == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {s} after {within:?}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn resize(h: &Host, request_id: &str) -> Sent {
    send(
        &h.base,
        &h.key,
        "/v1/resize?w=32",
        request_id,
        &small_jpeg(),
    )
}

/// Nothing answered 200 without its records: every 200 has exactly one usage record (once
/// metering caught up) and an audit record; refusals are the documented 503.
fn assert_served_were_recorded(scenario: &str, h: &Host, data: &Path, sent: &[Sent]) {
    for s in sent {
        assert!(
            matches!(s.status, Some(200))
                || (s.status == Some(503) && s.code.as_deref() == Some("metering_unavailable")),
            "{scenario}: {} got {:?} {:?}",
            s.request_id,
            s.status,
            s.code
        );
    }
    let served: BTreeSet<&str> = sent
        .iter()
        .filter(|s| s.status == Some(200))
        .map(|s| s.request_id.as_str())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = exported_usage(&UsageAt::DataDir(data));
        let counted: BTreeSet<&str> = records
            .iter()
            .filter_map(|r| r["request_id"].as_str())
            .collect();
        if served.is_subset(&counted) {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "{scenario}: served but never metered: {:?}",
            served.difference(&counted).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    for id in &served {
        let n = records
            .iter()
            .filter(|r| r["request_id"].as_str() == Some(id))
            .count();
        assert_eq!(n, 1, "{scenario}: {id} metered {n} times");
    }
    let audit = h
        .admin(
            "GET",
            &format!("/admin/audit?tenant={DEFAULT_TENANT}&limit=10000"),
            None,
        )
        .json();
    let audited: BTreeSet<&str> = audit["records"]
        .as_array()
        .expect("audit records")
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    assert!(
        served.is_subset(&audited),
        "{scenario}: served without an audit record: {:?}",
        served.difference(&audited).collect::<Vec<_>>()
    );
    println!(
        "{scenario}: {} served, each audited and metered once; {} refused as unrecorded",
        served.len(),
        sent.len() - served.len()
    );
}

#[test]
fn a_second_host_on_the_same_data_directory_is_refused_by_name() {
    let first = Host::start("spin.toml", &[]);
    let started = Instant::now();
    let second = Command::new(binary())
        .current_dir(repo_root())
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(first.data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("running a second imgfleet");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the second host started: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refused only after {:?}",
        started.elapsed()
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("in use by another imgfleet"))
        .unwrap_or_else(|| panic!("no clear refusal: {stderr}"));
    assert!(
        line.contains(&first.data.path().display().to_string()),
        "{line}"
    );
    assert!(line.contains(&format!("pid {}", first.pid())), "{line}");

    // The first host is untouched, and the offline commands work beside it.
    assert_eq!(resize(&first, "beside").status, Some(200));
    let tenants = Command::new(binary())
        .args(["tenants", "--data-dir"])
        .arg(first.data.path())
        .arg("list")
        .output()
        .unwrap();
    assert!(tenants.status.success());
    assert!(String::from_utf8_lossy(&tenants.stdout).contains(DEFAULT_TENANT));

    // Once the owner is gone (even by kill -9), the directory can be taken.
    let data = first.kill_9();
    let again = Host::start_in(data, "spin.toml", &[], &[]);
    assert_eq!(resize(&again, "after").status, Some(200));
}

#[test]
fn a_full_disk_refuses_what_it_cannot_record_and_recovers_when_freed() {
    let fs = Tmpfs::mount(48);
    let data = tempfile::tempdir_in(fs.path()).unwrap();
    let data_path = data.path().to_path_buf();
    let mut h = Host::start_in(data, "spin.toml", &[], &[]);
    let mut sent = vec![resize(&h, "before")];
    assert_eq!(sent[0].status, Some(200));

    let filler = fs.fill();
    // Writes now fail in the queue log and, once its WAL needs to grow, in the request log:
    // requests are served only while their records are written.
    let mut refused = 0;
    for i in 0..60 {
        let s = resize(&h, &format!("full-{i}"));
        refused += usize::from(s.code.as_deref() == Some("metering_unavailable"));
        sent.push(s);
        if refused >= 3 {
            break;
        }
    }
    assert!(refused >= 3, "the full disk was never noticed: {sent:?}");
    let (status, body) = readyz(&h);
    assert_eq!(status, 503, "/readyz while the disk is full: {body}");
    let problems = body["problems"].to_string();
    assert!(
        problems.contains("audit log") || problems.contains("queue log"),
        "{body}"
    );
    assert!(h.alive(), "the host died of a full disk");

    std::fs::remove_file(filler).unwrap();
    await_ready(&h, 200, Duration::from_secs(10));
    for i in 0..3 {
        let s = resize(&h, &format!("freed-{i}"));
        assert_eq!(s.status, Some(200), "after freeing: {s:?}");
        sent.push(s);
    }
    assert!(h.alive());
    assert_served_were_recorded("full disk", &h, &data_path, &sent);
}

#[test]
fn an_io_error_on_the_request_log_refuses_requests_until_writes_pass() {
    // The host's own start-up writes two audit records (tenant and key); then four failed
    // writes, then the disk is well again.
    let h = Host::start_with_env(
        "spin.toml",
        &[],
        &[("FAILPOINTS", "audit-write=2*off->4*return->off")],
    );
    let mut sent = Vec::new();
    let mut saw_not_ready = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = resize(&h, &format!("eio-{}", sent.len()));
        let ok = s.status == Some(200);
        if s.code.as_deref() == Some("metering_unavailable") && !saw_not_ready {
            let (status, body) = readyz(&h);
            saw_not_ready = status == 503 && body["problems"].to_string().contains("audit log");
        }
        sent.push(s);
        if ok && sent.len() > 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {sent:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        sent.iter()
            .any(|s| s.code.as_deref() == Some("metering_unavailable")),
        "the injected EIO was never seen: {sent:?}"
    );
    assert!(saw_not_ready, "/readyz never reported the audit log");
    await_ready(&h, 200, Duration::from_secs(5));
    let data = h.data.path().to_path_buf();
    assert_served_were_recorded("EIO", &h, &data, &sent);
}

#[test]
fn a_background_task_that_dies_fails_health_by_name_and_stops_the_host() {
    let mut h = Host::start_with_env(
        "spin.toml",
        &[],
        &[("FAILPOINTS", "usage-shipper=3*off->panic(injected)")],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = healthz(&h);
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "/healthz still {status}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let problems = body["problems"].to_string();
    assert!(problems.contains("usage shipper"), "{body}");
    assert!(problems.contains("injected"), "{body}");
    assert_eq!(readyz(&h).0, 503);
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.alive() {
        assert!(
            Instant::now() < deadline,
            "the host kept running without its shipper"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Flips a byte inside the record holding `needle` and appends a second copy of the whole
/// log: damage in the middle and duplicated records, as a bad disk or a copy gone wrong
/// would leave them.
fn damage_queue_log(data: &Path, needle: &[u8]) {
    let log = data.join("queue").join("queue.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the record is in the log");
    let copy = bytes.clone();
    bytes[at] ^= 0x40;
    bytes.extend_from_slice(&copy);
    std::fs::write(&log, bytes).unwrap();
}

#[test]
fn a_damaged_and_duplicated_queue_log_is_recovered_and_the_host_serves() {
    let h = Host::start("spin.toml", &[]);
    let body = small_jpeg();
    let mut jobs = Vec::new();
    for _ in 0..3 {
        let r = h.post("/v1/jobs?w=16", &body, &[]);
        assert_eq!(r.status, 202);
        jobs.push(r.json()["id"].as_str().unwrap().to_string());
    }
    // Let them finish, so the log holds sends, receives and deletes.
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &jobs {
        while h.get(&format!("/v1/jobs/{id}")).json()["status"] == "queued" {
            assert!(Instant::now() < deadline, "job {id} never finished");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let key = h.key.clone();
    let data = h.kill_9();
    damage_queue_log(data.path(), jobs[1].as_bytes());

    let mut h = Host::start_in(data, "spin.toml", &[], &[]);
    h.key = key;
    assert_eq!(healthz(&h).0, 200);
    assert_eq!(resize(&h, "after-damage").status, Some(200));
    for id in &jobs {
        let v = h.get(&format!("/v1/jobs/{id}")).json();
        assert_eq!(v["status"], "done", "{id}: {v}");
    }
    let r = h.post("/v1/jobs?w=16", &body, &[]);
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.get(&format!("/v1/jobs/{id}")).json()["status"] == "queued" {
        assert!(Instant::now() < deadline, "a new job never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kept: Vec<_> = std::fs::read_dir(h.data.path().join("queue"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("damaged"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged log is kept for inspection");
}

/// How a start on a damaged data directory ended.
enum Start {
    /// It serves, at this base URL (the process is killed when this is dropped).
    Serving(String, std::process::Child),
    /// It refused to start: its exit code and what it said.
    Refused(Option<i32>, String),
}

fn start_on(data: &Path) -> Start {
    use std::io::{BufRead, BufReader};
    let log = data.join("start.log");
    let mut child = Command::new(binary())
        .current_dir(repo_root())
        .env("IMGFLEET_ADMIN_TOKEN", imgfleet_tests::host::ADMIN_TOKEN)
        .env("IMGFLEET_LOG", "warn")
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("imgfleet listening on ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(base) => Start::Serving(base, child),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().unwrap();
            Start::Refused(status.code(), std::fs::read_to_string(&log).unwrap())
        }
    }
}

/// Flips bytes in the middle of each SQLite store of a host's data directory (the file as
/// a crash left it, its WAL folded in or not) and starts the host again on it: it either
/// serves, answering with documented codes, or refuses to start with a message naming the
/// file; never a panic.
#[test]
fn flipped_bytes_in_each_sqlite_store_are_survived_or_refused_by_name() {
    for file in [
        "identity.sqlite",
        "audit.sqlite",
        "jobs.sqlite",
        "usage.sqlite",
    ] {
        let h = Host::start("spin.toml", &[]);
        for i in 0..3 {
            assert_eq!(resize(&h, &format!("{file}-{i}")).status, Some(200));
        }
        let r = h.post("/v1/jobs?w=16", &small_jpeg(), &[]);
        assert_eq!(r.status, 202);
        // A clean stop folds each WAL into its file, so the flips land in real pages.
        let data = h.stop();
        let path = data.path().join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        for at in [len / 3, len / 2, 2 * len / 3] {
            bytes[at] ^= 0xA5;
        }
        std::fs::write(&path, bytes).unwrap();

        match start_on(data.path()) {
            Start::Serving(base, mut child) => {
                let probe = get(&format!("{base}/healthz"));
                assert!(
                    matches!(probe.status, 200 | 503),
                    "{file}: /healthz {}",
                    probe.status
                );
                let _ = child.kill();
                let _ = child.wait();
                println!("{file}: flipped bytes survived, the host serves");
            }
            Start::Refused(code, said) => {
                assert_ne!(code, Some(101), "{file}: a panic: {said}");
                assert!(!said.contains("panicked"), "{file}: a panic: {said}");
                assert!(
                    said.contains(file),
                    "{file}: the refusal does not name the file: {said}"
                );
                println!("{file}: refused to start: {}", said.trim());
            }
        }
    }
}
