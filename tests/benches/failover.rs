//! How long clients wait when the node leading the jobs queue dies under load, with three
//! partitions per queue (the default on a cluster of three) and with one stream per queue
//! (`--nats-partitions 1`), side by side:
//! the runs alternate between the two layouts so that both meet the same machine.
//!
//! `cargo bench -p imgfleet-tests --bench failover [-- --runs N --clients C --partitions P]
//! [--rate R]`
//! (needs nats-server 2.10+ and PostgreSQL, which `./dev.sh test` installs, and the release
//! binary and components, which `./dev.sh release` builds). Each run starts a fresh fleet: three JetStream nodes,
//! PostgreSQL, three hosts of one slot, C clients (6) sending synchronous resizes and jobs;
//! 3 s into the load the leader is `kill -9`'d and the load goes on for 12 s.
//!
//! Two figures per run: the longest time after the kill in which no request succeeded (the
//! service's interruption: when publishes and deliveries resumed), and the slowest answer to
//! a request that was in flight at the kill (whose job or completion may sit in a partition
//! that waits for its election).
//!
//! With `--rate R` the load is open-loop instead (R requests a second whatever the answers,
//! so a stalled client hides no one else's wait), and each run reports the interruption,
//! the p99 and maximum latency of the requests sent in the 10 s after the kill, errors, and
//! usage records counted twice or missing (read back from the fleet's usage store).
//! `--against <imgfleet binary>` runs another build (e.g. an earlier commit's) in turn
//! with this one, so that both meet the same machine.

#[path = "../e2e/fleet_kit.rs"]
mod fleet_kit;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use imgfleet_tests::bench::arg;
use imgfleet_tests::traffic::{UsageAt, exported_usage, tally};

const TARGET: Duration = Duration::from_secs(5);

