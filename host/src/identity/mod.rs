//! Identity, management plane: the authoritative store of tenants, API keys and quotas, and
//! its change log (the port lives in `imgfleet-stores`, shared with the Lambda functions).
//! Hosts follow the log into their auth caches (`crate::auth`); `sqlite` is the embedded
//! default, `postgres` a fleet's, DynamoDB's is `imgfleet_stores::dynamodb`.

pub mod admin;
pub mod postgres;
pub mod sqlite;

pub use imgfleet_stores::identity::*;
