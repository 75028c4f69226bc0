//! Workers: pull jobs from the jobs queue only when a slot is free (one worker per slot),
//! fetch the staged input, run the function in a slot, stage the output and reply. What
//! waits on the network rather than on a slot (an input slow to come, a reply) goes on
//! without the worker, so that a node that hangs does not take the host's slots with it.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::execution::messages::{Completion, Outcome};
use crate::execution::runtime::InvokeRequest;
use crate::execution::slots::{Slots, SubmitError};
use crate::operator::telemetry;
use crate::operator::trace_context::{self, TraceContext};
use imgfleet_queue::backend::QueueDirectory;
use imgfleet_queue::{
    Durability, Message, OutgoingMessage, Queue, Receipt, ReceiveRequest, receive_or_pause,
};
use imgfleet_stores::clock::now_ms;
use imgfleet_stores::jobs::Job;
use imgfleet_stores::jobs::{Finish, JobStatus, JobStore};
use imgfleet_stores::staging::{Keep, Staging};
use tracing::Instrument;

pub struct WorkerContext {
    /// This host's id: the job span names where it ran.
    pub host_id: std::sync::Arc<str>,
    pub jobs: Arc<dyn Queue>,
    pub replies: Arc<QueueDirectory>,
    pub slots: Slots,
    pub staging: Staging,
    /// Value of the limits header every invocation carries.
    pub limits_header: String,
    /// How long a job stays hidden while a worker has it.
    pub visibility: Duration,
    /// How long an output waits for its client (synchronous requests).
    pub output_ttl: Duration,
    /// How long an asynchronous job's output can be fetched.
    pub async_output_ttl: Duration,
    /// Deliveries of a job before it is given up (the jobs queue's `max_receives`).
    pub max_receives: u32,
    pub job_store: JobStore,
    /// Where an asynchronous job's run is metered (its submission was metered as a request).
    pub usage_log: imgfleet_stores::audit::sqlite::AuditLog,
}

/// Tells the workers to stop taking jobs, and waits for those they have in hand.
pub struct Drain {
    stop: tokio::sync::watch::Sender<bool>,
    /// Closed once every worker has returned (each holds a sender).
    done: tokio::sync::mpsc::Receiver<()>,
}

impl Drain {
    /// Stops the workers from taking jobs (a receive under way is dropped, and what its
    /// polls bring goes back to the queue for another host) and waits up to `within` for
    /// the jobs they are running to finish: a host stopped on purpose hands no job to a
    /// visibility timeout.
    pub async fn stop_and_wait(mut self, within: Duration) -> bool {
        let _ = self.stop.send(true);
        tokio::time::timeout(within, self.done.recv()).await.is_ok()
    }
}

/// Starts one worker per slot; the [`Drain`] stops them.
pub fn spawn_workers(ctx: Arc<WorkerContext>) -> (Vec<tokio::task::JoinHandle<()>>, Drain) {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let (running, done) = tokio::sync::mpsc::channel::<()>(1);
    let aside = Arc::new(tokio::sync::Semaphore::new(ctx.slots.count()));
    let workers = (0..ctx.slots.count())
        .map(|_| {
            let ctx = ctx.clone();
            let mut stopping = stopping.clone();
            let running = running.clone();
            let aside = aside.clone();
            tokio::spawn(async move {
                // Held while the worker, or a job or reply it left to finish, is under way.
                let running = running;
                loop {
                    fail::fail_point!("worker");
                    let request = ReceiveRequest {
                        max_messages: 1,
                        wait: Duration::from_secs(20),
                        visibility: Some(ctx.visibility),
                    };
                    let messages = tokio::select! {
                        messages = receive_or_pause(&*ctx.jobs, request, "jobs")
                            .instrument(tracing::debug_span!("receive")) => messages,
                        _ = stopping.wait_for(|stop| *stop) => return,
                    };
                    for m in messages {
                        let (input_read, read) = tokio::sync::oneshot::channel();
                        let (ctx, running) = (ctx.clone(), running.clone());
                        let job =
                            tokio::spawn(
                                async move { handle(&ctx, m, &running, input_read).await },
                            );
                        see_through(job, read, &aside).await;
                    }
                    if *stopping.borrow() {
                        return;
                    }
                }
            })
        })
        .collect();
    (workers, Drain { stop, done })
}

