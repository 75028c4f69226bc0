//! The PostgreSQL identity, usage and job stores (a fleet's shared management plane) through
//! the stores' behavioural suites, against a real server started here; two connections stand
//! for two hosts.

use std::sync::{Arc, OnceLock};

use crate::suite::{Identities, Jobs, Usages};
use imgfleet_stores::identity::postgres::PostgresIdentityStore;
use imgfleet_stores::jobs::JobStore;
use imgfleet_stores::usage::postgres::PostgresUsageStore;
use imgfleet_tests::postgres::Postgres;

fn server() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(Postgres::start)
}

async fn identities() -> Identities {
    let url = server().database();
    (
        Arc::new(PostgresIdentityStore::open(&url).await.unwrap()),
        Arc::new(PostgresIdentityStore::open(&url).await.unwrap()),
    )
}

async fn usages() -> Usages {
    let url = server().database();
    (
        Arc::new(PostgresUsageStore::open(&url).await.unwrap()),
        Arc::new(PostgresUsageStore::open(&url).await.unwrap()),
    )
}

identity_suite!(identities);
usage_suite!(usages);

async fn jobs() -> Jobs {
    let url = server().database();
    (
        JobStore::postgres(&url, "host-a").await.unwrap(),
        JobStore::postgres(&url, "host-a").await.unwrap(),
    )
}

jobs_suite!(jobs);
