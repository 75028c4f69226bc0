//! Identity on DynamoDB. Items of the table:
//!
//! | pk | sk | holds |
//! |---|---|---|
//! | `tenant#<id>` | `tenant` | `record`: the tenant's JSON |
//! | `key#<key id>` | `key` | `record`: the key's JSON, `tenant` |
//! | `origin#<tenant>/<name>` | `origin` | `record`: the origin's JSON, `tenant` |
//! | `url_key#<tenant>/<key id>` | `url_key` | `record`: the URL key's JSON, `tenant` |
//! | `purge#<tenant>/<id>` | `purge` | `record`: the purge's JSON, `tenant` |
//! | `purges#<tenant>` | `purges` | `record`: the tenant's newest purges (JSON list), written with each purge: what a cached read checks in one read |
//! | `log` | version, 20 digits | `change`: one change-log entry |
//! | `head` | `head` | `version`: the newest logged version |
//!
//! Every write is one transaction that moves `head` from the version it read to the next,
//! writes the record and appends its log entry; a concurrent write makes the `head`
//! condition fail and the write starts over on fresh reads. So versions commit strictly in
//! order and a host following the log (strongly consistent queries) never skips one. Keys
//! live under their own partition key, so the per-request lookup by key id spreads over
//! the table instead of heating one partition.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use imgfleet_auth::{KeyRecord, Quota, TenantRecord};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::dynamodb::{error_text, get_n, get_s, is_condition_failure, n, s, sortable};
use crate::identity::items::{Item as StoreItem, ItemKind, ItemWrite, item_id};
use crate::identity::{Change, IdentityStore, NewKey, StoreError, TenantUpdate};

/// Concurrent writers retry this often before the write is reported as unavailable.
const WRITE_ATTEMPTS: u32 = 50;

pub struct DynamoIdentityStore {
    client: Client,
    table: String,
}

type Item = HashMap<String, AttributeValue>;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn tenant_pk(id: &str) -> String {
    format!("tenant#{id}")
}

fn key_pk(id: &str) -> String {
    format!("key#{id}")
}

fn item_pk(kind: ItemKind, id: &str) -> String {
    format!("{}#{id}", kind.as_str())
}

/// One record to write: its item key, attributes besides the record, and the log entry.
struct Write {
    pk: String,
    sk: &'static str,
    record_json: String,
    extra: Vec<(&'static str, AttributeValue)>,
    change: Change,
    /// Another record written in the same transaction (pk, sk, JSON).
    also: Option<(String, &'static str, String)>,
}

fn purges_pk(tenant: &str) -> String {
    format!("purges#{tenant}")
}

impl DynamoIdentityStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn get_item(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(error_text(e)))?;
        Ok(out.item)
    }

    async fn record<T: DeserializeOwned>(
        &self,
        pk: String,
        sk: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.get_item(pk, sk).await? {
            Some(item) => parse(&item, "record").map(Some),
            None => Ok(None),
        }
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self
            .get_item("head".into(), "head")
            .await?
            .map_or(0, |item| get_n(&item, "version")))
    }

    /// Logs one change: `decide` gets the next version and returns the write (or refuses);
    /// it is called again, on fresh reads, when another writer got in first.
    async fn commit<T, F, Fut>(&self, decide: F) -> Result<T, StoreError>
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = Result<(Write, T), StoreError>>,
    {
        for attempt in 0..WRITE_ATTEMPTS {
            let head = self.head().await?;
            let (write, out) = decide(head + 1).await?;
            match self.transact(head, write).await {
                Ok(()) => return Ok(out),
                Err(Retry::Raced) => {
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt % 10 + 1))).await
                }
                Err(Retry::Failed(e)) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "too many concurrent identity writes; try again".into(),
        ))
    }

    async fn transact(&self, head: u64, write: Write) -> Result<(), Retry> {
        let next = head + 1;
        let head_put = Put::builder()
            .table_name(&self.table)
            .item("pk", s("head"))
            .item("sk", s("head"))
            .item("version", n(next))
            .condition_expression("attribute_not_exists(pk) OR version = :seen")
            .expression_attribute_values(":seen", n(head));
        let mut record_put = Put::builder()
            .table_name(&self.table)
            .item("pk", s(write.pk))
            .item("sk", s(write.sk))
            .item("record", s(write.record_json))
            .item("version", n(next));
        for (name, value) in write.extra {
            record_put = record_put.item(name, value);
        }
        let change =
            serde_json::to_string(&write.change).map_err(|e| Retry::Failed(unavailable(e)))?;
        let log_put = Put::builder()
            .table_name(&self.table)
            .item("pk", s("log"))
            .item("sk", s(sortable(next)))
            .item("change", s(change))
            .condition_expression("attribute_not_exists(pk)");
        let also = write.also.map(|(pk, sk, json)| {
            Put::builder()
                .table_name(&self.table)
                .item("pk", s(pk))
                .item("sk", s(sk))
                .item("record", s(json))
                .item("version", n(next))
        });
        let items = [head_put, record_put, log_put]
            .into_iter()
            .chain(also)
            .map(|p| {
                p.build()
                    .map(|put| TransactWriteItem::builder().put(put).build())
                    .map_err(|e| Retry::Failed(unavailable(e)))
            });
        let mut request = self.client.transact_write_items();
        for item in items {
            request = request.transact_items(item?);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(Retry::Raced),
            Err(e) => Err(Retry::Failed(unavailable(error_text(e)))),
        }
    }

    async fn update_tenant(
        &self,
        id: &str,
        update: TenantUpdate,
    ) -> Result<TenantRecord, StoreError> {
        update.validate(id)?;
        self.commit(|version| {
            let update = update.clone();
            async move {
                let current = self.record::<TenantRecord>(tenant_pk(id), "tenant").await?;
                let mut record = update.apply(id, current)?;
                record.version = version;
                Ok((Write::tenant(&record)?, record))
            }
        })
        .await
    }

    async fn scan_records<T: DeserializeOwned>(
        &self,
        sk: &str,
        tenant: Option<&str>,
    ) -> Result<Vec<T>, StoreError> {
        let scan = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .expression_attribute_values(":sk", s(sk));
        let scan = match tenant {
            Some(t) => scan
                .filter_expression("sk = :sk AND tenant = :t")
                .expression_attribute_values(":t", s(t)),
            None => scan.filter_expression("sk = :sk"),
        };
        let items: Vec<Item> = scan
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| unavailable(error_text(e)))?;
        items.iter().map(|item| parse(item, "record")).collect()
    }
}