/// Held by whatever a worker has in hand: the drain waits until every one is dropped.
type InHand = tokio::sync::mpsc::Sender<()>;

/// Told (or dropped) once a job has its input, or will not read it.
type InputRead = tokio::sync::oneshot::Sender<()>;

/// How long a worker waits for its job's input before it may leave the job to finish on
/// its own: a healthy read takes milliseconds, and one that waits on a node that hangs
/// waits as long as the node does.
const INPUT_PATIENCE: Duration = Duration::from_millis(500);

/// Waits for the job the worker took, unless the job is still waiting for its input after
/// [`INPUT_PATIENCE`] and `aside` has room (one such job per slot): the job then goes on by
/// itself (it waits for a slot once its input comes) while the worker takes the next one.
/// A slot is the capacity to run jobs; held by a read that waits on a hung node, it would
/// hold up every job behind it, their inputs readable or not.
async fn see_through(
    job: tokio::task::JoinHandle<()>,
    read: tokio::sync::oneshot::Receiver<()>,
    aside: &Arc<tokio::sync::Semaphore>,
) {
    if tokio::time::timeout(INPUT_PATIENCE, read).await.is_err()
        && let Ok(room) = aside.clone().try_acquire_owned()
    {
        tracing::debug!("the job's input is slow to come; the worker takes the next job");
        tokio::spawn(async move {
            let _room = room;
            let _ = job.await;
        });
        return;
    }
    if let Err(e) = job.await {
        tracing::error!(error = %e, "a job's task failed");
    }
}

async fn handle(ctx: &Arc<WorkerContext>, m: Message, in_hand: &InHand, input_read: InputRead) {
    let job: Job = match serde_json::from_slice(&m.body) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, message = %m.id, "dropping an unreadable job");
            let _ = ctx.jobs.delete(&m.receipt).await;
            return;
        }
    };
    let span = tracing::info_span!(
        "job",
        id = %job.id,
        request_id = %job.request_id,
        tenant = %job.tenant,
        function = %job.function,
        attempt = m.receive_count,
        host = %ctx.host_id,
        // Time from acceptance to this delivery: what the queue hop cost.
        queued_ms = now_ms().saturating_sub(job.submitted_ms),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_id = tracing::field::Empty,
    );
    // The request's trace continues here, on whichever host took the job.
    let trace = trace_context::enter(
        &span,
        job.traceparent.as_deref().and_then(TraceContext::parse),
    );
    let heartbeat = keep_hidden(ctx.jobs.clone(), m.receipt.clone(), ctx.visibility);
    let heartbeat = tokio::spawn(heartbeat.instrument(span.clone()));
    finish(ctx, m, job, trace, in_hand, input_read)
        .instrument(span)
        .await;
    heartbeat.abort();
}

/// Extends a job's visibility every third of the visibility timeout, for as long as its
/// worker is on it (until aborted): the timeout then only has to cover a worker that stopped
/// answering, not the longest run.
async fn keep_hidden(jobs: Arc<dyn Queue>, receipt: Receipt, visibility: Duration) {
    loop {
        tokio::time::sleep(visibility / 3).await;
        if let Err(e) = jobs.change_visibility(&receipt, visibility).await {
            tracing::warn!(error = %e, "could not extend the job's visibility; it may run again");
        }
    }
}

async fn finish(
    ctx: &Arc<WorkerContext>,
    m: Message,
    job: Job,
    trace: TraceContext,
    in_hand: &InHand,
    input_read: InputRead,
) {
    let queue_ms = now_ms().saturating_sub(job.submitted_ms) as f64;
    let Some(reply_to) = job.reply_to.clone() else {
        return finish_async(ctx, m, job, input_read).await;
    };
    let outcome = run(ctx, &job, Keep::Volatile, ctx.output_ttl, input_read).await;
    let completion = Completion {
        job_id: job.id.clone(),
        outcome,
        queue_ms,
        traceparent: Some(trace.to_string()),
        broadcast: job.hedge,
        hedge: job.hedge,
    };
    let body = serde_json::to_vec(&completion).expect("a completion serialises");
    // The job's message is deleted once the reply is sent (a crash in between runs the job
    // again, and its requester takes the first completion). The slot waits for both for a
    // moment only ([`WRAP_UP_PATIENCE`]), then takes its next job while they go on: a reply
    // through a partition that hangs waits for it, and a slot is the host's capacity to
    // run jobs, not to wait.
    let (ctx, in_hand) = (ctx.clone(), in_hand.clone());
    let wrap_up = tokio::spawn(
        async move {
            let _in_hand = in_hand;
            reply(&ctx, &reply_to, body, job.hedge)
                .instrument(tracing::info_span!("reply", queue = %reply_to))
                .await;
            // The input is the waiting request's to free: a hedged copy of this job may
            // still need it.
            done_with(&ctx, &m, None).await;
        }
        .in_current_span(),
    );
    let _ = tokio::time::timeout(WRAP_UP_PATIENCE, wrap_up).await;
}

