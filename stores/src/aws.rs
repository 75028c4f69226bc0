//! One AWS SDK configuration for every client (DynamoDB, SQS, S3), with bounded calls.

use std::time::Duration;

/// Overrides of the SDK's defaults (environment, profile, instance role).
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// Another endpoint than AWS's: moto, LocalStack, DynamoDB Local, a VPC endpoint.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Access key id and secret, for endpoints that need any (moto in tests).
    pub static_credentials: Option<(String, String)>,
    /// Longest wait for one call, retries included (default [`CALL_TIMEOUT`]); a slow
    /// emulator under a test's load needs more.
    pub call_timeout: Option<Duration>,
    /// Attempts per call on errors worth retrying (the SDK's default: 3).
    pub max_attempts: Option<u32>,
}

pub const CALL_TIMEOUT: Duration = Duration::from_secs(8);

/// Calls fail within a few seconds instead of hanging on an unreachable endpoint: a store
/// that does not answer must become a clear 503, not a stuck request.
pub async fn sdk_config(options: &AwsOptions) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(options.call_timeout.unwrap_or(CALL_TIMEOUT) / 2)
            .operation_timeout(options.call_timeout.unwrap_or(CALL_TIMEOUT))
            .build(),
    );
    if let Some(attempts) = options.max_attempts {
        loader = loader
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(attempts));
    }
    if let Some(endpoint) = &options.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &options.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some((id, secret)) = &options.static_credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            id,
            secret,
            None,
            None,
            "imgfleet-config",
        ));
    }
    loader.load().await
}
