//! The resize function: batches of the jobs queue in, the batch's failed items out.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    imgfleet_lambda::deps::init_logging();
    let deps = imgfleet_lambda::deps::Deps::from_env().await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(imgfleet_lambda::resize::handle_batch(deps, event.payload).await)
    }))
    .await
}