/// How long a slot waits for a finished job's reply and delete before it leaves them to
/// the background and takes its next job. Until the delete lands, the job's group is in
/// flight: a receive begun before it may pass over the group's next job for its whole
/// wait (moto's SQS does, 20 s), so on a healthy queue the slot's next receive must come
/// after the delete. A queue that takes longer is failing, and the slot must not wait on it.
const WRAP_UP_PATIENCE: Duration = Duration::from_millis(250);

/// Sends a synchronous job's completion to the queue its requester waits on.
async fn reply(ctx: &WorkerContext, reply_to: &str, body: Vec<u8>, hedge: bool) {
    let sent = async {
        // The requester is waiting on a live connection: a crash loses the request
        // with its connection, so the reply need not wait for the disk.
        let q = ctx.replies.get(reply_to).await?;
        let message = OutgoingMessage::new(body).durability(Durability::Buffered);
        // A hedge exists because something was stuck: its answer takes every road.
        if hedge {
            q.send_everywhere(message).await
        } else {
            q.send(message).await
        }
    }
    .await;
    if let Err(e) = sent {
        tracing::error!(error = %e, reply_to, "could not send the completion");
    }
}

/// Frees the job's input (if it is the worker's to free) and deletes its message, waiting
/// for the delete up to [`WRAP_UP_PATIENCE`]: one whose queue is electing a leader goes on
/// in the background (one that fails only lets the job run again after its visibility
/// timeout).
async fn done_with(ctx: &WorkerContext, m: &Message, input: Option<&str>) {
    if let Some(input) = input {
        ctx.staging.remove(input);
    }
    let jobs = ctx.jobs.clone();
    let receipt = m.receipt.clone();
    let delete = tokio::spawn(
        async move {
            if let Err(e) = jobs.delete(&receipt).await {
                tracing::warn!(error = %e, "deleting a finished job failed; it may run again");
            }
        }
        .in_current_span(),
    );
    let _ = tokio::time::timeout(WRAP_UP_PATIENCE, delete).await;
}

/// Asynchronous jobs are retried (with a growing pause) while failures may be passing,
/// and finished in the job store exactly once.
async fn finish_async(ctx: &WorkerContext, m: Message, job: Job, input_read: InputRead) {
    match ctx.job_store.status(&job.id).await {
        Ok(Some(JobStatus::Queued)) => {}
        // An earlier delivery finished it.
        Ok(Some(_)) => return done_with(ctx, &m, Some(&job.input)).await,
        Ok(None) => {
            tracing::warn!("a job without a record (refused when it was submitted); dropping it");
            return done_with(ctx, &m, Some(&job.input)).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "job store unavailable; the job will be retried");
            return;
        }
    }
    let started_ms = now_ms();
    let outcome = run(ctx, &job, Keep::Durable, ctx.async_output_ttl, input_read).await;
    let final_failure = matches!(&outcome, Outcome::Failed { status, code, .. }
        if !(*status >= 500 && code != "input_lost" && m.receive_count < ctx.max_receives));
    if matches!(outcome, Outcome::Answered { .. }) || final_failure {
        // Before the job is finished: a crash in between meters it again under the same
        // id, which counts once.
        if !ctx
            .usage_log
            .usage(&run_usage(&job, &outcome, started_ms))
            .await
        {
            tracing::warn!("could not meter the job's run; it will run again");
            return;
        }
    }
    let finish = match outcome {
        Outcome::Failed {
            status,
            code,
            message,
        } => {
            if status >= 500 && code != "input_lost" && m.receive_count < ctx.max_receives {
                tracing::warn!(
                            code,
                            attempt = m.receive_count,
                host = %ctx.host_id,
                            "job failed; retrying later"
                        );
                let pause = Duration::from_secs(u64::from(m.receive_count));
                let _ = ctx.jobs.change_visibility(&m.receipt, pause).await;
                return;
            }
            Finish::Failed {
                http_status: status,
                code,
                message,
            }
        }
        Outcome::Answered {
            status,
            headers,
            output,
            ..
        } => Finish::Answered {
            http_status: status,
            content_type: headers
                .into_iter()
                .find(|(n, _)| n == "content-type")
                .map(|(_, v)| v),
            output,
            expires_ms: now_ms() + ctx.async_output_ttl.as_millis() as u64,
        },
    };
    record(ctx, &m, &job, finish).await;
}