struct Row {
    partitions: usize,
    gap: Duration,
    in_flight: Duration,
    answered_after: usize,
    had_errors: bool,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The latency of requests sent within `window` after the kill: (p99, max, how many).
fn window_latency(
    killed: &fleet_kit::LeaderKilled,
    window: Duration,
) -> (Duration, Duration, usize) {
    latency_between(&killed.sent, killed.killed_at, killed.killed_at + window)
}

/// The requests sent in [from, to).
fn sent_between(
    sent: &[imgfleet_tests::traffic::Sent],
    from: std::time::Instant,
    to: std::time::Instant,
) -> Vec<&imgfleet_tests::traffic::Sent> {
    sent.iter()
        .filter(|s| {
            let sent_at = s.at - s.took;
            sent_at >= from && sent_at < to
        })
        .collect()
}

/// The latency of the requests sent in [from, to): (p99, max, how many).
fn latency_between(
    sent: &[imgfleet_tests::traffic::Sent],
    from: std::time::Instant,
    to: std::time::Instant,
) -> (Duration, Duration, usize) {
    let mut took: Vec<Duration> = sent_between(sent, from, to)
        .into_iter()
        .map(|s| s.took)
        .collect();
    took.sort();
    let n = took.len();
    if n == 0 {
        return (Duration::ZERO, Duration::ZERO, 0);
    }
    (
        took[((n - 1) as f64 * 0.99).round() as usize],
        took[n - 1],
        n,
    )
}

/// The five slowest requests sent in `window` after the kill (to look them up in the
/// hosts' logs by request id).
fn print_slowest(
    sent: &[imgfleet_tests::traffic::Sent],
    from: Instant,
    window: Duration,
    what: &str,
) {
    let mut sent: Vec<&imgfleet_tests::traffic::Sent> = sent
        .iter()
        .filter(|s| {
            let sent_at = s.at - s.took;
            sent_at >= from && sent_at < from + window
        })
        .collect();
    sent.sort_by_key(|s| std::cmp::Reverse(s.took));
    for s in sent.iter().take(5) {
        let sent_after = (s.at - s.took).duration_since(from);
        println!(
            "    slow: {} sent {} after {what}, took {}, {:?} {:?}",
            s.request_id,
            secs(sent_after),
            secs(s.took),
            s.status,
            s.code
        );
    }
}

/// Usage records counted twice (by record id), and answered requests with no record.
fn usage_check(killed: &fleet_kit::LeaderKilled) -> (usize, usize) {
    usage_of(&killed.fleet, &killed.sent)
}

fn usage_of(fleet: &fleet_kit::Fleet, sent: &[imgfleet_tests::traffic::Sent]) -> (usize, usize) {
    let answered: std::collections::BTreeSet<&str> = sent
        .iter()
        .filter(|s| s.status.is_some())
        .map(|s| s.request_id.as_str())
        .collect();
    // Longer than the usage queue's visibility timeout (60 s): a batch whose delivery or
    // release was lost in the failover comes back after it; missing past that is lost.
    let deadline = std::time::Instant::now() + Duration::from_secs(75);
    loop {
        let records = exported_usage(&UsageAt::Database(&fleet.db));
        let mut ids = std::collections::BTreeMap::<&str, usize>::new();
        for r in &records {
            *ids.entry(r["id"].as_str().unwrap_or_default()).or_default() += 1;
        }
        let recorded: std::collections::BTreeSet<&str> = records
            .iter()
            .filter_map(|r| r["request_id"].as_str())
            .collect();
        let missing = answered.iter().filter(|id| !recorded.contains(*id)).count();
        if missing == 0 || std::time::Instant::now() > deadline {
            return (ids.values().filter(|n| **n > 1).count(), missing);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The builds compared: this one, and `--against <binary>` if given.
fn builds() -> Vec<(String, Option<PathBuf>)> {
    let mut builds = vec![("this build".to_string(), None)];
    let against = std::env::args()
        .skip_while(|a| a != "--against")
        .nth(1)
        .map(PathBuf::from);
    if let Some(bin) = against {
        builds.push(("--against".to_string(), Some(bin)));
    }
    builds
}

fn open_loop(runs: usize, rate: f64, layouts: &[usize]) {
    const WINDOW: Duration = Duration::from_secs(10);
    let builds = builds();
    println!(
        "open loop: {rate} requests/s over three hosts; goal: interruption <= 2 s, no request sent in the {WINDOW:?} after the kill slower than 3 s, no errors, usage exact"
    );
    print_against(&builds);
    println!(
        "| build | layout | run | interruption | sent in the window | p99 | max | errors | counted twice | not counted |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|---:|---:|");
    let mut rows: Vec<(usize, usize, Duration, Duration, Duration, bool, usize)> = Vec::new();
    for run in 1..=runs {
        for (b, (label, bin)) in builds.iter().enumerate() {
            for &partitions in layouts {
                let killed = fleet_kit::kill_the_jobs_leader_under_load_of(
                    bin.as_deref(),
                    partitions,
                    fleet_kit::Arrivals::Open(rate),
                );
                let (p99, max, n) = window_latency(&killed, WINDOW);
                let errors: Vec<String> = tally(&killed.sent)
                    .into_iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "200" | "202"))
                    .map(|(k, n)| format!("{k}: {n}"))
                    .collect();
                let (twice, missing) = usage_check(&killed);
                println!(
                    "| {label} | {} | {run} | {} | {n} | {} | {} | {} | {twice} | {missing} |",
                    layout(partitions),
                    secs(killed.gap),
                    secs(p99),
                    secs(max),
                    if errors.is_empty() {
                        "none".into()
                    } else {
                        errors.join(", ")
                    },
                );
                if std::env::var_os("IMGFLEET_BENCH_SLOWEST").is_some() {
                    print_slowest(&killed.sent, killed.killed_at, WINDOW, "the kill");
                    for line in fleet_kit::consumers(&killed.fleet.nats, "jobs", partitions) {
                        println!("    {line}");
                    }
                }
                rows.push((
                    b,
                    partitions,
                    killed.gap,
                    p99,
                    max,
                    !errors.is_empty(),
                    twice + missing,
                ));
            }
        }
    }
    println!();
    println!(
        "| build | layout | runs | interruption: median | worst | runs <= 2 s | p99: worst | max: worst | runs with a request > 3 s | runs with errors | usage off by |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (b, (label, _)) in builds.iter().enumerate() {
        for &partitions in layouts {
            let mine: Vec<_> = rows
                .iter()
                .filter(|r| r.0 == b && r.1 == partitions)
                .collect();
            let gaps: Vec<Duration> = mine.iter().map(|r| r.2).collect();
            println!(
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                layout(partitions),
                mine.len(),
                secs(median(gaps.clone())),
                secs(gaps.iter().max().copied().unwrap_or_default()),
                gaps.iter()
                    .filter(|g| **g <= Duration::from_secs(2))
                    .count(),
                secs(mine.iter().map(|r| r.3).max().unwrap_or_default()),
                secs(mine.iter().map(|r| r.4).max().unwrap_or_default()),
                mine.iter().filter(|r| r.4 > Duration::from_secs(3)).count(),
                mine.iter().filter(|r| r.5).count(),
                mine.iter().map(|r| r.6).sum::<usize>(),
            );
        }
    }
}

/// Answers other than 200 and 202 among `sent`, by status and code.
fn errors_in(sent: &[&imgfleet_tests::traffic::Sent]) -> String {
    let owned: Vec<imgfleet_tests::traffic::Sent> = sent.iter().map(|s| (*s).clone()).collect();
    let errors: Vec<String> = tally(&owned)
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "200" | "202"))
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    if errors.is_empty() {
        "none".into()
    } else {
        errors.join(", ")
    }
}

