//! The arithmetic of a load run, kept apart from sockets and clocks: latency percentiles
//! of a step, and the verdict on whether the service held the offered rate.

use serde::Serialize;

/// What happened to one request, timed from when it was *due* (open loop: a late send
/// counts against the service, so latency is not hidden by coordinated omission).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Ok {
        latency_ms: f64,
    },
    /// An HTTP answer other than 2xx (429, 503, …).
    Refused {
        status: u16,
        latency_ms: f64,
    },
    /// No answer: connection error, or none within the request timeout.
    Failed {
        latency_ms: f64,
    },
}

impl Outcome {
    pub fn latency_ms(self) -> f64 {
        match self {
            Self::Ok { latency_ms }
            | Self::Refused { latency_ms, .. }
            | Self::Failed { latency_ms } => latency_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Held,
    /// p99 over the target.
    SlowP99,
    /// More than the allowed share of requests refused or failed.
    Errors,
    /// The generator could not send at the offered rate (its own limit, not the service's).
    GeneratorLimited,
    /// Answers came back slower than requests went out (under [`KEEP_UP`] of the rate):
    /// a backlog is growing even if this step's p99 does not show it yet.
    Saturated,
}

/// The share of the offered rate a step must answer to count as keeping up.
pub const KEEP_UP: f64 = 0.95;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    pub offered_rps: f64,
    pub seconds: f64,
    pub sent: u64,
    pub ok: u64,
    pub refused: u64,
    pub failed: u64,
    /// Successful answers per second.
    pub achieved_rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Most frequent refusal status, if any.
    pub refused_status: Option<u16>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy)]
pub struct Targets {
    pub p99_ms: f64,
    /// Largest acceptable share of refused or failed requests.
    pub max_error_ratio: f64,
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises one step. `unsent` counts requests that were due but never went out.
pub fn summarise(
    offered_rps: f64,
    seconds: f64,
    outcomes: &[Outcome],
    unsent: u64,
    targets: Targets,
) -> Step {
    let mut latencies: Vec<f64> = outcomes.iter().map(|o| o.latency_ms()).collect();
    latencies.sort_by(f64::total_cmp);
    let ok = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Ok { .. }))
        .count() as u64;
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for o in outcomes {
        if let Outcome::Refused { status, .. } = o {
            *statuses.entry(*status).or_default() += 1;
        }
    }
    let refused = statuses.values().sum::<u64>();
    let failed = outcomes.len() as u64 - ok - refused;
    let sent = outcomes.len() as u64;
    let p99 = percentile(&latencies, 0.99);
    let errors = (refused + failed) as f64 / sent.max(1) as f64;
    let verdict = if unsent > 0 {
        Verdict::GeneratorLimited
    } else if errors > targets.max_error_ratio {
        Verdict::Errors
    } else if p99.is_nan() || p99 > targets.p99_ms {
        // No answers at all (NaN) is not a pass either.
        Verdict::SlowP99
    } else if (ok as f64 / seconds) < offered_rps * KEEP_UP {
        Verdict::Saturated
    } else {
        Verdict::Held
    };
    Step {
        offered_rps,
        seconds,
        sent,
        ok,
        refused,
        failed,
        achieved_rps: ok as f64 / seconds,
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: p99,
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        refused_status: statuses.iter().max_by_key(|(_, n)| **n).map(|(s, _)| *s),
        verdict,
    }
}

/// The rates of a ramp: `start`, then `+ step` each time, up to `max` inclusive.
pub fn ramp(start: f64, step: f64, max: f64) -> Vec<f64> {
    let mut rates = Vec::new();
    let mut r = start;
    while r <= max + 1e-9 && rates.len() < 10_000 {
        rates.push(r);
        r += step;
    }
    rates
}

