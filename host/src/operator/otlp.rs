//! Optional OTLP export of the host's spans (`--otlp-endpoint` / OTEL_EXPORTER_OTLP_ENDPOINT):
//! the `tracing` spans of requests and jobs, through `tracing-opentelemetry`, to an
//! OpenTelemetry collector over OTLP/HTTP (JSON), batched on a thread of its own so that a
//! slow or absent collector never holds up a request (spans it cannot take are dropped).

use opentelemetry::trace::{
    SpanContext, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::trace_context::TraceContext;

/// The exporter's provider: shut down when the host stops, flushing what is batched.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("OTLP export: flushing the last spans failed: {e}");
        }
    }
}

/// A layer exporting spans to `endpoint` (the collector's base URL; spans go to
/// `<endpoint>/v1/traces`), and the handle that flushes it.
pub fn layer<S>(
    endpoint: &str,
    service: &str,
) -> anyhow::Result<(impl tracing_subscriber::Layer<S> + use<S>, Export)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build();
    let tracer = provider.tracer("imgfleet");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Only the spans that make a trace: requests, jobs and what they enclose.
        .with_tracked_inactivity(false);
    Ok((layer, Export { provider }))
}

/// With export on, makes `parent` the exported span's parent and returns the span's own
/// context; `None` when nothing exports (the span has no OpenTelemetry context).
pub fn adopt(span: &tracing::Span, parent: Option<TraceContext>) -> Option<TraceContext> {
    if let Some(p) = parent {
        let remote = SpanContext::new(
            TraceId::from_bytes(p.trace_id),
            opentelemetry::trace::SpanId::from_bytes(p.span_id),
            if p.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let otel = span.context();
    let own = otel.span().span_context().clone();
    own.is_valid().then(|| TraceContext {
        trace_id: own.trace_id().to_bytes(),
        span_id: own.span_id().to_bytes(),
        sampled: own.is_sampled(),
    })
}
