//! Amazon SQS backend (or anything speaking its API, e.g. moto in tests). Every queue is a
//! FIFO queue (`<name>.fifo`) with a redrive policy to `<name>-dlq.fifo` when
//! `max_receives` is set, so ordering per group, de-duplication and dead-lettering are
//! SQS's own. Bodies travel base64-encoded (SQS bodies are text).

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;

use super::{
    Attributes, Depth, Message, OutgoingMessage, Queue, QueueError, QueueSpec, Receipt,
    ReceiveRequest, validate_receive, validate_send,
};

/// SQS's hard limit on a message (the queue attribute can be set up to this).
pub const SQS_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Connection settings; `endpoint` overrides AWS's (moto, LocalStack, a VPC endpoint).
#[derive(Debug, Clone, Default)]
pub struct SqsConfig {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Access key id and secret; without them the SDK's default chain (environment,
    /// profile, instance role) is used.
    pub static_credentials: Option<(String, String)>,
}

pub async fn client(config: &SqsConfig) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some((id, secret)) = &config.static_credentials {
        loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
            id,
            secret,
            None,
            None,
            "imgfleet-config",
        ));
    }
    Client::new(&loader.load().await)
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

/// Details of an SDK error, including the service's own message.
/// A call that has not answered within this long (plus a receive's own wait) fails as
/// unavailable: a stopped or unreachable SQS endpoint must become a clear error for the
/// client, not a request that hangs.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(unavailable(format!("no answer from SQS within {limit:?}"))))
}

fn sdk_error<E: std::error::Error + 'static>(e: aws_sdk_sqs::error::SdkError<E>) -> QueueError {
    unavailable(aws_sdk_sqs::error::DisplayErrorContext(e))
}

pub struct SqsQueue {
    client: Client,
    name: String,
    url: String,
    max_message_bytes: usize,
}

