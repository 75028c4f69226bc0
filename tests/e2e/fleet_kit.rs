//! A fleet of real processes on 127.0.0.1 (a three-node JetStream cluster, one PostgreSQL
//! server, imgfleet hosts sharing them) and the failover of the jobs queue's leader under
//! load: shared by the fleet test (which judges what clients got) and the failover benchmark
//! (which measures how long they waited).
// Each includer uses its own part of this kit.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use imgfleet_tests::host::Host;
use imgfleet_tests::nats::Nats;
use imgfleet_tests::postgres::Postgres;
use imgfleet_tests::traffic::{Load, Sent, longest_gap_without_success, small_jpeg};

pub struct Fleet {
    pub nats: Nats,
    _pg: Postgres,
    pub db: String,
    pub hosts: Vec<Option<Host>>,
}

impl Fleet {
    /// One host per entry of `slots`, with that many execution slots.
    pub fn start(slots: &[usize], extra: &[&str]) -> Self {
        let nats = Nats::cluster();
        let pg = Postgres::start();
        let db = pg.database();
        let mut fleet = Self {
            nats,
            _pg: pg,
            db,
            hosts: Vec::new(),
        };
        for (i, n) in slots.iter().enumerate() {
            let host = fleet.start_host(&format!("h{}", i + 1), *n, extra);
            fleet.hosts.push(Some(host));
        }
        fleet
    }

    fn start_host(&self, id: &str, slots: usize, extra: &[&str]) -> Host {
        let urls = self.nats.urls();
        let replicas = self.nats.replicas().to_string();
        let cores = slots.to_string();
        let mut args = vec![
            "--queue",
            "jetstream",
            "--nats-url",
            &urls,
            "--nats-replicas",
            &replicas,
            "--database-url",
            &self.db,
            "--host-id",
            id,
            "--cores",
            &cores,
            // One tenant may use every slot of the fleet.
            "--tenant-shards",
            "32",
        ];
        args.extend_from_slice(extra);
        Host::start("spin.toml", &args)
    }

    pub fn host(&self, i: usize) -> &Host {
        self.hosts[i].as_ref().expect("a running host")
    }

