//! Embedded queue: throughput and send→receive latency with durable (synced) sends, at
//! 1, 8 and 64 producers, then latency at a fixed offered rate.
//!
//! `cargo bench -p imgfleet-queue --bench queue [-- --messages N --rate R --seconds S]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use imgfleet_queue::embedded::EmbeddedStore;
use imgfleet_queue::{OutgoingMessage, Queue, QueueSpec, ReceiveRequest};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0 // µs
}

struct Run {
    msgs_per_s: f64,
    /// Send start to receipt by a consumer.
    latencies_ns: Vec<u64>,
    /// Send start to the durable acknowledgement.
    acks_ns: Vec<u64>,
}

/// Producers send `per_producer` messages each (optionally paced to `rate` msg/s in all);
/// consumers receive in batches of 10 and delete. Message bodies carry their send time.
async fn run(queue: Arc<dyn Queue>, producers: u64, per_producer: u64, rate: Option<f64>) -> Run {
    let epoch = Instant::now();
    let total = producers * per_producer;
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let (q, received, done) = (queue.clone(), received.clone(), done.clone());
        consumers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let got = q
                    .receive(ReceiveRequest {
                        max_messages: 10,
                        wait: Duration::from_millis(50),
                        visibility: None,
                    })
                    .await
                    .expect("receive");
                let now = epoch.elapsed().as_nanos() as u64;
                for m in got {
                    let sent: u64 = std::str::from_utf8(&m.body[..20])
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    lat.push(now.saturating_sub(sent));
                    q.delete(&m.receipt).await.expect("delete");
                    if received.fetch_add(1, Ordering::Relaxed) + 1 == total {
                        done.store(true, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let q = queue.clone();
        tasks.push(tokio::spawn(async move {
            let interval = rate.map(|r| Duration::from_secs_f64(producers as f64 / r));
            let first = Instant::now()
                + interval.map_or(Duration::ZERO, |i| i.mul_f64(p as f64 / producers as f64));
            let mut acks = Vec::with_capacity(per_producer as usize);
            for i in 0..per_producer {
                if let Some(iv) = interval {
                    tokio::time::sleep_until((first + iv * i as u32).into()).await;
                }
                let sent_at = Instant::now();
                let stamp = format!("{:>20}", epoch.elapsed().as_nanos() as u64);
                let body = format!("{stamp}{:0>108}", i); // 128-byte messages
                q.send(OutgoingMessage::new(body).group(format!("g{}", (p * 7 + i) % 64)))
                    .await
                    .expect("send");
                acks.push(sent_at.elapsed().as_nanos() as u64);
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.unwrap());
    }
    acks.sort_unstable();
    let mut latencies = Vec::new();
    for c in consumers {
        latencies.extend(c.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Run {
        msgs_per_s: total as f64 / elapsed.as_secs_f64(),
        latencies_ns: latencies,
        acks_ns: acks,
    }
}

async fn fresh_queue() -> (Arc<dyn Queue>, tempfile::TempDir) {
    // On the working disk, not a tmpfs, so fsync is real.
    let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let q = store.queue(QueueSpec::new("bench")).await.unwrap();
    (q, dir)
}

fn main() {
    let messages = arg("--messages", 200_000);
    let rate = arg("--rate", 20_000) as f64;
    let seconds = arg("--seconds", 5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("embedded queue, durable sends (fdatasync group commit), 128-byte messages, 4 consumers");
        println!();
        println!("| producers | messages | msg/s (send→delete) | send→receive p50 µs | p99 µs | durable ack p50 µs | p99 µs |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for producers in [1u64, 8, 64] {
            let per = if producers == 1 { messages / 20 } else { messages / producers };
            let (q, _dir) = fresh_queue().await;
            let r = run(q, producers, per, None).await;
            println!(
                "| {producers} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                producers * per,
                r.msgs_per_s,
                percentile(&r.latencies_ns, 0.5),
                percentile(&r.latencies_ns, 0.99),
                percentile(&r.acks_ns, 0.5),
                percentile(&r.acks_ns, 0.99)
            );
        }
        println!();
        println!("| offered rate | producers | seconds | achieved msg/s | send→receive p50 µs | p99 µs | p99.9 µs | durable ack p99 µs |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for producers in [8u64, 64] {
            let (q, _dir) = fresh_queue().await;
            let per = (rate as u64 * seconds) / producers;
            let r = run(q, producers, per, Some(rate)).await;
            println!(
                "| {rate:.0}/s | {producers} | {seconds} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                r.msgs_per_s,
                percentile(&r.latencies_ns, 0.5),
                percentile(&r.latencies_ns, 0.99),
                percentile(&r.latencies_ns, 0.999),
                percentile(&r.acks_ns, 0.99)
            );
        }
    });
}
