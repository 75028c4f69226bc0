//! `imgfleet capacity`: how many hosts a request rate needs, from measured per-core
//! throughput (the resize benchmark's output), beside the reference design's envelope of
//! 10 conversions per second per core.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Conversions per second per core the reference design assumes for ~256 KB images.
pub const REFERENCE_PER_CORE: f64 = 10.0;

/// What `cargo bench -p imgfleet-tests --bench resize` writes next to its table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResizeBench {
    /// When it ran (RFC 3339, UTC).
    pub measured_at: String,
    pub job: String,
    pub photos: usize,
    pub avg_input_kb: f64,
    /// Images per second on one core, the whole function call.
    pub native_per_core: f64,
    pub wasm_per_core: f64,
    /// sharp (libvips) on the same photos and job, when it was installed for the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharp_per_core: Option<f64>,
}

/// Where the latest benchmark output is looked for, newest first: a fresh run in the
/// build directory, then the figures recorded with the docs.
pub fn default_sources(repo: &Path) -> Vec<PathBuf> {
    vec![
        repo.join("target/bench/resize.json"),
        repo.join("docs/bench/resize.json"),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    pub rps: f64,
    pub cores_per_host: u32,
    /// Fraction of each host kept free for bursts and failover (0.2 = run at 80 %).
    pub headroom: f64,
    /// Fraction of requests the result cache answers (0: every request is a resize).
    pub hit_ratio: f64,
    /// Cache hits one core serves per second (authentication, audit and metering included).
    pub hits_per_core: f64,
}

/// Requests per second per core when `hit_ratio` of them are cache hits: the time of a
/// resize for the rest, of a hit for those.
pub fn blended_per_core(resizes_per_core: f64, demand: &Demand) -> f64 {
    let h = demand.hit_ratio;
    if h <= 0.0 {
        return resizes_per_core;
    }
    1.0 / ((1.0 - h) / resizes_per_core + h / demand.hits_per_core)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub per_core: f64,
    /// Conversions per second one host serves at the target utilisation.
    pub per_host: f64,
    pub hosts: u64,
    /// With one more, so that losing any one host keeps the rate.
    pub hosts_n_plus_1: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CapacityError {
    #[error("--rps must be a positive number")]
    Rps,
    #[error("--cores-per-host must be at least 1")]
    Cores,
    #[error("--headroom must be at least 0 and below 1")]
    Headroom,
    #[error("the per-core throughput must be positive (got {0})")]
    PerCore(f64),
    #[error("--hit-ratio must be at least 0 and below 1, with --hits-per-core positive")]
    HitRatio,
}

pub fn plan(demand: Demand, per_core: f64) -> Result<Plan, CapacityError> {
    if !(demand.rps.is_finite() && demand.rps > 0.0) {
        return Err(CapacityError::Rps);
    }
    if demand.cores_per_host == 0 {
        return Err(CapacityError::Cores);
    }
    if !(0.0..1.0).contains(&demand.headroom) {
        return Err(CapacityError::Headroom);
    }
    if !(per_core.is_finite() && per_core > 0.0) {
        return Err(CapacityError::PerCore(per_core));
    }
    if !((0.0..1.0).contains(&demand.hit_ratio) && demand.hits_per_core > 0.0) {
        return Err(CapacityError::HitRatio);
    }
    let per_host = per_core * f64::from(demand.cores_per_host) * (1.0 - demand.headroom);
    // A hair under an exact multiple must not round up to a whole extra host.
    let hosts = (demand.rps / per_host - 1e-9).ceil().max(1.0) as u64;
    Ok(Plan {
        per_core,
        per_host,
        hosts,
        hosts_n_plus_1: hosts + 1,
    })
}

/// The table `imgfleet capacity` prints.
pub fn report(demand: Demand, bench: &ResizeBench, source: &Path) -> Result<String, CapacityError> {
    // The reference design prices every request as a resize.
    let uncached = Demand {
        hit_ratio: 0.0,
        ..demand
    };
    let cached = |per_core: f64| plan(demand, blended_per_core(per_core, &demand));
    let mut rows = vec![
        ("reference design", plan(uncached, REFERENCE_PER_CORE)?),
        ("imgfleet, WASM (as deployed)", cached(bench.wasm_per_core)?),
        ("imgfleet, native", cached(bench.native_per_core)?),
    ];
    if let Some(sharp) = bench.sharp_per_core {
        rows.push(("sharp (libvips), same photos", plan(uncached, sharp)?));
    }
    let mut out = format!(
        "{} requests/s, {} cores per host, {:.0} % headroom\n\
         measured: {} ({}; {} photos, avg {:.0} KB; {})\n",
        demand.rps,
        demand.cores_per_host,
        demand.headroom * 100.0,
        source.display(),
        bench.job,
        bench.photos,
        bench.avg_input_kb,
        bench.measured_at,
    );
    if demand.hit_ratio > 0.0 {
        out.push_str(&format!(
            "result cache: {:.1} % hits ({:.0} hits/s per core), so {:.0} resizes/s; the reference design and sharp resize every request\n",
            demand.hit_ratio * 100.0,
            demand.hits_per_core,
            demand.rps * (1.0 - demand.hit_ratio),
        ));
    }
    out.push('\n');
    out.push_str("| design | requests/s per core | per host | hosts | hosts (N+1) |\n");
    out.push_str("|---|---:|---:|---:|---:|\n");
    for (name, p) in rows {
        out.push_str(&format!(
            "| {name} | {:.1} | {:.0} | {} | {} |\n",
            p.per_core, p.per_host, p.hosts, p.hosts_n_plus_1
        ));
    }
    Ok(out)
}

/// The first readable benchmark output among `sources`.
pub fn latest(sources: &[PathBuf]) -> anyhow::Result<(PathBuf, ResizeBench)> {
    for path in sources {
        match std::fs::read(path) {
            Ok(bytes) => {
                let bench = serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!("{} is not resize benchmark output: {e}", path.display())
                })?;
                return Ok((path.clone(), bench));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }
    anyhow::bail!(
        "no resize benchmark output in {}; run `./dev.sh bench` first or pass --bench-file",
        sources
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(rps: f64) -> Demand {
        Demand {
            rps,
            cores_per_host: 32,
            headroom: 0.2,
            hit_ratio: 0.0,
            hits_per_core: 3000.0,
        }
    }

    #[test]
    fn a_hit_ratio_blends_resizes_and_hits_by_their_cost() {
        let mut d = demand(10_000.0);
        assert_eq!(blended_per_core(10.0, &d), 10.0);
        d.hit_ratio = 0.5;
        // Half the requests at 1/10 s, half at 1/3000 s.
        let blended = blended_per_core(10.0, &d);
        assert!((blended - 1.0 / (0.05 + 0.5 / 3000.0)).abs() < 1e-9);
        assert!(plan(d, blended).unwrap().hosts < plan(demand(10_000.0), 10.0).unwrap().hosts);
        d.hit_ratio = 1.0;
        assert_eq!(plan(d, 10.0), Err(CapacityError::HitRatio));
    }

    #[test]
    fn the_reference_envelope_is_forty_hosts_for_ten_thousand_per_second() {
        let p = plan(demand(10_000.0), REFERENCE_PER_CORE).unwrap();
        assert_eq!(p.per_host, 256.0);
        assert_eq!(p.hosts, 40);
        assert_eq!(p.hosts_n_plus_1, 41);
    }

    #[test]
    fn hosts_round_up_but_exact_multiples_do_not() {
        assert_eq!(plan(demand(256.0), 10.0).unwrap().hosts, 1);
        assert_eq!(plan(demand(257.0), 10.0).unwrap().hosts, 2);
        assert_eq!(plan(demand(1.0), 10.0).unwrap().hosts, 1);
        assert_eq!(plan(demand(10_000.0), 35.1).unwrap().hosts, 12);
    }

    #[test]
    fn nonsense_is_refused() {
        assert_eq!(plan(demand(0.0), 10.0), Err(CapacityError::Rps));
        assert_eq!(plan(demand(f64::NAN), 10.0), Err(CapacityError::Rps));
        let mut d = demand(1.0);
        d.headroom = 1.0;
        assert_eq!(plan(d, 10.0), Err(CapacityError::Headroom));
        d.headroom = 0.0;
        d.cores_per_host = 0;
        assert_eq!(plan(d, 10.0), Err(CapacityError::Cores));
        assert_eq!(plan(demand(1.0), 0.0), Err(CapacityError::PerCore(0.0)));
    }

    #[test]
    fn the_report_reads_benchmark_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resize.json");
        let bench = ResizeBench {
            measured_at: "2026-11-28T00:00:00Z".into(),
            job: "w=300&fmt=jpeg&q=80".into(),
            photos: 12,
            avg_input_kb: 235.0,
            native_per_core: 86.1,
            wasm_per_core: 35.1,
            sharp_per_core: Some(100.0),
        };
        std::fs::write(&path, serde_json::to_vec(&bench).unwrap()).unwrap();
        let missing = dir.path().join("missing.json");
        let (source, read) = latest(&[missing, path.clone()]).unwrap();
        assert_eq!((source, &read), (path.clone(), &bench));
        let text = report(demand(10_000.0), &read, &path).unwrap();
        assert!(
            text.contains("| reference design | 10.0 | 256 | 40 | 41 |"),
            "{text}"
        );
        assert!(
            text.contains("| imgfleet, WASM (as deployed) | 35.1 | 899 | 12 | 13 |"),
            "{text}"
        );
        assert!(
            text.contains("| sharp (libvips), same photos | 100.0 | 2560 | 4 | 5 |"),
            "{text}"
        );
        assert!(latest(&[dir.path().join("nope")]).is_err());
    }
}
