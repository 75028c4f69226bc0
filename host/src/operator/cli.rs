//! Command-line interface: `imgfleet up` and friends. Every flag has an `IMGFLEET_*`
//! environment variable so containers and unit files can configure it without arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "imgfleet",
    version,
    about = "Multi-tenant image resizing on WebAssembly"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "IMGFLEET_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Also log each span (request, auth, enqueue, job, invoke, meter) when it closes, with its
    /// fields and timings: a trace of every hop, joined on the request id.
    #[arg(long, global = true, env = "IMGFLEET_LOG_SPANS")]
    pub log_spans: bool,
    /// Export spans to this OpenTelemetry collector over OTLP/HTTP (JSON), e.g.
    /// `http://127.0.0.1:4318` (spans go to `/v1/traces`). Off when not set.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of exported spans.
    #[arg(
        long,
        global = true,
        env = "OTEL_SERVICE_NAME",
        default_value = "imgfleet"
    )]
    pub otlp_service_name: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API.
    Up(Box<UpArgs>),
    /// Manage tenants in the identity store (a running host picks changes up within its SLA).
    Tenants(TenantsArgs),
    /// Manage API keys in the identity store.
    Keys(KeysArgs),
    /// Manage a tenant's origins: where signed image URLs fetch their sources.
    Origins(OriginsArgs),
    /// Manage a tenant's URL signing keys (separate from API keys).
    UrlKeys(UrlKeysArgs),
    /// Purge cached results of a tenant's sources on every host (within the auth SLA).
    Purges(PurgesArgs),
    /// Make signed image URLs (offline: needs only the URL key).
    Url(UrlArgs),
    /// Print the admin token of a data directory, creating it if there is none yet.
    AdminToken(StoreArgs),
    /// Export or compact metered usage (the usage store in the data directory).
    Usage(UsageArgs),
    /// How many hosts a conversion rate needs, from the latest resize benchmark, beside
    /// the reference design's 10 conversions/s per core.
    Capacity(CapacityArgs),
    /// Load tests against a running service on this machine.
    Bench(BenchArgs),
    /// Write a function as a WebAssembly component, as the host loads it (a core module is
    /// wrapped with the preview1 proxy adapter; a component is copied): what another
    /// wasi:http host (`wasmtime serve -S cli`, Spin) runs.
    Component(ComponentArgs),
}

#[derive(Debug, Args)]
pub struct ComponentArgs {
    /// A function's `.wasm` (core module or component).
    pub input: PathBuf,
    /// Where to write the component.
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub action: BenchAction,
}

