//! A real `imgfleet up` process on 127.0.0.1, started for a test and killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `imgfleet` binary: `$IMGFLEET_BIN`, else next to the test executable's profile dir
/// (`./dev.sh test` builds it before running the tests).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("IMGFLEET_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("imgfleet");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release -p imgfleet-host, or ./dev.sh test)",
        bin.display()
    );
    bin
}

/// Polls until `check` holds: identity changes (revocations, removals, purges) reach every
/// host's auth cache within its 1 s SLA; this allows 2 s.
pub fn within_sla(what: &str, mut check: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what} not in force within the SLA"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The admin token every test host is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The tenant every test host has from the start; [`Host::key`] is its API key.
pub const DEFAULT_TENANT: &str = "tenant-a";

pub struct Host {
    child: Child,
    pub base: String,
    /// The host's own data directory (queue log, staging), removed with the host.
    pub data: tempfile::TempDir,
    /// An API key of [`DEFAULT_TENANT`].
    pub key: String,
}

impl Host {
    /// Starts `imgfleet up` with the given manifest (relative to the repository root) and
    /// extra flags, and waits until it prints its address.
    pub fn start(manifest: &str, extra: &[&str]) -> Self {
        Self::start_with_env(manifest, extra, &[])
    }

    /// As [`Host::start`], with extra environment variables for the process.
    pub fn start_with_env(manifest: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in(
            tempfile::tempdir().expect("a data directory"),
            manifest,
            extra,
            env,
        )
    }

    /// As [`Host::start`], on a given data directory (to restart a host on its own data).
    pub fn start_in(
        data: tempfile::TempDir,
        manifest: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(data, manifest, extra, env, own_log())
    }

    /// As [`Host::start_with_env`], with the host's log (stderr) written to `log`.
    pub fn start_logging_to(
        log: &Path,
        manifest: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let file = std::fs::File::create(log).expect("a log file");
        Self::spawn(
            tempfile::tempdir().expect("a data directory"),
            manifest,
            extra,
            env,
            Stdio::from(file),
        )
    }

    /// As [`Host::start_with_env`], with another `imgfleet` binary (benchmarks comparing
    /// two builds side by side).
    pub fn start_binary(bin: &Path, manifest: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().expect("a data directory");
        Self::start_binary_in(bin, data, manifest, extra, env)
    }

    /// As [`Host::start_in`], running another `imgfleet` binary.
    pub fn start_binary_in(
        bin: &Path,
        data: tempfile::TempDir,
        manifest: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn_binary(bin, data, manifest, extra, env, own_log())
    }
}

/// Where a host of a fleet writes its log: inherited stderr, or with
/// IMGFLEET_TEST_HOST_LOG_DIR set, a file of its own there (`host-1.log`, `host-2.log`, … in
/// order of start), so that a fleet's logs can be told apart.
fn own_log() -> Stdio {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Some(dir) = std::env::var_os("IMGFLEET_TEST_HOST_LOG_DIR") else {
        return Stdio::inherit();
    };
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let path = Path::new(&dir).join(format!("host-{n}.log"));
    match std::fs::File::create(&path) {
        Ok(file) => Stdio::from(file),
        Err(e) => panic!("IMGFLEET_TEST_HOST_LOG_DIR: {}: {e}", path.display()),
    }
}