/// Names the other build of an `--against` run, and ends the preamble before a table.
fn print_against(builds: &[(String, Option<PathBuf>)]) {
    if let Some((_, Some(bin))) = builds.get(1) {
        println!("--against: {}", bin.display());
    }
    println!();
}

/// `--brownout node|database`: p99, maximum and errors of the requests sent in 10 s of calm
/// and in the 12 s of brownout that follow, per run.
fn brownouts(runs: usize, rate: f64, kind: &str) {
    let slowness = match kind {
        "node" => fleet_kit::Slowness::PausedNode {
            stopped: Duration::from_secs(3),
            running: Duration::from_secs(1),
        },
        "database" => fleet_kit::Slowness::LockedTable {
            table: "imgfleet_jobs",
            held: Duration::from_secs(3),
        },
        other => panic!("--brownout node|database, not {other}"),
    };
    let builds = builds();
    println!("brownout: {slowness:?}; open loop, {rate} requests/s over three hosts");
    print_against(&builds);
    println!(
        "| build | run | calm: sent | p99 | max | errors | brownout: sent | p99 | max | errors | counted twice | not counted |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|");
    for run in 1..=runs {
        for (label, bin) in &builds {
            let b = fleet_kit::brownout_under_load(bin.as_deref(), rate, slowness);
            let (calm_p99, calm_max, calm_n) = latency_between(&b.sent, b.calm.0, b.calm.1);
            let (p99, max, n) = latency_between(&b.sent, b.brown.0, b.brown.1);
            let (twice, missing) = usage_of(&b.fleet, &b.sent);
            println!(
                "| {label} | {run} | {calm_n} | {} | {} | {} | {n} | {} | {} | {} | {twice} | {missing} |",
                secs(calm_p99),
                secs(calm_max),
                errors_in(&sent_between(&b.sent, b.calm.0, b.calm.1)),
                secs(p99),
                secs(max),
                errors_in(&sent_between(&b.sent, b.brown.0, b.brown.1)),
            );
            if std::env::var_os("IMGFLEET_BENCH_SLOWEST").is_some() {
                let window = b.brown.1 - b.brown.0;
                print_slowest(&b.sent, b.brown.0, window, "the brownout began");
            }
        }
    }
}

