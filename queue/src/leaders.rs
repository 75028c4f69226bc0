//! Keeps the Raft leaders of a partitioned resource (a queue's partitions, the staging
//! buckets) on different nodes, each partition's consumer and companion stream (a queue's
//! held-back counts) led by the node that leads its stream: a partition then depends on
//! one node, and the death of another leaves it whole. Partitioning only helps if one node's death leaves some partition with a
//! leader: nats-server places leaders where its elections happen to fall, and after a
//! failover the survivors lead everything. Leaders are moved by asking them to step down
//! (a planned handover, milliseconds), never while a partition has no leader.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::QueueError;
use super::jetstream::JetStream;

/// Rounds of moves in one pass (a step-down lands on a random peer, so it can take a few).
const ROUNDS: usize = 8;
/// Time for the elections a round of step-downs started, before the leaders are looked at
/// again: sooner, a partition can still name the leader that just stepped down.
const SETTLE: Duration = Duration::from_millis(1500);
/// How long past [`SETTLE`] those elections may take (on a loaded machine, seconds) before
/// a pass gives up: until every partition has its leaders again, a fresh queue is not
/// handed out, since its first calls would meet a partition that has none.
const ELECTED_WITHIN: Duration = Duration::from_secs(10);
/// How often the leaders are looked at while those elections are under way.
const ELECTION_POLL: Duration = Duration::from_millis(250);
/// How often leaders are looked at again (plus up to half again, so that hosts sharing a
/// resource do not all look at the same moment).
const EVERY: Duration = Duration::from_secs(30);

/// One partition: its stream and, for a queue, the consumer workers pull from and the
/// stream its deliveries are counted in when handed back.
#[derive(Debug, Clone)]
pub struct Partition {
    pub stream: String,
    pub consumer: Option<String>,
    pub companion: Option<String>,
}

/// Where a partition's leaders are.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub leader: String,
    /// Every node holding a replica, the leader included.
    pub peers: Vec<String>,
    pub consumer_leader: Option<String>,
    pub companion_leader: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Stream(usize),
    Consumer(usize),
    Companion(usize),
}

/// The step-downs that bring `placed` closer to the aim: a consumer or companion led
/// elsewhere than its stream moves; a node leading more partitions than another peer of one of them (which
/// leads none) gives that one up. Moves of one round never empty a node of its last
/// partition nor leave two partitions chasing the same free node.
pub fn plan(placed: &[Placed]) -> Vec<Move> {
    let mut moves = Vec::new();
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for p in placed {
        *load.entry(&p.leader).or_default() += 1;
    }
    for (i, p) in placed.iter().enumerate().rev() {
        if load[p.leader.as_str()] < 2 {
            continue;
        }
        let free = p
            .peers
            .iter()
            .find(|peer| load.get(peer.as_str()).copied().unwrap_or(0) == 0);
        if let Some(free) = free {
            *load.get_mut(p.leader.as_str()).expect("counted") -= 1;
            load.insert(free, 1);
            moves.push(Move::Stream(i));
        }
    }
    for (i, p) in placed.iter().enumerate() {
        let moving = moves.contains(&Move::Stream(i));
        if !moving && p.consumer_leader.as_ref().is_some_and(|c| *c != p.leader) {
            moves.push(Move::Consumer(i));
        }
        if !moving && p.companion_leader.as_ref().is_some_and(|c| *c != p.leader) {
            moves.push(Move::Companion(i));
        }
    }
    moves
}

#[derive(Deserialize)]
struct StepDown {
    #[serde(default)]
    success: bool,
    error: Option<serde_json::Value>,
}

/// Spreads `partitions`' leaders now, before their first use (a step-down briefly leaves a
/// consumer without a leader, and a fresh queue's first calls would meet it), then again
/// every so often until the process ends.
pub async fn keep_spread(js: JetStream, partitions: Vec<Partition>) {
    if partitions.len() < 2 || js.replicas < 2 {
        return;
    }
    let failed = |e: QueueError| {
        tracing::debug!(error = %e, "spreading partition leaders; trying later");
    };
    spread(&js, &partitions).await.unwrap_or_else(failed);
    tokio::spawn(async move {
        loop {
            let jitter = EVERY.mul_f64(rand_fraction() / 2.0);
            tokio::time::sleep(EVERY + jitter).await;
            spread(&js, &partitions).await.unwrap_or_else(failed);
        }
    });
}

