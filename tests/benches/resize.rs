//! imgfleet's resize, natively and inside the host's WASM runtime, against sharp (libvips)
//! on the same real photographs and the same jobs, one core each, side by side in one run
//! (the engines take turns photo by photo); then peak memory per resize against the
//! decoded bitmap.
//!
//! `./dev.sh bench [-- --rounds N --jobs N]` (fetches the photos and sharp, builds the components).
//! Without sharp installed the sharp column says so and the rest still runs.
//!
//! `-- --memory-only` prints only the peak memory table (every input kind included).
//!
//! `-- --against <other resize.wasm> [--rounds N] [--kinds]` instead compares this build of the
//! component with another (a copy of `target/wasm/resize.wasm` saved before a change), both
//! in one host, taking turns photo by photo: how a change to the function is measured
//! (`--kinds`: on the input-kind set, with a row per kind).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use imgfleet_host::execution::manifest::Manifest;
use imgfleet_host::execution::runtime::{InvokeRequest, Runtime, RuntimeConfig};
use imgfleet_resize::{Limits, ResizeParams, resize};
use imgfleet_tests::bench::{PeakAlloc, arg, pin_to_cpu, record, server_timing};
use imgfleet_tests::host::repo_root;
use imgfleet_tests::photos::{KINDS, PHOTO_DIR, kind_set, photo_set};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// The jobs compared: (label, query, format for sharp).
const JOBS: [(&str, &str); 4] = [
    ("300 px JPEG q80", "w=300&fmt=jpeg&q=80"),
    ("1200 px JPEG q80", "w=1200&fmt=jpeg&q=80"),
    ("300 px WebP q80", "w=300&fmt=webp&q=80"),
    ("300 px AVIF q60", "w=300&fmt=avif&q=60"),
];

/// One engine's part of a job: per image, its time and (imgfleet only) its stages' times.
#[derive(Default)]
struct Run {
    decode: Vec<f64>,
    resize: Vec<f64>,
    encode: Vec<f64>,
    /// Seconds spent in each round.
    rounds: Vec<f64>,
    images: usize,
}

impl Run {
    fn record(&mut self, round: usize, seconds: f64, stages: Option<[f64; 3]>) {
        if self.rounds.len() <= round {
            self.rounds.resize(round + 1, 0.0);
        }
        self.rounds[round] += seconds;
        self.images += 1;
        if let Some([decode, resize, encode]) = stages {
            self.decode.push(decode);
            self.resize.push(resize);
            self.encode.push(encode);
        }
    }

    /// Images per second over all its rounds (not from a median): the throughput a core gives.
    fn per_second(&self) -> f64 {
        self.images as f64 / self.rounds.iter().sum::<f64>()
    }

    /// The lowest and highest ratio of this engine's speed to `other`'s, round by round.
    fn round_ratios(&self, other: &Run) -> (f64, f64) {
        self.rounds
            .iter()
            .zip(&other.rounds)
            .map(|(mine, theirs)| theirs / mine)
            .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(r), hi.max(r)))
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Wasm {
    runtime: std::sync::Arc<Runtime>,
    rt: tokio::runtime::Runtime,
}

impl Wasm {
    fn new() -> anyhow::Result<Self> {
        Self::with(Manifest::load(&repo_root().join("spin.toml"))?)
    }

    /// This build of the resize component as `resize`, and `other` beside it as `other`.
    fn pair(other: &std::path::Path) -> anyhow::Result<Self> {
        let root = repo_root();
        let this = root.join("target/wasm/resize.wasm");
        let manifest = format!(
            "spin_manifest_version = 2\n[application]\nname = \"against\"\n\
             [[trigger.http]]\nroute = \"/v1/resize\"\ncomponent = \"resize\"\n\
             [[trigger.http]]\nroute = {{ private = true }}\ncomponent = \"other\"\n\
             [component.resize]\nsource = {:?}\n[component.other]\nsource = {:?}\n",
            this.display().to_string(),
            other.display().to_string()
        );
        Self::with(Manifest::parse(&manifest, &root)?)
    }

