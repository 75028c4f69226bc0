//! The result cache and single flight, against a real origin on 127.0.0.1 and real
//! `imgfleet` processes: a herd of identical requests makes one fetch and one resize; the
//! cache survives a restart, treats damaged and half-written entries on disk as misses
//! (kill -9 mid-write included), holds its byte cap; purges, revocations and removed origins take
//! effect within the SLA; on a fleet, one host serves another's result without resizing,
//! concurrent requests on two hosts resize once, and a purge reaches every host.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use imgfleet_tests::host::{DEFAULT_TENANT, Host, Reply, request, sign_url as sign, within_sla};
use imgfleet_tests::images;
use imgfleet_tests::origin::Origin;
use imgfleet_tests::traffic::{UsageAt, exported_usage};

use crate::fleet_kit::Fleet;

const IMG: &str = "/v1/img/{*rest}";

fn get(h: &Host, path: &str) -> Reply {
    request("GET", &h.url(path), b"", &[])
}

fn width_of(body: &[u8]) -> u32 {
    image::load_from_memory(body)
        .unwrap_or_else(|e| panic!("the answer is not an image ({e}): {} bytes", body.len()))
        .width()
}

/// `hit`, `miss` or `revalidated`, from the answer's Server-Timing.
fn cache_of(r: &Reply) -> String {
    let timing = r.header("server-timing").unwrap_or("");
    timing
        .split(',')
        .find_map(|m| m.trim().strip_prefix("cache;desc="))
        .unwrap_or_else(|| panic!("no cache metric in Server-Timing `{timing}`"))
        .to_string()
}

fn origin_with_photo(path: &str, w: u32, h: u32) -> Origin {
    let origin = Origin::start();
    origin.put(path, images::jpeg(&images::photo(w, h, 5), 85));
    origin
}

fn add_web_origin(h: &Host, origin: &Origin, max_age_secs: u64) {
    h.add_origin(serde_json::json!({
        "name": "web", "type": "http", "base_url": format!("{}/img/", origin.base),
        "allow_private": true, "max_age_secs": max_age_secs,
    }));
}

/// The signed GETs' usage records once `n` are in (the meter ships within seconds).
fn image_records(at: &UsageAt, n: usize) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        let records: Vec<_> = exported_usage(at)
            .into_iter()
            .filter(|r| r["route"].as_str() == Some(IMG))
            .collect();
        if records.len() >= n {
            return records;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} of {n} signed GETs metered",
            records.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn count(records: &[serde_json::Value], cache: &str) -> usize {
    records
        .iter()
        .filter(|r| r["cache"].as_str() == Some(cache))
        .count()
}

/// `n` GETs of `path` at once across `hosts` (round robin), all released together.
fn herd(hosts: &[&Host], path: &str, n: usize) -> Vec<Reply> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (url, barrier) = (hosts[i % hosts.len()].url(path), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                request("GET", &url, b"", &[])
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn two_hundred_identical_requests_make_one_fetch_and_one_resize() {
    let h = Host::start("spin.toml", &[]);
    let origin = origin_with_photo("/img/cat.jpg", 1200, 800);
    // A slow origin: every request arrives while the first is still being made.
    origin.delay("/img/cat.jpg", Duration::from_millis(1500));
    add_web_origin(&h, &origin, 3600);
    let (_, key) = h.url_key();
    let path = sign(&key, "web", "w=300", "cat.jpg", &[]);

    let replies = herd(&[&h], &path, 200);
    for r in &replies {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.body, replies[0].body, "every answer is the same image");
    }
    assert_eq!(width_of(&replies[0].body), 300);
    assert_eq!(origin.requests("/img/cat.jpg"), 1, "one origin fetch");
    let misses = replies.iter().filter(|r| cache_of(r) == "miss").count();
    assert_eq!(misses, 1, "one request made it; the others waited for it");

    // Billing agrees: one miss with the resize's CPU, 199 hits with none of their own.
    let records = image_records(&UsageAt::DataDir(h.data.path()), 200);
    assert_eq!(records.len(), 200, "each request metered once");
    assert_eq!((count(&records, "miss"), count(&records, "hit")), (1, 199));
    let cpu_of = |cache: &str| -> u64 {
        records
            .iter()
            .filter(|r| r["cache"] == cache)
            .map(|r| r["cpu_ns"].as_u64().unwrap_or(0))
            .sum()
    };
    assert!(cpu_of("miss") > 0, "the miss carries the resize");
    assert_eq!(cpu_of("hit"), 0, "hits resize nothing");
    assert!(
        records
            .iter()
            .all(|r| r["output"]["width"] == 300 && r["status"] == 200),
        "hits are metered for the image they got"
    );
}

