//! The request log: an audit record per request and the usage outbox beside it. One backend,
//! SQLite on the host's disk: each host keeps its own log and ships usage from it.

pub mod sqlite;