impl Host {
    fn spawn(
        data: tempfile::TempDir,
        manifest: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Self {
        Self::spawn_binary(&binary(), data, manifest, extra, env, stderr)
    }

    fn spawn_binary(
        bin: &Path,
        data: tempfile::TempDir,
        manifest: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Self {
        let mut child = Command::new(bin)
            .env("IMGFLEET_ADMIN_TOKEN", ADMIN_TOKEN)
            // Warnings only, unless a test run asks for more (e.g. `info` with
            // IMGFLEET_LOG_SPANS=true: every hop of every request).
            .env(
                "IMGFLEET_LOG",
                std::env::var("IMGFLEET_TEST_HOST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .current_dir(repo_root())
            .args(["up", "--listen", "127.0.0.1:0", "--manifest", manifest])
            .arg("--data-dir")
            .arg(data.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting imgfleet");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("imgfleet listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                panic!("imgfleet did not start within 120 s (see its log above)");
            }
        };
        let mut host = Self {
            child,
            base,
            data,
            key: String::new(),
        };
        host.key = host.tenant_key(DEFAULT_TENANT);
        host
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    /// A request to the admin API with the admin token; `body` is JSON.
    pub fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Reply {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        request(
            method,
            &self.url(path),
            body.as_bytes(),
            &[("authorization", &auth)],
        )
    }

    /// Creates `tenant` if it does not exist yet and returns a new API key of it.
    pub fn tenant_key(&self, tenant: &str) -> String {
        let r = self.admin(
            "POST",
            "/admin/tenants",
            Some(serde_json::json!({ "id": tenant })),
        );
        assert!(
            r.status == 201 || r.status == 409,
            "creating tenant {tenant}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let r = self.admin("POST", &format!("/admin/tenants/{tenant}/keys"), None);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()["api_key"].as_str().expect("api_key").to_string()
    }

    /// Adds an origin to the default tenant (`body` as the admin API takes it).
    pub fn add_origin(&self, body: serde_json::Value) {
        let r = self.admin(
            "POST",
            &format!("/admin/tenants/{DEFAULT_TENANT}/origins"),
            Some(body),
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }

    /// A new URL signing key of the default tenant: its id and the `ifu_…` key.
    pub fn url_key(&self) -> (String, String) {
        let r = self.admin(
            "POST",
            &format!("/admin/tenants/{DEFAULT_TENANT}/url-keys"),
            Some(serde_json::json!({ "label": "site" })),
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        (
            v["key_id"].as_str().expect("key_id").to_string(),
            v["url_key"].as_str().expect("url_key").to_string(),
        )
    }

    /// `POST` with this host's default API key.
    pub fn post(&self, path_and_query: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
        self.post_as(&self.key, path_and_query, body, headers)
    }

    /// `GET` with this host's default API key.
    pub fn get(&self, path_and_query: &str) -> Reply {
        self.get_as(&self.key, path_and_query)
    }

    pub fn post_as(
        &self,
        key: &str,
        path_and_query: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Reply {
        let auth = format!("Bearer {key}");
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        post(&self.url(path_and_query), body, &all)
    }

    pub fn get_as(&self, key: &str, path_and_query: &str) -> Reply {
        let auth = format!("Bearer {key}");
        request(
            "GET",
            &self.url(path_and_query),
            b"",
            &[("authorization", &auth)],
        )
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no chance to clean up) and hands back its data.
    pub fn kill_9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.data, tempfile::tempdir().expect("a placeholder"))
    }

    /// Stops the process with SIGTERM (a clean shutdown) and hands back its data.
    pub fn stop(mut self) -> tempfile::TempDir {
        unsafe_kill(self.child.id(), 15);
        let _ = self.child.wait();
        std::mem::replace(&mut self.data, tempfile::tempdir().expect("a placeholder"))
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe_kill(self.child.id(), 15);
        let status = self.child.wait().expect("waiting for imgfleet");
        status.success()
    }
}

fn unsafe_kill(pid: u32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `imgfleet url sign` for the default tenant, as a site's build step would run it: the
/// signed path (a whole URL with `--base` among `extra`).
pub fn sign_url(key: &str, origin: &str, query: &str, path: &str, extra: &[&str]) -> String {
    let out = Command::new(binary())
        .args([
            "url",
            "sign",
            "--tenant",
            DEFAULT_TENANT,
            "--origin",
            origin,
        ])
        .args(["--query", query])
        .args(extra)
        .arg(path)
        .env("IMGFLEET_URL_KEY", key)
        .output()
        .expect("running imgfleet url sign");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("a URL is text")
        .trim()
        .to_string()
}

/// A response as the tests need it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON (status {}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The stable error code of a JSON error body.
    pub fn error_code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not a JSON error body (status {}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        });
        v["error"]["code"]
            .as_str()
            .expect("error.code is a string")
            .to_string()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn read_reply(resp: ureq::http::Response<ureq::Body>) -> Result<Reply, ureq::Error> {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp
        .into_body()
        .into_with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn reply(resp: ureq::http::Response<ureq::Body>) -> Reply {
    read_reply(resp).expect("reading the response body")
}

/// A POST that may fail to reach the server (a killed host): `Err` with the reason.
pub fn try_post(
    url: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Reply, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut req = agent.post(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.send(body)
        .and_then(read_reply)
        .map_err(|e| e.to_string())
}

pub fn post(url: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().post(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    reply(req.send(body).expect("POST reached the server"))
}

pub fn get(url: &str) -> Reply {
    reply(agent().get(url).call().expect("GET reached the server"))
}

/// Any method, with a body for the methods that carry one.
pub fn request(method: &str, url: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let agent = agent();
    macro_rules! with_headers {
        ($req:expr) => {{
            let mut req = $req;
            for (n, v) in headers {
                req = req.header(*n, *v);
            }
            req
        }};
    }
    let sent = match method {
        "GET" => with_headers!(agent.get(url)).call(),
        "HEAD" => with_headers!(agent.head(url)).call(),
        "DELETE" => with_headers!(agent.delete(url)).call(),
        "POST" => with_headers!(agent.post(url)).send(body),
        "PUT" => with_headers!(agent.put(url)).send(body),
        "PATCH" => with_headers!(agent.patch(url)).send(body),
        other => panic!("unsupported method {other}"),
    };
    reply(sent.expect("the request reached the server"))
}

/// Sends raw HTTP/1.1 bytes and returns the status code and body of the reply. Write
/// errors are ignored (a server may answer and close before reading everything), which is
/// exactly what the size-limit tests need to observe.
pub fn raw_exchange(base: &str, head: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = stream.write_all(head.as_bytes());
    for chunk in body.chunks(64 * 1024) {
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
