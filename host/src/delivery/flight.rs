//! Single flight: concurrent requests for the same thing share one piece of work. The work
//! runs as its own task, so it finishes for everyone waiting even when the request that
//! started it is gone; each waiter waits with its own deadline. A flight is forgotten the
//! moment it ends, so its outcome — a failure included — is handed only to those who were
//! already waiting, never to a request that arrives after it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// A flight in the air: its id (a key's next flight is another) and its outcome to come.
type Flight<T> = (u64, watch::Receiver<Option<T>>);

pub struct Flights<T> {
    inflight: Mutex<HashMap<String, Flight<T>>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A place in a flight: whether this request started it, and its outcome to come.
pub struct Seat<T> {
    pub started: bool,
    outcome: watch::Receiver<Option<T>>,
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inflight: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Joins the flight for `key`, or starts one running `work`.
    pub fn join<F>(self: &Arc<Self>, key: &str, work: impl FnOnce() -> F) -> Seat<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, rx)) = inflight.get(key) {
            return Seat {
                started: false,
                outcome: rx.clone(),
            };
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.to_string(), (id, rx.clone()));
        drop(inflight);
        let (flights, key, work) = (self.clone(), key.to_string(), work());
        tokio::spawn(async move {
            let outcome = work.await;
            // Forgotten before it is announced: whoever comes next starts afresh.
            {
                let mut inflight = flights.inflight.lock().unwrap_or_else(|p| p.into_inner());
                if inflight.get(&key).is_some_and(|(i, _)| *i == id) {
                    inflight.remove(&key);
                }
            }
            let _ = tx.send(Some(outcome));
        });
        Seat {
            started: true,
            outcome: rx,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

impl<T: Clone> Seat<T> {
    /// The flight's outcome, or `None` once `until` passes (the flight goes on for others).
    pub async fn outcome(mut self, until: tokio::time::Instant) -> Option<T> {
        let waited = tokio::time::timeout_at(until, self.outcome.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(v)) => v.clone(),
            // The task died without an outcome (a panic): nothing to hand out.
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_joiners_share_one_run_and_a_later_one_starts_afresh() {
        let flights = Flights::<Result<u32, String>>::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let far = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut seats = Vec::new();
        for _ in 0..50 {
            let (runs, gate) = (runs.clone(), gate.clone());
            seats.push(flights.join("k", move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                Err("the origin failed".to_string())
            }));
        }
        assert_eq!(seats.iter().filter(|s| s.started).count(), 1);
        // One waiter gives up early; the flight goes on for the others.
        let impatient = flights.join("k", || async { Ok(0) });
        assert!(!impatient.started);
        let soon = tokio::time::Instant::now() + Duration::from_millis(20);
        assert_eq!(impatient.outcome(soon).await, None);
        gate.notify_one();
        for seat in seats {
            assert_eq!(
                seat.outcome(far).await,
                Some(Err("the origin failed".into()))
            );
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // The failure is not kept: the next request runs again.
        let again = flights.join("k", || async { Ok(7) });
        assert!(again.started);
        assert_eq!(again.outcome(far).await, Some(Ok(7)));
        assert_eq!(flights.in_flight(), 0);
    }
}