/// The last rate that held before the first that did not: the tip-over point.
pub fn tip_over(steps: &[Step]) -> Option<(Option<&Step>, &Step)> {
    let first_bad = steps.iter().position(|s| s.verdict != Verdict::Held)?;
    let last_good = first_bad.checked_sub(1).map(|i| &steps[i]);
    Some((last_good, &steps[first_bad]))
}

/// The table printed at the end of a run (Markdown, so it can go straight into docs).
pub fn table(steps: &[Step]) -> String {
    let mut out = String::from(
        "| offered req/s | sent | ok req/s | p50 ms | p90 ms | p99 ms | max ms | refused | failed | verdict |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for s in steps {
        let refused = match s.refused_status {
            Some(code) => format!("{} ({code})", s.refused),
            None => s.refused.to_string(),
        };
        out.push_str(&format!(
            "| {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:?} |\n",
            s.offered_rps,
            s.sent,
            s.achieved_rps,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.max_ms,
            refused,
            s.failed,
            s.verdict
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGETS: Targets = Targets {
        p99_ms: 100.0,
        max_error_ratio: 0.01,
    };

    fn oks(latencies: impl IntoIterator<Item = f64>) -> Vec<Outcome> {
        latencies
            .into_iter()
            .map(|latency_ms| Outcome::Ok { latency_ms })
            .collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn a_step_holds_only_with_fast_answers_and_few_errors() {
        let fast = summarise(10.0, 1.0, &oks((1..=100).map(f64::from)), 0, TARGETS);
        assert_eq!(fast.verdict, Verdict::Held);
        assert_eq!((fast.sent, fast.ok, fast.achieved_rps), (100, 100, 100.0));

        let slow = summarise(
            10.0,
            1.0,
            &oks((1..=100).map(|i| f64::from(i) * 2.0)),
            0,
            TARGETS,
        );
        assert_eq!(slow.verdict, Verdict::SlowP99);

        let mut refused = oks((1..=98).map(f64::from));
        refused.extend([
            Outcome::Refused {
                status: 503,
                latency_ms: 1.0,
            },
            Outcome::Failed { latency_ms: 5.0 },
        ]);
        let step = summarise(10.0, 1.0, &refused, 0, TARGETS);
        assert_eq!(step.verdict, Verdict::Errors);
        assert_eq!(
            (step.refused, step.failed, step.refused_status),
            (1, 1, Some(503))
        );

        let behind = summarise(100.0, 1.25, &oks((1..=100).map(f64::from)), 0, TARGETS);
        assert_eq!(
            behind.verdict,
            Verdict::Saturated,
            "100 answers took 1.25 s"
        );

        let limited = summarise(10.0, 1.0, &oks([1.0]), 3, TARGETS);
        assert_eq!(limited.verdict, Verdict::GeneratorLimited);
        let empty = summarise(10.0, 1.0, &[], 0, TARGETS);
        assert_eq!(empty.verdict, Verdict::SlowP99, "no answers is not a pass");
    }

    #[test]
    fn the_tip_over_is_the_first_step_that_did_not_hold() {
        let step = |rps: f64, verdict| Step {
            verdict,
            ..summarise(rps, 1.0, &oks([1.0]), 0, TARGETS)
        };
        let steps = [
            step(10.0, Verdict::Held),
            step(20.0, Verdict::Held),
            step(30.0, Verdict::SlowP99),
            step(40.0, Verdict::Held),
        ];
        let (good, bad) = tip_over(&steps).unwrap();
        assert_eq!((good.unwrap().offered_rps, bad.offered_rps), (20.0, 30.0));
        assert!(tip_over(&steps[..2]).is_none());
        let (good, bad) = tip_over(&steps[2..]).unwrap();
        assert!(good.is_none());
        assert_eq!(bad.offered_rps, 30.0);
    }

    #[test]
    fn ramps_include_the_maximum() {
        assert_eq!(ramp(10.0, 10.0, 40.0), vec![10.0, 20.0, 30.0, 40.0]);
        assert_eq!(ramp(5.0, 10.0, 20.0), vec![5.0, 15.0]);
    }
}
