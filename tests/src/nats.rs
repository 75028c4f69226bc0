//! Real `nats-server` processes with JetStream on 127.0.0.1: one server, or a cluster of
//! three (the fleet's queue), started for a test and killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Test servers' ports come from below Linux's ephemeral range (32768-60999): a port picked
/// there by binding port 0 can be taken by any outgoing connection before the server binds
/// it, or while a killed server is down, and a cluster whose route port was taken never forms.
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A port nobody listens on right now, never handed out twice by one process (tests run
/// concurrently); processes start at different places in the range.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = PORTS.end - PORTS.start;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = (PORTS.start + offset) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}")
}

pub fn wait_for_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Starts a server that dies with the test process, even when the process is killed or
/// the server lives in a static that is never dropped. The parent-death signal fires when
/// the spawning *thread* ends, so the spawn happens on a thread that lives as long as the
/// process.
pub fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: prctl is async-signal-safe and touches only the child being set up.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let _ = tx.send(command.spawn());
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("the spawning thread answers")
}

fn server_binary() -> String {
    std::env::var("IMGFLEET_NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

pub struct Node {
    pub name: String,
    pub port: u16,
    /// Where the other nodes reach this one, in a cluster.
    route_port: Option<u16>,
    /// The server's monitoring endpoint (`/jsz`), on which the cluster's readiness is read.
    http_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let log = self.config.with_extension("log");
        let mut command = Command::new(server_binary());
        command
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("a server log"),
            ));
        let child = spawn_tied(command).unwrap_or_else(|e| {
            panic!(
                "starting {} failed ({e}): install Debian's nats-server (./dev.sh test does)",
                server_binary()
            )
        });
        self.child = Some(child);
        for port in std::iter::once(self.port).chain(self.route_port) {
            assert!(
                wait_for_port(port, Duration::from_secs(20)),
                "nats-server {} did not listen on {port} (log: {})",
                self.name,
                log.display()
            );
        }
    }

    /// The server's JetStream report (`/jsz` of its monitoring endpoint).
    fn jsz(&self) -> Result<serde_json::Value, String> {
        let url = format!("http://127.0.0.1:{}/jsz", self.http_port);
        let mut reply = ureq::get(&url).call().map_err(|e| format!("{url}: {e}"))?;
        let body = reply
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{url}: {e}"))?;
        serde_json::from_str(&body).map_err(|e| format!("{url}: {e}"))
    }

    fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }
}

/// JetStream servers: a cluster when there is more than one.
pub struct Nats {
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
}

impl Nats {
    pub fn single() -> Self {
        Self::start(1, "4GB")
    }

    /// One server whose file store may hold `max_file_store` (e.g. "96MB") in all.
    pub fn single_with_storage(max_file_store: &str) -> Self {
        Self::start(1, max_file_store)
    }

    pub fn cluster() -> Self {
        Self::start(3, "4GB")
    }

    fn start(n: usize, max_file_store: &str) -> Self {
        let dir = tempfile::tempdir().expect("a directory for the servers");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let http_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("\"nats-route://127.0.0.1:{c}\""))
            .collect();
        let mut nodes = Vec::new();
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let cluster = if n > 1 {
                format!(
                    "cluster {{ name: imgfleet, listen: \"127.0.0.1:{cluster_port}\", routes: [{}] }}",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\n\
                     http: \"127.0.0.1:{}\"\n\
                     lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"1s\"\n\
                     jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: {max_file_store} }}\n{cluster}\n",
                    http_ports[i],
                    store.display()
                ),
            )
            .expect("writing a server config");
            nodes.push(Node {
                name,
                port: *port,
                route_port: (n > 1).then_some(*cluster_port),
                http_port: http_ports[i],
                config,
                child: None,
            });
        }
        for node in &mut nodes {
            node.spawn();
        }
        let nats = Self { nodes, dir };
        if n > 1 {
            nats.wait_for_meta_group(Duration::from_secs(60));
        }
        nats
    }

    /// Waits until every server knows the JetStream meta group's leader and the leader
    /// counts every other server as a current peer. Listening is not enough: until then,
    /// creating a stream of three replicas fails ("no suitable peers for placement"), as it
    /// did on a loaded machine for every test of a cluster started a moment before.
    fn wait_for_meta_group(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.meta_group_state() {
                Ok(()) => return,
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the JetStream cluster did not form within {within:?}: {last} (logs in {})",
            self.dir.path().display()
        );
    }

    /// `Ok` once the meta group is ready for streams of every node; otherwise what is missing.
    fn meta_group_state(&self) -> Result<(), String> {
        let mut leader = None;
        for node in &self.nodes {
            let jsz = node.jsz()?;
            let meta = &jsz["meta_cluster"];
            match meta["leader"].as_str() {
                Some(l) if !l.is_empty() => {
                    if l == node.name {
                        leader = Some(meta.clone());
                    }
                }
                _ => return Err(format!("{} knows no meta leader yet", node.name)),
            }
        }
        let meta = leader.ok_or("no server says it leads the meta group")?;
        let current = meta["replicas"]
            .as_array()
            .map(|peers| {
                peers
                    .iter()
                    .filter(|p| {
                        p["current"].as_bool() == Some(true) && p["offline"].as_bool() != Some(true)
                    })
                    .count()
            })
            .unwrap_or(0);
        if current + 1 < self.nodes.len() {
            return Err(format!(
                "the meta leader counts {current} current peers of {}",
                self.nodes.len() - 1
            ));
        }
        Ok(())
    }

    /// Every server's URL, comma-separated (what `--nats-url` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn replicas(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn kill_9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for the node to exit: a planned stop.
    pub fn terminate(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGTERM);
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.wait();
        }
    }

    /// Lame duck mode (SIGUSR2, a planned stop): the node takes no new clients, hands its
    /// Raft leaderships to the others, sends its clients elsewhere over a few seconds
    /// (`lame_duck_duration`: 30 s, the least nats-server takes), then exits. Waits for
    /// the exit.
    pub fn lame_duck(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGUSR2);
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is still running");
        self.nodes[i].spawn();
    }

    /// SIGSTOP: the node stops answering anyone, as if cut off by a partition.
    pub fn pause(&self, i: usize) {
        self.nodes[i].signal(libc::SIGSTOP);
    }

    pub fn resume(&self, i: usize) {
        self.nodes[i].signal(libc::SIGCONT);
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.signal(libc::SIGCONT);
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
