//! Usage metering: ingest through the whole path (request log + outbox → shipper → usage
//! queue → metering component → usage store), what the usage record adds to a request's
//! durable log write, and usage queries over 30 days for one tenant.
//!
//! `cargo bench -p imgfleet-tests --bench metering [-- --records N]` (needs the components:
//! `./dev.sh build-wasm`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use imgfleet_host::execution::manifest::Manifest;
use imgfleet_host::execution::runtime::{Runtime, RuntimeConfig, WarmPool};
use imgfleet_host::metering::meter::{METERING_COMPONENT, Meter};
use imgfleet_host::metering::shipper::{self, ShipperConfig};
use imgfleet_metering::{Batch, ImageSide, UsageRecord, fold};
use imgfleet_queue::QueueSpec;
use imgfleet_queue::embedded::EmbeddedStore;
use imgfleet_stores::audit::sqlite::{AuditLog, AuditRecord};
use imgfleet_stores::usage::sqlite::SqliteUsageStore;
use imgfleet_stores::usage::{UsageStore, bucket};
use imgfleet_tests::bench::arg;
use imgfleet_tests::host::repo_root;

const HOUR_MS: u64 = 3_600_000;
/// Requests in flight at once on the API host (a 32-core host serves thousands).
const WRITERS: usize = 256;

fn usage(i: usize, tenant: usize, at_ms: u64) -> UsageRecord {
    UsageRecord {
        id: format!("{at_ms:x}-{i}"),
        request_id: String::new(),
        tenant: format!("tenant-{tenant}"),
        key_id: "0123456789abcdef".into(),
        at_ms,
        route: "/v1/resize".into(),
        status: if i.is_multiple_of(20) { 415 } else { 200 },
        input: ImageSide {
            bytes: 235_000,
            format: Some("jpeg".into()),
            width: 2048,
            height: 1365,
        },
        output: ImageSide {
            bytes: 21_000,
            format: Some("jpeg".into()),
            width: 300,
            height: 200,
        },
        cpu_ns: 28_000_000,
        wall_ns: 29_000_000,
        queue_ns: 40_000,
        origin_bytes: 0,
        not_modified: false,
        cache: None,
    }
}

