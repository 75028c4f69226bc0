//! The function's wire form: `POST` `{"batch": Batch, "known": [ids]}`, answer `200` with
//! [`Folded`] as JSON; an unreadable request gets `400` with the usual error body.

use serde::{Deserialize, Serialize};

use crate::fold::{Folded, fold};
use crate::record::Batch;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FoldRequest {
    pub batch: Batch,
    #[serde(default)]
    pub known: Vec<String>,
}

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

pub fn handle(method: &str, body: &[u8]) -> HttpResponse {
    if method != "POST" {
        return error(
            405,
            "invalid_method",
            "metering takes POST with a JSON body",
        );
    }
    match serde_json::from_slice::<FoldRequest>(body) {
        Ok(req) => {
            let folded: Folded = fold(req.batch, &req.known);
            HttpResponse {
                status: 200,
                body: serde_json::to_vec(&folded).unwrap_or_else(|_| b"{}".to_vec()),
            }
        }
        Err(e) => error(400, "invalid_batch", &e.to_string()),
    }
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse {
        status,
        body: serde_json::to_vec(&serde_json::json!({
            "error": { "code": code, "message": message }
        }))
        .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_and_garbage_is_refused() {
        let req = r#"{"batch":{"id":"b","records":[{"id":"1","tenant":"a","key_id":"k","at_ms":5,"route":"/v1/resize","status":200,"input":{"bytes":3},"output":{"bytes":2},"cpu_ns":1,"wall_ns":2,"queue_ns":0}]},"known":[]}"#;
        let resp = handle("POST", req.as_bytes());
        assert_eq!(resp.status, 200);
        let folded: Folded = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(folded.rollups[0].bytes_in, 3);
        assert_eq!(handle("POST", b"[").status, 400);
        assert_eq!(handle("GET", b"").status, 405);
    }
}