/// A number in [0, 1) that differs between hosts and passes.
fn rand_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// Rounds of look, plan and step down until nothing is left to move.
pub async fn spread(js: &JetStream, partitions: &[Partition]) -> Result<(), QueueError> {
    let mut placed = place(js, partitions).await?;
    for _ in 0..ROUNDS {
        let moves = plan(&placed);
        if moves.is_empty() {
            return Ok(());
        }
        for m in moves {
            let subject = match m {
                Move::Stream(i) => format!("STREAM.LEADER.STEPDOWN.{}", partitions[i].stream),
                Move::Consumer(i) => format!(
                    "CONSUMER.LEADER.STEPDOWN.{}.{}",
                    partitions[i].stream,
                    partitions[i].consumer.as_deref().unwrap_or_default()
                ),
                Move::Companion(i) => format!(
                    "STREAM.LEADER.STEPDOWN.{}",
                    partitions[i].companion.as_deref().unwrap_or_default()
                ),
            };
            let answer: StepDown = js
                .context
                .request(subject.clone(), &serde_json::json!({}))
                .await
                .map_err(|e| QueueError::Unavailable(e.to_string()))?;
            if !answer.success {
                tracing::debug!(subject, error = ?answer.error, "step-down refused");
            }
        }
        placed = elected(js, partitions).await?;
    }
    Ok(())
}

/// Every partition's leaders once the elections a round of step-downs started are over; an
/// error if a partition still has none [`ELECTED_WITHIN`] after [`SETTLE`].
async fn elected(js: &JetStream, partitions: &[Partition]) -> Result<Vec<Placed>, QueueError> {
    tokio::time::sleep(SETTLE).await;
    let deadline = tokio::time::Instant::now() + ELECTED_WITHIN;
    loop {
        match place(js, partitions).await {
            Ok(placed) => return Ok(placed),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "waiting for the leaders a step-down moved");
                tokio::time::sleep(ELECTION_POLL).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every partition's leaders now; an error if any partition has none (an election is
/// under way: nothing is moved then).
pub async fn place(js: &JetStream, partitions: &[Partition]) -> Result<Vec<Placed>, QueueError> {
    let unavailable = |e: String| QueueError::Unavailable(e);
    let mut placed = Vec::with_capacity(partitions.len());
    for p in partitions {
        // Looking the stream up reads its info, leaders included.
        let stream = js
            .context
            .get_stream(&p.stream)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let cluster = stream
            .cached_info()
            .cluster
            .clone()
            .ok_or_else(|| unavailable(format!("{}: not clustered", p.stream)))?;
        let leader = cluster
            .leader
            .ok_or_else(|| unavailable(format!("{}: no leader", p.stream)))?;
        let mut peers: Vec<String> = cluster.replicas.into_iter().map(|r| r.name).collect();
        peers.push(leader.clone());
        let consumer_leader = match &p.consumer {
            Some(c) => Some(
                stream
                    .consumer_info(c)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?
                    .cluster
                    .and_then(|c| c.leader)
                    .ok_or_else(|| unavailable(format!("{}/{c}: no leader", p.stream)))?,
            ),
            None => None,
        };
        let companion_leader = match &p.companion {
            Some(c) => Some(
                js.context
                    .get_stream(c)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?
                    .cached_info()
                    .cluster
                    .clone()
                    .and_then(|c| c.leader)
                    .ok_or_else(|| unavailable(format!("{c}: no leader")))?,
            ),
            None => None,
        };
        placed.push(Placed {
            leader,
            peers,
            consumer_leader,
            companion_leader,
        });
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(leader: &str, consumer: Option<&str>) -> Placed {
        Placed {
            leader: leader.into(),
            peers: vec!["n1".into(), "n2".into(), "n3".into()],
            consumer_leader: consumer.map(str::to_string),
            companion_leader: None,
        }
    }

    #[test]
    fn spread_and_matched_leaders_stay_put() {
        let placed = [at("n1", Some("n1")), at("n2", Some("n2")), at("n3", None)];
        assert_eq!(plan(&placed), vec![]);
    }

    #[test]
    fn a_consumer_led_elsewhere_than_its_stream_moves() {
        let placed = [at("n1", Some("n2")), at("n2", Some("n2"))];
        assert_eq!(plan(&placed), vec![Move::Consumer(0)]);
    }

    #[test]
    fn a_companion_led_elsewhere_than_its_stream_moves() {
        let mut p = at("n1", Some("n1"));
        p.companion_leader = Some("n3".into());
        let placed = [p, at("n2", Some("n2"))];
        assert_eq!(plan(&placed), vec![Move::Companion(0)]);
    }

    #[test]
    fn one_node_leading_three_gives_up_two() {
        let placed = [
            at("n1", Some("n1")),
            at("n1", Some("n1")),
            at("n1", Some("n3")),
        ];
        // The partitions moving keep their consumers for now (the stream's new leader is
        // not known yet).
        assert_eq!(plan(&placed), vec![Move::Stream(2), Move::Stream(1)]);
    }

    #[test]
    fn no_stream_moves_when_every_peer_leads_already() {
        let placed = [
            at("n1", None),
            at("n2", None),
            at("n3", None),
            at("n3", None),
        ];
        assert_eq!(plan(&placed), vec![]);
    }

    #[test]
    fn a_stream_moves_only_towards_its_own_free_peers() {
        let mut tight = at("n1", None);
        tight.peers = vec!["n1".into(), "n2".into()];
        let placed = [at("n2", None), tight.clone(), tight];
        // n3 leads nothing, but only the first partition could move there, and n2 (the
        // tight partitions' other peer) leads one already.
        assert_eq!(plan(&placed), vec![]);
    }
}
