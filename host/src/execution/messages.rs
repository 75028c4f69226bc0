//! What travels over the queues between the API tier and the workers: a job (which
//! function, on which staged input, where to reply; its record is `imgfleet_stores::jobs::Job`)
//! and its completion.

use serde::{Deserialize, Serialize};

use imgfleet_queue::OutgoingMessage;
use imgfleet_stores::jobs::Job;

/// The job as a queue message in its tenant's shard group `<tenant>#<shard>`: the queue
/// serves groups round robin, which is what keeps tenants from starving each other.
pub fn queue_message(job: &Job, shard: usize) -> OutgoingMessage {
    OutgoingMessage::new(serde_json::to_vec(job).expect("a job serialises"))
        .group(format!("{}#{shard}", job.tenant))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Completion {
    pub job_id: String,
    pub outcome: Outcome,
    /// Time between acceptance and a worker picking the job up.
    pub queue_ms: f64,
    /// W3C `traceparent` of the worker's span: the API's log names the span that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Sent to every partition (a hedged job's): other copies of it may arrive, and its
    /// output is left to expire rather than freed by whichever copy nobody claims.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub broadcast: bool,
    /// From a hedged job's second copy: its request takes back the first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hedge: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The function answered (any status, its own errors included).
    Answered {
        status: u16,
        /// Response headers worth passing on (content type, timings).
        headers: Vec<(String, String)>,
        /// Staging key of the response body.
        output: String,
        instantiate_ms: f64,
        wall_ms: f64,
        cpu_ms: f64,
        /// The function's cost facts header, if it sent one.
        facts: Option<String>,
    },
    /// The host could not get an answer (deadline, memory cap, crash, lost input).
    Failed {
        status: u16,
        code: String,
        message: String,
    },
}
