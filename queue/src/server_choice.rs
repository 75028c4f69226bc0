//! Which NATS server a host's connection goes to next. A server that hangs (stopped, a
//! stalled disk) still accepts connections (the kernel completes the handshake), so a
//! client that has just given up on it can pick it again straight away and hang anew; the
//! client's own choice is random. Here the server just left, or just failed to connect,
//! is tried last.

use std::sync::Mutex;

use async_nats::{Server, ServerAddr};

/// The server to connect to: of those in `pool`, not `left` (unless it is the only one),
/// the fewest failed attempts first, `turn` choosing among equals (so that hosts spread).
pub fn next_server(pool: &[Server], left: Option<&ServerAddr>, turn: usize) -> Option<ServerAddr> {
    let others: Vec<&Server> = pool.iter().filter(|s| Some(&s.addr) != left).collect();
    let candidates = if others.is_empty() {
        pool.iter().collect()
    } else {
        others
    };
    let fewest = candidates.iter().map(|s| s.failed_attempts).min()?;
    let best: Vec<&&Server> = candidates
        .iter()
        .filter(|s| s.failed_attempts == fewest)
        .collect();
    Some(best[turn % best.len()].addr.clone())
}

/// The choices of one connection: each pick is remembered, as the server the next pick
/// leaves (whether it was connected to and lost, or could not be reached).
pub struct Chooser {
    last: Mutex<Option<ServerAddr>>,
    turn: std::sync::atomic::AtomicUsize,
}

impl Chooser {
    /// `seed` spreads the first choices of hosts sharing one list of servers.
    pub fn new(seed: usize) -> Self {
        Self {
            last: Mutex::new(None),
            turn: std::sync::atomic::AtomicUsize::new(seed),
        }
    }

    pub fn pick(&self, pool: &[Server]) -> Option<ServerAddr> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let next = next_server(pool, last.as_ref(), turn)?;
        *last = Some(next.clone());
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(port: u16, failed: usize) -> Server {
        Server {
            addr: format!("nats://127.0.0.1:{port}").parse().unwrap(),
            failed_attempts: failed,
            did_connect: true,
            is_discovered: false,
            last_error: None,
        }
    }

    #[test]
    fn the_server_just_left_is_not_picked_again_while_another_is_there() {
        let pool = [server(1, 0), server(2, 0), server(3, 0)];
        let chooser = Chooser::new(0);
        let mut previous = chooser.pick(&pool).unwrap();
        for _ in 0..20 {
            let next = chooser.pick(&pool).unwrap();
            assert_ne!(next, previous);
            previous = next;
        }
    }

    #[test]
    fn servers_that_failed_fewer_times_come_first() {
        let pool = [server(1, 0), server(2, 3), server(3, 1)];
        let left: ServerAddr = "nats://127.0.0.1:1".parse().unwrap();
        for turn in 0..4 {
            assert_eq!(
                next_server(&pool, Some(&left), turn).unwrap().port(),
                3,
                "turn {turn}"
            );
        }
    }

    #[test]
    fn a_single_server_is_picked_even_if_just_left_and_none_from_nothing() {
        let pool = [server(1, 5)];
        let left = pool[0].addr.clone();
        assert_eq!(next_server(&pool, Some(&left), 7), Some(left));
        assert_eq!(next_server(&[], None, 0), None);
    }

    #[test]
    fn hosts_with_other_seeds_start_on_other_servers() {
        let pool = [server(1, 0), server(2, 0), server(3, 0)];
        let firsts: std::collections::BTreeSet<u16> = (0..3)
            .map(|seed| Chooser::new(seed).pick(&pool).unwrap().port())
            .collect();
        assert_eq!(firsts.len(), 3);
    }
}
