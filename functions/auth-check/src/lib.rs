//! auth-check: a credential, the facts of a request and the identity records the host has
//! cached for that credential go in; a grant (tenant, key, quota) or a typed denial comes
//! out. Pure: no I/O, no clock, no randomness — the host, the Spin component and the Lambda
//! all run this same code.

pub mod calendar;
pub mod credential;
pub mod decision;
pub mod http;
pub mod rate;
pub mod record;
pub mod signed_url;

pub use credential::{Credential, parse_authorization};
pub use decision::{Allowance, CheckRequest, Decision, Denial, Grant, check};
pub use record::{KeyRecord, Quota, Scope, TenantRecord, Usage};
