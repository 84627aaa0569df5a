//! Traces over OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: the service's
//! `tracing` spans (a run, a plugin call, an upstream request, a commit, an API request) become
//! OpenTelemetry spans through [`layer`], batched on the SDK's own thread and posted to
//! `{endpoint}/v1/traces`. Honoured: `OTEL_EXPORTER_OTLP_ENDPOINT` (and `…_TRACES_ENDPOINT`,
//! `…_HEADERS`), `OTEL_SERVICE_NAME` (default `sluice`), `OTEL_SERVICE_VERSION` (default this
//! build's version), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`. An incoming W3C `traceparent` is
//! continued by [`continue_trace`].

use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// The running exporter; [`Tracing::shutdown`] flushes what is still batched.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports the spans still batched and stops the exporter (at most a few seconds).
    pub fn shutdown(&self) {
        let _ = self
            .provider
            .shutdown_with_timeout(std::time::Duration::from_secs(5));
    }
}

/// Whether traces are to be exported: `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set and not empty.
pub fn enabled() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

/// The `tracing` layer that turns spans into OpenTelemetry spans sent over OTLP/HTTP, and the
/// handle that flushes them at exit. Also installs the W3C trace-context propagator.
pub fn layer<S>() -> Result<(impl tracing_subscriber::Layer<S>, Tracing), OtelError>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let resource = Resource::builder()
        .with_service_name(env("OTEL_SERVICE_NAME").unwrap_or_else(|| "sluice".into()))
        .with_attribute(KeyValue::new(
            "service.version",
            env("OTEL_SERVICE_VERSION").unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("sluice");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((layer, Tracing { provider }))
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes `span` a child of the trace an incoming request's `traceparent` (W3C Trace Context)
/// names; without one, or one that does not parse, `span` stays a root. Nothing happens when
/// no exporter is set up.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.get("traceparent").is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(cx);
}
