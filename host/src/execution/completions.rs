//! Routes completion messages from this host's completions queue to the requests waiting
//! for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::execution::messages::{Completion, Outcome};
use imgfleet_queue::{Queue, ReceiveRequest, receive_or_pause};
use imgfleet_stores::staging::Staging;

#[derive(Clone)]
pub struct Completions {
    waiters: Arc<Mutex<HashMap<String, oneshot::Sender<Completion>>>>,
    queue: Arc<dyn Queue>,
}

/// Removes its waiter when dropped, so an abandoned request leaves nothing behind.
pub struct Waiter {
    rx: oneshot::Receiver<Completion>,
    job_id: String,
    waiters: Arc<Mutex<HashMap<String, oneshot::Sender<Completion>>>>,
}

impl Waiter {
    /// The completion, or `None` if none came within `budget`.
    pub async fn wait_until(&mut self, until: tokio::time::Instant) -> Option<Completion> {
        tokio::time::timeout_at(until, &mut self.rx)
            .await
            .ok()?
            .ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.waiters
            .lock()
            .expect("waiters lock")
            .remove(&self.job_id);
    }
}

impl Completions {
    pub fn new(queue: Arc<dyn Queue>) -> Self {
        Self {
            waiters: Arc::new(Mutex::new(HashMap::new())),
            queue,
        }
    }

    pub fn queue_name(&self) -> &str {
        self.queue.name()
    }

    /// Whether part of this host's completions queue failed lately (a completion may be
    /// sitting where the dispatcher cannot reach it).
    pub fn degraded(&self) -> bool {
        self.queue.degraded()
    }

    pub fn wait_for(&self, job_id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .insert(job_id.to_string(), tx);
        Waiter {
            rx,
            job_id: job_id.to_string(),
            waiters: self.waiters.clone(),
        }
    }

    /// Receives completions until the process ends. Completions nobody waits for any more
    /// have their staged output freed.
    pub fn spawn_dispatcher(&self, staging: Staging) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                fail::fail_point!("completions-dispatcher");
                let request = ReceiveRequest {
                    max_messages: 10,
                    wait: Duration::from_secs(20),
                    visibility: None,
                };
                let messages = receive_or_pause(&*this.queue, request, "completions").await;
                for m in messages {
                    match serde_json::from_slice::<Completion>(&m.body) {
                        Ok(c) => {
                            tracing::debug!(job = %c.job_id, hedge = c.hedge, "completion received");
                            let waiter = this
                                .waiters
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&c.job_id);
                            let unclaimed = match waiter {
                                Some(tx) => tx.send(c).err(),
                                None => Some(c),
                            };
                            // A completion delivered again may have been claimed the first
                            // time, its output still being read: it expires on its own.
                            if let Some(Completion {
                                outcome: Outcome::Answered { output, .. },
                                broadcast: false,
                                ..
                            }) = unclaimed
                                && m.receive_count == 1
                            {
                                staging.remove(&output);
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "dropping an unreadable completion"),
                    }
                    // In the background: a delete waiting out an election must not hold
                    // up the completions behind it.
                    let queue = this.queue.clone();
                    tokio::spawn(async move {
                        if let Err(e) = queue.delete(&m.receipt).await {
                            tracing::warn!(error = %e, "deleting a completion failed");
                        }
                    });
                }
            }
        })
    }
}
