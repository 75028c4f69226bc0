//! The self-hosted fleet with real processes on 127.0.0.1: a three-node JetStream cluster
//! (every stream replicated three times), one PostgreSQL server and three imgfleet hosts
//! sharing them. Placement is pull-based: each host's slots take jobs from the one queue.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::fleet_kit::{
    Arrivals, Fleet, LeaderKilled, kill_the_jobs_leader_under_load, runtime, stream_leader,
    stream_leader_async,
};
use imgfleet_host::wiring::JOB_VISIBILITY;
use imgfleet_queue::jetstream::{JetStream, JetStreamConfig, JetStreamQueue};
use imgfleet_queue::{OutgoingMessage, Queue, QueueError, QueueSpec, ReceiveRequest};
use imgfleet_tests::host::{Host, get};
use imgfleet_tests::images;
use imgfleet_tests::nats::Nats;
use imgfleet_tests::traffic::{
    UsageAt, assert_clear_errors, assert_jobs_finish, assert_usage_exact, report,
};

fn usage(fleet: &Fleet) -> UsageAt<'_> {
    UsageAt::Database(&fleet.db)
}

/// Runs of the resize function this host has made (its own metrics).
fn resize_runs(host: &Host) -> u64 {
    let text = String::from_utf8(get(&host.url("/metrics")).body).expect("metrics text");
    text.lines()
        .filter(|l| {
            l.starts_with("imgfleet_function_wall_seconds_count") && l.contains("\"resize\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Submits an asynchronous job to `host`; returns its id.
fn submit(host: &Host, body: &[u8], query: &str) -> String {
    let r = host.post(&format!("/v1/jobs?{query}"), body, &[]);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    r.json()["id"].as_str().expect("a job id").to_string()
}

/// Waits until every job is finished, asking any host; returns each job's record.
fn wait_done(fleet: &Fleet, jobs: &[String], within: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    jobs.iter()
        .enumerate()
        .map(|(n, job)| {
            loop {
                // Any host answers for any job: the job store is shared.
                let bases = fleet.bases();
                let host = fleet
                    .hosts
                    .iter()
                    .flatten()
                    .nth(n % bases.len())
                    .expect("a host");
                let v = host.get(&format!("/v1/jobs/{job}")).json();
                match v["status"].as_str() {
                    Some("done") => return v,
                    Some("queued") => {}
                    _ => panic!("job {job}: {v}"),
                }
                assert!(Instant::now() < deadline, "job {job} still {v}");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .collect()
}

#[test]
fn jobs_spread_across_hosts_in_proportion_to_their_slots() {
    let slots = [1usize, 2, 3];
    let fleet = Fleet::start(&slots, &[]);
    let photo = images::jpeg(&images::photo(1024, 768, 3), 85);
    let before: Vec<u64> = (0..3).map(|i| resize_runs(fleet.host(i))).collect();
    let jobs: Vec<String> = (0..120)
        .map(|n| submit(fleet.host(n % 3), &photo, "w=300"))
        .collect();
    wait_done(&fleet, &jobs, Duration::from_secs(240));
    let runs: Vec<u64> = (0..3)
        .map(|i| resize_runs(fleet.host(i)) - before[i])
        .collect();
    let total: u64 = runs.iter().sum();
    assert!(total >= 120, "{runs:?}");
    let all_slots: usize = slots.iter().sum();
    println!("| host | slots | jobs run | share | expected |");
    println!("|---|---:|---:|---:|---:|");
    for (i, (s, r)) in slots.iter().zip(&runs).enumerate() {
        println!(
            "| h{} | {s} | {r} | {:.2} | {:.2} |",
            i + 1,
            *r as f64 / total as f64,
            *s as f64 / all_slots as f64
        );
    }
    for (s, r) in slots.iter().zip(&runs) {
        let share = *r as f64 / total as f64;
        let expected = *s as f64 / all_slots as f64;
        assert!(
            (share - expected).abs() <= expected * 0.5,
            "jobs per host {runs:?} are not in proportion to slots {slots:?}"
        );
    }
    assert!(runs[2] > runs[0], "{runs:?}");
}

/// Six clients, as in the failover benchmark: with three, the three requests in flight at
/// the kill can all be waiting for the dead node's partition (its election, or a job's
/// visibility timeout), and no client would send anything new meanwhile.
const CLIENTS: usize = 6;

#[test]
fn killing_the_jetstream_stream_leader_under_load_loses_nothing() {
    judge_the_failover(kill_the_jobs_leader_under_load(
        1,
        Arrivals::Closed(CLIENTS),
    ));
}

#[test]
fn killing_one_partitions_leader_under_load_loses_nothing() {
    judge_the_failover(kill_the_jobs_leader_under_load(
        3,
        Arrivals::Closed(CLIENTS),
    ));
}

/// How long clients waited is the failover benchmark's business (`benches/failover.rs`);
/// here, what they got: clear errors at worst, nothing accepted lost, nothing counted twice.
fn judge_the_failover(run: LeaderKilled) {
    let (fleet, sent, gap) = (&run.fleet, run.sent.as_slice(), run.gap);
    report("stream leader killed", sent, gap);
    println!(
        "{}: leader {} killed: longest time without a successful answer {gap:?}; new leader {}",
        run.stream, run.leader, run.new_leader
    );
    assert_ne!(run.new_leader, run.leader);
    // The followers of a killed leader wait out a Raft election timeout (in nats-server a
    // random 4-9 s) before electing another; this bounds only what must never happen.
    assert!(
        gap < Duration::from_secs(12),
        "publishes and deliveries took {gap:?} to resume"
    );
    assert_clear_errors(
        "stream leader killed",
        sent,
        // While a staging or queue operation outlasts its retries (elections of the
        // cluster's other Raft groups run at the same time).
        &[
            "503 queue_unavailable",
            "503 staging_unavailable",
            "504 deadline_exceeded",
        ],
    );
    let answered_after = sent
        .iter()
        .filter(|s| s.status == Some(200) && s.at > run.killed_at + Duration::from_secs(6))
        .count();
    assert!(answered_after > 0, "nothing served after the failover");
    // Every accepted job finishes, and each counts once; every answered request counts once.
    let key = fleet.host(0).key.clone();
    assert_jobs_finish(
        "stream leader killed",
        &fleet.host(1).base,
        &key,
        sent,
        Duration::from_secs(60),
    );
    assert_usage_exact("stream leader killed", &usage(fleet), sent);
}

#[test]
fn a_killed_hosts_jobs_are_redelivered_to_the_others() {
    let mut fleet = Fleet::start(&[1, 1, 1], &["--deadline-ms", "2000"]);
    let visibility = JOB_VISIBILITY;
    let photo = images::jpeg(&images::photo(2400, 1800, 5), 92);
    // Submitted to the host that will survive, so the killed one has no job of its own.
    // Enough of them that a backlog remains when the doomed host finishes its first job,
    // however slow its first (cold) one was beside the others'.
    let jobs: Vec<String> = (0..36)
        .map(|_| submit(fleet.host(1), &photo, "w=1200&fmt=png"))
        .collect();
    // Once the doomed host has finished one job it is running the next (most of the
    // backlog is still queued).
    let doomed = fleet.host(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while resize_runs(doomed) == 0 {
        assert!(Instant::now() < deadline, "host 1 never took a job");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = fleet.hosts[0].take().expect("host 1");
    let killed_ms = now_ms();
    drop(killed.kill_9());
    let records = wait_done(&fleet, &jobs, Duration::from_secs(90));
    let late: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| {
            r["finished_ms"].as_u64().unwrap_or(0)
                >= killed_ms + visibility.as_millis() as u64 - 1000
        })
        .collect();
    println!(
        "host 1 killed with a job in flight: all {} jobs done; {} finished only after its visibility timeout ({visibility:?}) ran out",
        records.len(),
        late.len()
    );
    assert!(
        !late.is_empty(),
        "no job waited out the visibility timeout: the killed host's job was not redelivered"
    );
    let ids: BTreeSet<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), jobs.len());
}

#[test]
fn a_planned_stop_of_the_stream_leader_fails_over_at_once() {
    let mut nats = Nats::cluster();
    let rt = runtime();
    let leader = rt.block_on(async {
        let q = queue_on(nats.urls(), "planned").await;
        q.send(OutgoingMessage::new("first")).await.unwrap();
        q
    });
    let name = stream_leader(&nats, "IMGFLEET_planned");
    let node = nats.node(&name);
    rt.block_on(async {
        let sender = tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut acked = 1;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(6) {
                let t = Instant::now();
                leader
                    .send(OutgoingMessage::new("during"))
                    .await
                    .expect("sends go on through a planned stop");
                slowest = slowest.max(t.elapsed());
                acked += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (slowest, acked, leader)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // SIGTERM: the node hands its leaderships over before it exits.
        nats.terminate(node);
        let (slowest, acked, q) = sender.await.unwrap();
        println!("stream leader {name} stopped (SIGTERM): slowest send {slowest:?} of {acked}");
        assert!(
            slowest < Duration::from_secs(5),
            "a planned stop held sends for {slowest:?} (target < 5 s)"
        );
        let depth = q.depth().await.unwrap();
        assert_eq!(
            depth.visible + depth.in_flight,
            acked,
            "acknowledged sends lost"
        );
    });
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A queue on a cluster that may still be forming (it refuses replicated streams until
/// every node has reported in), as a host waits for it at start-up.
async fn queue_on(urls: String, name: &str) -> JetStreamQueue {
    let js = JetStream::connect(&JetStreamConfig { urls, replicas: 3 })
        .await
        .expect("connect");
    let started = Instant::now();
    loop {
        match JetStreamQueue::open(&js, &QueueSpec::new(name)).await {
            Ok(q) => return q,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                println!("opening {name}: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("the queue {name}: {e}"),
        }
    }
}

#[test]
fn a_partitioned_minority_refuses_writes_and_the_majority_goes_on() {
    let nats = Nats::cluster();
    let rt = runtime();
    rt.block_on(async {
        let all = queue_on(nats.urls(), "partition").await;
        let mut acked: Vec<String> = Vec::new();
        for i in 0..5 {
            let body = format!("before-{i}");
            all.send(OutgoingMessage::new(body.clone())).await.unwrap();
            acked.push(body);
        }

        // The node cut off is the stream's leader, the hardest case: the others must elect
        // a new one, and the old one wakes up believing it still leads.
        let cut = nats.node(&stream_leader_async(&nats, "IMGFLEET_partition").await);
        let others: Vec<usize> = (0..nats.nodes.len()).filter(|i| *i != cut).collect();
        // Writers that reach only some of the nodes, connected while all are up.
        let majority = queue_on(
            format!(
                "{},{}",
                nats.nodes[others[0]].url(),
                nats.nodes[others[1]].url()
            ),
            "partition",
        )
        .await;
        let minority = queue_on(nats.nodes[cut].url(), "partition").await;

        // One node cut off: the two others are a majority and keep taking writes.
        nats.pause(cut);
        let started = Instant::now();
        for i in 0..5 {
            let body = format!("majority-{i}");
            // The majority first elects a new leader (nats-server waits 4-9 s, which can
            // outlast one send's 8 s budget): a client sends again after a
            // `queue_unavailable`, and the majority must then take it.
            let mut sent = majority.send(OutgoingMessage::new(body.clone())).await;
            while sent.is_err() && started.elapsed() < Duration::from_secs(20) {
                sent = majority.send(OutgoingMessage::new(body.clone())).await;
            }
            sent.expect("the majority accepts writes");
            acked.push(body);
        }
        println!(
            "one node of three stopped: the majority acknowledged writes after {:?}",
            started.elapsed()
        );
        nats.resume(cut);

        // Now the other way round: only the old leader answers, woken just now and perhaps
        // not yet aware of the new term; a writer that reaches only it must be refused (no
        // quorum), not acknowledged on a minority's say-so.
        nats.pause(others[0]);
        nats.pause(others[1]);
        let refused = minority
            .send(OutgoingMessage::new("minority-write").dedup_id("minority-write"))
            .await;
        assert!(
            matches!(refused, Err(QueueError::Unavailable(_))),
            "a minority acknowledged a write: {refused:?}"
        );
        nats.resume(others[0]);
        nats.resume(others[1]);
        let healed = Instant::now();
        while all.depth().await.is_err() {
            assert!(
                healed.elapsed() < Duration::from_secs(30),
                "the cluster did not heal"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // Healed: every acknowledged write is there exactly once; the refused one at most
        // once (it may have reached the log before the heal, unacknowledged).
        let mut bodies: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let got = match all
                .receive(ReceiveRequest {
                    max_messages: 10,
                    wait: Duration::from_millis(1500),
                    visibility: None,
                })
                .await
            {
                Ok(got) => got,
                Err(_) => continue,
            };
            if got.is_empty() && acked.iter().all(|a| bodies.contains(a)) {
                break;
            }
            for m in got {
                // A message delivered again (a consumer leader that had not yet heard of
                // the first delivery's ack) is the same stored write, not a second copy.
                if seen.insert(m.id.clone()) {
                    bodies.push(String::from_utf8_lossy(&m.body).into_owned());
                }
                // Acks go to the consumer's leader, which the heal may still be electing:
                // bounded by time, not tries (each try may itself wait out a timeout).
                let started = Instant::now();
                while let Err(e) = all.delete(&m.receipt).await {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "deleting after the heal: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        for body in &acked {
            assert_eq!(
                bodies.iter().filter(|b| *b == body).count(),
                1,
                "acknowledged {body} lost or duplicated: {bodies:?}"
            );
        }
        assert!(bodies.iter().filter(|b| *b == "minority-write").count() <= 1);
        assert_eq!(
            bodies.len(),
            acked.len() + bodies.iter().filter(|b| *b == "minority-write").count()
        );
    });
}

/// One request's spans on two hosts join: a request sent to the first host whose job ran
/// on the second is one trace in the collector, the job span a child of the request span.
#[test]
fn a_trace_joins_the_hosts_a_request_crossed() {
    let collector = imgfleet_tests::collector::Collector::start();
    let fleet = Fleet::start(&[1, 1], &["--otlp-endpoint", &collector.base]);
    let src = images::jpeg(&images::photo(400, 300, 4), 85);
    let entry = fleet.host(0);
    // Concurrent requests, so that the second host's slot takes some of the jobs.
    let traces: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let src = &src;
                s.spawn(move || {
                    (0..4)
                        .map(|i| {
                            let trace = format!("{:032x}", 0xabc0_0000u64 + t * 16 + i + 1);
                            let parent = format!("00-{trace}-00f067aa0ba902b7-01");
                            let r = entry.post("/v1/resize?w=64", src, &[("traceparent", &parent)]);
                            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                            trace
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut ran_elsewhere = 0;
    for trace in &traces {
        let spans = crate::observability::exported_trace(&collector, trace, &["request", "job"]);
        let request = spans.iter().find(|s| s.name == "request").unwrap();
        let job = spans.iter().find(|s| s.name == "job").unwrap();
        assert_eq!(job.parent_id, request.span_id, "{trace}");
        if job.attribute("host") == Some("h2") {
            ran_elsewhere += 1;
        }
    }
    assert!(
        ran_elsewhere > 0,
        "no job of the {} ran on the second host",
        traces.len()
    );
}