async fn record(ctx: &WorkerContext, m: &Message, job: &Job, finish: Finish) {
    let output = match &finish {
        Finish::Answered { output, .. } => Some(output.clone()),
        Finish::Failed { .. } => None,
    };
    match ctx.job_store.finish(&job.id, finish, now_ms()).await {
        Ok(true) => {}
        Ok(false) => {
            // Another delivery finished it first; this output is nobody's.
            if let Some(o) = output {
                ctx.staging.remove(&o);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not record the job's end; it will run again");
            if let Some(o) = output {
                ctx.staging.remove(&o);
            }
            return;
        }
    }
    done_with(ctx, m, Some(&job.input)).await;
}

/// The usage record of an asynchronous job's final run, under an id derived from the job's
/// (so it is counted once however often it is written).
fn run_usage(job: &Job, outcome: &Outcome, started_ms: u64) -> imgfleet_metering::UsageRecord {
    let (status, input, output, cpu_ns, wall_ns) = match outcome {
        Outcome::Answered {
            status,
            wall_ms,
            cpu_ms,
            facts,
            ..
        } => {
            let (input, output) = imgfleet_stores::usage::image_sides(facts.as_deref());
            let (ns, ms) = (crate::metering::ns(*cpu_ms), crate::metering::ns(*wall_ms));
            (*status, input, output, ns, ms)
        }
        Outcome::Failed { status, .. } => (*status, Default::default(), Default::default(), 0, 0),
    };
    imgfleet_metering::UsageRecord {
        id: format!("run-{}", job.id),
        // The submitting request's (jobs queued before request ids were kept: the job's).
        request_id: if job.request_id.is_empty() {
            job.id.clone()
        } else {
            job.request_id.clone()
        },
        tenant: job.tenant.clone(),
        key_id: job.key_id.clone(),
        at_ms: started_ms,
        route: "/v1/jobs/{id}/run".into(),
        status,
        input,
        output,
        cpu_ns,
        wall_ns,
        queue_ns: started_ms.saturating_sub(job.submitted_ms) * 1_000_000,
        origin_bytes: 0,
        not_modified: false,
        cache: None,
    }
}

/// Jobs the queue gave up on (delivered `max_receives` times without finishing, e.g.
/// because they crashed their host each time) end as failed, with their client told why.
pub fn spawn_dead_letter_watcher(
    ctx: Arc<WorkerContext>,
    dead_letters: Arc<dyn Queue>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let request = ReceiveRequest {
                max_messages: 10,
                wait: Duration::from_secs(20),
                visibility: None,
            };
            let messages = receive_or_pause(&*dead_letters, request, "dead letters").await;
            for m in messages {
                if let Ok(job) = serde_json::from_slice::<Job>(&m.body) {
                    let message = format!(
                        "the job was abandoned after {} deliveries that did not finish",
                        ctx.max_receives
                    );
                    tracing::error!(job = %job.id, "dead-lettered job");
                    match &job.reply_to {
                        None => {
                            let failed = Finish::Failed {
                                http_status: 500,
                                code: "job_abandoned".into(),
                                message,
                            };
                            if let Err(e) = ctx.job_store.finish(&job.id, failed, now_ms()).await {
                                tracing::warn!(error = %e, "could not record a dead letter; retrying");
                                continue;
                            }
                        }
                        Some(reply_to) => {
                            let completion = Completion {
                                job_id: job.id.clone(),
                                outcome: failed(500, "job_abandoned", message),
                                queue_ms: 0.0,
                                traceparent: None,
                                broadcast: false,
                                hedge: job.hedge,
                            };
                            let body =
                                serde_json::to_vec(&completion).expect("a completion serialises");
                            if let Ok(q) = ctx.replies.get(reply_to).await {
                                let _ = q
                                    .send(
                                        OutgoingMessage::new(body).durability(Durability::Buffered),
                                    )
                                    .await;
                            }
                        }
                    }
                    ctx.staging.remove(&job.input);
                }
                let _ = dead_letters.delete(&m.receipt).await;
            }
        }
    })
}

