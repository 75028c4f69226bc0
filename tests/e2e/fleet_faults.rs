//! The fleet's shared stores under the single host's rules (issue: nothing served that is
//! not recorded): a host on JetStream and PostgreSQL under a steady mixed load while
//! PostgreSQL goes read-only or down, or JetStream runs out of storage. Each scenario shows
//! what clients saw — only the documented refusals, within the request budget — and that
//! the host recovers by itself, every accepted job finishes, and usage equals what was
//! served, exactly once each.

use std::time::{Duration, Instant};

use imgfleet_tests::host::Host;
use imgfleet_tests::nats::Nats;
use imgfleet_tests::postgres::Postgres;
use imgfleet_tests::traffic::{
    Load, UsageAt, assert_clear_errors, assert_jobs_finish, assert_usage_exact, recovery, report,
    small_jpeg,
};

fn fleet_host(nats: &Nats, db: Option<&str>, extra: &[&str]) -> Host {
    let urls = nats.urls();
    let mut args = vec!["--queue", "jetstream", "--nats-url", &urls];
    if let Some(db) = db {
        args.extend(["--database-url", db]);
    }
    args.extend_from_slice(extra);
    Host::start("spin.toml", &args)
}

fn create_tenant(h: &Host, id: &str) -> (u16, String) {
    let r = h.admin(
        "POST",
        "/admin/tenants",
        Some(serde_json::json!({ "id": id })),
    );
    let code = if r.status >= 400 {
        r.error_code()
    } else {
        String::new()
    };
    (r.status, code)
}

