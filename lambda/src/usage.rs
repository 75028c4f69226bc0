//! Every request leaves an audit row (DynamoDB, `pk = <tenant>`, `sk = <at_ms>#<record id>`)
//! and a usage record on the usage queue, both before the client gets its answer: a request
//! that cannot be accounted for is refused rather than served for free.

use imgfleet_metering::{Batch, UsageRecord};
use imgfleet_stores::dynamodb::{error_text, n, s, sortable};

use crate::deps::Deps;

pub async fn account(deps: &Deps, record: UsageRecord, job: Option<&str>) -> Result<(), String> {
    let json = serde_json::to_string(&record).map_err(|e| e.to_string())?;
    let mut audit = deps
        .dynamodb
        .put_item()
        .table_name(&deps.names.audit_table)
        .item("pk", s(record.tenant.clone()))
        .item("sk", s(format!("{}#{}", sortable(record.at_ms), record.id)))
        .item("request_id", s(record.request_id.clone()))
        .item("key_id", s(record.key_id.clone()))
        .item("route", s(record.route.clone()))
        .item("status", n(u64::from(record.status)))
        .item("record", s(json));
    if let Some(job) = job {
        audit = audit.item("job", s(job));
    }
    audit.send().await.map_err(error_text)?;
    let batch = Batch {
        id: record.id.clone(),
        records: vec![record],
    };
    deps.sqs
        .send_message()
        .queue_url(&deps.names.usage_queue_url)
        .message_body(serde_json::to_string(&batch).map_err(|e| e.to_string())?)
        .send()
        .await
        .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
    Ok(())
}
