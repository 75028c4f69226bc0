//! An asynchronous job: the message on the jobs queue and its row in the jobs table
//! (`pk = job#<id>`, `sk = job`; `ttl` lets DynamoDB drop it a day after submission).

use imgfleet_stores::dynamodb::{error_text, get_n, get_s, n, s};
use serde::{Deserialize, Serialize};

use crate::deps::Deps;

const DAY_MS: u64 = 86_400_000;

/// What the resize function needs to run a job; the image waits in the staging bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    pub id: String,
    pub tenant: String,
    pub key_id: String,
    pub request_id: String,
    pub query: String,
    #[serde(default)]
    pub accept: Option<String>,
    pub input_key: String,
    pub submitted_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Done,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Done, Self::Failed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done {
        output_key: String,
        content_type: String,
        expires_ms: u64,
    },
    Failed {
        http_status: u16,
        code: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: String,
    pub tenant: String,
    pub status: Status,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub http_status: Option<u16>,
    pub output_key: Option<String>,
    pub content_type: Option<String>,
    pub expires_ms: Option<u64>,
    pub error: Option<(String, String)>,
}

impl JobRow {
    /// The status document of `GET /v1/jobs/{id}` (the host's shape).
    pub fn to_json(&self, now_ms: u64) -> serde_json::Value {
        let mut body = serde_json::json!({
            "id": self.id,
            "status": self.status.as_str(),
            "created_ms": self.created_ms,
            "finished_ms": self.finished_ms,
        });
        match self.status {
            Status::Done => {
                body["http_status"] = self.http_status.into();
                body["output_url"] = format!("/v1/jobs/{}/output", self.id).into();
                body["expires_ms"] = self.expires_ms.into();
                body["expired"] = self.expires_ms.is_some_and(|e| e <= now_ms).into();
            }
            Status::Failed => {
                let (code, message) = self.error.clone().unwrap_or_default();
                body["http_status"] = self.http_status.into();
                body["error"] = serde_json::json!({ "code": code, "message": message });
            }
            Status::Queued => {}
        }
        body
    }
}

fn job_pk(id: &str) -> String {
    format!("job#{id}")
}

/// Job ids appear in URLs and keys: a UUID's 32 hex digits, nothing else.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

pub async fn put_queued(deps: &Deps, job: &JobMessage) -> Result<(), String> {
    deps.dynamodb
        .put_item()
        .table_name(&deps.names.jobs_table)
        .item("pk", s(job_pk(&job.id)))
        .item("sk", s("job"))
        .item("tenant", s(job.tenant.clone()))
        .item("status", s(Status::Queued.as_str()))
        .item("created_ms", n(job.submitted_ms))
        .item("ttl", n((job.submitted_ms + DAY_MS) / 1000))
        .send()
        .await
        .map_err(error_text)?;
    Ok(())
}

pub async fn get(deps: &Deps, id: &str) -> Result<Option<JobRow>, String> {
    let out = deps
        .dynamodb
        .get_item()
        .table_name(&deps.names.jobs_table)
        .key("pk", s(job_pk(id)))
        .key("sk", s("job"))
        .consistent_read(true)
        .send()
        .await
        .map_err(error_text)?;
    let Some(item) = out.item else {
        return Ok(None);
    };
    let opt_n = |name: &str| item.contains_key(name).then(|| get_n(&item, name));
    let text = |name: &str| get_s(&item, name).map(str::to_string);
    Ok(Some(JobRow {
        id: id.to_string(),
        tenant: text("tenant").unwrap_or_default(),
        status: get_s(&item, "status")
            .and_then(Status::parse)
            .ok_or_else(|| format!("job {id} has no valid status"))?,
        created_ms: get_n(&item, "created_ms"),
        finished_ms: opt_n("finished_ms"),
        http_status: opt_n("http_status").map(|v| v as u16),
        output_key: text("output_key"),
        content_type: text("content_type"),
        expires_ms: opt_n("expires_ms"),
        error: text("error_code").map(|c| (c, text("error_message").unwrap_or_default())),
    }))
}

/// Records how the job ended, once: a redelivered message finds it finished and changes
/// nothing. Returns whether this call finished it.
pub async fn finish(deps: &Deps, id: &str, outcome: &Outcome, now_ms: u64) -> Result<bool, String> {
    let mut update = deps
        .dynamodb
        .update_item()
        .table_name(&deps.names.jobs_table)
        .key("pk", s(job_pk(id)))
        .key("sk", s("job"))
        .condition_expression("#status = :queued")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":queued", s(Status::Queued.as_str()))
        .expression_attribute_values(":finished", n(now_ms));
    update = match outcome {
        Outcome::Done {
            output_key,
            content_type,
            expires_ms,
        } => update
            .update_expression(
                "SET #status = :status, finished_ms = :finished, http_status = :http, \
                 output_key = :key, content_type = :ctype, expires_ms = :expires",
            )
            .expression_attribute_values(":status", s(Status::Done.as_str()))
            .expression_attribute_values(":http", n(200))
            .expression_attribute_values(":key", s(output_key.clone()))
            .expression_attribute_values(":ctype", s(content_type.clone()))
            .expression_attribute_values(":expires", n(*expires_ms)),
        Outcome::Failed {
            http_status,
            code,
            message,
        } => update
            .update_expression(
                "SET #status = :status, finished_ms = :finished, http_status = :http, \
                 error_code = :code, error_message = :message",
            )
            .expression_attribute_values(":status", s(Status::Failed.as_str()))
            .expression_attribute_values(":http", n(u64::from(*http_status)))
            .expression_attribute_values(":code", s(code.clone()))
            .expression_attribute_values(":message", s(message.clone())),
    };
    match update.send().await {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(error_text(e)),
    }
}
