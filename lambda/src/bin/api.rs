//! The API function: API Gateway HTTP API events in, HTTP responses out.

use lambda_http::{Error, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    imgfleet_lambda::deps::init_logging();
    let deps = imgfleet_lambda::deps::Deps::from_env().await?;
    let deps = &deps;
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(imgfleet_lambda::api::handle(deps, req).await)
    }))
    .await
}
