//! The compaction function: scheduled events in, the number of records packed out.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    imgfleet_lambda::deps::init_logging();
    let deps = imgfleet_lambda::deps::Deps::from_env().await?;
    let raw_days = imgfleet_lambda::compact::raw_days_from_env()?;
    let deps = &deps;
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let packed =
                imgfleet_lambda::compact::run(deps, imgfleet_lambda::deps::now_ms(), raw_days)
                    .await?;
            Ok::<_, Error>(serde_json::json!({ "packed": packed }))
        },
    ))
    .await
}
