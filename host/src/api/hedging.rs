//! Hedging: a job that has not come back while part of the queue is failing gets a second
//! copy through another partition, instead of its request waiting out the stuck
//! partition's leader election (4-9 s in nats-server).
//!
//! Why this is invisible to clients: a synchronous request takes the first completion and
//! is metered and audited once, by the API, whatever ran; a later copy's completion finds
//! nobody waiting and is dropped, and the copy that did not answer is taken back from the
//! queue (left there, it would run for nobody and hold up its group). An asynchronous job
//! is finished in the job store once and its run metered under an id derived from the
//! job's, so two runs count as one.
//!
//! Why only while degraded: a healthy fleet's slow request is slow because its work is
//! (a large image, a busy queue), and a second copy would only add load. A partition that
//! failed lately (its sends, polls or deliveries, as seen from this host) is the sign that
//! a job may be sitting where no worker can reach it. And never more than half as many
//! copies as requests ([`Budget`]): a brownout that also slows the workers must not be
//! met with twice the work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::AppState;
use crate::execution::completions::Waiter;
use crate::execution::messages::{Completion, queue_message};
use crate::operator::telemetry;
use imgfleet_queue::{Durability, OutgoingMessage};
use imgfleet_stores::jobs::{Job, JobStatus};

/// How often a waiting request looks again whether the queue is degraded.
const RECHECK: Duration = Duration::from_millis(200);
/// How often an accepted asynchronous job's watch looks whether the queue is degraded.
const ASYNC_RECHECK: Duration = Duration::from_secs(1);
/// How long after an asynchronous job's acceptance it may still be hedged: longer than an
/// election, after which the stuck copy is delivered anyway.
const ASYNC_WATCH: Duration = Duration::from_secs(15);

/// Copies earned per job sent, and most copies saved up.
const EARNED_PER_JOB: f64 = 0.5;
const MOST_SAVED: f64 = 20.0;

/// Hedges a host may send: each job earns half a copy, each copy spends one, so copies
/// add at most half the jobs' work, with a small reserve for a burst of stuck requests.
pub struct Budget {
    saved: std::sync::Mutex<f64>,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            saved: std::sync::Mutex::new(MOST_SAVED),
        }
    }
}

impl Budget {
    fn earn(&self) {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        *saved = (*saved + EARNED_PER_JOB).min(MOST_SAVED);
    }

    fn spend(&self) -> bool {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        if *saved >= 1.0 {
            *saved -= 1.0;
            true
        } else {
            false
        }
    }
}

fn degraded(state: &AppState) -> bool {
    state.jobs.degraded() || state.completions.degraded()
}

/// Waits for the completion of the synchronous job `job` (sent as `first`, in group
/// `shard`) until `until`, hedging it once when it is late and the queue degraded.
pub(super) async fn await_completion(
    state: &AppState,
    waiter: &mut Waiter,
    until: Instant,
    job: &Job,
    shard: usize,
    first: &str,
) -> Option<Completion> {
    let Some(after) = state.hedge_after else {
        return waiter.wait_until(until).await;
    };
    state.hedges.earn();
    let mut look = Instant::now() + after;
    let mut told = false;
    let mut hedged = None;
    while look < until {
        tokio::select! {
            completion = waiter.wait_until(until) => return completion,
            () = tokio::time::sleep_until(look) => {}
        }
        if degraded(state) {
            if !state.hedges.spend() {
                tracing::debug!("no hedge left in the budget; waiting");
                break;
            }
            let copy = Job {
                hedge: true,
                ..job.clone()
            };
            // The client waits on this connection, as for the first copy.
            let message = queue_message(&copy, shard).durability(Durability::Buffered);
            let second = Arc::new(SecondCopy::default());
            send_copy(state, message, first, "sync", Some(second.clone()));
            hedged = Some(second);
            break;
        }
        if !told {
            tracing::debug!("late, but no partition failed lately: not hedged");
            told = true;
        }
        look = Instant::now() + RECHECK;
    }
    let completion = waiter.wait_until(until).await;
    if let Some(second) = hedged {
        withdraw_the_other(state, completion.as_ref(), first, &second);
    }
    completion
}

