//! What `/healthz` and `/readyz` report beyond the request path: the stores a request must
//! write to (checked on every probe), and the background tasks that must keep running.
//!
//! Architecture invariant: a host never says it is healthy while a part it needs is gone.
//! A store that cannot take writes makes the host not ready until it can again; a
//! background task that stops, or a store whose writer is gone, makes it unhealthy and
//! stops the process (after [`FATAL_GRACE`], so that probes see why), for its supervisor to
//! restart.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a host that lost a part keeps answering (503 on its probes) before it stops.
pub const FATAL_GRACE: Duration = Duration::from_secs(2);
/// How often stores are checked for a writer that is gone, between probes.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// A store's state, as a check reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Cannot take writes now (disk full, I/O error, locked); may recover by itself.
    NotReady(String),
    /// Gone for good (its writer thread stopped): the process must restart.
    Dead(String),
}

impl Status {
    /// A store's state from what it reports: whether it takes writes, and whether its
    /// writer is gone for good.
    pub fn of_store(writes: Result<(), String>, stopped: bool) -> Self {
        match writes {
            Ok(()) => Self::Ok,
            Err(e) if stopped => Self::Dead(e),
            Err(e) => Self::NotReady(e),
        }
    }
}

type Check = Box<dyn Fn() -> Status + Send + Sync>;

/// Something wrong, as the probes name it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    pub part: String,
    pub reason: String,
    /// The host will stop (and be restarted by its supervisor).
    pub fatal: bool,
}

pub struct Health {
    checks: Vec<(&'static str, Check)>,
    stopped: Mutex<BTreeMap<&'static str, String>>,
    fatal: watch::Sender<Option<String>>,
    /// Set once the host is stopping on purpose: parts that end then are not lost.
    stopping: std::sync::atomic::AtomicBool,
}

impl Health {
    pub fn new() -> Self {
        Self {
            checks: Vec::new(),
            stopped: Mutex::new(BTreeMap::new()),
            fatal: watch::channel(None).0,
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The host is stopping on purpose (its workers draining): parts that end from now on
    /// are expected to.
    pub fn stopping(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds a store check, named as the probes will name it.
    pub fn check(
        &mut self,
        part: &'static str,
        check: impl Fn() -> Status + Send + Sync + 'static,
    ) {
        self.checks.push((part, Box::new(check)));
    }

    /// Watches a background task: if it ever ends (returns or panics), the host is
    /// unhealthy and stops.
    pub fn watch(self: &Arc<Self>, part: &'static str, task: JoinHandle<()>) {
        let health = self.clone();
        tokio::spawn(async move {
            let reason = match task.await {
                Ok(()) => "it returned".to_string(),
                Err(e) if e.is_panic() => format!("it panicked: {}", panic_text(e.into_panic())),
                Err(e) => e.to_string(),
            };
            health.lost(part, reason);
        });
    }

    /// Checks the stores every second, so a writer that is gone stops the host even when
    /// nobody probes it.
    pub fn spawn_watchdog(self: &Arc<Self>) {
        let health = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                for (part, check) in &health.checks {
                    if let Status::Dead(reason) = check() {
                        health.lost(part, reason);
                    }
                }
            }
        });
    }

    fn lost(&self, part: &'static str, reason: String) {
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::debug!(part, %reason, "a part ended while the host stops");
            return;
        }
        let first = {
            let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
            let first = stopped.is_empty();
            stopped.entry(part).or_insert_with(|| reason.clone());
            first
        };
        tracing::error!(part, %reason, "a part of the host has stopped; the host stops too, for its supervisor to restart it");
        if first {
            self.fatal
                .send_replace(Some(format!("{part} stopped: {reason}")));
        }
    }

    /// Everything wrong now: stopped tasks, dead stores and stores that cannot take writes.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out: Vec<Problem> = self
            .stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(part, reason)| Problem {
                part: part.to_string(),
                reason: reason.clone(),
                fatal: true,
            })
            .collect();
        for (part, check) in &self.checks {
            let (reason, fatal) = match check() {
                Status::Ok => continue,
                Status::NotReady(r) => (r, false),
                Status::Dead(r) => (r, true),
            };
            if !out.iter().any(|p| p.part == *part) {
                out.push(Problem {
                    part: part.to_string(),
                    reason,
                    fatal,
                });
            }
        }
        out
    }

    /// Resolves, after [`FATAL_GRACE`], once a part has stopped for good; with what stopped.
    pub async fn stopped(&self) -> String {
        let mut rx = self.fatal.subscribe();
        let what = loop {
            if let Some(what) = rx.borrow_and_update().clone() {
                break what;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::time::sleep(FATAL_GRACE).await;
        what
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopped_task_is_named_and_stops_the_host() {
        let mut health = Health::new();
        let state = Arc::new(Mutex::new(Status::Ok));
        let seen = state.clone();
        health.check("audit log", move || seen.lock().unwrap().clone());
        let health = Arc::new(health);
        assert!(health.problems().is_empty());

        *state.lock().unwrap() = Status::NotReady("disk full".into());
        assert_eq!(
            health.problems(),
            [Problem {
                part: "audit log".into(),
                reason: "disk full".into(),
                fatal: false
            }]
        );
        *state.lock().unwrap() = Status::Ok;

        health.watch("usage shipper", tokio::spawn(async { panic!("boom") }));
        let stopped = tokio::time::timeout(Duration::from_secs(10), health.stopped())
            .await
            .expect("the host stops");
        assert_eq!(stopped, "usage shipper stopped: it panicked: boom");
        assert_eq!(
            health.problems(),
            [Problem {
                part: "usage shipper".into(),
                reason: "it panicked: boom".into(),
                fatal: true
            }]
        );
    }
}