/// Every file of the host's result cache, but not its shard directories.
fn cache_files(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for shard in std::fs::read_dir(data.join("results")).unwrap().flatten() {
        if shard.path().is_dir() {
            files.extend(
                std::fs::read_dir(shard.path())
                    .unwrap()
                    .flatten()
                    .map(|f| f.path()),
            );
        }
    }
    files
}

#[test]
fn the_cache_survives_a_restart_and_damaged_entries_are_misses() {
    let h = Host::start("spin.toml", &[]);
    let origin = origin_with_photo("/img/cat.jpg", 800, 600);
    add_web_origin(&h, &origin, 3600);
    let (_, key) = h.url_key();
    let paths: Vec<String> = [100, 200, 300]
        .iter()
        .map(|w| sign(&key, "web", &format!("w={w}"), "cat.jpg", &[]))
        .collect();
    let made: Vec<Reply> = paths.iter().map(|p| get(&h, p)).collect();
    for r in &made {
        assert_eq!((r.status, cache_of(r).as_str()), (200, "miss"));
    }
    let fetched = origin.requests("/img/cat.jpg");
    assert_eq!(fetched, 3, "each size fetched its source once");
    for (p, r) in paths.iter().zip(&made) {
        let again = get(&h, p);
        assert_eq!((again.status, cache_of(&again).as_str()), (200, "hit"));
        assert_eq!(again.body, r.body);
    }

    // A restart on the same data: served from disk, the origin not asked.
    let data = h.stop();
    let h = Host::start_in(data, "spin.toml", &[], &[]);
    for (p, r) in paths.iter().zip(&made) {
        let again = get(&h, p);
        assert_eq!((again.status, cache_of(&again).as_str()), (200, "hit"));
        assert_eq!(again.body, r.body, "the same bytes after a restart");
    }
    assert_eq!(origin.requests("/img/cat.jpg"), fetched);

    // Damage every entry on disk while the host is down: bits flipped in some, others
    // cut short. Each is a miss (made again, right), never served as it is.
    let data = h.stop();
    let files = cache_files(data.path());
    assert!(
        files.len() >= 4,
        "three results and a source version: {files:?}"
    );
    for (i, f) in files.iter().enumerate() {
        let mut bytes = std::fs::read(f).unwrap();
        if i % 2 == 0 {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x20;
        } else {
            bytes.truncate(bytes.len() * 2 / 3);
        }
        std::fs::write(f, bytes).unwrap();
    }
    let h = Host::start_in(data, "spin.toml", &[], &[]);
    for (p, r) in paths.iter().zip(&made) {
        let again = get(&h, p);
        assert_eq!(again.status, 200);
        assert_eq!(cache_of(&again), "miss", "a damaged entry is a miss");
        assert_eq!(again.body, r.body);
    }
    assert!(origin.requests("/img/cat.jpg") > fetched);
    let metrics = String::from_utf8(request("GET", &h.url("/metrics"), b"", &[]).body).unwrap();
    let damaged = metrics
        .lines()
        .find_map(|l| l.strip_prefix("imgfleet_result_cache_damaged "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(
        damaged.is_some_and(|d| d >= 3.0),
        "damaged entries counted: {damaged:?}"
    );

    // A revoked URL key stops its cached results within the SLA; another key's URL for
    // the same output is still served from the cache.
    let (key_id, key2) = h.url_key();
    let cached = sign(&key2, "web", "w=100", "cat.jpg", &[]);
    assert_eq!(cache_of(&get(&h, &cached)), "hit");
    h.admin(
        "POST",
        &format!("/admin/tenants/{DEFAULT_TENANT}/url-keys/{key_id}/revoke"),
        None,
    );
    within_sla("the revocation", || get(&h, &cached).status == 403);
    assert_eq!(cache_of(&get(&h, &paths[0])), "hit");

    // A purge of the path: the next request is a miss, on this host at once.
    let purge = h.admin(
        "POST",
        &format!("/admin/tenants/{DEFAULT_TENANT}/purges"),
        Some(serde_json::json!({"origin": "web", "path": "cat.jpg"})),
    );
    assert_eq!(
        purge.status,
        201,
        "{}",
        String::from_utf8_lossy(&purge.body)
    );
    let before = origin.requests("/img/cat.jpg");
    let after = get(&h, &paths[0]);
    assert_eq!((after.status, cache_of(&after).as_str()), (200, "miss"));
    assert_eq!(
        origin.requests("/img/cat.jpg"),
        before + 1,
        "the source fetched anew"
    );
    let bad = h.admin(
        "POST",
        &format!("/admin/tenants/{DEFAULT_TENANT}/purges"),
        Some(serde_json::json!({"origin": "web"})),
    );
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "invalid_request")
    );

    // A removed origin stops its cached results within the SLA. (Results made within the
    // purge's clock margin are misses too: wait it out first.)
    std::thread::sleep(Duration::from_millis(2100));
    get(&h, &paths[1]);
    assert_eq!(cache_of(&get(&h, &paths[1])), "hit");
    h.admin(
        "DELETE",
        &format!("/admin/tenants/{DEFAULT_TENANT}/origins/web"),
        None,
    );
    within_sla("the removal", || get(&h, &paths[1]).status == 404);
}

