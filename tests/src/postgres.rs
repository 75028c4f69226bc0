//! A real PostgreSQL server on 127.0.0.1 (Debian's `postgresql` binaries), in a directory of
//! its own, started for a test run and stopped when dropped. Each test takes a fresh
//! database from it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::nats::{free_port, spawn_tied, wait_for_port};

pub struct Postgres {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

/// `initdb` and `postgres`: `$IMGFLEET_PG_BIN`, else the newest /usr/lib/postgresql/*/bin.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("IMGFLEET_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: install Debian's postgresql (./dev.sh test does)")
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.pop().expect("no /usr/lib/postgresql/<version>").1
}

/// The `postgres` user's uid and gid, when running as root (PostgreSQL refuses root).
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // SAFETY: a NUL-terminated name; the returned entry is read before any other getpw call.
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root needs a `postgres` user (Debian's postgresql package creates it)"
    );
    // SAFETY: checked non-null above.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn as_server_user(program: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    if let Some((uid, gid)) = server_user() {
        c.uid(uid).gid(gid);
    }
    c
}

impl Postgres {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a directory for the database");
        let data = dir.path().join("data");
        if let Some((uid, gid)) = server_user() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("handing the database directory to postgres");
        }
        let bin = bin_dir();
        let init = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .expect("running initdb");
        assert!(init.success(), "initdb failed");
        let port = free_port();
        let child = spawn_server(dir.path(), port);
        let pg = Self { port, child, dir };
        pg.wait_ready();
        pg
    }

    /// Stops the server at once, as a crash would (SIGQUIT: immediate shutdown, every
    /// connection cut, no checkpoint); [`Postgres::restart`] brings it back on the same port
    /// with the same data.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.child = spawn_server(self.dir.path(), self.port);
        self.wait_ready();
    }

    /// Makes the server refuse writes (`default_transaction_read_only`, as on a standby),
    /// or take them again; open connections are cut so that clients meet the change on
    /// reconnecting too.
    pub fn read_only(&self, on: bool) {
        let value = if on { "on" } else { "off" };
        assert!(
            self.psql(&format!(
                "ALTER SYSTEM SET default_transaction_read_only = {value}"
            )),
            "ALTER SYSTEM failed"
        );
        assert!(self.psql("SELECT pg_reload_conf()"), "reload failed");
        // The reload reaches other sessions at their next command; cut them instead.
        assert!(
            self.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'imgfleet'"
            ),
            "terminating imgfleet's connections failed"
        );
    }

    /// A session that holds an exclusive lock on `table` of `database_url`'s database for
    /// `held` and then lets go (a slow migration, a long report): everyone else's queries
    /// on the table wait meanwhile. Wait for the returned process to know it has let go.
    pub fn hold_lock(&self, database_url: &str, table: &str, held: Duration) -> Child {
        let database = database_url.rsplit('/').next().unwrap_or("postgres");
        let sql = format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({}); COMMIT;",
            held.as_secs_f64()
        );
        let mut psql = Command::new("psql");
        psql.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", database])
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", &sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        spawn_tied(psql).expect("starting psql")
    }

    fn psql(&self, sql: &str) -> bool {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            // This session may write even while the server is made read-only for others.
            .env("PGOPTIONS", "-c default_transaction_read_only=off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_ready(&self) {
        for _ in 0..100 {
            if self.psql("SELECT 1") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("postgres on {} never answered a query", self.port);
    }

    /// A new, empty database; returns its URL.
    pub fn database(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        assert!(
            self.psql(&format!("CREATE DATABASE {name}")),
            "CREATE DATABASE {name} failed"
        );
        self.url(&name)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

/// Runs the server on `dir/data`, listening on 127.0.0.1:`port` only, logging to
/// `dir/postgres.log`.
fn spawn_server(dir: &Path, port: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("postgres.log"))
        .expect("a server log");
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(dir.join("postgres.log"), Some(uid), Some(gid))
            .expect("handing the log to postgres");
    }
    let mut command = as_server_user(&bin_dir().join("postgres"));
    command
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let child = spawn_tied(command).expect("starting postgres");
    assert!(
        wait_for_port(port, Duration::from_secs(30)),
        "postgres did not listen on {port} (log: {})",
        dir.join("postgres.log").display()
    );
    child
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown (the data directory is thrown away anyway).
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
    }
}
