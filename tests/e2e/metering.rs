//! Usage metering end to end: every authenticated request (and every asynchronous job's
//! run) is counted exactly once, also across kill -9 and redelivered batches, and rollups
//! agree with the raw records.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgfleet_host::execution::manifest::Manifest;
use imgfleet_host::execution::runtime::{Runtime, RuntimeConfig, WarmPool};
use imgfleet_host::metering::meter::{METERING_COMPONENT, Meter};
use imgfleet_metering::{Batch, ImageSide, Rollup, UsageRecord, fold};
use imgfleet_queue::embedded::EmbeddedStore;
use imgfleet_queue::{OutgoingMessage, Queue, QueueSpec};
use imgfleet_stores::usage::UsageStore;
use imgfleet_stores::usage::sqlite::SqliteUsageStore;
use imgfleet_tests::host::{Host, binary, post, repo_root};
use imgfleet_tests::images;

/// A day ago, in Unix ms: the start of every usage query here.
fn since() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    now.as_millis() as u64 - 86_400_000
}

fn small_jpeg() -> Vec<u8> {
    images::jpeg(&images::photo(64, 48, 3), 80)
}

/// The admin view of one tenant's usage, summed over all buckets.
fn totals(h: &Host, tenant: &str) -> (u64, u64, u64) {
    let v = h
        .admin(
            "GET",
            &format!(
                "/admin/usage?tenant={tenant}&from={}&granularity=day",
                since()
            ),
            None,
        )
        .json();
    let buckets = v["tenants"][0]["buckets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let sum = |k: &str| buckets.iter().map(|b| b[k].as_u64().unwrap()).sum::<u64>();
    (sum("requests"), sum("errors"), sum("bytes_in"))
}

/// Waits for the usage to reach `want` requests, then checks it stays there.
fn settled(h: &Host, tenant: &str, want: u64) -> (u64, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = totals(h, tenant);
        if t.0 >= want {
            // Give any stray duplicate time to show up.
            std::thread::sleep(Duration::from_millis(1500));
            return totals(h, tenant);
        }
        assert!(
            Instant::now() < deadline,
            "{tenant}: {t:?} metered, {want} expected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn served_requests_equal_metered_requests_exactly() {
    let h = Host::start("spin.toml", &[]);
    let b = h.tenant_key("tenant-b");
    let src = small_jpeg();
    let mut made: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    let mut count = |tenant: &'static str, status: u16, bytes: usize| {
        let e = made.entry(tenant).or_default();
        e.0 += 1;
        e.1 += u64::from(status >= 400);
        e.2 += bytes as u64;
    };
    for i in 0..12 {
        let r = h.post(&format!("/v1/resize?w={}", 8 + i), &src, &[]);
        count("tenant-a", r.status, src.len());
        assert_eq!(r.status, 200);
    }
    for (query, body) in [
        ("w=8&fit=banana", &src[..]),
        ("w=8", b"not an image"),
        ("w=8", &src[..10]),
    ] {
        let r = h.post(&format!("/v1/resize?{query}"), body, &[]);
        assert!(r.status >= 400);
        count("tenant-a", r.status, body.len());
    }
    let r = h.post("/v1/jobs?w=8", &src, &[]);
    count("tenant-a", r.status, src.len());
    // The job's run is metered too, once, when it finishes (with the input it read).
    count("tenant-a", 200, src.len());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = h.get(&format!("/v1/jobs/{id}"));
    count("tenant-a", r.status, 0);
    let r = h.get_as(&b, &format!("/v1/jobs/{id}"));
    assert_eq!(r.status, 404);
    count("tenant-b", r.status, 0);
    for _ in 0..5 {
        let r = h.post_as(&b, "/v1/resize?w=4", &src, &[]);
        count("tenant-b", r.status, src.len());
    }
    // Refused before authentication: audited, but nobody's usage.
    assert_eq!(post(&h.url("/v1/resize?w=8"), &src, &[]).status, 401);

    for (tenant, want) in &made {
        assert_eq!(settled(&h, tenant, want.0), *want, "{tenant}");
    }
}

#[test]
fn kill_9_after_responses_loses_no_usage_and_counts_nothing_twice() {
    let h = Host::start("spin.toml", &[]);
    let src = small_jpeg();
    for i in 0..25 {
        assert_eq!(
            h.post(&format!("/v1/resize?w={}", 4 + i), &src, &[]).status,
            200
        );
    }
    // Killed right after the last response: most records have not been shipped yet.
    let data = h.kill_9();
    let h = Host::start_in(data, "spin.toml", &[], &[]);
    let (requests, errors, bytes) = settled(&h, "tenant-a", 25);
    assert_eq!((requests, errors, bytes), (25, 0, 25 * src.len() as u64));
}

#[test]
fn rollups_agree_with_the_raw_records_also_once_compressed() {
    let h = Host::start("spin.toml", &[]);
    let src = small_jpeg();
    for i in 0..20 {
        h.post(&format!("/v1/resize?w={}&fmt=png", 4 + i), &src, &[]);
    }
    h.post("/v1/resize?w=0", &src, &[]);
    settled(&h, "tenant-a", 21);
    let export = |args: &[&str]| {
        let out = Command::new(binary())
            .args(["usage", "--data-dir"])
            .arg(h.data.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let recompute = |jsonl: &[u8]| -> Vec<Rollup> {
        let records: Vec<UsageRecord> = jsonl
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        fold(
            Batch {
                id: "x".into(),
                records,
            },
            &[],
        )
        .rollups
    };
    let stored = || {
        let v = h
            .admin(
                "GET",
                &format!(
                    "/admin/usage?tenant=tenant-a&from={}&granularity=hour",
                    since()
                ),
                None,
            )
            .json();
        v["tenants"][0]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["requests"].as_u64().unwrap(),
                    b["errors"].as_u64().unwrap(),
                    b["bytes_in"].as_u64().unwrap(),
                    b["bytes_out"].as_u64().unwrap(),
                    b["pixels_out"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let as_tuples = |rollups: Vec<Rollup>| {
        rollups
            .into_iter()
            .map(|r| (r.requests, r.errors, r.bytes_in, r.bytes_out, r.pixels_out))
            .collect::<Vec<_>>()
    };
    let raw = export(&["export", "--tenant", "tenant-a"]);
    assert_eq!(as_tuples(recompute(&raw)), stored());
    let pixels: u64 = recompute(&raw).iter().map(|r| r.pixels_out).sum();
    assert!(pixels > 0);

    let packed: serde_json::Value =
        serde_json::from_slice(&export(&["compact", "--older-than-days", "0"])).unwrap();
    assert_eq!(packed["packed"], 21);
    let from_segments = export(&["export", "--tenant", "tenant-a"]);
    assert_eq!(
        from_segments, raw,
        "the compressed segments give back the same records"
    );
    assert_eq!(as_tuples(recompute(&from_segments)), stored());
    let csv = String::from_utf8(export(&[
        "export", "--tenant", "tenant-a", "--format", "csv",
    ]))
    .unwrap();
    assert_eq!(csv.lines().count(), 22);
    assert!(csv.starts_with("id,request_id,tenant,key_id,at_ms,route,status,"));
}

fn record(id: usize) -> UsageRecord {
    UsageRecord {
        id: format!("rec-{id}"),
        request_id: String::new(),
        tenant: "acme".into(),
        key_id: "k".into(),
        at_ms: 1_795_874_073_000 + id as u64,
        route: "/v1/resize".into(),
        status: 200,
        input: ImageSide {
            bytes: 100,
            format: Some("jpeg".into()),
            width: 10,
            height: 10,
        },
        output: ImageSide {
            bytes: 10,
            format: Some("png".into()),
            width: 2,
            height: 2,
        },
        cpu_ns: 1000,
        wall_ns: 2000,
        queue_ns: 0,
        origin_bytes: 0,
        not_modified: false,
        cache: None,
    }
}

/// The same batch delivered twice (as after a crash between storing and deleting it) and
/// a batch overlapping it are counted once, through the real queue and metering component.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_batch_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::load(&repo_root().join("spin.toml")).unwrap();
    let runtime = Runtime::new(
        &manifest,
        RuntimeConfig {
            deadline: Duration::from_secs(10),
            memory_limit_bytes: 64 << 20,
            max_instances: 4,
        },
    )
    .unwrap();
    let store = Arc::new(SqliteUsageStore::open(&dir.path().join("usage.sqlite")).unwrap());
    let queues = EmbeddedStore::open(&dir.path().join("queue")).unwrap();
    let queue: Arc<dyn Queue> = queues.queue(QueueSpec::new("usage")).await.unwrap();
    let meter = Arc::new(Meter {
        store: store.clone(),
        function: WarmPool::new(runtime, METERING_COMPONENT, 1),
    });
    meter.clone().spawn(queue.clone());

    let first = Batch {
        id: "b1".into(),
        records: (0..100).map(record).collect(),
    };
    let overlapping = Batch {
        id: "b2".into(),
        records: (50..150).map(record).collect(),
    };
    for batch in [&first, &first, &overlapping, &first] {
        let body = serde_json::to_vec(batch).unwrap();
        queue
            .send(OutgoingMessage::new(body).group(uuid_like()))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let depth = queue.depth().await.unwrap();
        if depth.visible + depth.in_flight == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage batches not consumed: {depth:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rollups = store.rollups("acme", 0, u64::MAX).await.unwrap();
    let requests: u64 = rollups.iter().map(|r| r.requests).sum();
    let bytes: u64 = rollups.iter().map(|r| r.bytes_in).sum();
    assert_eq!((requests, bytes), (150, 150 * 100));
    assert_eq!(store.records("acme", 0, u64::MAX).await.unwrap().len(), 150);
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("g{}", N.fetch_add(1, Ordering::Relaxed))
}
