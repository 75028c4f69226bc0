//! The fleet's result cache: one JetStream stream, replicated like the queue, a subject per
//! entry key holding that entry's latest encoded bytes (one message per subject), capped in
//! bytes with the oldest dropped first (discard old) and entries aged out after a week.
//! Reads are direct gets, which any replica answers, so a read needs no leader; writes are
//! published in the background. The tier is an optimisation: a read that fails or is slow
//! is a miss, and a write that fails is dropped.
//!
//! Also the fleet's single flight: `claim` publishes to a lease subject only if nothing is
//! on it (expected last subject sequence 0), so of the hosts that want to make the same
//! result at once, one makes it and the others wait for it to appear.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType, Stream};
use bytes::Bytes;

use super::{Entry, valid_key};
use imgfleet_queue::jetstream::JetStream;

const STREAM: &str = "IMGFLEET_RESULTS";
const SUBJECTS: &str = "imgfleet.results.>";
const LEASES: &str = "IMGFLEET_RESULT_LEASES";
const LEASE_SUBJECTS: &str = "imgfleet.leases.>";
/// How long results are kept at most.
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// A read slower than this is a miss: the host can make the result itself.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct FleetResults {
    js: JetStream,
    stream: Stream,
    leases: Stream,
    lease_for: Duration,
}

fn subject(key: &str) -> String {
    format!("imgfleet.results.{key}")
}

fn lease_subject(key: &str) -> String {
    format!("imgfleet.leases.{key}")
}

impl FleetResults {
    /// Opens (or creates) the results stream, `cap_bytes` across the fleet, and the lease
    /// stream (a lease lasts `lease_for`, longer than any one resize).
    pub async fn open(
        js: &JetStream,
        cap_bytes: u64,
        lease_for: Duration,
    ) -> std::io::Result<Self> {
        let results = stream::Config {
            name: STREAM.into(),
            description: Some("imgfleet results: delivered images made once for the fleet".into()),
            subjects: vec![SUBJECTS.into()],
            max_bytes: cap_bytes as i64,
            max_age: MAX_AGE,
            max_messages_per_subject: 1,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            num_replicas: js.replicas,
            allow_direct: true,
            ..Default::default()
        };
        let leases = stream::Config {
            name: LEASES.into(),
            description: Some("imgfleet result leases: who is making what".into()),
            subjects: vec![LEASE_SUBJECTS.into()],
            max_age: lease_for,
            max_messages_per_subject: 1,
            storage: StorageType::File,
            num_replicas: js.replicas,
            allow_direct: true,
            ..Default::default()
        };
        let io = |e: async_nats::Error| std::io::Error::other(e.to_string());
        let opening = async {
            let stream = js
                .context
                .get_or_create_stream(results)
                .await
                .map_err(|e| io(e.into()))?;
            let leases = js
                .context
                .get_or_create_stream(leases)
                .await
                .map_err(|e| io(e.into()))?;
            Ok::<_, std::io::Error>((stream, leases))
        };
        let (stream, leases) = tokio::time::timeout(WRITE_TIMEOUT, opening)
            .await
            .map_err(|_| std::io::Error::other("no answer from JetStream"))??;
        Ok(Self {
            js: js.clone(),
            stream,
            leases,
            lease_for,
        })
    }

    pub async fn get(&self, key: &str) -> Option<Entry> {
        if !valid_key(key) {
            return None;
        }
        let read = self.stream.direct_get_last_for_subject(subject(key));
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(message)) => {
                let entry = Entry::decode(&message.payload);
                if entry.is_none() {
                    tracing::warn!(key, "a fleet cache entry is damaged; not served");
                }
                entry
            }
            Ok(Err(e)) => {
                if !matches!(e.kind(), stream::DirectGetErrorKind::NotFound) {
                    tracing::debug!(error = %e, key, "fleet cache read failed");
                }
                None
            }
            Err(_) => None,
        }
    }

    /// Publishes `entry` in the background, then gives back the lease on making it when
    /// `release` (so a host waiting for it finds it published).
    pub fn put(&self, key: &str, entry: &Entry, release: bool) {
        if !valid_key(key) {
            return;
        }
        let (context, subject, bytes) = (
            self.js.context.clone(),
            subject(key),
            Bytes::from(entry.encode()),
        );
        let lease = release.then(|| (self.leases.clone(), lease_subject(key)));
        tokio::spawn(async move {
            let publish = async {
                context.publish(subject, bytes).await?.await?;
                Ok::<_, async_nats::Error>(())
            };
            match tokio::time::timeout(WRITE_TIMEOUT, publish).await {
                Ok(Ok(())) => {}
                // An entry over the servers' message size stays on its host.
                Ok(Err(e)) => tracing::debug!(error = %e, "fleet cache write failed"),
                Err(_) => tracing::debug!("fleet cache write timed out"),
            }
            if let Some((leases, subject)) = lease {
                let _ = tokio::time::timeout(WRITE_TIMEOUT, leases.purge().filter(subject)).await;
            }
        });
    }

    /// Takes the lease on making `key`: `true` when this host is the one to make it (also
    /// when the lease stream cannot answer: making a result twice beats making it never).
    pub async fn claim(&self, key: &str, holder: &str) -> bool {
        if !valid_key(key) {
            return true;
        }
        let publish = async {
            let ack = self
                .js
                .context
                .send_publish(
                    lease_subject(key),
                    PublishMessage::build()
                        .payload(Bytes::from(holder.to_string()))
                        .expected_last_subject_sequence(0),
                )
                .await?;
            ack.await
        };
        match tokio::time::timeout(READ_TIMEOUT, publish).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => false,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "result lease not taken; making it here");
                true
            }
            Err(_) => true,
        }
    }

    /// Gives a lease back once its result is published (or its making failed), so that
    /// the next request after a failure is not held for the lease's life.
    pub fn release(&self, key: &str) {
        if !valid_key(key) {
            return;
        }
        let (leases, subject) = (self.leases.clone(), lease_subject(key));
        tokio::spawn(async move {
            let purge = leases.purge().filter(subject);
            let _ = tokio::time::timeout(WRITE_TIMEOUT, purge).await;
        });
    }

    /// Whether someone holds the lease on making `key` (when the lease stream cannot say:
    /// no, so the asker makes it).
    pub async fn leased(&self, key: &str) -> bool {
        let read = self.leases.direct_get_last_for_subject(lease_subject(key));
        matches!(tokio::time::timeout(READ_TIMEOUT, read).await, Ok(Ok(_)))
    }

    pub fn lease_for(&self) -> Duration {
        self.lease_for
    }
}
