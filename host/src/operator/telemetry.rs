//! Metrics: one Prometheus recorder per process (the `metrics` facade), and every metric
//! name in one place so dashboards and code agree. Gauges that describe state (queue depth,
//! cache lag, memory) are read when scraped; events are recorded where they happen.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "imgfleet_http_requests_total";
pub const HTTP_DURATION: &str = "imgfleet_http_request_duration_seconds";
pub const FUNCTION_CPU: &str = "imgfleet_function_cpu_seconds";
pub const FUNCTION_WALL: &str = "imgfleet_function_wall_seconds";
pub const FUNCTION_INSTANTIATE: &str = "imgfleet_function_instantiate_seconds";
pub const FUNCTION_MEMORY_PEAK: &str = "imgfleet_function_memory_peak_bytes";
pub const USAGE_INGEST_LAG: &str = "imgfleet_usage_ingest_lag_seconds";
pub const USAGE_RECORDS_STORED: &str = "imgfleet_usage_records_stored_total";
pub const UNRECORDED_REFUSALS: &str = "imgfleet_unrecorded_refusals_total";
pub const HEDGED_JOBS: &str = "imgfleet_hedged_jobs_total";

/// Latency buckets from 0.5 ms to 30 s.
const SECONDS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Memory buckets from 1 MiB to 1 GiB.
const BYTES: [f64; 11] = [
    1048576.0,
    2097152.0,
    4194304.0,
    8388608.0,
    16777216.0,
    33554432.0,
    67108864.0,
    134217728.0,
    268435456.0,
    536870912.0,
    1073741824.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns its handle.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)?
        .set_buckets_for_metric(Matcher::Full(FUNCTION_MEMORY_PEAK.into()), &BYTES)?
        .install_recorder()?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(HTTP_REQUESTS, "API requests by route template and status");
    describe_counter!(
        UNRECORDED_REFUSALS,
        "Requests refused because their audit and usage records could not be written"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "API request latency by route and status"
    );
    describe_histogram!(
        FUNCTION_CPU,
        Unit::Seconds,
        "CPU time of one function invocation"
    );
    describe_histogram!(
        FUNCTION_WALL,
        Unit::Seconds,
        "Wall time of one function invocation"
    );
    describe_histogram!(
        FUNCTION_INSTANTIATE,
        Unit::Seconds,
        "Time to instantiate a function"
    );
    describe_histogram!(
        FUNCTION_MEMORY_PEAK,
        Unit::Bytes,
        "Peak linear memory of one function invocation"
    );
    describe_histogram!(
        USAGE_INGEST_LAG,
        Unit::Seconds,
        "From a request to its usage being counted (oldest record of a batch)"
    );
    describe_counter!(
        HEDGED_JOBS,
        "Second copies of jobs sent through another partition (kind: sync or async)"
    );
    describe_counter!(
        USAGE_RECORDS_STORED,
        "Usage records counted in the usage store"
    );
    describe_gauge!(
        "imgfleet_auth_cache_lag_seconds",
        Unit::Seconds,
        "Time since the auth cache last matched the identity store"
    );
    describe_gauge!(
        "imgfleet_auth_cache_stale",
        "1 when the auth cache is past its replication-lag SLA"
    );
    describe_gauge!(
        "imgfleet_auth_cache_version",
        "Last identity change applied to the auth cache"
    );
    describe_gauge!(
        "imgfleet_queue_visible_messages",
        "Messages waiting in a queue"
    );
    describe_gauge!(
        "imgfleet_queue_in_flight_messages",
        "Messages received and not yet deleted"
    );
    describe_gauge!(
        "imgfleet_queue_oldest_message_seconds",
        Unit::Seconds,
        "Age of the oldest message not yet deleted (embedded queue; SQS reports it to CloudWatch)"
    );
    describe_gauge!(
        "imgfleet_usage_outbox_records",
        "Usage records not yet shipped to the usage queue"
    );
    describe_gauge!(
        "imgfleet_usage_outbox_oldest_seconds",
        Unit::Seconds,
        "Age of the oldest unshipped usage record"
    );
    describe_gauge!(
        "imgfleet_process_resident_bytes",
        Unit::Bytes,
        "Resident memory of the host process"
    );
    describe_gauge!(
        "imgfleet_slots_busy",
        "Function slots running an invocation now"
    );
}

/// Resident memory of this process, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}
