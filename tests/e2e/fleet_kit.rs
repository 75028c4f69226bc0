//! A fleet of real processes on 127.0.0.1 (a three-node JetStream cluster, one PostgreSQL
//! server, imgfleet hosts sharing them) and the failover of the jobs queue's leader under
//! load: shared by the fleet test (which judges what clients got) and the failover benchmark
//! (which measures how long they waited).
// Each includer uses its own part of this kit.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use imgfleet_tests::host::Host;
use imgfleet_tests::nats::Nats;
use imgfleet_tests::postgres::Postgres;
use imgfleet_tests::traffic::{Load, Sent, longest_gap_without_success, small_jpeg};

pub struct Fleet {
    pub nats: Nats,
    pub pg: Postgres,
    pub db: String,
    pub hosts: Vec<Option<Host>>,
    /// The `imgfleet` binary the hosts run (`None`: the one under test).
    bin: Option<PathBuf>,
}

impl Fleet {
    /// One host per entry of `slots`, with that many execution slots.
    pub fn start(slots: &[usize], extra: &[&str]) -> Self {
        Self::start_binary(None, slots, extra)
    }

    /// As [`Fleet::start`], the hosts running `bin` (another build, compared side by side).
    pub fn start_binary(bin: Option<&Path>, slots: &[usize], extra: &[&str]) -> Self {
        let nats = Nats::cluster();
        let pg = Postgres::start();
        let db = pg.database();
        let mut fleet = Self {
            nats,
            pg,
            db,
            hosts: Vec::new(),
            bin: bin.map(Path::to_path_buf),
        };
        for (i, n) in slots.iter().enumerate() {
            let host = fleet.start_host(&format!("h{}", i + 1), *n, extra);
            fleet.hosts.push(Some(host));
        }
        fleet
    }

    fn start_host(&self, id: &str, slots: usize, extra: &[&str]) -> Host {
        self.start_host_in(
            tempfile::tempdir().expect("a data directory"),
            id,
            slots,
            extra,
        )
    }

    /// Stops host `i` (SIGTERM: it finishes what it has in hand) and starts it again on
    /// its own data, with one slot.
    pub fn restart_host(&mut self, i: usize) {
        let host = self.hosts[i].take().expect("a running host");
        let data = host.stop();
        let host = self.start_host_in(data, &format!("h{}", i + 1), 1, &[]);
        self.hosts[i] = Some(host);
    }

    fn start_host_in(
        &self,
        data: tempfile::TempDir,
        id: &str,
        slots: usize,
        extra: &[&str],
    ) -> Host {
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
        match &self.bin {
            Some(bin) => Host::start_binary_in(bin, data, "spin.toml", &args, &[]),
            None => Host::start_in(data, "spin.toml", &args, &[]),
        }
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
/// `companions`: whether the held-back counts must be led alike too (builds before they
/// were placed do not).
fn spread(
    led: &BTreeMap<String, Vec<String>>,
    queue: &str,
    partitions: usize,
    companions: bool,
) -> bool {
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
            && (!companions || leader == leader_of(&format!("IMGFLEET_held_p{i}-{queue}")))
            && nodes.insert(leader)
    })
}

