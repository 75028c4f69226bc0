//! Admission control: refuse early (503 + Retry-After) when the work already waiting would
//! keep a new request past its deadline, instead of queueing it to time out later.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub struct Admission {
    slots: usize,
    deadline: Duration,
    /// Requests accepted and not yet answered.
    pending: AtomicUsize,
    /// Moving average of the functions' wall time, in µs.
    service_us: AtomicU64,
}

/// Releases its place in `pending` when the request ends, however it ends.
pub struct Ticket<'a>(&'a Admission);

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    pub fn new(slots: usize, deadline: Duration) -> Self {
        Self {
            slots: slots.max(1),
            deadline,
            pending: AtomicUsize::new(0),
            service_us: AtomicU64::new(20_000),
        }
    }

    /// The expected wait for a slot if one more request were accepted now.
    pub fn expected_wait(&self) -> Duration {
        let ahead = self
            .pending
            .load(Ordering::Relaxed)
            .saturating_sub(self.slots - 1);
        let per_slot = ahead as f64 / self.slots as f64;
        Duration::from_micros((per_slot * self.service_us.load(Ordering::Relaxed) as f64) as u64)
    }

    /// Admits a request, or says how long to wait before trying again.
    pub fn admit(&self) -> Result<Ticket<'_>, Duration> {
        let wait = self.expected_wait();
        if wait > self.deadline / 2 {
            return Err(wait);
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        Ok(Ticket(self))
    }

    pub fn observe(&self, service: Duration) {
        let sample = service.as_micros() as u64;
        let old = self.service_us.load(Ordering::Relaxed);
        // EWMA with weight 1/8: follows a change of load within a few dozen requests.
        self.service_us
            .store(old - old / 8 + sample / 8, Ordering::Relaxed);
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_once_the_backlog_would_outlast_the_deadline() {
        let a = Admission::new(2, Duration::from_secs(1));
        for _ in 0..50 {
            a.observe(Duration::from_millis(100));
        }
        let mut tickets = Vec::new();
        let refused = loop {
            match a.admit() {
                Ok(t) => tickets.push(t),
                Err(wait) => break wait,
            }
            assert!(tickets.len() < 100, "never refused");
        };
        // 2 slots at ~100 ms each: about 10 requests fit in half a second of queueing.
        assert!(
            (9..=13).contains(&tickets.len()),
            "admitted {}",
            tickets.len()
        );
        assert!(refused > Duration::from_millis(500));
        drop(tickets);
        assert_eq!(a.pending(), 0);
        assert!(a.admit().is_ok());
    }
}
