//! Per-tenant request rate: a token bucket whose state the caller keeps.

/// Tokens refill at `rate` per second up to `rate` (one second of burst, at least one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    pub fn full(rate: f64, now_ms: u64) -> Self {
        Self {
            tokens: burst(rate),
            last_ms: now_ms,
        }
    }

    /// Takes one token, or says how many milliseconds until one is available.
    pub fn take(&mut self, rate: f64, now_ms: u64) -> Result<(), u64> {
        if !(rate.is_finite() && rate > 0.0) {
            // A zero or nonsensical rate admits nothing, and says so for a while.
            return Err(1000);
        }
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(burst(rate));
        self.last_ms = self.last_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / rate) * 1000.0).ceil() as u64)
        }
    }
}

fn burst(rate: f64) -> f64 {
    rate.max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_then_the_steady_rate() {
        let mut b = TokenBucket::full(5.0, 0);
        for _ in 0..5 {
            assert_eq!(b.take(5.0, 0), Ok(()));
        }
        assert_eq!(b.take(5.0, 0), Err(200));
        assert_eq!(b.take(5.0, 100), Err(100));
        assert_eq!(b.take(5.0, 200), Ok(()));
        // A long pause refills to the burst, never beyond.
        let mut granted = 0;
        while b.take(5.0, 60_000).is_ok() {
            granted += 1;
        }
        assert_eq!(granted, 5);
    }

    #[test]
    fn slow_rates_still_allow_one_request() {
        let mut b = TokenBucket::full(0.5, 0);
        assert_eq!(b.take(0.5, 0), Ok(()));
        assert_eq!(b.take(0.5, 0), Err(2000));
        assert_eq!(b.take(0.5, 2000), Ok(()));
    }

    #[test]
    fn a_zero_rate_admits_nothing_and_time_going_backwards_is_harmless() {
        let mut b = TokenBucket::full(0.0, 0);
        assert!(b.take(0.0, 10).is_err());
        let mut b = TokenBucket::full(1.0, 5_000);
        assert_eq!(b.take(1.0, 5_000), Ok(()));
        assert!(b.take(1.0, 1_000).is_err());
    }
}
