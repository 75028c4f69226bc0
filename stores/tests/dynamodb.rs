//! The DynamoDB identity and usage stores through the stores' behavioural suite, against a
//! real DynamoDB API: a moto_server that `./dev.sh test` and `.ci/run` start serving one
//! request at a time (address in `IMGFLEET_TEST_DYNAMODB_ENDPOINT`), because a threaded
//! moto undoes a cancelled transaction by restoring a copy of the table, losing writes other
//! threads committed meanwhile — the suite's concurrent writers would test that instead of
//! the store. Two clients on one table stand for two hosts.

use std::sync::Arc;

use crate::suite::{Identities, Usages};
use imgfleet_stores::aws::{AwsOptions, sdk_config};
use imgfleet_stores::dynamodb::ensure_table;
use imgfleet_stores::identity::dynamodb::DynamoIdentityStore;
use imgfleet_stores::usage::dynamodb::DynamoUsageStore;

async fn fresh_table(kind: &str) -> (aws_sdk_dynamodb::Client, aws_sdk_dynamodb::Client, String) {
    let endpoint = std::env::var("IMGFLEET_TEST_DYNAMODB_ENDPOINT").expect(
        "IMGFLEET_TEST_DYNAMODB_ENDPOINT is not set: run the tests with ./dev.sh test, which starts a serial moto_server",
    );
    let options = AwsOptions {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        static_credentials: Some(("test".into(), "test".into())),
        // Served one at a time, twenty concurrent 90-item transactions queue for seconds.
        call_timeout: Some(std::time::Duration::from_secs(120)),
        max_attempts: Some(3),
    };
    let client = || async { aws_sdk_dynamodb::Client::new(&sdk_config(&options).await) };
    let (a, b) = (client().await, client().await);
    // Unique names: moto keeps tables for its whole life.
    let table = format!("suite-{kind}-{}", uuid::Uuid::now_v7().simple());
    ensure_table(&a, &table).await.expect("creating the table");
    (a, b, table)
}

async fn identities() -> Identities {
    let (a, b, table) = fresh_table("identity").await;
    (
        Arc::new(DynamoIdentityStore::new(a, table.clone())),
        Arc::new(DynamoIdentityStore::new(b, table)),
    )
}

async fn usages() -> Usages {
    let (a, b, table) = fresh_table("usage").await;
    (
        Arc::new(DynamoUsageStore::new(a, table.clone())),
        Arc::new(DynamoUsageStore::new(b, table)),
    )
}

identity_suite!(identities);
usage_suite!(usages);

/// The Lambda API checks cached results against one record of a tenant's newest purges,
/// written in each purge's own transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_purges_are_one_read_newest_first() {
    use imgfleet_stores::identity::IdentityStore;
    use imgfleet_stores::identity::admin::{NewPurge, purge};
    let (a, _, table) = fresh_table("identity").await;
    let store = DynamoIdentityStore::new(a, table);
    store.create_tenant("acme").await.unwrap();
    store.create_tenant("zeta").await.unwrap();
    assert!(store.purges_of("acme").await.unwrap().is_empty());
    let new = |path: &str| NewPurge {
        origin: "photos".into(),
        path: path.into(),
        prefix: true,
    };
    let first = purge(&store, "acme", new("cats/")).await.unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let second = purge(&store, "acme", new("dogs/")).await.unwrap();
    purge(&store, "zeta", new("")).await.unwrap();
    let ids: Vec<String> = store
        .purges_of("acme")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ids, [second.id, first.id]);
    assert_eq!(store.purges_of("zeta").await.unwrap().len(), 1);
}
