//! `imgfleet bench load`: an open-loop load generator. Requests go out at a constant
//! arrival rate whatever the service does, and each is timed from when it was *due*, so a
//! slow service cannot hide its latency by slowing the generator down (coordinated
//! omission). The rate ramps step by step until p99 breaks its target; the run prints a
//! table and the tip-over point and draws p50/p99 against offered load.

pub mod plot;
pub mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use stats::{Outcome, Step, Targets, Verdict};

#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// `http://127.0.0.1:<port>/<path and query>`: loopback only.
    pub url: http::Uri,
    pub api_key: Option<String>,
    pub body: Bytes,
    pub content_type: String,
    pub rates: Vec<f64>,
    pub step: Duration,
    pub targets: Targets,
    pub request_timeout: Duration,
    /// The whole run stops by this time, whatever is left of the ramp.
    pub max_duration: Duration,
    /// Steps still run after the first one that did not hold (to show the slope).
    pub steps_after_tip: usize,
    /// Requests outstanding at once before the generator counts itself the bottleneck.
    pub max_in_flight: u64,
}

/// Refuses anything but plain HTTP to this machine: the generator is a test tool, not a
/// way to flood somebody else's service.
pub fn loopback_url(raw: &str) -> anyhow::Result<http::Uri> {
    let url: http::Uri = raw.parse()?;
    anyhow::ensure!(
        url.scheme_str() == Some("http"),
        "only http:// URLs (got {raw})"
    );
    let host = url.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(
        loopback,
        "the load generator only sends to this machine (127.0.0.1, ::1, localhost), not {host}"
    );
    Ok(url)
}

#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn one(client: &HttpClient, plan: &LoadPlan) -> Result<u16, ()> {
    let mut req = http::Request::post(plan.url.clone())
        .header(http::header::CONTENT_TYPE, &plan.content_type)
        .body(Full::new(plan.body.clone()))
        .map_err(|_| ())?;
    if let Some(key) = &plan.api_key
        && let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {key}"))
    {
        req.headers_mut().insert(http::header::AUTHORIZATION, v);
    }
    let resp = client.request(req).await.map_err(|_| ())?;
    let status = resp.status().as_u16();
    // The answer counts once it is all here.
    resp.into_body().collect().await.map_err(|_| ())?;
    Ok(status)
}

async fn run_step(
    client: &HttpClient,
    plan: &Arc<LoadPlan>,
    rate: f64,
    progress: &Arc<Progress>,
) -> (Vec<Outcome>, u64) {
    let count = (rate * plan.step.as_secs_f64()).round().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = tokio::time::Instant::now();
    let mut unsent = 0;
    for i in 0..count {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let outstanding =
            progress.sent.load(Ordering::Relaxed) - progress.done.load(Ordering::Relaxed);
        if outstanding >= plan.max_in_flight {
            unsent += 1;
            continue;
        }
        progress.sent.fetch_add(1, Ordering::Relaxed);
        let (client, plan, progress, tx) =
            (client.clone(), plan.clone(), progress.clone(), tx.clone());
        tokio::spawn(async move {
            let answer = tokio::time::timeout(plan.request_timeout, one(&client, &plan)).await;
            let latency_ms = due.elapsed().as_secs_f64() * 1e3;
            let outcome = match answer {
                Ok(Ok(status)) if (200..300).contains(&status) => Outcome::Ok { latency_ms },
                Ok(Ok(status)) => Outcome::Refused { status, latency_ms },
                Ok(Err(())) | Err(_) => Outcome::Failed { latency_ms },
            };
            if !matches!(outcome, Outcome::Ok { .. }) {
                progress.errors.fetch_add(1, Ordering::Relaxed);
            }
            progress.done.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(outcome);
        });
    }
    drop(tx);
    let mut outcomes = Vec::with_capacity(count as usize);
    while let Some(o) = rx.recv().await {
        outcomes.push(o);
    }
    (outcomes, unsent)
}

