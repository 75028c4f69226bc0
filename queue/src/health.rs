//! Which partitions of something partitioned (a queue, the fleet's staging) answered
//! lately: a partition that failed or did not answer in time is tried last for a while, so
//! a dead leader costs one attempt, not one per call.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a failed partition is tried last (then as any other again): about an
/// election's length, so that a dead leader costs a caller one attempt per election.
const DOWN_FOR: Duration = Duration::from_secs(5);

pub struct Health {
    /// Per partition: tried last until then.
    down_until: Mutex<Vec<Option<Instant>>>,
    down_for: Duration,
}

impl Health {
    pub fn new(partitions: usize) -> Self {
        Self::with_down_for(partitions, DOWN_FOR)
    }

    fn with_down_for(partitions: usize, down_for: Duration) -> Self {
        Self {
            down_until: Mutex::new(vec![None; partitions]),
            down_for,
        }
    }

    pub fn mark_down(&self, index: usize) {
        self.down_until.lock().unwrap_or_else(|p| p.into_inner())[index] =
            Some(Instant::now() + self.down_for);
    }

    /// Whether some partition failed lately: the thing as a whole is degraded, and what
    /// waits on one partition may be waiting out an election.
    pub fn any_down(&self) -> bool {
        let now = Instant::now();
        self.down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|until| until.is_some_and(|t| t > now))
    }

    /// Partition indexes from `first` on (modulo their number), those not marked down
    /// first: every one is still tried in the end (the mark is a guess).
    pub fn order(&self, first: usize) -> Vec<usize> {
        let (mut up, down) = self.split_up(first);
        up.extend(down);
        up
    }

    /// The partitions not marked down, from `first` on; all of them when every one is.
    pub fn up(&self, first: usize) -> Vec<usize> {
        let (up, down) = self.split_up(first);
        if up.is_empty() { down } else { up }
    }

    fn split_up(&self, first: usize) -> (Vec<usize>, Vec<usize>) {
        let now = Instant::now();
        let down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        let n = down.len();
        (0..n)
            .map(|k| (first + k) % n)
            .partition(|i| down[*i].is_none_or(|until| until <= now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_partition_goes_last_until_its_time_is_up() {
        let down_for = Duration::from_millis(50);
        let h = Health::with_down_for(3, down_for);
        assert_eq!(h.order(1), vec![1, 2, 0]);
        assert!(!h.any_down());
        h.mark_down(2);
        assert!(h.any_down());
        assert_eq!(h.order(1), vec![1, 0, 2]);
        assert_eq!(h.up(1), vec![1, 0]);
        std::thread::sleep(down_for + Duration::from_millis(10));
        assert_eq!(h.order(1), vec![1, 2, 0]);
        assert!(!h.any_down());
    }

    #[test]
    fn with_every_partition_down_all_are_still_tried() {
        let h = Health::new(2);
        h.mark_down(0);
        h.mark_down(1);
        assert_eq!(h.up(0), vec![0, 1]);
        assert_eq!(h.order(1), vec![1, 0]);
    }
}
