//! The behavioural suites every backend of a port passes: identity and usage (SQLite,
//! PostgreSQL, DynamoDB), jobs (SQLite, PostgreSQL), staging (local memory and files, the
//! fleet's JetStream object store). A backend's module calls `<port>_suite!(factory)`, where
//! `factory()` yields two handles on one fresh, empty store (two handles stand for two
//! hosts), or for staging one fresh area of the given capacity.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use imgfleet_auth::Quota;
use imgfleet_metering::{Batch, ImageSide, Rollup, UsageRecord, fold};
use imgfleet_stores::identity::items::CachePolicy;
use imgfleet_stores::identity::{
    Change, IdentityStore, Item, ItemKind, ItemWrite, NewKey, OriginRecord, OriginSource,
    StoreError, UrlKeyRecord,
};
use imgfleet_stores::jobs::{Finish, Job, JobStatus, JobStore};
use imgfleet_stores::staging::{Keep, Staging, StagingError};
use imgfleet_stores::usage::{UsageError, UsageStore};

pub type Identities = (Arc<dyn IdentityStore>, Arc<dyn IdentityStore>);
pub type Usages = (Arc<dyn UsageStore>, Arc<dyn UsageStore>);

const DAY_MS: u64 = 86_400_000;

fn new_key(id: &str, tenant: &str) -> NewKey {
    NewKey {
        key_id: id.into(),
        tenant: tenant.into(),
        secret_hash: "h".into(),
        scopes: imgfleet_auth::Scope::ALL.to_vec(),
        label: None,
        created_ms: 1,
    }
}

pub async fn every_write_is_versioned_in_the_change_log(stores: Identities) {
    let (store, other) = stores;
    let t = store.create_tenant("acme").await.unwrap();
    assert_eq!(t.version, 1);
    let k = store.insert_key(new_key("k1", "acme")).await.unwrap();
    assert_eq!(k.version, 2);
    store
        .set_quota(
            "acme",
            Quota {
                requests_per_second: Some(3.0),
                ..Quota::default()
            },
        )
        .await
        .unwrap();
    store.revoke_key("k1").await.unwrap();
    store.set_disabled("acme", true).await.unwrap();

    // Another handle (another host) sees the same log.
    let changes = other.changes_since(0, 100).await.unwrap();
    let versions: Vec<u64> = changes.iter().map(Change::version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert!(matches!(&changes[3], Change::Key(k) if k.revoked));
    assert!(
        matches!(&changes[4], Change::Tenant(t) if t.disabled && t.quota.requests_per_second == Some(3.0))
    );
    assert_eq!(other.changes_since(3, 100).await.unwrap().len(), 2);
    assert_eq!(other.changes_since(0, 2).await.unwrap().len(), 2);
    let tenants = other.tenants().await.unwrap();
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0].version, 5);
    assert!(other.keys("acme").await.unwrap()[0].revoked);
}

fn origin(tenant: &str, name: &str) -> Item {
    Item::Origin(OriginRecord {
        tenant: tenant.into(),
        name: name.into(),
        source: OriginSource::S3 {
            bucket: "images".into(),
            prefix: "web/".into(),
            region: Some("eu-west-1".into()),
            endpoint: None,
        },
        cache: CachePolicy {
            max_age_secs: 600,
            immutable: true,
        },
        removed: false,
        created_ms: 1,
        version: 0,
    })
}

fn url_key(tenant: &str, id: &str) -> Item {
    Item::UrlKey(UrlKeyRecord {
        tenant: tenant.into(),
        key_id: id.into(),
        secret: "ab".repeat(32),
        label: Some("site".into()),
        revoked: false,
        created_ms: 1,
        version: 0,
    })
}