fn audit(i: usize, at_ms: u64) -> AuditRecord {
    AuditRecord {
        request_id: format!("req-{i}"),
        at_ms,
        tenant: Some("tenant-0".into()),
        key_id: Some("0123456789abcdef".into()),
        method: "POST".into(),
        path: "/v1/resize".into(),
        query: Some("w=300".into()),
        status: 200,
        code: None,
        input_bytes: 235_000,
        output_bytes: 21_000,
        pixels: 60_000,
        duration_ms: 29.0,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n = arg("--records", 200_000);
    let dir = tempfile::tempdir()?;
    let manifest = Manifest::load(&repo_root().join("spin.toml"))?;
    let runtime = Runtime::new(
        &manifest,
        RuntimeConfig {
            deadline: Duration::from_secs(10),
            memory_limit_bytes: 256 << 20,
            max_instances: 8,
        },
    )?;
    let log = AuditLog::open(&dir.path().join("audit.sqlite"))?;
    let store = Arc::new(SqliteUsageStore::open(&dir.path().join("usage.sqlite"))?);
    let queues = EmbeddedStore::open(&dir.path().join("queue"))?;
    let mut spec = QueueSpec::new("usage");
    spec.visibility_timeout = Duration::from_secs(60);
    let queue = queues.queue(spec).await?;
    let meter = Arc::new(Meter {
        store: store.clone(),
        function: WarmPool::new(runtime, METERING_COMPONENT, 1),
    });
    // 1. Ingest, in two runs of n requests logged by WRITERS concurrent writers: (a) the
    // shipper and meter not yet running, then started to drain the backlog: the pipeline's
    // own rate; (b) all stages at once, until every record is counted.
    let counted = |store: Arc<SqliteUsageStore>| async move {
        let mut counted = 0u64;
        for t in 0..50 {
            counted += store
                .rollups(&format!("tenant-{t}"), 0, u64::MAX)
                .await?
                .iter()
                .map(|r| r.requests)
                .sum::<u64>();
        }
        anyhow::Ok(counted as usize)
    };
    let log_requests = |offset: usize| {
        let log = log.clone();
        async move {
            let base = now_ms();
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let log = log.clone();
                    tokio::spawn(async move {
                        let mut i = w;
                        while i < n {
                            let at = base + i as u64 / 100;
                            let id = offset + i;
                            assert!(
                                log.record(audit(id, at), Some(&usage(id, id % 50, at)))
                                    .await
                            );
                            i += WRITERS;
                        }
                    })
                })
                .collect();
            for w in writers {
                w.await?;
            }
            anyhow::Ok(())
        }
    };
    let started = Instant::now();
    log_requests(0).await?;
    let backlog_logged = started.elapsed();
    let drain_started = Instant::now();
    meter.spawn(queue.clone());
    shipper::spawn(log.clone(), queue, ShipperConfig::default());
    while counted(store.clone()).await? < n {
        anyhow::ensure!(
            drain_started.elapsed() < Duration::from_secs(600),
            "backlog not drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = drain_started.elapsed();

    let started = Instant::now();
    log_requests(n).await?;
    let logged = started.elapsed();
    loop {
        let counted = counted(store.clone()).await?;
        if counted >= 2 * n {
            assert_eq!(counted, 2 * n, "counted more than were sent");
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {counted} of {n} counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    println!("## ingest: {n} requests per run, {WRITERS} concurrent writers, 50 tenants");
    println!();
    println!("| stage | time s | records/s |");
    println!("|---|---:|---:|");
    println!(
        "| (a) logged, pipeline stopped | {:.2} | {:.0} |",
        backlog_logged.as_secs_f64(),
        n as f64 / backlog_logged.as_secs_f64()
    );
    println!(
        "| (a) backlog drained: outbox → shipper → queue → metering component → usage store | {:.2} | {:.0} |",
        drained.as_secs_f64(),
        n as f64 / drained.as_secs_f64()
    );
    println!(
        "| (b) logged while the pipeline runs (audit + usage record, durable, before the response) | {:.2} | {:.0} |",
        logged.as_secs_f64(),
        n as f64 / logged.as_secs_f64()
    );
    println!(
        "| (b) counted in the usage store (whole path, all stages at once) | {:.2} | {:.0} |",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    println!();

    // 2. What the usage record adds to one request's durable log write (one writer).
    let n = 2 * n;
    let mut with = Vec::new();
    let mut without = Vec::new();
    for i in 0..4000 {
        let at = now_ms();
        let t = Instant::now();
        log.record(audit(i, at), None).await;
        without.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        log.record(audit(i, at), Some(&usage(n + i, 0, at))).await;
        with.push(t.elapsed().as_secs_f64() * 1e3);
    }
    with.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    println!("## per-request log write, one writer, 4000 each, interleaved");
    println!();
    println!("| write | p50 ms | p99 ms |");
    println!("|---|---:|---:|");
    println!(
        "| audit record only | {:.3} | {:.3} |",
        pct(&without, 0.5),
        pct(&without, 0.99)
    );
    println!(
        "| audit + usage record | {:.3} | {:.3} |",
        pct(&with, 0.5),
        pct(&with, 0.99)
    );
    println!();

    // 3. Queries over 30 days of hourly rollups for one tenant among 100.
    let qdir = tempfile::tempdir()?;
    let qstore = SqliteUsageStore::open(&qdir.path().join("usage.sqlite"))?;
    let start = now_ms() - now_ms() % (24 * HOUR_MS) - 30 * 24 * HOUR_MS;
    for hour in 0..30 * 24u64 {
        let records = (0..100 * 10)
            .map(|i| usage(i, i % 100, start + hour * HOUR_MS + i as u64))
            .collect();
        qstore
            .apply(fold(
                Batch {
                    id: format!("h{hour}"),
                    records,
                },
                &[],
            ))
            .await?;
    }
    for (name, bucket_ms) in [
        ("30 days by hour (720 buckets)", HOUR_MS),
        ("30 days by day (30 buckets)", 24 * HOUR_MS),
    ] {
        let mut lat = Vec::new();
        for _ in 0..1000 {
            let t = Instant::now();
            let hourly = qstore
                .rollups("tenant-42", start, start + 30 * 24 * HOUR_MS)
                .await?;
            let buckets = bucket(&hourly, bucket_ms);
            assert_eq!(buckets.len() as u64, 30 * 24 * HOUR_MS / bucket_ms);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "| query: {name} | p50 {:.2} ms | p99 {:.2} ms |",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
    }
    println!("(720,000 records over 30 days, 100 tenants)");
    Ok(())
}