/// How the fleet is made slow rather than broken.
#[derive(Debug, Clone, Copy)]
pub enum Slowness {
    /// The node leading the jobs queue's first partition stopped (SIGSTOP) for `stopped`,
    /// then let run (SIGCONT) for `running`, over and over: a node that hangs rather than
    /// dies (a stalled disk, a long GC pause, a saturated link).
    PausedNode {
        stopped: Duration,
        running: Duration,
    },
    /// Sessions holding an exclusive lock on a table of the fleet's database for `held`,
    /// one after another: a PostgreSQL that answers, late.
    LockedTable { table: &'static str, held: Duration },
}

/// What clients met before and during a brownout.
pub struct Brownout {
    pub fleet: Fleet,
    /// Every request of the load.
    pub sent: Vec<Sent>,
    /// Requests sent in this window met a healthy fleet.
    pub calm: (Instant, Instant),
    /// Requests sent in this window met the brownout.
    pub brown: (Instant, Instant),
}

/// Three hosts of one slot (running `bin`, `None`: this build), `rate` requests a second
/// (open loop, every third an asynchronous job), 10 s of calm, then 12 s of `slowness`,
/// then 4 s for the last answers.
pub fn brownout_under_load(bin: Option<&Path>, rate: f64, slowness: Slowness) -> Brownout {
    let fleet = spread_fleet(bin, 3, &[]);
    let load = load_on(&fleet, Arrivals::Open(rate));
    std::thread::sleep(Duration::from_secs(2));
    let calm = (Instant::now(), Instant::now() + Duration::from_secs(10));
    std::thread::sleep(calm.1 - calm.0);
    let started = Instant::now();
    let until = started + Duration::from_secs(12);
    match slowness {
        Slowness::PausedNode { stopped, running } => {
            let node = fleet
                .nats
                .node(&stream_leader(&fleet.nats, "IMGFLEET_p0-jobs"));
            while Instant::now() < until {
                fleet.nats.pause(node);
                std::thread::sleep(stopped);
                fleet.nats.resume(node);
                std::thread::sleep(running);
            }
        }
        Slowness::LockedTable { table, held } => {
            while Instant::now() < until {
                let mut session = fleet.pg.hold_lock(&fleet.db, table, held);
                let _ = session.wait();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let brown = (started, Instant::now());
    std::thread::sleep(Duration::from_secs(4));
    let sent = load.finish();
    Brownout {
        fleet,
        sent,
        calm,
        brown,
    }
}

/// Whether every stream has a leader and every replica has caught up with it (a restarted
/// node is back in full).
fn all_current(nats: &Nats) -> bool {
    runtime().block_on(async {
        let js = running_context(nats).await;
        let mut streams = js.streams();
        let mut any = false;
        while let Some(info) = streams.next().await {
            let Ok(info) = info else {
                return false;
            };
            any = true;
            let Some(cluster) = info.cluster.as_ref() else {
                continue;
            };
            if cluster.leader.is_none()
                || cluster.replicas.len() + 1 < nats.replicas()
                || cluster.replicas.iter().any(|r| !r.current || r.offline)
            {
                return false;
            }
        }
        any
    })
}

/// What is restarted, one at a time, in a rolling restart.
#[derive(Debug, Clone, Copy)]
pub enum Rolling {
    /// Each nats-server in lame duck mode, then started again and let catch up.
    NatsServers,
    /// Each host: taken out of the load's targets (a balancer's drain), stopped with
    /// SIGTERM, started again on its data, and put back.
    Hosts,
}

/// What clients met during a rolling restart.
pub struct Rolled {
    pub fleet: Fleet,
    pub sent: Vec<Sent>,
    /// From the first restart to the last one's end.
    pub window: (Instant, Instant),
}

/// Three hosts of one slot (running `bin`, `None`: this build) under `rate` requests a
/// second (open loop, every third an asynchronous job); 3 s in, `what` is restarted one at
/// a time; 3 s after the last, the load stops.
pub fn rolling_restart_under_load(bin: Option<&Path>, rate: f64, what: Rolling) -> Rolled {
    let mut fleet = spread_fleet(bin, 3, &[]);
    let load = load_on(&fleet, Arrivals::Open(rate));
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    for i in 0..3 {
        match what {
            Rolling::NatsServers => {
                fleet.nats.lame_duck(i);
                fleet.nats.restart(i);
                let deadline = Instant::now() + Duration::from_secs(60);
                while !all_current(&fleet.nats) {
                    assert!(Instant::now() < deadline, "node {i} did not catch up");
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
            Rolling::Hosts => {
                let others: Vec<String> = fleet
                    .hosts
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .filter_map(|(_, h)| h.as_ref().map(|h| h.base.clone()))
                    .collect();
                load.retarget(&others.iter().map(String::as_str).collect::<Vec<_>>());
                // Requests on their way to it still land.
                std::thread::sleep(Duration::from_millis(500));
                fleet.restart_host(i);
                let bases = fleet.bases();
                load.retarget(&bases.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
        // The restarted one takes its share again before the next goes.
        std::thread::sleep(Duration::from_secs(2));
    }
    let window = (started, Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let sent = load.finish();
    Rolled {
        fleet,
        sent,
        window,
    }
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

/// Three hosts of one slot (running `bin`, `None`: this build; with `extra` flags), once
/// they have spread the leaders of the jobs queue's `partitions` over the nodes, as they
/// do on starting (a partition whose stream and consumer one node both led would stall
/// like an unpartitioned queue when that node fails).
fn spread_fleet(bin: Option<&Path>, partitions: usize, extra: &[&str]) -> Fleet {
    let fleet = Fleet::start_binary(bin, &[1, 1, 1], extra);
    if partitions > 1 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !spread(&leaders(&fleet.nats), "jobs", partitions, bin.is_none()) {
            assert!(
                Instant::now() < deadline,
                "the jobs queue's partitions' leaders were not spread: {:#?}",
                leaders(&fleet.nats)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    fleet
}

/// Small resizes and jobs (every third) arriving as `arrivals` says, round robin over the
/// fleet's hosts, with the first host's key.
fn load_on(fleet: &Fleet, arrivals: Arrivals) -> Load {
    let bases = fleet.bases();
    let bases: Vec<&str> = bases.iter().map(String::as_str).collect();
    let key = fleet.host(0).key.clone();
    match arrivals {
        Arrivals::Closed(clients) => Load::spread(&bases, &key, clients, small_jpeg(), "w=24"),
        Arrivals::Open(rate) => Load::open_loop(&bases, &key, rate, small_jpeg(), "w=24"),
    }
}

/// Three hosts of one slot each, resizes and jobs arriving as `arrivals` says, round robin
/// over the hosts; 3 s into the load the node leading the jobs stream (partition 0 of it,
/// with partitions) is killed, and the load goes on for 12 s. `partitions`: 1 (one stream
/// per queue) or 3 (the default on a cluster of three).
pub fn kill_the_jobs_leader_under_load(partitions: usize, arrivals: Arrivals) -> LeaderKilled {
    kill_the_jobs_leader_under_load_of(None, partitions, arrivals)
}

/// As [`kill_the_jobs_leader_under_load`], the hosts running `bin` (`None`: this build).
pub fn kill_the_jobs_leader_under_load_of(
    bin: Option<&Path>,
    partitions: usize,
    arrivals: Arrivals,
) -> LeaderKilled {
    let (extra, stream): (&[&str], &'static str) = match partitions {
        1 => (&["--nats-partitions", "1"], "IMGFLEET_jobs"),
        3 => (&[], "IMGFLEET_p0-jobs"),
        n => panic!("no layout of {n} partitions here"),
    };
    let mut fleet = spread_fleet(bin, partitions, extra);
    let load = load_on(&fleet, arrivals);
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
