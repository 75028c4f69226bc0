//! What each tenant has used this calendar month, for monthly quotas. Seeded from the audit
//! log at start-up, then counted as requests finish.

use std::collections::HashMap;
use std::sync::Mutex;

use imgfleet_auth::Usage;
use imgfleet_auth::calendar::month_start_ms;

#[derive(Default)]
pub struct MonthUsage {
    inner: Mutex<HashMap<String, (u64, Usage)>>,
}

impl MonthUsage {
    pub fn seed(&self, month_start: u64, totals: impl IntoIterator<Item = (String, Usage)>) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (tenant, usage) in totals {
            m.insert(tenant, (month_start, usage));
        }
    }

    pub fn get(&self, tenant: &str, now_ms: u64) -> Usage {
        let month = month_start_ms(now_ms);
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(tenant) {
            Some((start, usage)) if *start == month => *usage,
            _ => Usage::default(),
        }
    }

    pub fn add(&self, tenant: &str, now_ms: u64, bytes: u64, pixels: u64) {
        let month = month_start_ms(now_ms);
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = m
            .entry(tenant.to_string())
            .or_insert((month, Usage::default()));
        if entry.0 != month {
            *entry = (month, Usage::default());
        }
        entry.1.bytes = entry.1.bytes.saturating_add(bytes);
        entry.1.pixels = entry.1.pixels.saturating_add(pixels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV: u64 = 1_795_874_073_000;
    const DEC: u64 = 1_796_083_200_000 + 1000;

    #[test]
    fn usage_adds_up_within_a_month_and_restarts_with_the_next() {
        let u = MonthUsage::default();
        u.seed(
            month_start_ms(NOV),
            [(
                "acme".to_string(),
                Usage {
                    bytes: 10,
                    pixels: 1,
                },
            )],
        );
        u.add("acme", NOV, 5, 2);
        assert_eq!(
            u.get("acme", NOV),
            Usage {
                bytes: 15,
                pixels: 3
            }
        );
        assert_eq!(u.get("other", NOV), Usage::default());
        assert_eq!(u.get("acme", DEC), Usage::default());
        u.add("acme", DEC, 1, 1);
        assert_eq!(
            u.get("acme", DEC),
            Usage {
                bytes: 1,
                pixels: 1
            }
        );
    }
}