    pub fn bases(&self) -> Vec<String> {
        self.hosts
            .iter()
            .flatten()
            .map(|h| h.base.clone())
            .collect()
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A plain JetStream client of the servers still running (to look at streams).
async fn running_context(nats: &Nats) -> async_nats::jetstream::Context {
    let running: Vec<async_nats::ServerAddr> = nats
        .nodes
        .iter()
        .filter(|n| n.running())
        .map(|n| n.url().parse().expect("a server address"))
        .collect();
    let client = async_nats::connect(running).await.expect("connect");
    async_nats::jetstream::new(client)
}

/// Per partition of `queue`: its stream's and consumer's leaders and the consumer's
/// counts (pending, waiting for an acknowledgement, pull requests waiting), to see where
/// messages are held.
pub fn consumers(nats: &Nats, queue: &str, partitions: usize) -> Vec<String> {
    runtime().block_on(async {
        let js = running_context(nats).await;
        let mut out = Vec::new();
        for i in 0..partitions {
            let name = format!("IMGFLEET_p{i}-{queue}");
            let line = match js.get_stream(&name).await {
                Ok(mut stream) => {
                    let leader = stream
                        .info()
                        .await
                        .ok()
                        .and_then(|i| i.cluster.as_ref().and_then(|c| c.leader.clone()));
                    match stream
                        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("workers")
                        .await
                    {
                        Ok(mut c) => match c.info().await {
                            Ok(ci) => format!(
                                "{name}: stream leader {leader:?}, consumer leader {:?}, pending {}, ack pending {}, waiting pulls {}, delivered {}",
                                ci.cluster.as_ref().and_then(|c| c.leader.clone()),
                                ci.num_pending,
                                ci.num_ack_pending,
                                ci.num_waiting,
                                ci.delivered.stream_sequence
                            ),
                            Err(e) => format!("{name}: stream leader {leader:?}, consumer info: {e}"),
                        },
                        Err(e) => format!("{name}: stream leader {leader:?}, consumer: {e}"),
                    }
                }
                Err(e) => format!("{name}: {e}"),
            };
            out.push(line);
        }
        out
    })
}

/// The name of the node leading a stream's Raft group.
pub fn stream_leader(nats: &Nats, stream: &str) -> String {
    runtime().block_on(stream_leader_async(nats, stream))
}

pub async fn stream_leader_async(nats: &Nats, stream: &str) -> String {
    let js = running_context(nats).await;
    let mut s = js.get_stream(stream).await.expect("the stream");
    let info = s.info().await.expect("stream info");
    info.cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a leader")
}

/// The Raft groups (streams, and consumers as `stream/consumer`) each node leads.
fn leaders(nats: &Nats) -> BTreeMap<String, Vec<String>> {
    runtime().block_on(async {
        let js = running_context(nats).await;
        let mut led: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut streams = js.streams();
        while let Some(Ok(info)) = streams.next().await {
            let name = info.config.name.clone();
            if let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone()) {
                led.entry(leader).or_default().push(name.clone());
            }
            let stream = js.get_stream(&name).await.expect("the stream");
            let mut consumers = stream.consumers();
            while let Some(Ok(c)) = consumers.next().await {
                if let Some(leader) = c.cluster.as_ref().and_then(|c| c.leader.clone()) {
                    led.entry(leader)
                        .or_default()
                        .push(format!("{name}/{}", c.name));
                }
            }
        }
        led
    })
}

/// Whether the hosts have spread the partitions of `queue`: every partition's stream led
/// by a node of its own, and its consumer and held-back counts by the same node.
fn spread(led: &BTreeMap<String, Vec<String>>, queue: &str, partitions: usize) -> bool {
    let leader_of = |group: &str| {
        led.iter()
            .find(|(_, groups)| groups.iter().any(|g| g == group))
            .map(|(node, _)| node.clone())
    };
    let mut nodes = BTreeSet::new();
    (0..partitions).all(|i| {
        let stream = format!("IMGFLEET_p{i}-{queue}");
        let leader = leader_of(&stream);
        leader.is_some()
            && leader == leader_of(&format!("{stream}/workers"))
            && leader == leader_of(&format!("IMGFLEET_held_p{i}-{queue}"))
            && nodes.insert(leader)
    })
}

/// What happened when the node leading the jobs queue (its partition 0) was `kill -9`'d
/// under load.
pub struct LeaderKilled {
    /// The fleet, still running (the killed node stays down).
    pub fleet: Fleet,
    pub stream: &'static str,
    pub leader: String,
    pub new_leader: String,
    pub killed_at: Instant,
    /// Every request of the load, before and after the kill.
    pub sent: Vec<Sent>,
    /// The longest time after the kill without a successful answer.
    pub gap: Duration,
}

/// How requests arrive.
#[derive(Debug, Clone, Copy)]
pub enum Arrivals {
    /// This many clients, each sending its next request once the last is answered.
    Closed(usize),
    /// This many requests a second, whatever the answers.
    Open(f64),
}

/// Three hosts of one slot each, resizes and jobs arriving as `arrivals` says, round robin
/// over the hosts; 3 s into the load the node leading the jobs stream (partition 0 of it,
/// with partitions) is killed, and the load goes on for 12 s. `partitions`: 1 (one stream
/// per queue) or 3 (the default on a cluster of three).
pub fn kill_the_jobs_leader_under_load(partitions: usize, arrivals: Arrivals) -> LeaderKilled {
    let (extra, stream): (&[&str], &'static str) = match partitions {
        1 => (&["--nats-partitions", "1"], "IMGFLEET_jobs"),
        3 => (&[], "IMGFLEET_p0-jobs"),
        n => panic!("no layout of {n} partitions here"),
    };
    let mut fleet = Fleet::start(&[1, 1, 1], extra);
    if partitions > 1 {
        // The hosts move leaders apart as they start (a partition whose stream and
        // consumer the killed node both led would stall like an unpartitioned queue).
        let deadline = Instant::now() + Duration::from_secs(60);
        while !spread(&leaders(&fleet.nats), "jobs", partitions) {
            assert!(
                Instant::now() < deadline,
                "the jobs queue's partitions' leaders were not spread: {:#?}",
                leaders(&fleet.nats)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let bases = fleet.bases();
    let bases: Vec<&str> = bases.iter().map(String::as_str).collect();
    let key = fleet.host(0).key.clone();
    let load = match arrivals {
        Arrivals::Closed(clients) => Load::spread(&bases, &key, clients, small_jpeg(), "w=24"),
        Arrivals::Open(rate) => Load::open_loop(&bases, &key, rate, small_jpeg(), "w=24"),
    };
    std::thread::sleep(Duration::from_secs(3));
    let leader = stream_leader(&fleet.nats, stream);
    let killed_at = Instant::now();
    let node = fleet.nats.node(&leader);
    fleet.nats.kill_9(node);
    std::thread::sleep(Duration::from_secs(12));
    let stopping = Instant::now();
    let sent = load.finish();
    let gap = longest_gap_without_success(&sent, killed_at, stopping);
    let new_leader = stream_leader(&fleet.nats, stream);
    LeaderKilled {
        fleet,
        stream,
        leader,
        new_leader,
        killed_at,
        sent,
        gap,
    }
}