#[derive(Debug, Subcommand)]
pub enum BenchAction {
    /// Open-loop load (constant arrival rate) ramped until p99 breaks its target; prints
    /// the table and the tip-over point and draws p50/p99 against offered load.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Service address (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Path and query each request is POSTed to.
    #[arg(long, default_value = "/v1/resize?w=300&fmt=jpeg&q=80")]
    pub path: String,
    /// API key (else --key-file).
    #[arg(long, env = "IMGFLEET_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// File holding the API key.
    #[arg(long, default_value = "data/demo.key")]
    pub key_file: PathBuf,
    /// Image to send (default: a generated 1024x768 photo-like JPEG).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// First offered rate, requests/s.
    #[arg(long, default_value_t = 10.0)]
    pub start_rps: f64,
    /// Added to the rate at each step.
    #[arg(long, default_value_t = 10.0)]
    pub step_rps: f64,
    /// Highest rate tried.
    #[arg(long, default_value_t = 1000.0)]
    pub max_rps: f64,
    /// Length of each step.
    #[arg(long, default_value_t = 5.0)]
    pub step_seconds: f64,
    /// p99 target: the first step above it is the tip-over point.
    #[arg(long, default_value_t = 500.0)]
    pub p99_target_ms: f64,
    /// Largest share of refused or failed requests a step may have and still hold.
    #[arg(long, default_value_t = 0.01)]
    pub max_error_ratio: f64,
    /// Steps run after the tip-over, to show the slope beyond it.
    #[arg(long, default_value_t = 1)]
    pub steps_after_tip: usize,
    /// A request not answered within this long counts as failed.
    #[arg(long, default_value_t = 30.0)]
    pub request_timeout_seconds: f64,
    /// The whole run stops within this long.
    #[arg(long, default_value_t = 300.0)]
    pub max_duration_seconds: f64,
    #[arg(long, default_value_t = 20_000)]
    pub max_in_flight: u64,
    /// Where the plot goes (SVG).
    #[arg(long, default_value = "load.svg")]
    pub plot: PathBuf,
    /// Also write the steps as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CapacityArgs {
    /// Conversions per second to serve.
    #[arg(long)]
    pub rps: f64,
    #[arg(long, default_value_t = 32)]
    pub cores_per_host: u32,
    /// Fraction of each host kept free (0.2: plan for 80 % utilisation).
    #[arg(long, default_value_t = 0.2)]
    pub headroom: f64,
    /// Fraction of requests answered by the result cache (signed GETs of popular images),
    /// from usage records' `cache` field or the result cache benchmark.
    #[arg(long, default_value_t = 0.0)]
    pub hit_ratio: f64,
    /// Cache hits one core serves per second: 3,000 is half of what the result cache
    /// benchmark measured per core of a 2-core machine shared with its load generator.
    #[arg(long, default_value_t = 3000.0)]
    pub hits_per_core: f64,
    /// Benchmark output to read (default: target/bench/resize.json, else the recorded
    /// docs/bench/resize.json, under the current directory).
    #[arg(long)]
    pub bench_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub action: UsageAction,
}

#[derive(Debug, Subcommand)]
pub enum UsageAction {
    /// Print one tenant's usage records (for billing), compressed segments included.
    Export {
        #[arg(long)]
        tenant: String,
        /// Unix milliseconds, inclusive (default: the beginning).
        #[arg(long)]
        from: Option<u64>,
        /// Unix milliseconds, exclusive (default: now).
        #[arg(long)]
        to: Option<u64>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
    /// Pack raw records older than the given age into compressed segments now.
    Compact {
        #[arg(long, default_value_t = 7)]
        older_than_days: u64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// The host's data directory (the identity store is `identity.sqlite` in it).
    #[arg(long, env = "IMGFLEET_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// A fleet's shared database for the identity and usage stores instead of the data
    /// directory's SQLite files: PostgreSQL (`postgres://user@host:port/db`) or DynamoDB
    /// (`dynamodb://<table prefix>[?endpoint=URL&region=R]`).
    #[arg(
        long,
        env = "IMGFLEET_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub action: TenantAction,
}

#[derive(Debug, Subcommand)]
pub enum TenantAction {
    Create {
        id: String,
    },
    List,
    Disable {
        id: String,
    },
    Enable {
        id: String,
    },
    /// Replace a tenant's quota (omitted limits become unlimited).
    Quota {
        id: String,
        #[arg(long)]
        requests_per_second: Option<f64>,
        #[arg(long)]
        monthly_bytes: Option<u64>,
        #[arg(long)]
        monthly_pixels: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct OriginsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub action: OriginAction,
}

#[derive(Debug, Subcommand)]
pub enum OriginAction {
    /// Add an origin: `--http-base-url URL` or `--s3-bucket B [--s3-prefix P] [--s3-region R]
    /// [--s3-endpoint URL]`.
    Add {
        #[arg(long)]
        tenant: String,
        /// The origin's name, as it appears in URLs.
        name: String,
        /// Sources are this URL + their path (http:// or https://, ending in '/').
        #[arg(
            long,
            conflicts_with = "s3_bucket",
            required_unless_present = "s3_bucket"
        )]
        http_base_url: Option<String>,
        /// Let the HTTP origin resolve to loopback, private or link-local addresses (for
        /// origins inside your own network; refused otherwise).
        #[arg(long, requires = "http_base_url")]
        allow_private: bool,
        #[arg(long)]
        s3_bucket: Option<String>,
        #[arg(long, requires = "s3_bucket", default_value = "")]
        s3_prefix: String,
        #[arg(long, requires = "s3_bucket")]
        s3_region: Option<String>,
        #[arg(long, requires = "s3_bucket")]
        s3_endpoint: Option<String>,
        /// `Cache-Control: max-age` of this origin's images, in seconds (default a day).
        #[arg(long)]
        max_age_secs: Option<u64>,
        /// Also `Cache-Control: immutable` (for sources that never change under a name).
        #[arg(long)]
        immutable: bool,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    Remove {
        #[arg(long)]
        tenant: String,
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct PurgesArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub action: PurgeAction,
}

#[derive(Debug, Subcommand)]
pub enum PurgeAction {
    /// Purge the results of one source path (as signed URLs carry it), or of every path
    /// starting with it (`--prefix`; an empty path with `--prefix`: the whole origin).
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        origin: String,
        #[arg(default_value = "")]
        path: String,
        #[arg(long)]
        prefix: bool,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Args)]
pub struct UrlKeysArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub action: UrlKeyAction,
}

#[derive(Debug, Subcommand)]
pub enum UrlKeyAction {
    /// Make a URL signing key; it is printed once as `ifu_<key id>_<secret>`.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        label: Option<String>,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    Revoke {
        #[arg(long)]
        tenant: String,
        key_id: String,
    },
}

