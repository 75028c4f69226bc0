//! The function's wire form, shared by every adapter: `POST` a JSON [`CheckRequest`], get
//! `200` with the decision as JSON. A request that cannot be read gets `400` with the usual
//! error body.

use serde::{Deserialize, Serialize};

use crate::decision::{CheckRequest, Decision, Denial, Grant, check};
use crate::record::Quota;

/// The decision as it travels back to the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum WireDecision {
    Allow {
        tenant: String,
        key_id: String,
        quota: Quota,
    },
    Deny {
        status: u16,
        code: String,
        message: String,
        /// The scope or allowance a denial names (see [`Denial::detail`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

impl From<Decision> for WireDecision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Allow(g) => Self::Allow {
                tenant: g.tenant,
                key_id: g.key_id,
                quota: g.quota,
            },
            Decision::Deny(d) => Self::Deny {
                status: d.status(),
                code: d.code().to_string(),
                message: d.message(),
                detail: d.detail().map(str::to_string),
            },
        }
    }
}

impl WireDecision {
    /// Back to a typed decision; `None` for a denial code this version does not know.
    pub fn into_decision(self) -> Option<Decision> {
        Some(match self {
            Self::Allow {
                tenant,
                key_id,
                quota,
            } => Decision::Allow(Grant {
                tenant,
                key_id,
                quota,
            }),
            Self::Deny {
                code,
                message,
                detail,
                ..
            } => Decision::Deny(Denial::from_wire(&code, message, detail.as_deref())?),
        })
    }
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
            "auth-check takes POST with a JSON body",
        );
    }
    match serde_json::from_slice::<CheckRequest>(body) {
        Ok(req) => HttpResponse {
            status: 200,
            body: serde_json::to_vec(&WireDecision::from(check(&req)))
                .unwrap_or_else(|_| b"{}".to_vec()),
        },
        Err(e) => error(400, "invalid_check_request", &e.to_string()),
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
    use crate::record::Scope;

    #[test]
    fn a_check_request_round_trips_to_a_decision() {
        let req = CheckRequest {
            authorization: Some("Basic abc".into()),
            scope: Scope::Resize,
            key: None,
            tenant: None,
            usage: Default::default(),
        };
        let resp = handle("POST", &serde_json::to_vec(&req).unwrap());
        assert_eq!(resp.status, 200);
        let wire: WireDecision = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(
            wire.into_decision(),
            Some(Decision::Deny(Denial::CredentialScheme))
        );
    }

    #[test]
    fn unreadable_requests_and_other_methods_are_refused() {
        let resp = handle("POST", b"{not json");
        assert_eq!(resp.status, 400);
        assert!(String::from_utf8_lossy(&resp.body).contains("invalid_check_request"));
        assert_eq!(handle("GET", b"").status, 405);
    }
}
