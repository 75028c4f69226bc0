//! Claim check: a message body over the queue's size limit is stored in a blob store and
//! the message carries only its key; receivers get the original body back transparently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Depth, Message, OutgoingMessage, Queue, QueueError, Receipt, ReceiveRequest};

/// Where oversized bodies wait. Implementations: local staging (one host), S3 (AWS).
#[async_trait]
pub trait BlobStore: Send + Sync {
    async fn put(&self, body: Bytes) -> Result<String, QueueError>;
    async fn get(&self, key: &str) -> Result<Bytes, QueueError>;
    async fn remove(&self, key: &str) -> Result<(), QueueError>;
}

/// Attribute marking a message whose body is a blob key.
pub const CLAIM_ATTRIBUTE: &str = "imgfleet-claim";

pub struct ClaimCheck {
    inner: Arc<dyn Queue>,
    blobs: Arc<dyn BlobStore>,
    /// Blob keys of delivered messages, so deleting the message frees its blob.
    claimed: Mutex<HashMap<Receipt, String>>,
}

impl ClaimCheck {
    pub fn new(inner: Arc<dyn Queue>, blobs: Arc<dyn BlobStore>) -> Self {
        Self {
            inner,
            blobs,
            claimed: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Queue for ClaimCheck {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn max_message_bytes(&self) -> usize {
        usize::MAX
    }

    async fn send(&self, mut message: OutgoingMessage) -> Result<String, QueueError> {
        if message.body.len() > self.inner.max_message_bytes() {
            let key = self.blobs.put(message.body).await?;
            message.body = Bytes::from(key);
            message
                .attributes
                .insert(CLAIM_ATTRIBUTE.into(), "1".into());
        }
        self.inner.send(message).await
    }

    async fn receive(&self, request: ReceiveRequest) -> Result<Vec<Message>, QueueError> {
        let mut messages = self.inner.receive(request).await?;
        for m in &mut messages {
            if m.attributes.remove(CLAIM_ATTRIBUTE).is_some() {
                let key = String::from_utf8_lossy(&m.body).to_string();
                m.body = self.blobs.get(&key).await?;
                self.claimed
                    .lock()
                    .expect("claims lock")
                    .insert(m.receipt.clone(), key);
            }
        }
        Ok(messages)
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.inner.delete(receipt).await?;
        let key = self
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(receipt);
        if let Some(key) = key {
            // The message is gone; a blob left behind only waits for the store's expiry.
            let _ = self.blobs.remove(&key).await;
        }
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.inner.change_visibility(receipt, timeout).await
    }

    async fn release(&self, message: &Message) -> Result<(), QueueError> {
        self.inner.release(message).await?;
        // The blob stays for the next delivery, which claims it anew.
        self.claimed
            .lock()
            .expect("claims lock")
            .remove(&message.receipt);
        Ok(())
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        self.inner.depth().await
    }
}
