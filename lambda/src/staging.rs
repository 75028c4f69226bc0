//! The S3 staging bucket: job inputs and outputs under `jobs/<id>/…`. The bucket's
//! lifecycle rule removes anything left after a day.

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;

use crate::deps::Deps;

pub fn input_key(job: &str) -> String {
    format!("jobs/{job}/input")
}

pub fn output_key(job: &str) -> String {
    format!("jobs/{job}/output")
}

pub async fn put(deps: &Deps, key: &str, bytes: Vec<u8>) -> Result<(), String> {
    deps.s3
        .put_object()
        .bucket(&deps.names.staging_bucket)
        .key(key)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .map_err(|e| format!("staging {key}: {}", DisplayErrorContext(e)))?;
    Ok(())
}

/// The object, or `None` when it is not there (expired, or never written).
pub async fn get(deps: &Deps, key: &str) -> Result<Option<Vec<u8>>, String> {
    let object = deps
        .s3
        .get_object()
        .bucket(&deps.names.staging_bucket)
        .key(key)
        .send()
        .await;
    match object {
        Ok(o) => match o.body.collect().await {
            Ok(data) => Ok(Some(data.into_bytes().to_vec())),
            Err(e) => Err(format!("reading {key}: {e}")),
        },
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
        Err(e) => Err(format!("reading {key}: {}", DisplayErrorContext(e))),
    }
}

/// Best effort: what is left behind only waits for the lifecycle rule.
pub async fn remove(deps: &Deps, key: &str) {
    let _ = deps
        .s3
        .delete_object()
        .bucket(&deps.names.staging_bucket)
        .key(key)
        .send()
        .await;
}
