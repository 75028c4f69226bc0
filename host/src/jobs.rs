//! What travels over the queues between the API tier and the workers: a job (which
//! function, on which staged input, where to reply) and its completion.

use serde::{Deserialize, Serialize};

use crate::queue::OutgoingMessage;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub tenant: String,
    /// The API key it came with (for usage records).
    #[serde(default)]
    pub key_id: String,
    /// The request that created it, so the worker's logs join the API's.
    #[serde(default)]
    pub request_id: String,
    /// Component id from the manifest.
    pub function: String,
    /// HTTP method the function is invoked with.
    pub method: String,
    /// Path and query the function is invoked with.
    pub path_and_query: String,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    /// Staging key of the input bytes.
    pub input: String,
    /// Queue the completion goes to; `None` for jobs nobody waits on.
    pub reply_to: Option<String>,
    /// When the API accepted it (ms since the epoch), for queue-wait accounting.
    pub submitted_ms: u64,
}

impl Job {
    /// The job as a queue message in its tenant's shard group `<tenant>#<shard>`: the queue
    /// serves groups round robin, which is what keeps tenants from starving each other.
    pub fn to_message(&self, shard: usize) -> OutgoingMessage {
        OutgoingMessage::new(serde_json::to_vec(self).expect("a job serialises"))
            .group(format!("{}#{shard}", self.tenant))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Completion {
    pub job_id: String,
    pub outcome: Outcome,
    /// Time between acceptance and a worker picking the job up.
    pub queue_ms: f64,
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