/// `--rolling nats|hosts`: latency, errors and usage of the requests sent while each
/// nats-server (lame duck mode) or each host (drained, SIGTERM) is restarted in turn.
fn rolling(runs: usize, rate: f64, kind: &str) {
    let what = match kind {
        "nats" => fleet_kit::Rolling::NatsServers,
        "hosts" => fleet_kit::Rolling::Hosts,
        other => panic!("--rolling nats|hosts, not {other}"),
    };
    let builds = builds();
    println!("rolling restart: {what:?}; open loop, {rate} requests/s over three hosts");
    print_against(&builds);
    println!(
        "| build | run | restarts took | sent meanwhile | p99 | max | errors (whole run) | counted twice | not counted |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---:|---:|");
    for run in 1..=runs {
        for (label, bin) in &builds {
            let r = fleet_kit::rolling_restart_under_load(bin.as_deref(), rate, what);
            let (p99, max, n) = latency_between(&r.sent, r.window.0, r.window.1);
            let (twice, missing) = usage_of(&r.fleet, &r.sent);
            let all: Vec<&imgfleet_tests::traffic::Sent> = r.sent.iter().collect();
            println!(
                "| {label} | {run} | {} | {n} | {} | {} | {} | {twice} | {missing} |",
                secs(r.window.1 - r.window.0),
                secs(p99),
                secs(max),
                errors_in(&all),
            );
        }
    }
}

fn main() {
    let runs = arg("--runs", 5);
    let clients = arg("--clients", 6);
    let layouts: Vec<usize> = match arg("--partitions", 0) {
        0 => vec![3, 1],
        n => vec![n],
    };
    let rate = arg("--rate", 0);
    let brownout = std::env::args().skip_while(|a| a != "--brownout").nth(1);
    if let Some(kind) = brownout {
        return brownouts(runs, rate.max(1) as f64, &kind);
    }
    if let Some(kind) = std::env::args().skip_while(|a| a != "--rolling").nth(1) {
        return rolling(runs, rate.max(1) as f64, &kind);
    }
    if rate > 0 {
        return open_loop(runs, rate as f64, &layouts);
    }
    println!("{clients} clients; target: publishes and deliveries resume within {TARGET:?}");
    println!();
    println!(
        "| layout | run | longest time without a successful answer | slowest answer in flight at the kill | answered after the kill | errors (whole run) |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    let mut rows = Vec::new();
    for run in 1..=runs {
        for &partitions in &layouts {
            let killed = fleet_kit::kill_the_jobs_leader_under_load(
                partitions,
                fleet_kit::Arrivals::Closed(clients),
            );
            let after = |s: &&imgfleet_tests::traffic::Sent| s.at > killed.killed_at;
            let answered_after = killed
                .sent
                .iter()
                .filter(after)
                .filter(|s| matches!(s.status, Some(200 | 202)))
                .count();
            let in_flight = killed
                .sent
                .iter()
                .filter(after)
                .filter(|s| s.at - s.took <= killed.killed_at)
                .map(|s| s.took)
                .max()
                .unwrap_or_default();
            let errors: Vec<String> = tally(&killed.sent)
                .into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "200" | "202"))
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let row = Row {
                partitions,
                gap: killed.gap,
                in_flight,
                answered_after,
                had_errors: !errors.is_empty(),
            };
            println!(
                "| {} | {run} | {} | {} | {} | {} |",
                layout(partitions),
                secs(row.gap),
                secs(row.in_flight),
                row.answered_after,
                if errors.is_empty() {
                    "none".into()
                } else {
                    errors.join(", ")
                }
            );
            rows.push(row);
        }
    }
    println!();
    println!(
        "| layout | runs | interruption: median | worst | runs under {TARGET:?} | slowest in flight: median | worst | runs with errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for &partitions in &layouts {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.partitions == partitions).collect();
        let gaps: Vec<Duration> = mine.iter().map(|r| r.gap).collect();
        let in_flight: Vec<Duration> = mine.iter().map(|r| r.in_flight).collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            layout(partitions),
            mine.len(),
            secs(median(gaps.clone())),
            secs(gaps.iter().max().copied().unwrap_or_default()),
            gaps.iter().filter(|g| **g < TARGET).count(),
            secs(median(in_flight.clone())),
            secs(in_flight.iter().max().copied().unwrap_or_default()),
            mine.iter().filter(|r| r.had_errors).count(),
        );
    }
}

fn layout(partitions: usize) -> &'static str {
    match partitions {
        1 => "one stream",
        _ => "3 partitions",
    }
}
