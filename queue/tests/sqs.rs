//! The SQS backend against a real SQS API (moto_server, which `./dev.sh test` and `.ci/run`
//! start; its address comes in `IMGFLEET_TEST_SQS_ENDPOINT`).

use crate::suite::Pair;
use imgfleet_queue::sqs::{SqsConfig, SqsQueue, client};
use imgfleet_queue::{Queue, QueueSpec};
use std::sync::Arc;

fn endpoint() -> String {
    std::env::var("IMGFLEET_TEST_SQS_ENDPOINT").expect(
        "IMGFLEET_TEST_SQS_ENDPOINT is not set: run the tests with ./dev.sh test, which starts moto_server",
    )
}

async fn fresh(mut spec: QueueSpec) -> Pair {
    let config = SqsConfig {
        endpoint: Some(endpoint()),
        region: Some("us-east-1".into()),
        static_credentials: Some(("test".into(), "test".into())),
    };
    let client = client(&config).await;
    // Unique names: moto keeps queues for its whole life.
    spec.name = format!(
        "{}-{}",
        spec.name,
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    );
    let q = SqsQueue::open(client.clone(), &spec)
        .await
        .expect("creating the queue");
    let dlq = match spec.max_receives {
        Some(_) => {
            let dlq = SqsQueue::open(client, &QueueSpec::new(spec.dead_letter_name()))
                .await
                .expect("dead-letter queue");
            Some(Arc::new(dlq) as Arc<dyn Queue>)
        }
        None => None,
    };
    (Arc::new(q), dlq)
}

queue_suite!(fresh);