    fn with(manifest: Manifest) -> anyhow::Result<Self> {
        let runtime = Runtime::new(
            &manifest,
            RuntimeConfig {
                deadline: Duration::from_secs(30),
                memory_limit_bytes: 512 << 20,
                max_instances: 8,
            },
        )?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        Ok(Self { runtime, rt })
    }

    fn invoke(
        &self,
        query: &str,
        bytes: &[u8],
    ) -> anyhow::Result<imgfleet_host::execution::runtime::Invocation> {
        self.invoke_on("resize", query, bytes)
    }

    fn invoke_on(
        &self,
        component: &str,
        query: &str,
        bytes: &[u8],
    ) -> anyhow::Result<imgfleet_host::execution::runtime::Invocation> {
        let request = InvokeRequest {
            method: http::Method::POST,
            path_and_query: format!("/v1/resize?{query}"),
            headers: http::HeaderMap::new(),
            body: Bytes::copy_from_slice(bytes),
        };
        let inv = self.rt.block_on(self.runtime.invoke(component, request))?;
        anyhow::ensure!(inv.status == 200, "status {}", inv.status);
        Ok(inv)
    }
}

/// One photo natively: seconds, and the stages' milliseconds.
fn native(params: &ResizeParams, name: &str, bytes: &[u8]) -> anyhow::Result<(f64, [f64; 3])> {
    let started = Instant::now();
    let out = resize(bytes, params, None, &Limits::default())
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let t = out.timings;
    Ok((seconds, [ms(t.decode), ms(t.resize), ms(t.encode)]))
}

/// One photo in a fresh instance, as served: seconds (instantiation included), and the
/// stages' milliseconds as the function reports them.
fn wasm(wasm: &Wasm, query: &str, name: &str, bytes: &[u8]) -> anyhow::Result<(f64, [f64; 3])> {
    wasm_on(wasm, "resize", query, name, bytes)
}

fn wasm_on(
    wasm: &Wasm,
    component: &str,
    query: &str,
    name: &str,
    bytes: &[u8],
) -> anyhow::Result<(f64, [f64; 3])> {
    let started = Instant::now();
    let inv = wasm
        .invoke_on(component, query, bytes)
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let header = inv
        .headers
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let stage = |s| server_timing(header, s).unwrap_or(f64::NAN);
    Ok((seconds, [stage("decode"), stage("resize"), stage("encode")]))
}

/// sharp on one core (`taskset`, one libvips thread, no cache), kept running
/// (`bench.mjs --serve`): it times one photo's job whenever asked.
struct Sharp {
    child: Child,
    requests: ChildStdin,
    answers: BufReader<ChildStdout>,
    versions: String,
}

impl Sharp {
    fn start(query: &str) -> Result<Self, String> {
        let script = repo_root().join("bench/sharp/bench.mjs");
        if !repo_root().join("bench/sharp/node_modules/sharp").exists() {
            return Err("not installed (./dev.sh bench installs it)".into());
        }
        let params = form_pairs(query);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut child = Command::new("taskset")
            .args(["-c", &CPU.to_string(), "node"])
            .arg(&script)
            .args(["--dir", &repo_root().join(PHOTO_DIR).to_string_lossy()])
            .args(["--width", &get("w"), "--format", &get("fmt")])
            .args(["--quality", &get("q"), "--serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not run node: {e}"))?;
        let requests = child.stdin.take().expect("piped stdin");
        let mut answers = BufReader::new(child.stdout.take().expect("piped stdout"));
        let v: serde_json::Value = serde_json::from_str(&read_line(&mut answers)?)
            .map_err(|e| format!("unreadable greeting: {e}"))?;
        let versions = format!(
            "sharp {} / libvips {}",
            v["versions"]["sharp"].as_str().unwrap_or("?"),
            v["versions"]["vips"].as_str().unwrap_or("?")
        );
        Ok(Self {
            child,
            requests,
            answers,
            versions,
        })
    }

