//! Which partitions of something partitioned (a queue, the fleet's staging) answered
//! lately: a partition that failed or did not answer in time is tried last for a while, so
//! a dead leader costs one attempt, not one per call; and for longer it stays suspect,
//! so that a node that hangs on and off (stopped, resumed, stopped again) costs a short
//! attempt each time its mark runs out, not a whole one.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a failed partition is tried last (then as any other again): about an
/// election's length, so that a dead leader costs a caller one attempt per election.
const DOWN_FOR: Duration = Duration::from_secs(5);
/// How long a partition that failed stays suspect: longer than a few stop-and-go cycles of
/// a node that hangs, short enough that a partition that failed once, long ago, is not
/// held to a shorter attempt than a healthy one under load may need.
const SUSPECT_FOR: Duration = Duration::from_secs(30);

/// What is known of one partition: until when it is tried last, and until when suspect.
#[derive(Clone, Copy, Default)]
struct Marks {
    down_until: Option<Instant>,
    suspect_until: Option<Instant>,
}

pub struct Health {
    marks: Mutex<Vec<Marks>>,
    down_for: Duration,
    suspect_for: Duration,
}

impl Health {
    pub fn new(partitions: usize) -> Self {
        Self::with_down_for(partitions, DOWN_FOR)
    }

    /// Partitions marked down for `down_for` after a failure (suspect for longer).
    pub fn with_down_for(partitions: usize, down_for: Duration) -> Self {
        Self {
            marks: Mutex::new(vec![Marks::default(); partitions]),
            down_for,
            suspect_for: SUSPECT_FOR.max(down_for),
        }
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Vec<Marks>> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn mark_down(&self, index: usize) {
        let now = Instant::now();
        self.marks()[index] = Marks {
            down_until: Some(now + self.down_for),
            suspect_until: Some(now + self.suspect_for),
        };
    }

    /// Tries partition `index` last for `for_` (or as long as it already is), without
    /// making it suspect: it is late to answer, which a failure may follow or not.
    pub fn mark_late(&self, index: usize, for_: Duration) {
        let until = Instant::now() + for_;
        let mut marks = self.marks();
        let down = &mut marks[index].down_until;
        if down.is_none_or(|t| t < until) {
            *down = Some(until);
        }
    }

    /// Whether partition `index` failed lately (and is tried last).
    pub fn is_down(&self, index: usize) -> bool {
        let now = Instant::now();
        self.marks()[index].down_until.is_some_and(|t| t > now)
    }

    /// Whether partition `index` failed within the last [`SUSPECT_FOR`]: a call on it had
    /// better not wait as long as on one that never failed.
    pub fn suspect(&self, index: usize) -> bool {
        let now = Instant::now();
        self.marks()[index].suspect_until.is_some_and(|t| t > now)
    }

    /// Whether some partition failed lately: the thing as a whole is degraded, and what
    /// waits on one partition may be waiting out an election.
    pub fn any_down(&self) -> bool {
        let now = Instant::now();
        self.marks()
            .iter()
            .any(|m| m.down_until.is_some_and(|t| t > now))
    }

    /// Partition indexes from `first` on (modulo their number): those that have not failed
    /// lately, then the suspect ones, then those marked down; every one is still tried in
    /// the end (the marks are guesses). Suspect partitions go after the others although
    /// they answer again: a node that hangs on and off answers for a moment between its
    /// hangs, and what is written to it then waits out its next one.
    pub fn order(&self, first: usize) -> Vec<usize> {
        let now = Instant::now();
        let marks = self.marks();
        let n = marks.len();
        let (mut sound, mut suspect, mut down) = (Vec::new(), Vec::new(), Vec::new());
        for i in (0..n).map(|k| (first + k) % n) {
            let m = &marks[i];
            if m.down_until.is_some_and(|t| t > now) {
                down.push(i);
            } else if m.suspect_until.is_some_and(|t| t > now) {
                suspect.push(i);
            } else {
                sound.push(i);
            }
        }
        sound.append(&mut suspect);
        sound.append(&mut down);
        sound
    }

    /// The partitions not marked down, from `first` on; all of them when every one is.
    pub fn up(&self, first: usize) -> Vec<usize> {
        let (up, down) = self.split_up(first);
        if up.is_empty() { down } else { up }
    }

    fn split_up(&self, first: usize) -> (Vec<usize>, Vec<usize>) {
        let now = Instant::now();
        let marks = self.marks();
        let n = marks.len();
        (0..n)
            .map(|k| (first + k) % n)
            .partition(|i| marks[*i].down_until.is_none_or(|until| until <= now))
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
        assert!(!h.suspect(2));
        h.mark_down(2);
        assert!(h.any_down());
        assert!(h.is_down(2) && !h.is_down(1));
        assert_eq!(h.order(1), vec![1, 0, 2]);
        assert_eq!(h.up(1), vec![1, 0]);
        std::thread::sleep(down_for + Duration::from_millis(10));
        assert!(!h.any_down());
        assert!(!h.is_down(2));
        // Back among those a receive polls first, but still suspect: tried after the
        // partitions that never failed, and given a short attempt.
        assert_eq!(h.up(1), vec![1, 2, 0]);
        assert_eq!(h.order(1), vec![1, 0, 2]);
        assert!(h.suspect(2));
        assert!(!h.suspect(1));
        h.mark_down(0);
        assert_eq!(h.order(0), vec![1, 2, 0], "sound, then suspect, then down");
    }

    #[test]
    fn a_late_partition_goes_last_for_a_while_without_becoming_suspect() {
        let h = Health::new(3);
        h.mark_late(0, Duration::from_millis(50));
        assert!(h.is_down(0) && !h.suspect(0));
        assert_eq!(h.order(0), vec![1, 2, 0]);
        // A late mark never shortens a failure's.
        h.mark_down(1);
        h.mark_late(1, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!h.is_down(0) && !h.suspect(0));
        assert!(h.is_down(1));
        assert_eq!(h.order(0), vec![0, 2, 1]);
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