/// Runs the ramp; progress goes to stderr once a second.
pub async fn run(plan: LoadPlan) -> Vec<Step> {
    let plan = Arc::new(plan);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let began = Instant::now();
    let mut steps: Vec<Step> = Vec::new();
    for (i, &rate) in plan.rates.iter().enumerate() {
        if began.elapsed() + plan.step > plan.max_duration {
            eprintln!("stopping: the next step would pass --max-duration");
            break;
        }
        let progress = Arc::new(Progress::default());
        let ticker = {
            let progress = progress.clone();
            let total = plan.rates.len();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let (sent, done) = (
                        progress.sent.load(Ordering::Relaxed),
                        progress.done.load(Ordering::Relaxed),
                    );
                    eprintln!(
                        "  step {}/{total} at {rate:.0} req/s: sent {sent}, answered {done}, in flight {}, errors {}",
                        i + 1,
                        sent - done,
                        progress.errors.load(Ordering::Relaxed),
                    );
                }
            })
        };
        let started = Instant::now();
        let (outcomes, unsent) = run_step(&client, &plan, rate, &progress).await;
        ticker.abort();
        // Until the last answer: past the tip-over, answers trail the step and the
        // service's real throughput is below the offered rate.
        let seconds = started.elapsed().as_secs_f64().max(plan.step.as_secs_f64());
        let step = stats::summarise(rate, seconds, &outcomes, unsent, plan.targets);
        eprintln!(
            "step {}: {rate:.0} req/s offered, {:.1} ok/s, p50 {:.1} ms, p99 {:.1} ms, {} refused, {} failed: {:?}",
            i + 1,
            step.achieved_rps,
            step.p50_ms,
            step.p99_ms,
            step.refused,
            step.failed,
            step.verdict
        );
        steps.push(step);
        let first_bad = steps.iter().position(|s| s.verdict != Verdict::Held);
        if first_bad.is_some_and(|bad| steps.len() - 1 - bad >= plan.steps_after_tip) {
            break;
        }
    }
    steps
}

/// The summary line under the table.
pub fn verdict_line(steps: &[Step], targets: Targets) -> String {
    match stats::tip_over(steps) {
        Some((Some(good), bad)) => format!(
            "tip-over: held {:.0} req/s (p99 {:.1} ms); at {:.0} req/s {} (p99 target {} ms, errors ≤ {:.1} %)",
            good.offered_rps,
            good.p99_ms,
            bad.offered_rps,
            describe(bad),
            targets.p99_ms,
            targets.max_error_ratio * 100.0
        ),
        Some((None, bad)) => format!(
            "tip-over: already at the first step, {:.0} req/s: {}",
            bad.offered_rps,
            describe(bad)
        ),
        None => format!(
            "no tip-over up to {:.0} req/s: raise --max-rps",
            steps.last().map_or(0.0, |s| s.offered_rps)
        ),
    }
}

fn describe(step: &Step) -> String {
    match step.verdict {
        Verdict::Held => "held".into(),
        Verdict::SlowP99 => format!("p99 was {:.1} ms", step.p99_ms),
        Verdict::Errors => format!(
            "{} of {} requests refused or failed",
            step.refused + step.failed,
            step.sent
        ),
        Verdict::Saturated => format!(
            "only {:.1} answers/s came back (a backlog was growing)",
            step.achieved_rps
        ),
        Verdict::GeneratorLimited => {
            "the generator hit its in-flight limit (raise --max-in-flight)".into()
        }
    }
}

/// A photo-like JPEG (smooth gradients and fine noise, `width`×`height`) for runs without
/// `--image`.
pub fn sample_jpeg(width: u32, height: u32) -> Bytes {
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let noise = (seed % 24) as u32;
        let r = (x * 255 / width + noise).min(255);
        let g = (y * 255 / height + noise).min(255);
        let b = ((x + y) * 128 / (width + height) + 64 + noise).min(255);
        image::Rgb([r as u8, g as u8, b as u8])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .expect("encoding a generated image");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_targets_are_accepted() {
        for ok in [
            "http://127.0.0.1:8080/v1/resize?w=300",
            "http://localhost:1/x",
            "http://[::1]:8080/v1/resize",
            "http://127.1.2.3/",
        ] {
            assert!(super::loopback_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:8080/",
            "http://example.com/",
            "https://127.0.0.1/",
            "http://0.0.0.0:8080/",
            "not a url",
        ] {
            assert!(super::loopback_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sample_image_is_a_jpeg_of_the_asked_size() {
        let bytes = super::sample_jpeg(320, 200);
        let img = image::load_from_memory(&bytes).unwrap();
        assert_eq!((img.width(), img.height()), (320, 200));
    }
}