#[derive(Debug, Args)]
pub struct UrlArgs {
    #[command(subcommand)]
    pub action: UrlAction,
}

#[derive(Debug, Subcommand)]
pub enum UrlAction {
    /// Print the signed URL of one output: the source `path` in `origin`, resized with
    /// `query` (any parameters of `POST /v1/resize`, e.g. `w=300&fmt=webp`).
    Sign {
        /// The URL key, as printed by `imgfleet url-keys create`.
        #[arg(long, env = "IMGFLEET_URL_KEY", hide_env_values = true)]
        key: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        origin: String,
        /// The resize parameters, as for `POST /v1/resize`.
        #[arg(long)]
        query: String,
        /// The URL stops working this many seconds from now.
        #[arg(long)]
        expires_in: Option<u64>,
        /// Put this in front of the path (e.g. `https://img.example.com`).
        #[arg(long, default_value = "")]
        base: String,
        /// The source's path in the origin (not yet percent-encoded).
        path: String,
    },
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub action: KeyAction,
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Mint a key; its secret is printed once and never stored.
    Create {
        #[arg(long)]
        tenant: String,
        /// resize, jobs or usage; repeat for several (default: all).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long)]
        label: Option<String>,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    Revoke {
        key_id: String,
    },
}

#[derive(Debug, Args, Clone)]
pub struct UpArgs {
    /// Address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, env = "IMGFLEET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The Spin manifest naming the components and their routes.
    #[arg(long, env = "IMGFLEET_MANIFEST", default_value = "spin.toml")]
    pub manifest: PathBuf,
    /// Directory holding the components' `.wasm` files, overriding the manifest's paths
    /// (matched by file name).
    #[arg(long, env = "IMGFLEET_COMPONENT_DIR")]
    pub component_dir: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Largest request body accepted, in bytes (can only be lowered from 20 MB).
    #[arg(long, env = "IMGFLEET_MAX_INPUT_BYTES")]
    pub max_input_bytes: Option<u64>,
    /// Largest input image accepted, in pixels (can only be lowered from 50 MP).
    #[arg(long, env = "IMGFLEET_MAX_INPUT_PIXELS")]
    pub max_input_pixels: Option<u64>,
    /// Largest output side, in pixels (can only be lowered from 8192).
    #[arg(long, env = "IMGFLEET_MAX_OUTPUT_SIDE")]
    pub max_output_side: Option<u32>,
    /// Where the embedded queue and the staging area keep their files.
    #[arg(long, env = "IMGFLEET_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// This host's name; its completions queue is `completions-<host id>`. With a shared
    /// queue (sqs, jetstream) every host needs its own: the default is then a fresh one per
    /// start; with the embedded queue it is `local`.
    #[arg(long, env = "IMGFLEET_HOST_ID")]
    pub host_id: Option<String>,
    /// Queue backend between the API and the workers.
    #[arg(long, env = "IMGFLEET_QUEUE", default_value = "embedded")]
    pub queue: QueueKind,
    /// JetStream servers of a fleet, comma-separated (the client fails over between them).
    #[arg(
        long,
        env = "IMGFLEET_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Replicas of every JetStream stream: 3 on a cluster of three, 1 on a single server.
    #[arg(long, env = "IMGFLEET_NATS_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub nats_replicas: u64,
    /// Streams each JetStream queue is spread over (default: one per replica, so one on a
    /// single server and three on a cluster of three). With more than one, the death of the
    /// node leading one of them stalls only that one: sends go to another partition while
    /// its Raft group elects a new leader (4-9 s in nats-server), at the cost of a group's
    /// order across such a switch.
    #[arg(long, env = "IMGFLEET_NATS_PARTITIONS", value_parser = clap::value_parser!(u64).range(1..=16))]
    pub nats_partitions: Option<u64>,
    /// The jobs queue's byte limit on JetStream, in MiB (split between its partitions): at
    /// the limit a new job or resize is refused with 503 `queue_full` until workers catch up,
    /// and nothing already queued is dropped. 0: bounded only by the servers' storage
    /// (running out of it is refused the same way).
    #[arg(long, env = "IMGFLEET_QUEUE_MB", default_value_t = 0)]
    pub queue_mb: u64,
    /// A fleet's shared database for the identity and usage stores (otherwise SQLite files
    /// in the data directory): `postgres://…` (which also shares the job store) or
    /// `dynamodb://<table prefix>[?endpoint=URL&region=R]`.
    #[arg(long, env = "IMGFLEET_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// SQS endpoint (default: AWS's for the region); e.g. a moto_server address.
    #[arg(long, env = "IMGFLEET_SQS_ENDPOINT")]
    pub sqs_endpoint: Option<String>,
    /// SQS region (default: from the AWS environment).
    #[arg(long, env = "IMGFLEET_SQS_REGION")]
    pub sqs_region: Option<String>,
    /// How long a synchronous request waits for its job's completion, while part of the
    /// queue is failing, before a second copy of the job goes through another partition
    /// (0: never). Only when some partition failed lately: a healthy fleet never runs a job
    /// twice.
    #[arg(long, env = "IMGFLEET_HEDGE_AFTER_MS", default_value_t = 1_000)]
    pub hedge_after_ms: u64,
    /// Message groups per tenant: how many of one tenant's jobs may run at once.
    /// Defaults to the number of cores.
    #[arg(long, env = "IMGFLEET_TENANT_SHARDS")]
    pub tenant_shards: Option<usize>,
    /// How long an asynchronous job's output can be fetched, in seconds.
    #[arg(long, env = "IMGFLEET_JOB_OUTPUT_TTL_SECS", default_value_t = 600)]
    pub job_output_ttl_secs: u64,
    /// Staging capacity (inputs and outputs waiting), in MiB.
    #[arg(long, env = "IMGFLEET_STAGING_MB", default_value_t = 2048)]
    pub staging_mb: u64,
    /// This host's result cache for signed GETs (`<data dir>/results`), in MiB; the least
    /// recently used results are evicted beyond it. 0 turns caching on this disk off.
    #[arg(long, env = "IMGFLEET_RESULT_CACHE_MB", default_value_t = 1024)]
    pub result_cache_mb: u64,
    /// The results this host serves most, kept in memory too, in MiB (0: read from disk
    /// every time).
    #[arg(long, env = "IMGFLEET_MEMORY_CACHE_MB", default_value_t = 64)]
    pub memory_cache_mb: u64,
    /// The fleet's shared result cache on JetStream, in MiB across the fleet (the oldest
    /// results dropped beyond it); 0 keeps results on each host only. Like staging, it is
    /// reserved against each server's `max_file_store`.
    #[arg(long, env = "IMGFLEET_FLEET_CACHE_MB", default_value_t = 256)]
    pub fleet_cache_mb: u64,
    /// The admin API's bearer token. Without one, `<data dir>/admin.token` is used (and
    /// created with a random token on first start).
    #[arg(long, env = "IMGFLEET_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Replication-lag SLA of the auth cache, in milliseconds: identity changes are in
    /// force within this time, and a cache that has not synced for longer reports stale.
    #[arg(long, env = "IMGFLEET_AUTH_SLA_MS", default_value_t = 1000)]
    pub auth_sla_ms: u64,
    /// Usage records older than this many days are packed into compressed segments
    /// (hourly check). Must outlast the usage queue's retention (4 days).
    #[arg(long, env = "IMGFLEET_USAGE_RAW_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u64).range(5..))]
    pub usage_raw_days: u64,
}

impl UpArgs {
    /// The host id: given, or `local` on the embedded queue, or a fresh one per start.
    pub fn host_id(&self) -> String {
        match (&self.host_id, self.queue) {
            (Some(id), _) => id.clone(),
            (None, QueueKind::Embedded) => "local".into(),
            (None, _) => format!("host-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]),
        }
    }

    /// Streams per JetStream queue: given, or one per replica (a partition's leader on
    /// each node of the cluster).
    pub fn nats_partitions(&self) -> usize {
        self.nats_partitions.unwrap_or(self.nats_replicas) as usize
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum QueueKind {
    Embedded,
    Sqs,
    /// NATS JetStream: a self-hosted fleet's replicated queue, and its shared staging.
    Jetstream,
}

#[derive(Debug, Args, Clone)]
pub struct RuntimeArgs {
    /// Execution slots (concurrent invocations); defaults to the machine's cores.
    #[arg(long, env = "IMGFLEET_CORES")]
    pub cores: Option<usize>,
    /// Deadline of one invocation, in milliseconds.
    #[arg(long, env = "IMGFLEET_DEADLINE_MS", default_value_t = 10_000)]
    pub deadline_ms: u64,
    /// Linear-memory cap of one instance, in MiB.
    #[arg(long, env = "IMGFLEET_MEMORY_MB", default_value_t = 256)]
    pub memory_mb: usize,
}

impl RuntimeArgs {
    pub fn cores(&self) -> usize {
        self.cores
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1)
    }

    pub fn runtime_config(&self) -> crate::execution::runtime::RuntimeConfig {
        crate::execution::runtime::RuntimeConfig {
            deadline: std::time::Duration::from_millis(self.deadline_ms),
            memory_limit_bytes: self.memory_mb * 1024 * 1024,
            // Slots, as many warm auth-check instances, and headroom for teardown.
            max_instances: (self.cores() as u32 * 3).max(8),
        }
    }
}

impl UpArgs {
    pub fn limits(&self) -> imgfleet_resize::Limits {
        let d = imgfleet_resize::Limits::default();
        imgfleet_resize::Limits {
            max_input_bytes: self
                .max_input_bytes
                .map_or(d.max_input_bytes, |v| v.min(d.max_input_bytes)),
            max_input_pixels: self
                .max_input_pixels
                .map_or(d.max_input_pixels, |v| v.min(d.max_input_pixels)),
            max_output_side: self
                .max_output_side
                .map_or(d.max_output_side, |v| v.min(d.max_output_side)),
            // Leave room in the instance for the encoded input, output and the resampler.
            max_decode_alloc: (self.runtime.memory_mb as u64 * 1024 * 1024 * 3 / 4)
                .min(d.max_decode_alloc),
        }
    }
}