#[test]
fn kill_9_while_results_are_written_leaves_nothing_torn_that_is_served() {
    let origin = origin_with_photo("/img/big.jpg", 2400, 1600);
    let mut data = tempfile::tempdir().unwrap();
    let mut key = String::new();
    // Large PNGs: each takes a while to write, so kills land mid-write.
    let widths = [1900, 1950, 2000, 2050, 2100, 2150];
    for round in 0..3 {
        let h = Host::start_in(data, "spin.toml", &[], &[]);
        if round == 0 {
            add_web_origin(&h, &origin, 3600);
            key = h.url_key().1;
        }
        let urls: Vec<String> = widths
            .iter()
            .map(|w| {
                h.url(&sign(
                    &key,
                    "web",
                    &format!("w={w}&fmt=png"),
                    "big.jpg",
                    &[],
                ))
            })
            .collect();
        let senders: Vec<_> = urls
            .into_iter()
            .map(|u| std::thread::spawn(move || request("GET", &u, b"", &[])))
            .collect();
        std::thread::sleep(Duration::from_millis(1500 + 700 * round));
        data = h.kill_9();
        for s in senders {
            let _ = s.join();
        }
    }
    let h = Host::start_in(data, "spin.toml", &[], &[]);
    let leftovers: Vec<_> = cache_files(h.data.path())
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".part"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "unfinished writes removed at start: {leftovers:?}"
    );
    for w in widths {
        let q = format!("w={w}&fmt=png");
        let got = get(&h, &sign(&key, "web", &q, "big.jpg", &[]));
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        // The same bytes a fresh resize makes: nothing torn was served.
        let fresh = h.post(
            &format!("/v1/resize?{q}"),
            &origin_photo(&origin, "/img/big.jpg"),
            &[],
        );
        assert_eq!(fresh.status, 200);
        assert!(
            got.body == fresh.body,
            "w={w}: the served result differs from a fresh one"
        );
    }
}

fn origin_photo(origin: &Origin, path: &str) -> Vec<u8> {
    request("GET", &format!("{}{path}", origin.base), b"", &[]).body
}

