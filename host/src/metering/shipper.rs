//! Empties the local usage outbox onto the usage queue in batches: when `max_records` are
//! waiting, when the oldest has waited `max_age`, or at the queue's size limit, whichever
//! comes first. A record leaves the outbox only once its batch is on the queue; a crash in
//! between sends it again, and the meter counts it once.

use std::sync::Arc;
use std::time::Duration;

use imgfleet_metering::{Batch, UsageRecord};

use imgfleet_queue::{Durability, OutgoingMessage, Queue};
use imgfleet_stores::audit::sqlite::AuditLog;
use imgfleet_stores::clock::now_ms;

#[derive(Debug, Clone, Copy)]
pub struct ShipperConfig {
    pub max_records: usize,
    pub max_age: Duration,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        Self {
            max_records: 1000,
            max_age: Duration::from_secs(1),
        }
    }
}

const IDLE_POLL: Duration = Duration::from_millis(50);
const ROUND_BATCHES: usize = 10;

/// Splits records into batches of at most `max_records` whose JSON stays under `max_bytes`.
pub fn batches(records: Vec<UsageRecord>, max_records: usize, max_bytes: usize) -> Vec<Batch> {
    // Room for the envelope; a record is far smaller than the limit.
    let budget = max_bytes.saturating_sub(256);
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for r in records {
        let len = serde_json::to_vec(&r).map(|v| v.len() + 1).unwrap_or(0);
        if !current.is_empty() && (size + len > budget || current.len() >= max_records) {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(r);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out.into_iter()
        .map(|records| Batch {
            id: uuid::Uuid::now_v7().to_string(),
            records,
        })
        .collect()
}

pub fn spawn(
    log: AuditLog,
    queue: Arc<dyn Queue>,
    config: ShipperConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            fail::fail_point!("usage-shipper");
            // A backlog goes out several batches per round.
            let pending = match log.outbox(config.max_records * ROUND_BATCHES).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the usage outbox");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some((_, oldest)) = pending.first() else {
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            };
            let waited = Duration::from_millis(now_ms().saturating_sub(oldest.at_ms));
            if pending.len() < config.max_records && waited < config.max_age {
                tokio::time::sleep((config.max_age - waited).min(IDLE_POLL)).await;
                continue;
            }
            let last_seq = pending.last().map(|(seq, _)| *seq).unwrap_or_default();
            let records = pending.into_iter().map(|(_, r)| r).collect();
            // Sent side by side, so the queue's group commit covers them together.
            let sends = batches(records, config.max_records, queue.max_message_bytes())
                .into_iter()
                .map(|batch| {
                    let body = serde_json::to_vec(&batch).expect("a batch serialises");
                    // Batches need no order among themselves: one group each.
                    let message = OutgoingMessage::new(body)
                        .group(batch.id)
                        .durability(Durability::Synced);
                    let queue = queue.clone();
                    tokio::spawn(async move { queue.send(message).await })
                });
            let mut sent_all = true;
            for send in sends.collect::<Vec<_>>() {
                match send.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "shipping usage; retrying");
                        sent_all = false;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "shipping usage; retrying");
                        sent_all = false;
                    }
                }
            }
            if !sent_all {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            if let Err(e) = log.shipped(last_seq).await {
                // They will be sent again; the meter counts them once.
                tracing::warn!(error = %e, "clearing shipped usage records");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgfleet_metering::ImageSide;

    #[test]
    fn batches_stay_under_the_size_limit_and_keep_every_record() {
        let records: Vec<UsageRecord> = (0..500)
            .map(|i| UsageRecord {
                id: format!("r{i}"),
                request_id: String::new(),
                tenant: "a".into(),
                key_id: "k".into(),
                at_ms: 1,
                route: "/v1/resize".into(),
                status: 200,
                input: ImageSide::default(),
                output: ImageSide::default(),
                cpu_ns: 0,
                wall_ns: 0,
                queue_ns: 0,
                origin_bytes: 0,
                not_modified: false,
                cache: None,
            })
            .collect();
        let out = batches(records, 1000, 16 * 1024);
        assert!(out.len() > 1);
        assert!(
            out.iter()
                .all(|b| serde_json::to_vec(b).unwrap().len() <= 16 * 1024)
        );
        let ids: Vec<String> = out
            .iter()
            .flat_map(|b| b.records.iter().map(|r| r.id.clone()))
            .collect();
        assert_eq!(ids.len(), 500);
        assert_eq!(ids[0], "r0");
        assert_eq!(ids[499], "r499");
        let by_count = batches(
            out.into_iter().flat_map(|b| b.records).collect(),
            100,
            1 << 20,
        );
        assert_eq!(
            by_count.iter().map(|b| b.records.len()).collect::<Vec<_>>(),
            [100; 5]
        );
    }
}
