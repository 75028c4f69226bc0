use clap::Parser;
use imgfleet_host::operator::cli::{Cli, Command, LogFormat};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

fn main() -> anyhow::Result<()> {
    // Only in builds with fail points (the tests'): reads FAILPOINTS.
    #[cfg(feature = "failpoints")]
    let _faults = fail::FailScenario::setup();
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("IMGFLEET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let spans = if cli.log_spans {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let logs = tracing_subscriber::fmt::layer()
        .with_span_events(spans)
        .with_writer(std::io::stderr);
    let logs = match cli.log_format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().boxed(),
    };
    let (otlp, export) = match &cli.otlp_endpoint {
        Some(endpoint) => {
            let (layer, export) =
                imgfleet_host::operator::otlp::layer(endpoint, &cli.otlp_service_name)?;
            (Some(layer), Some(export))
        }
        None => (None, None),
    };
    // Exported: this crate's spans at info and above (requests, jobs and what they enclose).
    let exported = tracing_subscriber::filter::Targets::new()
        .with_target("imgfleet_host", tracing::Level::INFO)
        .with_target("imgfleet_stores", tracing::Level::INFO)
        .with_target("imgfleet_queue", tracing::Level::INFO);
    tracing_subscriber::registry()
        .with(otlp.with_filter(exported))
        .with(logs.with_filter(filter))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = match cli.command {
        Command::Up(args) => rt.block_on(imgfleet_host::wiring::up(*args)),
        Command::Tenants(a) => rt.block_on(imgfleet_host::operator::commands::tenants(
            &a.store, a.action,
        )),
        Command::Keys(a) => {
            rt.block_on(imgfleet_host::operator::commands::keys(&a.store, a.action))
        }
        Command::Origins(a) => rt.block_on(imgfleet_host::operator::commands::origins(
            &a.store, a.action,
        )),
        Command::UrlKeys(a) => rt.block_on(imgfleet_host::operator::commands::url_keys(
            &a.store, a.action,
        )),
        Command::Purges(a) => rt.block_on(imgfleet_host::operator::commands::purges(
            &a.store, a.action,
        )),
        Command::Url(a) => imgfleet_host::operator::commands::url(a.action),
        Command::Usage(a) => {
            rt.block_on(imgfleet_host::operator::commands::usage(&a.store, a.action))
        }
        Command::Bench(b) => match b.action {
            imgfleet_host::operator::cli::BenchAction::Load(a) => rt.block_on(load(a)),
        },
        Command::Capacity(a) => {
            let sources = match a.bench_file {
                Some(f) => vec![f],
                None => {
                    imgfleet_host::operator::capacity::default_sources(std::path::Path::new("."))
                }
            };
            let (source, bench) = imgfleet_host::operator::capacity::latest(&sources)?;
            let demand = imgfleet_host::operator::capacity::Demand {
                rps: a.rps,
                cores_per_host: a.cores_per_host,
                headroom: a.headroom,
                hit_ratio: a.hit_ratio,
                hits_per_core: a.hits_per_core,
            };
            print!(
                "{}",
                imgfleet_host::operator::capacity::report(demand, &bench, &source)?
            );
            Ok(())
        }
        Command::Component(a) => {
            use anyhow::Context;
            let bytes = std::fs::read(&a.input)
                .with_context(|| format!("reading {}", a.input.display()))?;
            let component = imgfleet_host::execution::runtime::to_component(bytes)?;
            std::fs::write(&a.output, component)
                .with_context(|| format!("writing {}", a.output.display()))
        }
        Command::AdminToken(store) => {
            println!(
                "{}",
                imgfleet_host::operator::commands::admin_token_file(&store.data_dir)?
            );
            Ok(())
        }
    };
    // Spans still batched go out before the process ends.
    if let Some(export) = export {
        export.shutdown();
    }
    result
}

async fn load(a: imgfleet_host::operator::cli::LoadArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use imgfleet_host::operator::load;
    anyhow::ensure!(
        a.start_rps > 0.0 && a.step_rps >= 0.0 && a.max_rps >= a.start_rps,
        "rates: need 0 < --start-rps <= --max-rps and --step-rps >= 0"
    );
    anyhow::ensure!(a.step_seconds > 0.0, "--step-seconds must be positive");
    let url = load::loopback_url(&format!("{}{}", a.url.trim_end_matches('/'), a.path))?;
    let api_key = match a.key {
        Some(k) => Some(k),
        None => std::fs::read_to_string(&a.key_file)
            .ok()
            .map(|k| k.trim().to_string()),
    };
    let (body, content_type) = match &a.image {
        Some(path) => (
            bytes::Bytes::from(
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            ),
            "application/octet-stream".to_string(),
        ),
        None => (load::sample_jpeg(1024, 768), "image/jpeg".to_string()),
    };
    let rates = if a.step_rps > 0.0 {
        load::stats::ramp(a.start_rps, a.step_rps, a.max_rps)
    } else {
        vec![a.start_rps]
    };
    let targets = load::stats::Targets {
        p99_ms: a.p99_target_ms,
        max_error_ratio: a.max_error_ratio,
    };
    eprintln!(
        "open-loop load on {url}: {} steps of {} s from {} to {} req/s, p99 target {} ms, {} KB per request",
        rates.len(),
        a.step_seconds,
        a.start_rps,
        rates.last().copied().unwrap_or(a.start_rps),
        a.p99_target_ms,
        body.len() / 1024
    );
    let steps = load::run(load::LoadPlan {
        url: url.clone(),
        api_key,
        body,
        content_type,
        rates,
        step: std::time::Duration::from_secs_f64(a.step_seconds),
        targets,
        request_timeout: std::time::Duration::from_secs_f64(a.request_timeout_seconds),
        max_duration: std::time::Duration::from_secs_f64(a.max_duration_seconds),
        steps_after_tip: a.steps_after_tip,
        max_in_flight: a.max_in_flight,
    })
    .await;
    println!("{}", load::stats::table(&steps));
    println!("{}", load::verdict_line(&steps, targets));
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&steps)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !steps.is_empty() {
        load::plot::latency_vs_load(
            &a.plot,
            &steps,
            a.p99_target_ms,
            &format!("imgfleet: POST {}", a.path),
        )?;
        println!("plot: {}", a.plot.display());
    }
    Ok(())
}