impl Write {
    fn tenant(record: &TenantRecord) -> Result<Self, StoreError> {
        Ok(Self {
            pk: tenant_pk(&record.id),
            sk: "tenant",
            record_json: to_json(record)?,
            extra: vec![],
            change: Change::Tenant(record.clone()),
            also: None,
        })
    }

    /// Keys carry their tenant outside the record too, for listing a tenant's keys.
    fn key(record: &KeyRecord) -> Result<Self, StoreError> {
        Ok(Self {
            pk: key_pk(&record.key_id),
            sk: "key",
            record_json: to_json(record)?,
            extra: vec![("tenant", s(record.tenant.clone()))],
            change: Change::Key(record.clone()),
            also: None,
        })
    }
}

impl Write {
    /// Items carry their tenant outside the record too, for listing a tenant's items.
    fn item(item: &StoreItem) -> Result<Self, StoreError> {
        let kind = item.kind();
        Ok(Self {
            pk: item_pk(kind, &item.id()),
            sk: kind.as_str(),
            record_json: to_json(item)?,
            extra: vec![("tenant", s(item.tenant().to_string()))],
            change: item.change(),
            also: None,
        })
    }
}

enum Retry {
    Raced,
    Failed(StoreError),
}

fn to_json(value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(unavailable)
}

fn parse<T: DeserializeOwned>(item: &Item, attr: &str) -> Result<T, StoreError> {
    let text = get_s(item, attr)
        .ok_or_else(|| unavailable(format!("an identity item has no `{attr}`")))?;
    serde_json::from_str(text).map_err(unavailable)
}

#[async_trait]
impl IdentityStore for DynamoIdentityStore {
    async fn create_tenant(&self, id: &str) -> Result<TenantRecord, StoreError> {
        self.update_tenant(id, TenantUpdate::Create).await
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let mut tenants: Vec<TenantRecord> = self.scan_records("tenant", None).await?;
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(tenants)
    }

    async fn set_disabled(&self, id: &str, disabled: bool) -> Result<TenantRecord, StoreError> {
        self.update_tenant(id, TenantUpdate::SetDisabled(disabled))
            .await
    }

    async fn set_quota(&self, id: &str, quota: Quota) -> Result<TenantRecord, StoreError> {
        self.update_tenant(id, TenantUpdate::SetQuota(quota)).await
    }