/// The hedged copy of a synchronous job: its id once sent, and whether the request had
/// its answer by then. Whichever of the request and the copy's send comes last withdraws
/// the copy.
#[derive(Default)]
struct SecondCopy {
    id: OnceLock<String>,
    answered: AtomicBool,
}

/// Once a hedged request has its answer, takes back the copy that did not give it: left
/// in its partition it would run for nobody and, first of its group there, hold up the
/// tenant's later jobs (a hung partition's copy waits there until the node resumes).
/// A completion marked `hedge` came from the hedge, so the first copy is withdrawn;
/// any other, the hedge; none (the request gave up), both.
fn withdraw_the_other(
    state: &AppState,
    completion: Option<&Completion>,
    first: &str,
    second: &Arc<SecondCopy>,
) {
    let (take_back_first, take_back_second) = match completion {
        Some(c) if c.hedge => (true, false),
        Some(_) => (false, true),
        None => (true, true),
    };
    if take_back_first {
        withdraw(state, first.to_string());
    }
    if take_back_second {
        second.answered.store(true, Ordering::SeqCst);
        if let Some(id) = second.id.get() {
            withdraw(state, id.clone());
        }
    }
}

/// Withdraws a job's copy in the background: the answer must not wait on a partition
/// that does not answer.
fn withdraw(state: &AppState, id: String) {
    let jobs = state.jobs.clone();
    tokio::spawn(async move { take_back(&*jobs, &id).await }.in_current_span());
}

async fn take_back(jobs: &dyn imgfleet_queue::Queue, id: &str) {
    if let Err(e) = jobs.withdraw(id).await {
        tracing::debug!(error = %e, id, "a job's spare copy was not withdrawn; it runs for nobody");
    }
}

/// Watches an accepted asynchronous job (sent as `first`, in group `shard`) for a while,
/// and hedges it once if it is still queued when the queue is degraded. The job's first
/// copy stays where it is: nothing accepted depends on this watch (a host that dies with it
/// loses only the hedge). It looks once a second: an accepted job's client is not waiting
/// on the connection, and a host with many jobs accepted must not spend its time looking.
pub(super) fn watch_async(state: &AppState, job: Job, shard: usize, first: String) {
    let Some(after) = state.hedge_after else {
        return;
    };
    state.hedges.earn();
    let state = state.clone();
    tokio::spawn(async move {
        let give_up = Instant::now() + ASYNC_WATCH;
        tokio::time::sleep(after).await;
        while Instant::now() < give_up {
            if degraded(&state) {
                match state.job_store.status(&job.id).await {
                    Ok(Some(JobStatus::Queued)) if state.hedges.spend() => {
                        let copy = Job { hedge: true, ..job };
                        send_copy(
                            &state,
                            super::job_message(&copy, shard),
                            &first,
                            "async",
                            None,
                        );
                    }
                    // Finished already, the store cannot tell, or the budget is spent: the
                    // first copy stands.
                    _ => {}
                }
                return;
            }
            tokio::time::sleep(ASYNC_RECHECK).await;
        }
    });
}

/// Sends a job's second copy in the background, so that the request's wait goes on
/// meanwhile (a send can spend an attempt on a partition that does not answer).
fn send_copy(
    state: &AppState,
    message: OutgoingMessage,
    first: &str,
    kind: &'static str,
    second: Option<Arc<SecondCopy>>,
) {
    let (jobs, first) = (state.jobs.clone(), first.to_string());
    tracing::Span::current().record("hedged", true);
    tokio::spawn(
        async move {
            match jobs.send_elsewhere(message, &first).await {
                Ok(id) => {
                    metrics::counter!(telemetry::HEDGED_JOBS, "kind" => kind).increment(1);
                    tracing::info!(first, second = id, kind, "job hedged");
                    if let Some(second) = second {
                        let _ = second.id.set(id.clone());
                        if second.answered.load(Ordering::SeqCst) {
                            take_back(&*jobs, &id).await;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, first, "hedging a job failed"),
            }
        }
        // Logged under the request (or the accepted job) it hedges.
        .in_current_span(),
    );
}