#[test]
fn eviction_holds_the_byte_cap() {
    // The disk's cap alone: nothing kept in memory.
    let h = Host::start(
        "spin.toml",
        &["--result-cache-mb", "1", "--memory-cache-mb", "0"],
    );
    let origin = origin_with_photo("/img/cat.jpg", 1200, 800);
    add_web_origin(&h, &origin, 3600);
    let (_, key) = h.url_key();
    let path = |w: u32| sign(&key, "web", &format!("w={w}&fmt=png"), "cat.jpg", &[]);
    let mut made = 0u64;
    for w in (300..=640).step_by(20) {
        let r = get(&h, &path(w));
        assert_eq!(r.status, 200);
        made += r.body.len() as u64;
    }
    assert!(
        made > 2 << 20,
        "the test makes more than the cap: {made} bytes"
    );
    let on_disk: u64 = cache_files(h.data.path())
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(
        on_disk <= 1 << 20,
        "{on_disk} bytes on disk over a 1 MiB cap"
    );
    // The newest stay, the oldest went.
    assert_eq!(cache_of(&get(&h, &path(640))), "hit");
    assert_eq!(cache_of(&get(&h, &path(300))), "miss");
}

#[test]
fn on_a_fleet_one_host_serves_anothers_result_and_a_purge_reaches_every_host() {
    let fleet = Fleet::start(&[1, 1], &[]);
    let (a, b) = (fleet.host(0), fleet.host(1));
    let origin = origin_with_photo("/img/cat.jpg", 1200, 800);
    add_web_origin(a, &origin, 3600);
    let (_, key) = a.url_key();
    let path = sign(&key, "web", "w=300", "cat.jpg", &[]);
    let mut first_tries = 0;
    let made = {
        let started = Instant::now();
        loop {
            first_tries += 1;
            let r = get(a, &path);
            if r.status == 200 {
                break r;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "{}", r.status);
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(cache_of(&made), "miss");
    // Host B has never seen it: the fleet's copy, no fetch, no resize.
    let mut from_b = get(b, &path);
    let mut b_tries = 1;
    let started = Instant::now();
    while from_b.status != 200 && started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
        from_b = get(b, &path);
        b_tries += 1;
    }
    assert_eq!((from_b.status, cache_of(&from_b).as_str()), (200, "hit"));
    assert_eq!(from_b.body, made.body);
    assert_eq!(origin.requests("/img/cat.jpg"), 1);

    // A herd on both hosts at once, on a slow origin: each host fetches the source once,
    // and the fleet resizes once.
    origin.delay("/img/cat.jpg", Duration::from_millis(1000));
    let herd_path = sign(&key, "web", "w=240", "cat.jpg", &[]);
    let replies = herd(&[a, b], &herd_path, 40);
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.body == replies[0].body)
    );
    assert_eq!(width_of(&replies[0].body), 240);
    assert_eq!(replies.iter().filter(|r| cache_of(r) == "miss").count(), 1);
    assert_eq!(origin.requests("/img/cat.jpg"), 3, "one fetch per host");
    origin.delay("/img/cat.jpg", Duration::ZERO);

    // A purge on one host reaches the other.
    let purge = a.admin(
        "POST",
        &format!("/admin/tenants/{DEFAULT_TENANT}/purges"),
        Some(serde_json::json!({"origin": "web", "path": "", "prefix": true})),
    );
    assert_eq!(purge.status, 201);
    let mut sent = 0;
    within_sla("the purge on host B", || {
        sent += 1;
        cache_of(&get(b, &path)) == "miss"
    });
    assert_eq!(cache_of(&get(a, &herd_path)), "miss");

    let sent = sent + 1 + 40 + first_tries + b_tries;
    let records = image_records(&UsageAt::Database(&fleet.db), sent);
    assert_eq!(records.len(), sent, "each request metered once");
    assert_eq!(count(&records, "miss"), 4, "{records:?}");
}