    /// Seconds sharp took for the job on photo `name`.
    fn time(&mut self, name: &str) -> Result<f64, String> {
        writeln!(self.requests, "{name}").map_err(|e| format!("sharp went away: {e}"))?;
        let line = read_line(&mut self.answers)?;
        line.trim()
            .parse::<f64>()
            .map(|ms| ms / 1e3)
            .map_err(|_| format!("sharp answered {line:?}"))
    }
}

impl Drop for Sharp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_line(from: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    match from.read_line(&mut line) {
        Ok(0) => Err("sharp exited (see its output above)".into()),
        Ok(_) => Ok(line),
        Err(e) => Err(format!("reading from sharp: {e}")),
    }
}

/// A job `rounds` times over the photos, the engines taking turns photo by photo (the
/// order rotating): on a shared machine whose speed drifts by tens of percent within
/// minutes, every engine then runs under the same conditions, a second apart at most.
fn compare(
    runtime: &Wasm,
    photos: &[(String, Vec<u8>)],
    query: &str,
    rounds: usize,
) -> anyhow::Result<Compared> {
    let params = ResizeParams::from_query(query).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut n, mut w, mut s) = (Run::default(), Run::default(), Run::default());
    let mut sharp = Sharp::start(query);
    // Warm: the first call of a component pays for its compiled code's first touch.
    runtime.invoke(query, &photos[0].1)?;
    for round in 0..rounds {
        for (i, (name, bytes)) in photos.iter().enumerate() {
            for engine in (0..3).map(|e| (e + round + i) % 3) {
                match engine {
                    0 => {
                        let (seconds, stages) = native(&params, name, bytes)?;
                        n.record(round, seconds, Some(stages));
                    }
                    1 => {
                        let (seconds, stages) = wasm(runtime, query, name, bytes)?;
                        w.record(round, seconds, Some(stages));
                    }
                    _ => {
                        if let Ok(server) = &mut sharp {
                            match server.time(name) {
                                Ok(seconds) => s.record(round, seconds, None),
                                Err(why) => sharp = Err(why),
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Compared {
        native: n,
        wasm: w,
        sharp: sharp.map(|server| (s, server.versions.clone())),
    })
}

struct Compared {
    native: Run,
    wasm: Run,
    /// sharp's run and versions, or why it could not run.
    sharp: Result<(Run, String), String>,
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Peak bytes of one resize over the decoded size of its input (width x height x channels
/// as stored), natively (heap) and in WASM (linear memory, static data included).
fn memory(
    wasm: &Wasm,
    photos: &[(String, Vec<u8>)],
    query: &str,
    label: &str,
) -> anyhow::Result<()> {
    let params = ResizeParams::from_query(query).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut native_ratio, mut wasm_ratio) = (Vec::new(), Vec::new());
    let (mut native_mb, mut wasm_mb) = (Vec::new(), Vec::new());
    for (name, bytes) in photos {
        let decoded = image::load_from_memory(bytes)?;
        let bitmap = (decoded.width() * decoded.height()) as f64
            * f64::from(decoded.color().channel_count());
        drop(decoded);
        let before = PeakAlloc::reset_peak();
        resize(bytes, &params, None, &Limits::default())
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let peak = (PeakAlloc::peak() - before) as f64;
        native_ratio.push(peak / bitmap);
        native_mb.push(peak / 1048576.0);
        let inv = wasm.invoke(query, bytes)?;
        wasm_ratio.push(inv.memory_peak as f64 / bitmap);
        wasm_mb.push(inv.memory_peak as f64 / 1048576.0);
    }
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    println!(
        "| {label}{query} ({} inputs) | {:.1} / {:.1} MiB | {:.2}x / {:.2}x | {:.1} / {:.1} MiB | {:.2}x / {:.2}x |",
        photos.len(),
        median(&mut native_mb),
        max(&native_mb),
        median(&mut native_ratio),
        max(&native_ratio),
        median(&mut wasm_mb),
        max(&wasm_mb),
        median(&mut wasm_ratio),
        max(&wasm_ratio),
    );
    Ok(())
}

/// The CPU every engine runs on, one at a time: this process (and any thread a decoder
/// starts) is pinned to it, and sharp is started under `taskset` on it.
const CPU: usize = 1;

/// This build against `other` on the headline job: per photo the fastest of `rounds`
/// invocations of each (taking turns), summed over the photos; per stage and whole.
fn against(other: &str, photos: &[(String, Vec<u8>)], rounds: usize) -> anyhow::Result<()> {
    let runtime = Wasm::pair(std::path::Path::new(other))?;
    let query = JOBS[0].1;
    let mut fastest = vec![[[f64::MAX; 4]; 2]; photos.len()];
    for component in ["resize", "other"] {
        // Warm: the first call of a component pays for its compiled code's first touch.
        runtime.invoke_on(component, query, &photos[0].1)?;
    }
    for round in 0..rounds {
        for (i, (name, bytes)) in photos.iter().enumerate() {
            for build in (0..2).map(|b| (b + round + i) % 2) {
                let component = ["resize", "other"][build];
                // A photo one build refuses (the other may be the fix) counts as NaN there.
                let times = match wasm_on(&runtime, component, query, name, bytes) {
                    Ok((seconds, [decode, resize, encode])) => {
                        [decode, resize, encode, seconds * 1e3]
                    }
                    Err(e) if round == 0 => {
                        eprintln!("{component} refused {name}: {e}");
                        [f64::NAN; 4]
                    }
                    Err(_) => [f64::NAN; 4],
                };
                for (best, t) in fastest[i][build].iter_mut().zip(times) {
                    *best = if t.is_nan() { t } else { best.min(t) };
                }
            }
        }
    }
    println!("\nthis build against {other}: `{query}`, each photo's fastest of {rounds}, summed");
    println!("| ms per photo | this build | other | this / other |");
    println!("|---|---:|---:|---:|");
    // Over the photos both builds resize.
    let both: Vec<&[[f64; 4]; 2]> = fastest
        .iter()
        .filter(|f| !f[0][3].is_nan() && !f[1][3].is_nan())
        .collect();
    let n = both.len() as f64;
    for (k, label) in ["decode", "resize", "encode", "invocation"]
        .iter()
        .enumerate()
    {
        let sum = |build: usize| both.iter().map(|f| f[build][k]).sum::<f64>();
        let (this, theirs) = (sum(0), sum(1));
        println!(
            "| {label} | {:.3} | {:.3} | {:.3} |",
            this / n,
            theirs / n,
            this / theirs
        );
    }
    // Per input kind, when the photos are the kind set (`<kind>--<n>-<photo>`).
    if photos.iter().all(|(name, _)| name.contains("--")) {
        println!(
            "\n| invocation ms per photo, by input kind | this build | other | this / other |"
        );
        println!("|---|---:|---:|---:|");
        for kind in KINDS {
            let of_kind: Vec<usize> = (0..photos.len())
                .filter(|&i| photos[i].0.split("--").next() == Some(kind))
                .collect();
            let sum = |build: usize| of_kind.iter().map(|&i| fastest[i][build][3]).sum::<f64>();
            let (this, theirs, n) = (sum(0), sum(1), of_kind.len().max(1) as f64);
            println!(
                "| {kind} | {:.2} | {:.2} | {:.2} |",
                this / n,
                theirs / n,
                this / theirs
            );
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    pin_to_cpu(CPU).map_err(anyhow::Error::msg)?;
    let rounds = arg("--rounds", 3);
    let photos = photo_set().map_err(anyhow::Error::msg)?;
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--memory-only") {
        let runtime = Wasm::new()?;
        return memory_table(&runtime, &photos);
    }
    if let Some(other) = args
        .iter()
        .position(|a| a == "--against")
        .and_then(|i| args.get(i + 1))
    {
        if !args.iter().any(|a| a == "--kinds") {
            return against(other, &photos, rounds);
        }
        let kinds: Vec<(String, Vec<u8>)> = kind_set()
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(|p| (p.name, p.bytes))
            .collect();
        return against(other, &kinds, rounds);
    }
    let avg_kb =
        photos.iter().map(|(_, b)| b.len()).sum::<usize>() as f64 / photos.len() as f64 / 1024.0;
    println!(
        "{} photographs from {PHOTO_DIR} (avg {avg_kb:.0} KB), {rounds} rounds, every engine on CPU {CPU}",
        photos.len()
    );
    let runtime = Wasm::new()?;

    println!();
    println!(
        "| job | imgfleet native | imgfleet WASM | sharp | native / sharp | WASM / sharp | WASM / sharp per round |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut stages = Vec::new();
    let mut headline = None;
    let mut sharp_versions = String::new();
    for (label, query) in JOBS.into_iter().take(arg("--jobs", JOBS.len())) {
        let Compared {
            native: n,
            wasm: w,
            sharp: s,
        } = compare(&runtime, &photos, query, rounds)?;
        let cells = match &s {
            Ok((sharp, versions)) => {
                sharp_versions = versions.clone();
                let per_s = sharp.per_second();
                let (low, high) = w.round_ratios(sharp);
                format!(
                    "{per_s:.1} | {:.2}x | {:.2}x | {low:.2}x–{high:.2}x",
                    n.per_second() / per_s,
                    w.per_second() / per_s
                )
            }
            Err(why) => format!("({why}) | - | - | -"),
        };
        println!(
            "| {label} (`{query}`) | {:.1} | {:.1} | {cells} |",
            n.per_second(),
            w.per_second()
        );
        if headline.is_none() {
            headline = Some((
                query,
                n.per_second(),
                w.per_second(),
                s.ok().map(|(s, _)| s.per_second()),
            ));
        }
        stages.push((label, n, w));
    }
    println!("\nimages/s per core; {sharp_versions}");

    println!();
    println!("| stage (median ms/image) | job | native | WASM | WASM / native |");
    println!("|---|---|---:|---:|---:|");
    for (label, mut n, mut w) in stages {
        for (stage, nv, wv) in [
            ("decode", &mut n.decode, &mut w.decode),
            ("resize", &mut n.resize, &mut w.resize),
            ("encode", &mut n.encode, &mut w.encode),
        ] {
            let (nm, wm) = (median(nv), median(wv));
            println!(
                "| {stage} | {label} | {nm:.2} | {wm:.2} | {:.2}x |",
                wm / nm
            );
        }
    }

    memory_table(&runtime, &photos)?;

    let (query, native_per_core, wasm_per_core, sharp_per_core) =
        headline.expect("at least one job");
    let path = record(
        "resize",
        serde_json::json!({
            "job": query,
            "photos": photos.len(),
            "avg_input_kb": avg_kb,
            "native_per_core": native_per_core,
            "wasm_per_core": wasm_per_core,
            "sharp_per_core": sharp_per_core,
        }),
    );
    println!(
        "\nwritten to {} (read by `imgfleet capacity`)",
        path.display()
    );
    Ok(())
}

/// Peak memory per resize: the JPEG set, PNGs of it, and every input kind of the kind set.
fn memory_table(runtime: &Wasm, photos: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    println!();
    println!(
        "| peak memory per resize | native median / max | native / bitmap (median / max) | WASM median / max | WASM / bitmap (median / max) |"
    );
    println!("|---|---:|---:|---:|---:|");
    memory(runtime, photos, "w=300&fmt=jpeg&q=80", "")?;
    memory(runtime, photos, "w=1200&fmt=jpeg&q=80", "")?;
    let pngs: Vec<(String, Vec<u8>)> = photos
        .iter()
        .step_by(6)
        .map(|(name, bytes)| {
            let img = image::load_from_memory(bytes).expect("a photo decodes");
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .expect("PNG encodes");
            (format!("{name}.png"), png)
        })
        .collect();
    memory(runtime, &pngs, "w=300&fmt=png", "")?;
    let kinds = kind_set().map_err(anyhow::Error::msg)?;
    for kind in KINDS {
        let of_kind: Vec<(String, Vec<u8>)> = kinds
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| (p.name.clone(), p.bytes.clone()))
            .collect();
        for query in ["w=300&fmt=jpeg&q=80", "w=1200&fmt=jpeg&q=80"] {
            memory(runtime, &of_kind, query, &format!("{kind}: "))?;
        }
    }
    println!("(bitmap = stored width x height x channels of the input, fully decoded)");
    Ok(())
}
