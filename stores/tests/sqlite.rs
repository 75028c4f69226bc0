//! The embedded (SQLite) identity, usage and job stores through the stores' behavioural
//! suites; two handles on one file stand for two processes.

use std::sync::Arc;

use crate::suite::{Identities, Jobs, Usages};
use imgfleet_stores::identity::sqlite::SqliteIdentityStore;
use imgfleet_stores::jobs::JobStore;
use imgfleet_stores::usage::sqlite::SqliteUsageStore;

async fn identities() -> Identities {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("identity.sqlite");
    (
        Arc::new(SqliteIdentityStore::open(&path).unwrap()),
        Arc::new(SqliteIdentityStore::open(&path).unwrap()),
    )
}

async fn usages() -> Usages {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("usage.sqlite");
    (
        Arc::new(SqliteUsageStore::open(&path).unwrap()),
        Arc::new(SqliteUsageStore::open(&path).unwrap()),
    )
}

identity_suite!(identities);
usage_suite!(usages);

async fn jobs() -> Jobs {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("jobs.sqlite");
    (
        JobStore::open(&path).unwrap(),
        JobStore::open(&path).unwrap(),
    )
}

jobs_suite!(jobs);
