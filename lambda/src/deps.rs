//! What every function reaches: the AWS clients and the names `template.yaml` hands over
//! as environment variables.

use aws_config::SdkConfig;
use imgfleet_stores::identity::dynamodb::DynamoIdentityStore;
use imgfleet_stores::usage::dynamodb::DynamoUsageStore;

/// Resource names, one environment variable each (set by `template.yaml`).
#[derive(Debug, Clone)]
pub struct Names {
    pub identity_table: String,
    pub usage_table: String,
    pub audit_table: String,
    pub jobs_table: String,
    pub jobs_queue_url: String,
    pub usage_queue_url: String,
    pub staging_bucket: String,
}

impl Names {
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| format!("the environment variable {name} is not set"))
        };
        Ok(Self {
            identity_table: var("IMGFLEET_IDENTITY_TABLE")?,
            usage_table: var("IMGFLEET_USAGE_TABLE")?,
            audit_table: var("IMGFLEET_AUDIT_TABLE")?,
            jobs_table: var("IMGFLEET_JOBS_TABLE")?,
            jobs_queue_url: var("IMGFLEET_JOBS_QUEUE_URL")?,
            usage_queue_url: var("IMGFLEET_USAGE_QUEUE_URL")?,
            staging_bucket: var("IMGFLEET_STAGING_BUCKET")?,
        })
    }
}

pub struct Deps {
    pub names: Names,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub identity: DynamoIdentityStore,
    pub usage: DynamoUsageStore,
    /// How long a finished job's output can be fetched (the bucket's lifecycle rule removes
    /// it a day later at the latest).
    pub output_ttl_ms: u64,
    /// Where signed GET URLs read their sources (S3 origins).
    pub origins: imgfleet_stores::origins::s3::S3Origins,
}

impl Deps {
    pub fn new(config: &SdkConfig, names: Names) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        // Path-style addressing works with every S3 API (moto and MinIO included).
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(config)
                .force_path_style(true)
                .build(),
        );
        Self {
            identity: DynamoIdentityStore::new(dynamodb.clone(), names.identity_table.clone()),
            usage: DynamoUsageStore::new(dynamodb.clone(), names.usage_table.clone()),
            sqs: aws_sdk_sqs::Client::new(config),
            s3,
            dynamodb,
            names,
            output_ttl_ms: 10 * 60 * 1000,
            origins: imgfleet_stores::origins::s3::S3Origins::new(None),
        }
    }

    /// The deployed function's view: names from the environment, clients from the SDK's
    /// defaults (the function's role).
    pub async fn from_env() -> Result<Self, String> {
        let names = Names::from_env()?;
        let config = imgfleet_stores::aws::sdk_config(&Default::default()).await;
        let mut deps = Self::new(&config, names);
        if let Ok(ttl) = std::env::var("IMGFLEET_JOB_OUTPUT_TTL_SECS") {
            let secs: u64 = ttl
                .parse()
                .map_err(|_| format!("IMGFLEET_JOB_OUTPUT_TTL_SECS=`{ttl}` is not a number"))?;
            deps.output_ttl_ms = secs * 1000;
        }
        Ok(deps)
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// JSON logs to CloudWatch, level from `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .without_time()
        .init();
}