fn failed(status: u16, code: &str, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        status,
        code: code.to_string(),
        message: message.into(),
    }
}

/// How long a finished asynchronous run waits for room in a full staging area before it
/// fails: outputs expire and inputs are consumed, so room comes back within seconds, and
/// waiting here costs the job none of its delivery attempts.
const ROOM_WAIT: Duration = Duration::from_secs(5);

async fn stage_output(
    staging: &Staging,
    output: bytes::Bytes,
    ttl: Duration,
    keep: Keep,
) -> Result<String, imgfleet_stores::staging::StagingError> {
    // Somebody waits on a synchronous job: telling them at once beats a late answer.
    let wait = if keep == Keep::Durable {
        ROOM_WAIT
    } else {
        Duration::ZERO
    };
    let give_up = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(50);
    loop {
        match staging.put(output.clone(), ttl, keep).await {
            Err(imgfleet_stores::staging::StagingError::Full { .. })
                if tokio::time::Instant::now() + pause < give_up =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

async fn run(
    ctx: &WorkerContext,
    job: &Job,
    keep: Keep,
    output_ttl: Duration,
    input_read: InputRead,
) -> Outcome {
    let read = ctx
        .staging
        // Staged just before the job was submitted: an input missing long after that was
        // freed by its request (answered by another copy of this job, or given up).
        .get_written_at(&job.input, job.submitted_ms)
        .instrument(tracing::info_span!("stage_in"))
        .await;
    let _ = input_read.send(());
    let input = match read {
        Ok(b) => b,
        Err(e @ imgfleet_stores::staging::StagingError::Io(_)) => {
            // Not gone, only unreadable for now (a fleet's shared staging failing over).
            return failed(503, "staging_unavailable", format!("the staged input: {e}"));
        }
        Err(e) => return failed(503, "input_lost", format!("the staged input is gone: {e}")),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (header::ACCEPT, &job.accept),
        (header::CONTENT_TYPE, &job.content_type),
    ] {
        if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.limits_header) {
        headers.insert(HeaderName::from_static(imgfleet_resize::LIMITS_HEADER), v);
    }
    let Ok(method) = http::Method::from_bytes(job.method.as_bytes()) else {
        return failed(
            400,
            "invalid_method",
            format!("`{}` is not an HTTP method", job.method),
        );
    };
    let request = InvokeRequest {
        method,
        path_and_query: job.path_and_query.clone(),
        headers,
        body: input,
    };
    let reply = match ctx.slots.submit(&job.function, request) {
        Ok(rx) => rx,
        Err(e @ SubmitError::Full { .. }) => return failed(503, "overloaded", e.to_string()),
        Err(e @ SubmitError::Closed) => return failed(503, "shutting_down", e.to_string()),
    };
    let invoking = tracing::info_span!(
        "invoke",
        function = %job.function,
        status = tracing::field::Empty,
        cpu_ms = tracing::field::Empty,
    );
    let inv = match tracing::Instrument::instrument(reply, invoking.clone()).await {
        Ok(Ok((inv, _))) => {
            invoking.record("status", inv.status.as_u16());
            invoking.record("cpu_ms", inv.cpu.as_secs_f64() * 1e3);
            inv
        }
        Ok(Err(e)) => {
            let (status, code) = e.status_and_code();
            if status >= 500 {
                tracing::error!(error = %e, "function failed");
            }
            return failed(status, code, e.client_message());
        }
        Err(_) => return failed(503, "shutting_down", "the host is shutting down"),
    };
    let facts = inv
        .headers
        .get(imgfleet_resize::http::FACTS_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let passed_on: Vec<(String, String)> = inv
        .headers
        .iter()
        .filter(|(n, _)| n.as_str() != imgfleet_resize::http::FACTS_HEADER)
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let output = match stage_output(&ctx.staging, inv.body, output_ttl, keep)
        .instrument(tracing::info_span!("stage_out"))
        .await
    {
        Ok(k) => k,
        Err(e) => return failed(503, "staging_full", e.to_string()),
    };
    let function = [("function", job.function.clone())];
    metrics::histogram!(telemetry::FUNCTION_CPU, &function).record(inv.cpu.as_secs_f64());
    metrics::histogram!(telemetry::FUNCTION_WALL, &function).record(inv.wall.as_secs_f64());
    metrics::histogram!(telemetry::FUNCTION_INSTANTIATE, &function)
        .record(inv.instantiate.as_secs_f64());
    metrics::histogram!(telemetry::FUNCTION_MEMORY_PEAK, &function).record(inv.memory_peak as f64);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Outcome::Answered {
        status: inv.status.as_u16(),
        headers: passed_on,
        output,
        instantiate_ms: ms(inv.instantiate),
        wall_ms: ms(inv.wall),
        cpu_ms: ms(inv.cpu),
        facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgfleet_queue::QueueSpec;
    use imgfleet_queue::embedded::EmbeddedStore;

    async fn receive_now(q: &dyn Queue, visibility: Duration) -> Vec<Message> {
        let request = ReceiveRequest {
            max_messages: 1,
            wait: Duration::ZERO,
            visibility: Some(visibility),
        };
        q.receive(request).await.expect("receive")
    }

    /// A job still waiting for its input after the worker's patience goes on by itself
    /// while there is room for it, and the worker is free; without room, the worker waits
    /// for it; a job that has its input keeps its worker to the end.
    #[tokio::test]
    async fn a_worker_leaves_a_job_whose_input_is_slow_only_while_there_is_room() {
        let room = Arc::new(tokio::sync::Semaphore::new(1));
        // (job, tell it to end, tell that its input came)
        let job = || {
            let (end, ended) = tokio::sync::oneshot::channel::<()>();
            let (input_read, read) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let _ = ended.await;
            });
            (task, end, input_read, read)
        };
        let (slow, end_slow, _input_never, read) = job();
        let started = tokio::time::Instant::now();
        see_through(slow, read, &room).await;
        let took = started.elapsed();
        assert!(
            took >= INPUT_PATIENCE && took < INPUT_PATIENCE * 2,
            "left after {took:?}"
        );
        assert_eq!(room.available_permits(), 0, "the job left holds the room");
        // No room left: the next slow job keeps its worker until it ends.
        let (second, end_second, _input_never, read) = job();
        let worker = tokio::spawn({
            let room = room.clone();
            async move { see_through(second, read, &room).await }
        });
        tokio::time::sleep(INPUT_PATIENCE * 2).await;
        assert!(!worker.is_finished(), "left without room for it");
        end_second.send(()).unwrap();
        worker.await.unwrap();
        // The first job ends: its room comes back.
        end_slow.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(room.available_permits(), 1);
        // A job that has its input keeps its worker, however long it runs.
        let (running, end, input_read, read) = job();
        input_read.send(()).unwrap();
        let worker = tokio::spawn({
            let room = room.clone();
            async move { see_through(running, read, &room).await }
        });
        tokio::time::sleep(INPUT_PATIENCE * 2).await;
        assert!(!worker.is_finished(), "left a job that had its input");
        end.send(()).unwrap();
        worker.await.unwrap();
        assert_eq!(room.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_job_stays_hidden_while_its_worker_has_it_and_comes_back_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let q = store.queue(QueueSpec::new("jobs")).await.unwrap();
        q.send(OutgoingMessage::new("job")).await.unwrap();
        let visibility = Duration::from_millis(600);
        let got = receive_now(&*q, visibility).await;
        assert_eq!(got.len(), 1);
        let heartbeat = tokio::spawn(keep_hidden(q.clone(), got[0].receipt.clone(), visibility));
        // Three visibility timeouts while the worker is on it.
        tokio::time::sleep(visibility * 3).await;
        assert!(
            receive_now(&*q, visibility).await.is_empty(),
            "delivered twice"
        );
        heartbeat.abort();
        // The worker stopped answering: back within one timeout.
        tokio::time::sleep(visibility + Duration::from_millis(300)).await;
        assert_eq!(receive_now(&*q, visibility).await.len(), 1);
    }
}
