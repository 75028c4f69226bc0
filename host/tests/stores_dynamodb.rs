//! The DynamoDB identity and usage stores through the stores' behavioural suite, against a
//! real DynamoDB API (moto_server, which `./dev.sh test` and `.ci/run` start; its address
//! comes in `IMGFLEET_TEST_SQS_ENDPOINT`). Two clients on one table stand for two hosts.

mod store_suite;

use std::sync::Arc;

use imgfleet_stores::aws::{AwsOptions, sdk_config};
use imgfleet_stores::dynamodb::{DynamoIdentityStore, DynamoUsageStore, ensure_table};
use store_suite::{Identities, Usages};

async fn fresh_table(kind: &str) -> (aws_sdk_dynamodb::Client, aws_sdk_dynamodb::Client, String) {
    let endpoint = std::env::var("IMGFLEET_TEST_SQS_ENDPOINT").expect(
        "IMGFLEET_TEST_SQS_ENDPOINT is not set: run the tests with ./dev.sh test, which starts moto_server",
    );
    let options = AwsOptions {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        static_credentials: Some(("test".into(), "test".into())),
        // moto answers a 90-item transaction in seconds when twenty run at once.
        call_timeout: Some(std::time::Duration::from_secs(60)),
        // moto's DynamoDB sometimes fails concurrent transactions with a 500 (a race in
        // the emulator, "dictionary changed size during iteration"); AWS's own 500s are
        // retried the same way.
        max_attempts: Some(10),
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
