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
//! Why a copy gets an input of its own: the first copy's input may sit in the part of the
//! fleet's staging that the stuck node leads, and a worker reading it waits as long as the
//! node hangs, whichever partition the copy came through. This host cannot tell (a node
//! that hung after the write has failed nothing here), so with the staging spread over
//! parts, the copy's input is staged again from the request's body (which the request
//! holds anyway; writes avoid a part late to answer), and freed with the first when the
//! request ends.
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
use bytes::Bytes;
use imgfleet_queue::Durability;
use imgfleet_stores::jobs::{Job, JobStatus};
use imgfleet_stores::staging::Keep;

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

/// A synchronous job as first sent: the job, its group, its message id, and the request's
/// body (its input, should a copy need it staged again).
pub(super) struct Sent<'a> {
    pub job: &'a Job,
    pub shard: usize,
    pub id: &'a str,
    pub body: &'a Bytes,
}

/// Waits for the completion of the synchronous job `sent` until `until`, hedging it once
/// when it is late and the queue degraded.
pub(super) async fn await_completion(
    state: &AppState,
    waiter: &mut Waiter,
    until: Instant,
    sent: Sent<'_>,
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
                ..sent.job.clone()
            };
            let second = Arc::new(SecondCopy::default());
            // The first copy's input may be what holds it up (a worker reading it waits on
            // the node that leads its part of the staging, which this host cannot always
            // tell: a node that hung after the write has failed nothing here): the copy gets
            // one of its own, staged where writes go now.
            let fresh_input = state.staging.is_spread().then(|| sent.body.clone());
            let kind = Kind::Sync {
                second: second.clone(),
                fresh_input,
            };
            send_copy(state, copy, sent.shard, sent.id, kind);
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
        withdraw_the_other(state, completion.as_ref(), sent.id, &second);
    }
    completion
}

/// The hedged copy of a synchronous job: its id once sent, its own input if it was given
/// one, and whether the request had its answer by then. Whichever of the request and the
/// copy's send comes last withdraws the copy and frees its input.
#[derive(Default)]
struct SecondCopy {
    id: OnceLock<String>,
    input: OnceLock<String>,
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
    second.answered.store(true, Ordering::SeqCst);
    if take_back_second && let Some(id) = second.id.get() {
        withdraw(state, id.clone());
    }
    // Whichever copy answered, its output is staged apart: neither input is needed now.
    if let Some(input) = second.input.get() {
        state.staging.remove(input);
    }
}

/// Withdraws a job's copy in the background: the answer must not wait on a partition
/// that does not answer. In a span of its own, linked to the request's: inside the
/// request's, it would hold that span open until a hung partition answered, and the
/// request would look a second slower in traces than its client found it.
fn withdraw(state: &AppState, id: String) {
    let jobs = state.jobs.clone();
    let span = tracing::info_span!(parent: None, "withdraw", job = %id);
    span.follows_from(tracing::Span::current());
    tokio::spawn(async move { take_back(&*jobs, &id).await }.instrument(span));
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
                        send_copy(&state, copy, shard, &first, Kind::Async);
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

/// What a second copy is a copy of.
enum Kind {
    /// A synchronous request's job, with the input staged again for it, if it needs one.
    Sync {
        second: Arc<SecondCopy>,
        fresh_input: Option<Bytes>,
    },
    /// An accepted asynchronous job: its input is durable and freed by the worker that
    /// finishes it.
    Async,
}

/// Sends a job's second copy in the background, so that the request's wait goes on
/// meanwhile (a send can spend an attempt on a partition that does not answer).
fn send_copy(state: &AppState, mut copy: Job, shard: usize, first: &str, kind: Kind) {
    let (state, first) = (state.clone(), first.to_string());
    tracing::Span::current().record("hedged", true);
    tokio::spawn(
        async move {
            let (message, label) = match &kind {
                Kind::Sync {
                    second,
                    fresh_input,
                } => {
                    if let Some(bytes) = fresh_input {
                        match restage(&state, bytes.clone(), second).await {
                            Some(key) => copy.input = key,
                            // Answered meanwhile: no copy needed.
                            None if second.answered.load(Ordering::SeqCst) => return,
                            None => {}
                        }
                    }
                    // The client waits on this connection, as for the first copy.
                    let message = queue_message(&copy, shard).durability(Durability::Buffered);
                    (message, "sync")
                }
                Kind::Async => (super::job_message(&copy, shard), "async"),
            };
            match state.jobs.send_elsewhere(message, &first).await {
                Ok(id) => {
                    metrics::counter!(telemetry::HEDGED_JOBS, "kind" => label).increment(1);
                    tracing::info!(first, second = id, kind = label, "job hedged");
                    if let Kind::Sync { second, .. } = &kind {
                        let _ = second.id.set(id.clone());
                        if second.answered.load(Ordering::SeqCst) {
                            take_back(&*state.jobs, &id).await;
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

/// Stages a hedged copy's own input; `None` when it could not be (the copy then shares the
/// first copy's input) or the request was answered meanwhile (the new entry is freed).
async fn restage(state: &AppState, bytes: Bytes, second: &SecondCopy) -> Option<String> {
    let ttl = super::functions::input_ttl(state);
    match state.staging.put_input(bytes, ttl, Keep::Volatile).await {
        Ok(key) => {
            let _ = second.input.set(key.clone());
            if second.answered.load(Ordering::SeqCst) {
                state.staging.remove(&key);
                return None;
            }
            tracing::debug!(input = key, "the hedged copy has an input of its own");
            Some(key)
        }
        Err(e) => {
            tracing::debug!(error = %e, "the hedged copy shares the first copy's input");
            None
        }
    }
}
