//! `imgfleet up`: load the components, open the queues and staging, start the slots and
//! their workers, serve until SIGTERM/Ctrl-C, then finish the requests already in flight.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::admission::Admission;
use crate::api::{self, AppState};
use crate::data_plane::auth_cache::AuthCache;
use crate::data_plane::gate::Gate;
use crate::delivery::cache::ResultCache;
use crate::delivery::flight::Flights;
use crate::delivery::hot::Hot;
use crate::execution::completions::Completions;
use crate::execution::manifest::Manifest;
use crate::execution::runtime::Runtime;
use crate::execution::runtime::WarmPool;
use crate::execution::slots::Slots;
use crate::execution::worker::{WorkerContext, spawn_dead_letter_watcher, spawn_workers};
use crate::metering::meter::{METERING_COMPONENT, Meter};
use crate::metering::shipper::{self, ShipperConfig};
use crate::operator::cli::{QueueKind, UpArgs};
use crate::operator::commands;
use crate::operator::health::{Health, Status};
use imgfleet_queue::QueueSpec;
use imgfleet_queue::backend::{QueueBackend, QueueDirectory};
use imgfleet_queue::embedded::EmbeddedStore;
use imgfleet_queue::jetstream::{JetStream, JetStreamConfig};
use imgfleet_queue::sqs::{SqsConfig, client};
use imgfleet_stores::audit::sqlite::AuditLog;
use imgfleet_stores::data_dir::{self, DataDirLock};
use imgfleet_stores::identity::IdentityStore;
use imgfleet_stores::jobs::JobStore;
use imgfleet_stores::results::disk::DiskResults;
use imgfleet_stores::results::jetstream::FleetResults;
use imgfleet_stores::staging::jetstream::SharedStaging;
use imgfleet_stores::staging::{Staging, StagingConfig};
use imgfleet_stores::usage::UsageStore;

pub const JOBS_QUEUE: &str = "jobs";
pub const USAGE_QUEUE: &str = "usage";
/// Deliveries of a job before it is dead-lettered.
pub const JOB_MAX_RECEIVES: u32 = 3;
/// How long a job stays hidden once delivered, unless its worker extends it (it does, every
/// third of this, while it has the job): short, so that a job whose worker died, or whose
/// delivery was lost with a dead node's connection, comes back well within a synchronous
/// request's budget.
pub const JOB_VISIBILITY: Duration = Duration::from_secs(10);
/// How long a host waits for a result another host is making before making it itself:
/// longer than a resize, short against a request's budget.
pub const RESULT_LEASE: Duration = Duration::from_secs(10);

/// A host's completions queue: short-lived replies, no dead-lettering. Its dispatcher
/// deletes a completion as soon as it has one, so a short visibility timeout costs nothing,
/// and a completion handed to a receive that died with a node comes back within it rather
/// than after a request's whole budget.
fn completions_spec(name: &str) -> QueueSpec {
    let mut spec = QueueSpec::new(name);
    spec.retention = Duration::from_secs(600);
    spec.visibility_timeout = Duration::from_secs(5);
    spec
}

