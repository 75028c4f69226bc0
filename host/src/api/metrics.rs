//! `GET /metrics`: Prometheus text. State gauges are read now; event metrics (requests,
//! function times, usage ingest) were recorded as they happened.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics::gauge;

use super::AppState;
use imgfleet_queue::Queue;
use imgfleet_stores::clock::now_ms;

async fn queue_gauges(queue: &dyn Queue) {
    if let Ok(d) = queue.depth().await {
        let name = queue.name().to_string();
        gauge!("imgfleet_queue_visible_messages", "queue" => name.clone()).set(d.visible as f64);
        gauge!("imgfleet_queue_in_flight_messages", "queue" => name.clone())
            .set(d.in_flight as f64);
        gauge!("imgfleet_queue_delayed_messages", "queue" => name.clone()).set(d.delayed as f64);
        if let Some(age) = d.oldest_age {
            gauge!("imgfleet_queue_oldest_message_seconds", "queue" => name).set(age.as_secs_f64());
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition: request rates and latencies, \
               function CPU, queue depths, caches, metering lag",
               content_type = "text/plain")))]
pub async fn render(State(state): State<AppState>) -> Response {
    let cache = &state.gate.cache;
    gauge!("imgfleet_auth_cache_lag_seconds")
        .set(cache.lag().map_or(f64::INFINITY, |l| l.as_secs_f64()));
    gauge!("imgfleet_auth_cache_stale").set(f64::from(u8::from(cache.stale())));
    gauge!("imgfleet_auth_cache_version").set(cache.version() as f64);
    gauge!("imgfleet_slots").set(state.slots.count() as f64);
    gauge!("imgfleet_slots_busy").set(state.slots.busy() as f64);
    gauge!("imgfleet_admission_pending").set(state.admission.pending() as f64);
    gauge!("imgfleet_staging_bytes").set(state.staging.used_bytes() as f64);
    let results = state.results.stats();
    gauge!("imgfleet_result_cache_entries").set(results.entries as f64);
    gauge!("imgfleet_result_cache_bytes").set(results.bytes as f64);
    gauge!("imgfleet_result_cache_capacity_bytes").set(state.results.cap_bytes() as f64);
    // Counts since start: evictions for the cap, entries found damaged (removed, remade).
    gauge!("imgfleet_result_cache_evicted").set(results.evicted as f64);
    gauge!("imgfleet_result_cache_damaged").set(results.damaged as f64);
    gauge!("imgfleet_result_flights").set(state.flights.in_flight() as f64);
    queue_gauges(state.jobs.as_ref()).await;
    queue_gauges(state.usage_queue.as_ref()).await;
    if let Ok((records, oldest_ms)) = state.audit.outbox_stats().await {
        gauge!("imgfleet_usage_outbox_records").set(records as f64);
        // How far metering lags behind the requests it has to count.
        let age = oldest_ms.map_or(0.0, |t| now_ms().saturating_sub(t) as f64 / 1e3);
        gauge!("imgfleet_usage_outbox_oldest_seconds").set(age);
    }
    if let Some(rss) = crate::operator::telemetry::resident_bytes() {
        gauge!("imgfleet_process_resident_bytes").set(rss as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