impl SqsQueue {
    /// Creates (or finds) the FIFO queue for `spec`, and its dead-letter queue.
    pub async fn open(client: Client, spec: &QueueSpec) -> Result<Self, QueueError> {
        let max = spec.max_message_bytes.min(SQS_MAX_MESSAGE_BYTES);
        let mut attributes = HashMap::from([
            (QueueAttributeName::FifoQueue, "true".to_string()),
            (
                QueueAttributeName::ContentBasedDeduplication,
                "false".to_string(),
            ),
            (
                QueueAttributeName::VisibilityTimeout,
                spec.visibility_timeout.as_secs().to_string(),
            ),
            (
                QueueAttributeName::MessageRetentionPeriod,
                spec.retention.as_secs().clamp(60, 1_209_600).to_string(),
            ),
            (QueueAttributeName::MaximumMessageSize, max.to_string()),
        ]);
        if let Some(max_receives) = spec.max_receives {
            let dlq_url = create(
                &client,
                &spec.dead_letter_name(),
                HashMap::from([
                    (QueueAttributeName::FifoQueue, "true".to_string()),
                    (
                        QueueAttributeName::MessageRetentionPeriod,
                        "1209600".to_string(),
                    ),
                ]),
            )
            .await?;
            let arn = client
                .get_queue_attributes()
                .queue_url(&dlq_url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .map_err(sdk_error)?
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .ok_or_else(|| unavailable("the dead-letter queue has no ARN"))?;
            attributes.insert(
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({ "deadLetterTargetArn": arn, "maxReceiveCount": max_receives.to_string() }).to_string(),
            );
        }
        let url = create(&client, &spec.name, attributes).await?;
        Ok(Self {
            client,
            name: spec.name.clone(),
            url,
            // Base64 turns 3 bytes into 4.
            max_message_bytes: max / 4 * 3 - 1024,
        })
    }
}

/// Creates the queue, or brings an existing one's settings in line with `attributes`
/// (SQS refuses a create whose attributes differ from the existing queue's).
async fn create(
    client: &Client,
    name: &str,
    mut attributes: HashMap<QueueAttributeName, String>,
) -> Result<String, QueueError> {
    let name = format!("{name}.fifo");
    let created = client
        .create_queue()
        .queue_name(&name)
        .set_attributes(Some(attributes.clone()))
        .send()
        .await;
    match created {
        Ok(out) => out
            .queue_url()
            .map(str::to_string)
            .ok_or_else(|| unavailable("create_queue returned no URL")),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_queue_name_exists()) =>
        {
            let url = client
                .get_queue_url()
                .queue_name(&name)
                .send()
                .await
                .map_err(sdk_error)?
                .queue_url()
                .map(str::to_string)
                .ok_or_else(|| unavailable("get_queue_url returned no URL"))?;
            // Whether a queue is FIFO is fixed at creation.
            attributes.remove(&QueueAttributeName::FifoQueue);
            client
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(sdk_error)?;
            Ok(url)
        }
        Err(e) => Err(sdk_error(e)),
    }
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        bounded(CALL_TIMEOUT, async move {
            validate_send(&message, self.max_message_bytes, "SQS FIFO queues")?;
            let mut req = self
                .client
                .send_message()
                .queue_url(&self.url)
                .message_body(B64.encode(&message.body))
                // An ungrouped message gets a group of its own: never held back by another.
                .message_group_id(
                    message
                        .group
                        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
                )
                .message_deduplication_id(
                    message
                        .dedup_id
                        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
                );
            for (k, v) in message.attributes {
                let value = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(v)
                    .build()
                    .map_err(|e| QueueError::Invalid(e.to_string()))?;
                req = req.message_attributes(k, value);
            }
            let out = req.send().await.map_err(sdk_error)?;
            out.message_id()
                .map(str::to_string)
                .ok_or_else(|| unavailable("send_message returned no id"))
        })
        .await
    }

    async fn receive(&self, request: ReceiveRequest) -> Result<Vec<Message>, QueueError> {
        bounded(request.wait + CALL_TIMEOUT, async move {
            validate_receive(&request)?;
            let mut req = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(request.max_messages as i32)
                // SQS waits in whole seconds; a shorter wait rounds up rather than to no wait.
                .wait_time_seconds(request.wait.as_millis().div_ceil(1000) as i32)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All");
            if let Some(v) = request.visibility {
                req = req.visibility_timeout(v.as_secs() as i32);
            }
            let out = req.send().await.map_err(sdk_error)?;
            out.messages()
                .iter()
                .map(|m| {
                    let system = m.attributes();
                    let sys =
                        |k: MessageSystemAttributeName| system.and_then(|a| a.get(&k)).cloned();
                    let body = B64
                        .decode(m.body().unwrap_or_default())
                        .map_err(|e| unavailable(format!("a message body is not base64: {e}")))?;
                    let attributes: Attributes = m
                        .message_attributes()
                        .map(|a| {
                            a.iter()
                                .filter_map(|(k, v)| {
                                    v.string_value().map(|s| (k.clone(), s.to_string()))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Ok(Message {
                        id: m.message_id().unwrap_or_default().to_string(),
                        receipt: Receipt(m.receipt_handle().unwrap_or_default().to_string()),
                        body: Bytes::from(body),
                        group: sys(MessageSystemAttributeName::MessageGroupId),
                        attributes,
                        receive_count: sys(MessageSystemAttributeName::ApproximateReceiveCount)
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(1),
                        sent_at: sys(MessageSystemAttributeName::SentTimestamp)
                            .and_then(|t| t.parse::<u64>().ok())
                            .map_or(UNIX_EPOCH, |ms| UNIX_EPOCH + Duration::from_millis(ms)),
                    })
                })
                .collect()
        })
        .await
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        bounded(CALL_TIMEOUT, async move {
            match self
                .client
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(&receipt.0)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_receipt_handle_is_invalid()) =>
                {
                    Err(QueueError::InvalidReceipt)
                }
                Err(e) => Err(sdk_error(e)),
            }
        })
        .await
    }

    async fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        bounded(CALL_TIMEOUT, async move {
            match self
                .client
                .change_message_visibility()
                .queue_url(&self.url)
                .receipt_handle(&receipt.0)
                .visibility_timeout(timeout.as_secs() as i32)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e)
                    if e.as_service_error().is_some_and(|s| {
                        s.is_receipt_handle_is_invalid() || s.is_message_not_inflight()
                    }) =>
                {
                    Err(QueueError::InvalidReceipt)
                }
                Err(e) => Err(sdk_error(e)),
            }
        })
        .await
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        bounded(CALL_TIMEOUT, async move {
            let out = self
                .client
                .get_queue_attributes()
                .queue_url(&self.url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send()
                .await
                .map_err(sdk_error)?;
            let get = |k: QueueAttributeName| {
                out.attributes()
                    .and_then(|a| a.get(&k))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            Ok(Depth {
                visible: get(QueueAttributeName::ApproximateNumberOfMessages),
                in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
                delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
                oldest_age: None,
            })
        })
        .await
    }
}
