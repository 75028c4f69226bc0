//! Execution slots: one OS thread per slot (by default one per core), each pulling the
//! next invocation from a bounded queue only when it is free. Invocations never run on
//! the API's threads, so a busy function cannot delay accepting or answering requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::execution::runtime::{Invocation, InvokeError, InvokeRequest, Runtime};

/// What a slot sends back: the invocation's outcome and how long it waited for a slot.
pub type Outcome = Result<(Invocation, Duration), InvokeError>;

struct Job {
    function: String,
    request: InvokeRequest,
    enqueued: Instant,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Clone)]
pub struct Slots {
    tx: Sender<Job>,
    in_flight: Arc<AtomicUsize>,
    count: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("all {slots} slots are busy and {queued} invocations are waiting")]
    Full { slots: usize, queued: usize },
    #[error("the host is shutting down")]
    Closed,
}

impl Slots {
    /// Starts `count` slot threads; at most `queue_capacity` invocations wait for a slot.
    pub fn start(runtime: Arc<Runtime>, count: usize, queue_capacity: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(queue_capacity);
        let in_flight = Arc::new(AtomicUsize::new(0));
        for i in 0..count {
            let (rx, runtime, in_flight) = (rx.clone(), runtime.clone(), in_flight.clone());
            std::thread::Builder::new()
                .name(format!("slot-{i}"))
                .spawn(move || slot_loop(rx, runtime, in_flight))
                .expect("spawning a slot thread");
        }
        Self {
            tx,
            in_flight,
            count,
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    pub fn busy(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Queues an invocation; the returned future resolves with its outcome and the time it
    /// waited for a slot.
    pub fn submit(
        &self,
        function: &str,
        request: InvokeRequest,
    ) -> Result<oneshot::Receiver<Outcome>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            function: function.to_string(),
            request,
            enqueued: Instant::now(),
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(SubmitError::Full {
                slots: self.count,
                queued: self.tx.len(),
            }),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }
}

fn slot_loop(rx: Receiver<Job>, runtime: Arc<Runtime>, in_flight: Arc<AtomicUsize>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("building a slot runtime");
    while let Ok(job) = rx.recv() {
        if job.reply.is_closed() {
            // The client is gone; do not spend a core on an answer nobody reads.
            continue;
        }
        let waited = job.enqueued.elapsed();
        in_flight.fetch_add(1, Ordering::Relaxed);
        let outcome = rt.block_on(runtime.invoke(&job.function, job.request));
        in_flight.fetch_sub(1, Ordering::Relaxed);
        let _ = job.reply.send(outcome.map(|inv| (inv, waited)));
    }
}