/// Origins and URL keys: created, listed per tenant, removed or revoked, each write one
/// versioned change the other handle (another host) sees; names are per tenant.
pub async fn origins_and_url_keys_are_versioned_and_retired_in_the_log(stores: Identities) {
    let (store, other) = stores;
    store.create_tenant("acme").await.unwrap();
    store.create_tenant("zeta").await.unwrap();
    let create = |item: Item| ItemWrite::Create(item);
    let o = store
        .write_item(
            "acme",
            ItemKind::Origin,
            "photos",
            create(origin("acme", "photos")),
        )
        .await
        .unwrap();
    assert_eq!(o.version(), 3);
    // The same name in another tenant is another origin.
    store
        .write_item(
            "zeta",
            ItemKind::Origin,
            "photos",
            create(origin("zeta", "photos")),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .write_item(
                "acme",
                ItemKind::Origin,
                "photos",
                create(origin("acme", "photos"))
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .write_item(
                "nobody",
                ItemKind::Origin,
                "photos",
                create(origin("nobody", "photos"))
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    for id in ["0000000a", "0000000b"] {
        store
            .write_item("acme", ItemKind::UrlKey, id, create(url_key("acme", id)))
            .await
            .unwrap();
    }
    let revoked = store
        .write_item("acme", ItemKind::UrlKey, "0000000a", ItemWrite::Retire)
        .await
        .unwrap();
    assert!(revoked.retired());
    // Revoking again writes nothing.
    let again = store
        .write_item("acme", ItemKind::UrlKey, "0000000a", ItemWrite::Retire)
        .await
        .unwrap();
    assert_eq!(again.version(), revoked.version());
    let removed = store
        .write_item("acme", ItemKind::Origin, "photos", ItemWrite::Retire)
        .await
        .unwrap();
    assert!(removed.retired());
    assert!(matches!(
        store
            .write_item("acme", ItemKind::Origin, "nothing", ItemWrite::Retire)
            .await,
        Err(StoreError::NotFound(_))
    ));

    let changes = other.changes_since(2, 100).await.unwrap();
    let versions: Vec<u64> = changes.iter().map(Change::version).collect();
    assert_eq!(versions, [3, 4, 5, 6, 7, 8]);
    assert!(
        matches!(&changes[0], Change::Origin(o) if o.name == "photos" && o.tenant == "acme" && !o.removed)
    );
    assert!(matches!(&changes[4], Change::UrlKey(k) if k.key_id == "0000000a" && k.revoked));
    assert!(matches!(&changes[5], Change::Origin(o) if o.removed && o.cache.immutable));
    let keys = other.items("acme", ItemKind::UrlKey).await.unwrap();
    assert_eq!(
        keys.iter()
            .map(|k| (k.id(), k.retired()))
            .collect::<Vec<_>>(),
        [
            ("acme/0000000a".to_string(), true),
            ("acme/0000000b".to_string(), false)
        ]
    );
    let Item::UrlKey(b) = &keys[1] else {
        panic!("a URL key listed as {:?}", keys[1]);
    };
    assert_eq!(b.secret, "ab".repeat(32));
    assert_eq!(
        other.items("zeta", ItemKind::Origin).await.unwrap().len(),
        1
    );
    assert!(
        other
            .items("zeta", ItemKind::UrlKey)
            .await
            .unwrap()
            .is_empty()
    );
    // A removed origin's name may be used again.
    store
        .write_item(
            "acme",
            ItemKind::Origin,
            "photos",
            create(origin("acme", "photos")),
        )
        .await
        .unwrap();
}

pub async fn purges_are_logged_listed_per_tenant_and_never_undone(stores: Identities) {
    use imgfleet_stores::identity::admin::{NewPurge, purge, purges};
    let (store, other) = stores;
    store.create_tenant("acme").await.unwrap();
    store.create_tenant("zeta").await.unwrap();
    let new = |path: &str, prefix: bool| NewPurge {
        origin: "photos".into(),
        path: path.into(),
        prefix,
    };
    let one = purge(store.as_ref(), "acme", new("/cats/tom.jpg", false))
        .await
        .unwrap();
    assert_eq!(
        one.path, "cats/tom.jpg",
        "a leading slash is not part of a path"
    );
    assert!(
        one.at_ms > one.created_ms,
        "a purge reaches a little past its time"
    );
    let all = purge(other.as_ref(), "acme", new("", true)).await.unwrap();
    purge(store.as_ref(), "zeta", new("dogs/", true))
        .await
        .unwrap();
    assert!(matches!(
        purge(store.as_ref(), "acme", new("", false)).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        purge(store.as_ref(), "nobody", new("x", false)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .write_item("acme", ItemKind::Purge, &one.id, ItemWrite::Retire)
            .await,
        Err(StoreError::Invalid(_))
    ));
    let listed = purges(other.as_ref(), "acme").await.unwrap();
    let mut ids: Vec<&str> = listed.iter().map(|p| p.id.as_str()).collect();
    ids.sort();
    let mut want = vec![one.id.as_str(), all.id.as_str()];
    want.sort();
    assert_eq!(ids, want, "each tenant sees its own");
    let changes = other.changes_since(2, 100).await.unwrap();
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert!(matches!(&changes[0], Change::Purge(p) if p.id == one.id && p.version == 3));
}

pub async fn bad_writes_are_refused_without_a_change(stores: Identities) {
    let (store, _) = stores;
    store.create_tenant("acme").await.unwrap();
    assert!(matches!(
        store.create_tenant("acme").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_tenant("Bad Id").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.insert_key(new_key("k", "ghost")).await,
        Err(StoreError::NotFound(_))
    ));
    store.insert_key(new_key("k", "acme")).await.unwrap();
    assert!(matches!(
        store.insert_key(new_key("k", "acme")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.revoke_key("nope").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.set_disabled("ghost", true).await,
        Err(StoreError::NotFound(_))
    ));
    let nan = Quota {
        requests_per_second: Some(f64::NAN),
        ..Quota::default()
    };
    assert!(matches!(
        store.set_quota("acme", nan).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.changes_since(0, 100).await.unwrap().len(), 2);
}

/// Two hosts writing at once while a third follows the log: the follower must see every
/// version exactly once and in order — a version that commits after a later one would be
/// skipped by a follower that had already moved past it.
pub async fn a_follower_never_skips_a_change_written_concurrently(stores: Identities) {
    let (a, b) = stores;
    let writers: Vec<_> = [(a.clone(), "a"), (b.clone(), "b")]
        .into_iter()
        .map(|(store, name)| {
            tokio::spawn(async move {
                for i in 0..40 {
                    store.create_tenant(&format!("{name}{i}")).await.unwrap();
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut cursor = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < 80 && tokio::time::Instant::now() < deadline {
        for change in a.changes_since(cursor, 7).await.unwrap() {
            cursor = change.version();
            seen.push(cursor);
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    for change in a.changes_since(cursor, 100).await.unwrap() {
        seen.push(change.version());
    }
    assert_eq!(seen, (1..=80).collect::<Vec<u64>>(), "versions as followed");
}

fn rec(id: usize, tenant: &str, at_ms: u64, status: u16) -> UsageRecord {
    UsageRecord {
        id: format!("r{id}"),
        request_id: String::new(),
        tenant: tenant.into(),
        key_id: "k".into(),
        at_ms,
        route: "/v1/resize".into(),
        status,
        input: ImageSide {
            bytes: 1000 + id as u64,
            format: Some("jpeg".into()),
            width: 40,
            height: 30,
        },
        output: ImageSide {
            bytes: 100,
            format: Some("png".into()),
            width: 4,
            height: 3,
        },
        cpu_ns: 1_000_000 + id as u64,
        wall_ns: 2_000_000,
        queue_ns: 10,
        origin_bytes: 0,
        not_modified: false,
        cache: None,
    }
}

/// What the meter does with a batch: fold against what is known, store, refold on a race.
async fn ingest(store: &dyn UsageStore, records: Vec<UsageRecord>) {
    loop {
        let ids = records.iter().map(|r| r.id.clone()).collect();
        let known = store.known(ids).await.unwrap();
        let folded = fold(
            Batch {
                id: "b".into(),
                records: records.clone(),
            },
            &known,
        );
        match store.apply(folded).await {
            Ok(()) => return,
            Err(UsageError::Raced) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Rollups recomputed from the raw records (wherever they are kept).
async fn recomputed(store: &dyn UsageStore, tenant: &str) -> Vec<Rollup> {
    let records = store.records(tenant, 0, u64::MAX).await.unwrap();
    fold(
        Batch {
            id: "all".into(),
            records,
        },
        &[],
    )
    .rollups
}

pub async fn rollups_match_a_recomputation_before_and_after_compaction(stores: Usages) {
    let (store, _) = stores;
    let store = &*store;
    let day = 20_000 * DAY_MS;
    let records: Vec<UsageRecord> = (0..600)
        .map(|i| {
            rec(
                i,
                if i % 3 == 0 { "b" } else { "a" },
                day + (i as u64) * 7 * 60_000,
                if i % 10 == 0 { 415 } else { 200 },
            )
        })
        .collect();
    for chunk in records.chunks(50) {
        ingest(store, chunk.to_vec()).await;
    }
    // A redelivered batch adds nothing.
    ingest(store, records[100..150].to_vec()).await;
    for tenant in ["a", "b"] {
        let stored = store.rollups(tenant, 0, u64::MAX).await.unwrap();
        assert_eq!(stored, recomputed(store, tenant).await);
    }
    let total: u64 = store
        .rollups("a", 0, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.requests)
        .sum();
    assert_eq!(total, 400);

    // Pack the first day and a half; everything still reads and still adds up.
    let packed = store.compact(day + DAY_MS + DAY_MS / 2).await.unwrap();
    assert!(packed > 0 && packed < 600, "{packed}");
    for tenant in ["a", "b"] {
        let stored = store.rollups(tenant, 0, u64::MAX).await.unwrap();
        assert_eq!(stored, recomputed(store, tenant).await);
    }
    assert_eq!(store.records("a", 0, u64::MAX).await.unwrap().len(), 400);
    // Packed records are still known: redelivering them counts nothing.
    ingest(store, records[0..50].to_vec()).await;
    assert_eq!(
        store.rollups("a", 0, u64::MAX).await.unwrap(),
        recomputed(store, "a").await
    );
    // Compacting again merges into the existing segments.
    store.compact(u64::MAX / 2).await.unwrap();
    assert_eq!(store.records("b", 0, u64::MAX).await.unwrap().len(), 200);
    assert_eq!(
        store.rollups("b", 0, u64::MAX).await.unwrap(),
        recomputed(store, "b").await
    );
    // Time filters apply inside segments too.
    let window = store.records("a", day, day + 3_600_000).await.unwrap();
    assert!(!window.is_empty() && window.iter().all(|r| r.at_ms < day + 3_600_000));
    assert_eq!(store.tenants(0, u64::MAX).await.unwrap(), ["a", "b"]);
}

pub async fn a_fold_that_raced_another_is_refused_whole(stores: Usages) {
    let (store, _) = stores;
    let records = vec![rec(1, "a", 5, 200), rec(2, "a", 5, 200)];
    let stale = fold(
        Batch {
            id: "b".into(),
            records: records.clone(),
        },
        &[],
    );
    ingest(&*store, records[..1].to_vec()).await;
    assert!(matches!(store.apply(stale).await, Err(UsageError::Raced)));
    assert_eq!(
        store.rollups("a", 0, u64::MAX).await.unwrap()[0].requests,
        1
    );
}

/// Two hosts' meters folding overlapping batches at the same time (a redelivered usage
/// message taken by another host): every record is counted exactly once.
pub async fn two_hosts_folding_overlapping_batches_count_each_record_once(stores: Usages) {
    let (a, b) = stores;
    let records: Vec<UsageRecord> = (0..400)
        .map(|i| rec(i, "t", 3_600_000 + i as u64, 200))
        .collect();
    let mut tasks = Vec::new();
    for (n, chunk) in records.chunks(40).enumerate() {
        // Every batch goes to both hosts.
        for store in [a.clone(), b.clone()] {
            let batch = chunk.to_vec();
            tasks.push(tokio::spawn(async move {
                if n % 2 == 1 {
                    tokio::task::yield_now().await;
                }
                ingest(&*store, batch).await;
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let requests: u64 = a
        .rollups("t", 0, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.requests)
        .sum();
    assert_eq!(requests, 400);
    assert_eq!(a.records("t", 0, u64::MAX).await.unwrap().len(), 400);
}

#[macro_export]
macro_rules! identity_suite {
    ($factory:expr) => {
        macro_rules! identity_case {
            ($name:ident) => {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let stores = ($factory)().await;
                    $crate::suite::$name(stores).await;
                }
            };
        }
        identity_case!(every_write_is_versioned_in_the_change_log);
        identity_case!(bad_writes_are_refused_without_a_change);
        identity_case!(a_follower_never_skips_a_change_written_concurrently);
        identity_case!(origins_and_url_keys_are_versioned_and_retired_in_the_log);
        identity_case!(purges_are_logged_listed_per_tenant_and_never_undone);
    };
}

#[macro_export]
macro_rules! usage_suite {
    ($factory:expr) => {
        macro_rules! usage_case {
            ($name:ident) => {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let stores = ($factory)().await;
                    $crate::suite::$name(stores).await;
                }
            };
        }
        usage_case!(rollups_match_a_recomputation_before_and_after_compaction);
        usage_case!(a_fold_that_raced_another_is_refused_whole);
        usage_case!(two_hosts_folding_overlapping_batches_count_each_record_once);
    };
}

/// Two handles on one fresh job store (two hosts of one fleet, or two on one file).
pub type Jobs = (JobStore, JobStore);

fn job(id: &str, tenant: &str, submitted_ms: u64) -> Job {
    Job {
        id: id.into(),
        tenant: tenant.into(),
        key_id: "k".into(),
        request_id: format!("req-{id}"),
        function: "resize".into(),
        method: "POST".into(),
        path_and_query: "/v1/resize?w=10".into(),
        accept: None,
        content_type: Some("image/jpeg".into()),
        input: format!("in-{id}"),
        reply_to: None,
        submitted_ms,
        traceparent: None,
        hedge: false,
    }
}

fn answered(output: &str) -> Finish {
    Finish::Answered {
        http_status: 200,
        content_type: Some("image/png".into()),
        output: output.into(),
        expires_ms: 9_000,
    }
}

pub async fn a_job_finishes_once_and_only_its_tenant_sees_it(stores: Jobs) {
    let (store, other) = stores;
    store.insert(&job("j1", "acme", 1)).await.unwrap();
    assert_eq!(other.status("j1").await.unwrap(), Some(JobStatus::Queued));
    assert!(other.get("j1", "globex").await.unwrap().is_none());
    assert!(store.finish("j1", answered("out-1"), 5).await.unwrap());
    // A redelivered job's second run (here on the other host) changes nothing.
    let failed = Finish::Failed {
        http_status: 504,
        code: "deadline_exceeded".into(),
        message: "late".into(),
    };
    assert!(!other.finish("j1", failed, 6).await.unwrap());
    let record = other
        .get("j1", "acme")
        .await
        .unwrap()
        .expect("the owner sees it");
    assert_eq!(record.job, job("j1", "acme", 1));
    assert_eq!(record.status, JobStatus::Done);
    assert_eq!(record.http_status, Some(200));
    assert_eq!(record.output.as_deref(), Some("out-1"));
    assert_eq!(
        (record.finished_ms, record.expires_ms),
        (Some(5), Some(9_000))
    );
    assert!(record.error_code.is_none());
    assert_eq!(store.status("nope").await.unwrap(), None);
    assert!(!store.finish("nope", answered("x"), 7).await.unwrap());
}

pub async fn unfinished_jobs_come_back_in_order_and_forgotten_ones_do_not(stores: Jobs) {
    let (store, _) = stores;
    for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        store.insert(&job(id, "acme", 10 + i as u64)).await.unwrap();
    }
    store.forget("b").await.unwrap();
    store
        .finish(
            "c",
            Finish::Failed {
                http_status: 500,
                code: "function_failed".into(),
                message: "crash".into(),
            },
            20,
        )
        .await
        .unwrap();
    // Forgetting a finished job keeps it: only a never-accepted job is forgotten.
    store.forget("c").await.unwrap();
    let ids: Vec<String> = store
        .unfinished()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, ["a", "d"]);
    let failed = store.get("c", "acme").await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error_code.as_deref(), Some("function_failed"));
    assert!(store.get("b", "acme").await.unwrap().is_none());
}

pub async fn a_staged_entry_reads_back_until_removed(staging: Staging) {
    let bytes = Bytes::from(
        (0..200_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    for keep in [Keep::Volatile, Keep::Durable] {
        let key = staging
            .put(bytes.clone(), Duration::from_secs(60), keep)
            .await
            .unwrap();
        assert_eq!(staging.get(&key).await.unwrap(), bytes);
        staging.remove(&key);
        // A fleet's staging removes in the background: gone within moments, not at once.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match staging.get(&key).await {
                Err(StagingError::NotFound(_)) => break,
                Ok(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => panic!("{keep:?} entry after its removal: {other:?}"),
            }
        }
    }
    let small = staging
        .put(
            Bytes::from_static(b"tiny"),
            Duration::from_secs(60),
            Keep::Volatile,
        )
        .await
        .unwrap();
    assert_eq!(&staging.get(&small).await.unwrap()[..], b"tiny");
    assert!(matches!(
        staging.get("never-staged").await,
        Err(StagingError::NotFound(_))
    ));
}

/// `staging` must have a capacity of 100,000 bytes: inputs may fill three quarters of it.
pub async fn inputs_leave_room_for_outputs(staging: Staging) {
    let input = Bytes::from(vec![1u8; 40_000]);
    let first = staging
        .put_input(input.clone(), Duration::from_secs(60), Keep::Volatile)
        .await
        .unwrap();
    let refused = staging
        .put_input(input.clone(), Duration::from_secs(60), Keep::Volatile)
        .await;
    assert!(
        matches!(refused, Err(StagingError::Full { .. })),
        "{refused:?}"
    );
    // An output of accepted work still fits.
    staging
        .put(input, Duration::from_secs(60), Keep::Volatile)
        .await
        .unwrap();
    assert_eq!(staging.get(&first).await.unwrap().len(), 40_000);
}

#[macro_export]
macro_rules! jobs_suite {
    ($factory:expr) => {
        macro_rules! jobs_case {
            ($name:ident) => {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let stores = ($factory)().await;
                    $crate::suite::$name(stores).await;
                }
            };
        }
        jobs_case!(a_job_finishes_once_and_only_its_tenant_sees_it);
        jobs_case!(unfinished_jobs_come_back_in_order_and_forgotten_ones_do_not);
    };
}

/// `factory(capacity_bytes)` yields a fresh, empty staging area.
#[macro_export]
macro_rules! staging_suite {
    ($factory:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_staged_entry_reads_back_until_removed() {
            $crate::suite::a_staged_entry_reads_back_until_removed(($factory)(10_000_000).await)
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn inputs_leave_room_for_outputs() {
            $crate::suite::inputs_leave_room_for_outputs(($factory)(100_000).await).await;
        }
    };
}