/// The jobs' dead-letter queue, read by the dead-letter watcher.
fn dead_letters_spec(name: &str) -> QueueSpec {
    let mut spec = QueueSpec::new(name);
    spec.retention = Duration::from_secs(600);
    spec
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    // Before anything else: a second host on the same directory would append to the same
    // logs, and it should hear so at once rather than after loading the components.
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let _owner = DataDirLock::acquire(&args.data_dir, &data_dir::holder(&args.listen.to_string()))?;
    // First, so that nothing recorded during start-up is lost.
    let metrics =
        crate::operator::telemetry::install().context("installing the metrics recorder")?;
    let mut manifest = Manifest::load(&args.manifest)?;
    if let Some(dir) = &args.component_dir {
        manifest = manifest.with_component_dir(dir);
    }
    let runtime_config = args.runtime.runtime_config();
    let deadline = runtime_config.deadline;
    let runtime = Runtime::new(&manifest, runtime_config)?;
    let cores = args.runtime.cores();
    // One worker per slot takes at most one job at a time, so this queue only ever holds
    // what is already running; the capacity is a safety margin.
    let slots = Slots::start(runtime.clone(), cores, cores * 4);

    let host_id = args.host_id();
    let mut staging = Staging::open(
        &args.data_dir.join("staging"),
        StagingConfig {
            capacity_bytes: args.staging_mb * 1024 * 1024,
            ..StagingConfig::default()
        },
    )
    .context("opening the staging area")?;

    // Hosts may start together with the fleet's JetStream cluster: opening waits for it.
    let startup_grace = match args.queue {
        QueueKind::Jetstream => JETSTREAM_STARTUP_GRACE,
        _ => Duration::ZERO,
    };
    let mut health = Health::new();
    let mut fleet_results = None;
    let backend = match args.queue {
        QueueKind::Embedded => {
            let store = EmbeddedStore::open(&args.data_dir.join("queue"))
                .context("opening the embedded queue")?;
            let queue_log = store.clone();
            health.check("queue log", move || {
                Status::of_store(queue_log.health(), queue_log.stopped())
            });
            QueueBackend::Embedded(store)
        }
        QueueKind::Sqs => QueueBackend::Sqs(
            client(&SqsConfig {
                endpoint: args.sqs_endpoint.clone(),
                region: args.sqs_region.clone(),
                static_credentials: None,
            })
            .await,
        ),
        QueueKind::Jetstream => {
            let partitions = args.nats_partitions();
            let config = JetStreamConfig {
                urls: args.nats_url.clone(),
                replicas: args.nats_replicas as usize,
            };
            let js = opened(startup_grace, "connecting to JetStream", || {
                JetStream::connect(&config)
            })
            .await
            .with_context(|| format!("at {}", args.nats_url))?;
            // A job accepted here may run on any host: its input and output must be
            // readable from all of them.
            staging = staging.with_shared(
                opened(startup_grace, "opening the fleet's shared staging", || {
                    SharedStaging::open(&js, args.staging_mb * 1024 * 1024, partitions)
                })
                .await?,
            );
            if args.fleet_cache_mb > 0 {
                fleet_results = Some(
                    opened(startup_grace, "opening the fleet's result cache", || {
                        FleetResults::open(&js, args.fleet_cache_mb * 1024 * 1024, RESULT_LEASE)
                    })
                    .await
                    .with_context(|| {
                        format!(
                            "--fleet-cache-mb {} is reserved on every JetStream server (beside staging's --staging-mb {}): give the servers more max_file_store, or lower it (0 turns the fleet's result cache off)",
                            args.fleet_cache_mb, args.staging_mb
                        )
                    })?,
                );
            }
            QueueBackend::JetStream {
                js: Box::new(js),
                partitions,
            }
        }
    };
    let staging_sweeper = staging.spawn_sweeper(Duration::from_secs(5));
    let mut jobs_spec = QueueSpec::new(JOBS_QUEUE);
    jobs_spec.max_receives = Some(JOB_MAX_RECEIVES);
    jobs_spec.visibility_timeout = JOB_VISIBILITY;
    jobs_spec.max_bytes = (args.queue_mb > 0).then(|| args.queue_mb * 1024 * 1024);
    if args.queue_mb > 0 && !matches!(args.queue, QueueKind::Jetstream) {
        tracing::warn!(queue = ?args.queue, "--queue-mb bounds a JetStream queue only; ignored");
    }
    let jobs = opened(startup_grace, "opening the jobs queue", || {
        backend.open(jobs_spec.clone())
    })
    .await?;
    let mut usage_spec = QueueSpec::new(USAGE_QUEUE);
    usage_spec.max_receives = Some(5);
    usage_spec.visibility_timeout = Duration::from_secs(60);
    let usage_queue = opened(startup_grace, "opening the usage queue", || {
        backend.open(usage_spec.clone())
    })
    .await?;
    let completions_name = format!("completions-{host_id}");
    let completions_queue = opened(startup_grace, "opening the completions queue", || {
        backend.open(completions_spec(&completions_name))
    })
    .await?;
    let dead_letters_name = jobs_spec.dead_letter_name();
    let dead_letters = opened(startup_grace, "opening the jobs dead-letter queue", || {
        backend.open(dead_letters_spec(&dead_letters_name))
    })
    .await?;
    let directory = Arc::new(QueueDirectory::new(backend, completions_spec));
    directory.insert(&completions_name, completions_queue.clone());
    let completions = Completions::new(completions_queue);
    let dispatcher = completions.spawn_dispatcher(staging.clone());

    let audit = {
        let path = args.data_dir.join("audit.sqlite");
        AuditLog::open(&path)
            .with_context(|| format!("opening the audit log {}", path.display()))?
    };
    let audit_log = audit.clone();
    health.check("audit log", move || {
        Status::of_store(audit_log.health(), audit_log.stopped())
    });
    // Jobs are shared through PostgreSQL; with DynamoDB (or no database) each host keeps
    // the jobs it accepted.
    let job_store = match args.database_url.as_deref() {
        Some(url) if commands::is_postgres(Some(url)) => JobStore::postgres(url, &host_id)
            .await
            .context("opening the job store in PostgreSQL")?,
        _ => {
            let path = args.data_dir.join("jobs.sqlite");
            JobStore::open(&path)
                .with_context(|| format!("opening the job store {}", path.display()))?
        }
    };
    let limits = args.limits();
    let worker = Arc::new(WorkerContext {
        host_id: host_id.clone().into(),
        jobs: jobs.clone(),
        replies: directory,
        slots: slots.clone(),
        staging: staging.clone(),
        limits_header: limits.to_header(),
        visibility: jobs_spec.visibility_timeout,
        output_ttl: Duration::from_secs(60),
        async_output_ttl: Duration::from_secs(args.job_output_ttl_secs),
        max_receives: JOB_MAX_RECEIVES,
        job_store: job_store.clone(),
        usage_log: audit.clone(),
    });
    let (workers, drain) = spawn_workers(worker.clone());
    let dead_letter_watcher = spawn_dead_letter_watcher(worker, dead_letters);

    let identity: Arc<dyn IdentityStore> =
        commands::open_identity(&args.data_dir, args.database_url.as_deref()).await?;
    let cache = AuthCache::new(Duration::from_millis(args.auth_sla_ms));
    cache
        .sync(identity.as_ref())
        .await
        .context("loading identities from the identity store")?;
    let follower = cache.spawn_follower(identity.clone());
    let gate = Gate::new(runtime.clone(), cache, cores)?;
    let now = imgfleet_stores::clock::now_ms();
    let month = imgfleet_auth::calendar::month_start_ms(now);
    gate.usage.seed(
        month,
        audit
            .totals_since(month)
            .context("reading this month's usage")?,
    );
    let admin_token = match &args.admin_token {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let token = commands::admin_token_file(&args.data_dir)?;
            tracing::info!(file = %args.data_dir.join("admin.token").display(), "admin token");
            token
        }
    };

    let usage: Arc<dyn UsageStore> =
        commands::open_usage(&args.data_dir, args.database_url.as_deref()).await?;
    let compaction = spawn_compaction(
        usage.clone(),
        Duration::from_secs(args.usage_raw_days * 86_400),
    );
    anyhow::ensure!(
        runtime.has_function(METERING_COMPONENT),
        "the manifest has no `{METERING_COMPONENT}` component; usage is folded by it"
    );
    let meter = Arc::new(Meter {
        store: usage.clone(),
        function: WarmPool::new(runtime.clone(), METERING_COMPONENT, 1),
    });
    let [folding, storing] = meter.spawn(usage_queue.clone());
    let shipping = shipper::spawn(audit.clone(), usage_queue.clone(), ShipperConfig::default());

    let health = Arc::new(health);
    for (part, task) in [
        ("staging sweeper", staging_sweeper),
        ("completions dispatcher", dispatcher),
        ("dead-letter watcher", dead_letter_watcher),
        ("auth follower", follower),
        ("usage compaction", compaction),
        ("meter (folding)", folding),
        ("meter (storing)", storing),
        ("usage shipper", shipping),
    ] {
        health.watch(part, task);
    }
    for worker in workers {
        health.watch("worker", worker);
    }
    health.spawn_watchdog();

    let resize_build = function_build(&manifest, "/v1/resize");
    let origins = imgfleet_stores::origins::Origins::new(imgfleet_stores::origins::FetchLimits {
        // A source over the function's input limit could not be resized anyway.
        max_bytes: limits.max_input_bytes,
        ..Default::default()
    });
    let results = ResultCache::new(
        Hot::new(args.memory_cache_mb * 1024 * 1024),
        DiskResults::open(
            &args.data_dir.join("results"),
            args.result_cache_mb * 1024 * 1024,
        )
        .context("opening the result cache")?,
        fleet_results,
        gate.cache.clone(),
    );
    let state = AppState {
        results,
        flights: Flights::new(),
        host_id: host_id.clone().into(),
        resize_build,
        origins,
        manifest: Arc::new(manifest),
        admission: Arc::new(Admission::new(cores, deadline)),
        slots,
        limits,
        staging,
        jobs,
        completions,
        deadline,
        hedge_after: (args.hedge_after_ms > 0).then(|| Duration::from_millis(args.hedge_after_ms)),
        hedges: Default::default(),
        tenant_shards: args.tenant_shards.unwrap_or(cores).max(1),
        shard_counter: Arc::new(AtomicUsize::new(0)),
        job_store: job_store.clone(),
        async_input_ttl: Duration::from_secs(3600),
        gate: Arc::new(gate),
        identity,
        audit,
        admin_token: Arc::new(admin_token),
        usage,
        usage_queue: usage_queue.clone(),
        metrics,
        health: health.clone(),
    };
    // Accepted jobs whose message may not have reached the queue before a crash.
    let unfinished = job_store
        .unfinished()
        .await
        .context("reading unfinished jobs")?;
    if !unfinished.is_empty() {
        tracing::info!(
            jobs = unfinished.len(),
            "offering unfinished jobs to the queue again"
        );
    }
    for job in &unfinished {
        state
            .jobs
            .send(api::job_message(job, state.next_shard()))
            .await
            .context("re-queueing a job")?;
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, cores, queue = ?args.queue, host = %host_id, "serving");
    // Scripts and tests read this line to find the port when listening on :0.
    println!("imgfleet listening on http://{addr}");
    let lost = Arc::new(std::sync::Mutex::new(None));
    let stop = {
        let (health, lost) = (health.clone(), lost.clone());
        async move {
            tokio::select! {
                () = shutdown_signal() => {}
                what = health.stopped() => {
                    *lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
                }
            }
        }
    };
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(stop)
        .await?;
    // The requests are answered; the jobs this host's workers hold (other hosts' too) are
    // finished before it goes, and what late polls bring meanwhile goes back to the queue.
    health.stopping();
    if !drain.stop_and_wait(deadline + Duration::from_secs(1)).await {
        tracing::warn!("a job was still running at shutdown; it will run again elsewhere");
    }
    tokio::time::sleep(RELEASE_GRACE).await;
    if let Some(what) = lost.lock().unwrap_or_else(|p| p.into_inner()).take() {
        anyhow::bail!("stopped because {what}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Packs old raw usage records into compressed segments, hourly.
fn spawn_compaction(usage: Arc<dyn UsageStore>, raw_age: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let before =
                imgfleet_stores::clock::now_ms().saturating_sub(raw_age.as_millis() as u64);
            match usage.compact(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, "usage records packed into segments"),
                Err(e) => tracing::warn!(error = %e, "usage compaction"),
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
}

/// How long a stopping host stays after its workers stopped, so that what their polls
/// bring back late is handed back to the queue rather than left to a visibility timeout.
const RELEASE_GRACE: Duration = Duration::from_millis(1500);

/// How long a host starting on a JetStream cluster waits for it to take streams.
const JETSTREAM_STARTUP_GRACE: Duration = Duration::from_secs(60);

/// Opens something at start-up, retrying for `grace`: a JetStream cluster that is still
/// forming refuses to place replicated streams ("no suitable peers for placement") until
/// every node has reported to its leader, which on a busy machine outlasts the retries of
/// one call.
async fn opened<T, E, F, Fut>(grace: Duration, what: &'static str, mut open: F) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    loop {
        match open().await {
            Ok(opened) => return Ok(opened),
            Err(e) if started.elapsed() < grace => {
                tracing::warn!(error = %e, "{what}: not ready yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context(what),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}

/// A digest of the component serving `route` (16 hex digits), part of every delivered
/// image's ETag: a new build of the function makes new tags, so caches fetch its outputs
/// anew.
fn function_build(manifest: &Manifest, route: &str) -> Arc<str> {
    let bytes = manifest
        .route(route)
        .and_then(|c| manifest.components.get(c))
        .and_then(|path| std::fs::read(path).ok())
        .unwrap_or_default();
    imgfleet_stores::origins::etag::build_of(&bytes).into()
}
