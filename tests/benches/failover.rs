//! How long clients wait when the node leading the jobs queue dies under load, with three
//! partitions per queue (the default on a cluster of three) and with one stream per queue
//! (`--nats-partitions 1`), side by side:
//! the runs alternate between the two layouts so that both meet the same machine.
//!
//! `cargo bench -p imgfleet-tests --bench failover [-- --runs N --clients C --partitions P]`
//! (needs nats-server 2.10+ and PostgreSQL, which `./dev.sh test` installs, and the release
//! binary and components, which `./dev.sh release` builds). Each run starts a fresh fleet: three JetStream nodes,
//! PostgreSQL, three hosts of one slot, C clients (6) sending synchronous resizes and jobs;
//! 3 s into the load the leader is `kill -9`'d and the load goes on for 12 s.
//!
//! Two figures per run: the longest time after the kill in which no request succeeded (the
//! service's interruption: when publishes and deliveries resumed), and the slowest answer to
//! a request that was in flight at the kill (whose job or completion may sit in a partition
//! that waits for its election).

#[path = "../e2e/fleet_kit.rs"]
mod fleet_kit;

use std::time::Duration;

use imgfleet_tests::bench::arg;
use imgfleet_tests::traffic::tally;

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

fn main() {
    let runs = arg("--runs", 5);
    let clients = arg("--clients", 6);
    let layouts: Vec<usize> = match arg("--partitions", 0) {
        0 => vec![3, 1],
        n => vec![n],
    };
    println!("{clients} clients; target: publishes and deliveries resume within {TARGET:?}");
    println!();
    println!(
        "| layout | run | longest time without a successful answer | slowest answer in flight at the kill | answered after the kill | errors (whole run) |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    let mut rows = Vec::new();
    for run in 1..=runs {
        for &partitions in &layouts {
            let killed = fleet_kit::kill_the_jobs_leader_under_load(partitions, clients);
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
