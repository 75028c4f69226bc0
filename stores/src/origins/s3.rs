//! S3 origins: objects `prefix` + the URL's decoded source path in a bucket, read with the
//! process's AWS credentials (its role on AWS; the environment elsewhere). Clients are made
//! once per region and endpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;

use super::{
    Capped, FetchError, FetchLimits, Fetched, Source, Validator, may_be_image, next_chunk, sendable,
};
use crate::aws::{AwsOptions, sdk_config};

/// Clients by region and endpoint.
type Clients = HashMap<(Option<String>, Option<String>), Client>;

#[derive(Clone, Default)]
pub struct S3Origins {
    clients: Arc<Mutex<Clients>>,
    /// Credentials for every client (moto in tests); otherwise the SDK's default chain.
    static_credentials: Option<(String, String)>,
}

impl S3Origins {
    pub fn new(static_credentials: Option<(String, String)>) -> Self {
        Self {
            clients: Arc::default(),
            static_credentials,
        }
    }

    async fn client(&self, region: &Option<String>, endpoint: &Option<String>) -> Client {
        let key = (region.clone(), endpoint.clone());
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return c.clone();
        }
        let config = sdk_config(&AwsOptions {
            endpoint: endpoint.clone(),
            region: region.clone(),
            static_credentials: self.static_credentials.clone(),
            ..AwsOptions::default()
        })
        .await;
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            // Other S3-compatible stores (and moto) address buckets by path.
            .force_path_style(endpoint.is_some())
            .build();
        let client = Client::from_conf(s3);
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, client.clone());
        client
    }

    /// Reads `prefix` + `key` from `bucket`; conditional on `known` when given.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch(
        &self,
        bucket: &str,
        prefix: &str,
        region: &Option<String>,
        endpoint: &Option<String>,
        key: &str,
        known: Option<&Validator>,
        limits: &FetchLimits,
    ) -> Result<Fetched, FetchError> {
        let client = self.client(region, endpoint).await;
        let object = format!("{prefix}{key}");
        let read = async {
            let mut get = client.get_object().bucket(bucket).key(&object);
            match known {
                Some(Validator::ETag(tag)) => get = get.if_none_match(tag),
                Some(Validator::LastModified(date)) => {
                    if let Ok(t) = aws_smithy_types::DateTime::from_str(
                        date,
                        aws_smithy_types::date_time::Format::HttpDate,
                    ) {
                        get = get.if_modified_since(t);
                    }
                }
                _ => {}
            }
            let out = match get.send().await {
                Ok(out) => out,
                Err(e) => return get_error(e, known.is_some()),
            };
            if out
                .content_length()
                .is_some_and(|n| n as u64 > limits.max_bytes)
            {
                return Err(FetchError::TooLarge {
                    limit: limits.max_bytes,
                });
            }
            if !may_be_image(out.content_type()) {
                return Err(FetchError::NotAnImage(
                    out.content_type().unwrap_or("").to_string(),
                ));
            }
            let validator = out
                .e_tag()
                .filter(|t| sendable(t))
                .map(|t| Validator::ETag(t.to_string()));
            let declared = out.content_length().map(|n| n.max(0) as u64);
            let mut body = out.body;
            let mut capped = Capped::new(declared, limits.max_bytes);
            while let Some(chunk) = next_chunk(limits.read_timeout, body.next()).await? {
                capped.push(&chunk)?;
            }
            let bytes = capped.finish();
            let validator = validator.unwrap_or_else(|| Validator::digest_of(&bytes));
            Ok(Fetched::Source(Source { bytes, validator }))
        };
        tokio::time::timeout(limits.total, read)
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }
}

/// A failed GetObject: a 304 to a conditional read is the source unchanged.
fn get_error(e: SdkError<GetObjectError>, conditional: bool) -> Result<Fetched, FetchError> {
    let status = e.raw_response().map(|r| r.status().as_u16());
    match (&e, status) {
        (_, Some(304)) if conditional => return Ok(Fetched::NotModified),
        (SdkError::ServiceError(s), _) if s.err().is_no_such_key() => {
            return Err(FetchError::NotFound);
        }
        (_, Some(404)) => return Err(FetchError::NotFound),
        (SdkError::TimeoutError(_), _) => return Err(FetchError::Timeout),
        _ => {}
    }
    Err(FetchError::Origin(format!(
        "S3 answered {}: {}",
        status.map_or("nothing".to_string(), |s| s.to_string()),
        aws_smithy_types::error::display::DisplayErrorContext(&e)
    )))
}