/// Until the admin API can create a tenant again: how long that took.
fn writes_recover(h: &Host, within: Duration) -> Duration {
    let back = Instant::now();
    for n in 0.. {
        let (status, code) = create_tenant(h, &format!("after-{n}"));
        if status == 201 {
            return back.elapsed();
        }
        assert!(
            back.elapsed() < within,
            "admin writes did not recover: {status} {code}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    unreachable!()
}

/// A request made while the dependency is away is refused with 503, one of `codes` and a
/// `Retry-After`, promptly.
fn assert_refused(h: &Host, path: &str, codes: &[&str]) {
    let started = Instant::now();
    // A probe's usage is not the load's: the usage check knows probes by their ids.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "probe-refused-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let r = h.post(path, &small_jpeg(), &[("x-request-id", &id)]);
    let code = if r.status >= 400 {
        r.error_code()
    } else {
        String::new()
    };
    assert!(
        r.status == 503 && codes.contains(&code.as_str()),
        "{path}: {} {code}, wanted 503 {codes:?}",
        r.status
    );
    assert!(r.header("retry-after").is_some(), "{path}: no Retry-After");
    println!("{path}: 503 {code} in {:?}", started.elapsed());
}

#[test]
fn postgresql_read_only_mid_load() {
    let pg = Postgres::start();
    let db = pg.database();
    let nats = Nats::single();
    let h = fleet_host(&nats, Some(&db), &[]);
    let load = Load::start(&h.base, &h.key, 3, small_jpeg(), "w=24");
    std::thread::sleep(Duration::from_secs(2));
    pg.read_only(true);
    std::thread::sleep(Duration::from_millis(500));
    // Management says so; keys already known keep working (the auth cache reads, and reads
    // still work on a read-only database, even over a new connection).
    assert_eq!(
        create_tenant(&h, "while-read-only"),
        (503, "identity_store_unavailable".to_string())
    );
    // A new job needs the job store's write: refused, not accepted unrecorded.
    assert_refused(&h, "/v1/jobs?w=24", &["store_unavailable"]);
    std::thread::sleep(Duration::from_secs(3));
    pg.read_only(false);
    let recovered = writes_recover(&h, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(1));
    let sent = load.finish();
    report("PostgreSQL read-only", &sent, recovered);
    assert_clear_errors("PostgreSQL read-only", &sent, &["503 store_unavailable"]);
    assert_jobs_finish(
        "PostgreSQL read-only",
        &h.base,
        &h.key,
        &sent,
        Duration::from_secs(60),
    );
    assert_usage_exact("PostgreSQL read-only", &UsageAt::Database(&db), &sent);
}

#[test]
fn postgresql_down_mid_load() {
    let mut pg = Postgres::start();
    let db = pg.database();
    let nats = Nats::single();
    let h = fleet_host(&nats, Some(&db), &[]);
    let load = Load::start(&h.base, &h.key, 3, small_jpeg(), "w=24");
    std::thread::sleep(Duration::from_secs(2));
    pg.stop();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        create_tenant(&h, "while-down"),
        (503, "identity_store_unavailable".to_string())
    );
    assert_refused(&h, "/v1/jobs?w=24", &["store_unavailable"]);
    std::thread::sleep(Duration::from_secs(3));
    pg.restart();
    let recovered = writes_recover(&h, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(1));
    let sent = load.finish();
    report("PostgreSQL down", &sent, recovered);
    assert_clear_errors("PostgreSQL down", &sent, &["503 store_unavailable"]);
    assert_jobs_finish(
        "PostgreSQL down",
        &h.base,
        &h.key,
        &sent,
        Duration::from_secs(60),
    );
    assert_usage_exact("PostgreSQL down", &UsageAt::Database(&db), &sent);
}

/// A stream of the test's own fills the server's file store until JetStream refuses more;
/// deleting it gives the space back.
async fn fill_storage(nats: &Nats) -> String {
    let client = async_nats::connect(nats.urls()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "BALLAST".into(),
        subjects: vec!["ballast.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("the ballast stream");
    let chunk = bytes::Bytes::from(vec![7u8; 512 * 1024]);
    for n in 0..1000 {
        let refused = match js.publish(format!("ballast.{n}"), chunk.clone()).await {
            Ok(ack) => ack.await.err(),
            Err(e) => Some(e),
        };
        if let Some(e) = refused {
            return e.to_string();
        }
    }
    panic!("JetStream took 500 MB past its 96 MB limit");
}

async fn free_storage(nats: &Nats) {
    let client = async_nats::connect(nats.urls()).await.expect("connect");
    async_nats::jetstream::new(client)
        .delete_stream("BALLAST")
        .await
        .expect("deleting the ballast stream");
}

#[test]
fn jetstream_out_of_storage_mid_load() {
    let rt = crate::fleet_kit::runtime();
    let nats = Nats::single_with_storage("96MB");
    // Staging reserves its 16 MiB in the store; the queues take what is left.
    let h = fleet_host(
        &nats,
        None,
        &["--staging-mb", "16", "--fleet-cache-mb", "8"],
    );
    let load = Load::start(&h.base, &h.key, 3, small_jpeg(), "w=24");
    std::thread::sleep(Duration::from_secs(2));
    let refusal = rt.block_on(fill_storage(&nats));
    println!("JetStream refused the ballast: {refusal}");
    // New work is staged on the same servers before it is queued: refused there as full.
    for path in ["/v1/resize?w=24", "/v1/jobs?w=24"] {
        assert_refused(&h, path, &["staging_full", "queue_full"]);
    }
    std::thread::sleep(Duration::from_secs(2));
    rt.block_on(free_storage(&nats));
    let recovered = recovery(&h.base, &h.key, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let sent = load.finish();
    report("JetStream out of storage", &sent, recovered);
    assert_clear_errors(
        "JetStream out of storage",
        &sent,
        // A synchronous resize already running when the store filled cannot have its
        // completion queued: it waits out its budget.
        &[
            "503 staging_full",
            "503 queue_full",
            "504 deadline_exceeded",
        ],
    );
    assert_jobs_finish(
        "JetStream out of storage",
        &h.base,
        &h.key,
        &sent,
        Duration::from_secs(60),
    );
    assert_usage_exact(
        "JetStream out of storage",
        &UsageAt::DataDir(h.data.path()),
        &sent,
    );
}