    async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError> {
        self.commit(|version| {
            let key = key.clone();
            async move {
                if self
                    .get_item(tenant_pk(&key.tenant), "tenant")
                    .await?
                    .is_none()
                {
                    return Err(StoreError::NotFound(format!("no tenant `{}`", key.tenant)));
                }
                if self.get_item(key_pk(&key.key_id), "key").await?.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "key id {} is taken",
                        key.key_id
                    )));
                }
                let mut record = key.into_record();
                record.version = version;
                Ok((Write::key(&record)?, record))
            }
        })
        .await
    }

    async fn keys(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let mut keys: Vec<KeyRecord> = self.scan_records("key", Some(tenant)).await?;
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        Ok(keys)
    }

    async fn revoke_key(&self, key_id: &str) -> Result<KeyRecord, StoreError> {
        let current = self
            .record::<KeyRecord>(key_pk(key_id), "key")
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no key `{key_id}`")))?;
        if current.revoked {
            return Ok(current);
        }
        self.commit(|version| async move {
            let mut record = self
                .record::<KeyRecord>(key_pk(key_id), "key")
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no key `{key_id}`")))?;
            record.revoked = true;
            record.version = version;
            Ok((Write::key(&record)?, record))
        })
        .await
    }

    async fn write_item(
        &self,
        tenant: &str,
        kind: ItemKind,
        name: &str,
        write: ItemWrite,
    ) -> Result<StoreItem, StoreError> {
        write.validate()?;
        let id = item_id(tenant, name);
        if matches!(write, ItemWrite::Retire)
            && let Some(current) = self
                .record::<StoreItem>(item_pk(kind, &id), kind.as_str())
                .await?
            && current.retired()
        {
            // Retiring what is retired writes nothing.
            return Ok(current);
        }
        self.commit(|version| {
            let (write, id) = (write.clone(), id.clone());
            async move {
                if self.get_item(tenant_pk(tenant), "tenant").await?.is_none() {
                    return Err(StoreError::NotFound(format!("no tenant `{tenant}`")));
                }
                let current = self
                    .record::<StoreItem>(item_pk(kind, &id), kind.as_str())
                    .await?;
                let mut item = write.apply(kind, &id, current)?.ok_or_else(|| {
                    StoreError::Conflict(format!("`{id}` changed meanwhile; try again"))
                })?;
                item.set_version(version);
                let mut write = Write::item(&item)?;
                if let StoreItem::Purge(p) = &item {
                    // The tenant's newest purges in one record, moved by the same
                    // transaction (a raced write reads it again).
                    let mut list = self.purges_of(tenant).await?;
                    list.push(p.clone());
                    list.sort_by_key(|p| std::cmp::Reverse(p.at_ms));
                    list.truncate(crate::identity::admin::MAX_PURGES);
                    write.also = Some((purges_pk(tenant), "purges", to_json(&list)?));
                }
                Ok((write, item))
            }
        })
        .await
    }

    async fn items(&self, tenant: &str, kind: ItemKind) -> Result<Vec<StoreItem>, StoreError> {
        let mut items: Vec<StoreItem> = self.scan_records(kind.as_str(), Some(tenant)).await?;
        items.sort_by_key(StoreItem::id);
        Ok(items)
    }

    async fn changes_since(&self, version: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        while out.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :log AND sk > :from")
                .expression_attribute_values(":log", s("log"))
                .expression_attribute_values(":from", s(sortable(version)))
                .limit(i32::try_from(limit - out.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable(error_text(e)))?;
            for item in page.items() {
                out.push(parse(item, "change")?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

impl DynamoIdentityStore {
    /// A tenant's newest purges (one read), for checking cached results.
    pub async fn purges_of(
        &self,
        tenant: &str,
    ) -> Result<Vec<crate::identity::PurgeRecord>, StoreError> {
        Ok(self
            .record(purges_pk(tenant), "purges")
            .await?
            .unwrap_or_default())
    }

    /// What a signed URL names, as its check needs it (three point reads): the tenant, the
    /// URL key that signed it and the origin of its source.
    pub async fn delivery(
        &self,
        tenant: &str,
        key_id: &str,
        origin: &str,
    ) -> Result<
        (
            Option<TenantRecord>,
            Option<crate::identity::UrlKeyRecord>,
            Option<crate::identity::OriginRecord>,
        ),
        StoreError,
    > {
        let owner = self
            .record::<TenantRecord>(tenant_pk(tenant), "tenant")
            .await?;
        let item = |kind: ItemKind, name: &str| {
            self.record::<StoreItem>(item_pk(kind, &item_id(tenant, name)), kind.as_str())
        };
        let url_key = match item(ItemKind::UrlKey, key_id).await? {
            Some(StoreItem::UrlKey(k)) => Some(k),
            _ => None,
        };
        let origin = match item(ItemKind::Origin, origin).await? {
            Some(StoreItem::Origin(o)) => Some(o),
            _ => None,
        };
        Ok((owner, url_key, origin))
    }

    /// The key and its tenant, as one authentication needs them (two point reads).
    pub async fn key_and_tenant(
        &self,
        key_id: &str,
    ) -> Result<(Option<KeyRecord>, Option<TenantRecord>), StoreError> {
        let key = self.record::<KeyRecord>(key_pk(key_id), "key").await?;
        let tenant = match &key {
            Some(k) => {
                self.record::<TenantRecord>(tenant_pk(&k.tenant), "tenant")
                    .await?
            }
            None => None,
        };
        Ok((key, tenant))
    }
}
