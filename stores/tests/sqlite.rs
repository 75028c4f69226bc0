//! The embedded (SQLite) identity and usage stores through the stores' behavioural suite;
//! two handles on one file stand for two processes.

use std::sync::Arc;

use crate::suite::{Identities, Usages};
use imgfleet_stores::identity::sqlite::SqliteIdentityStore;
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
