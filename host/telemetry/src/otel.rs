//! Traces and metrics over OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: the
//! service's `tracing` spans (a run, a plugin call, an upstream request, a commit, an API request)
//! become OpenTelemetry spans through [`layer`], batched on the SDK's own thread and posted to
//! `{endpoint}/v1/traces`; [`metrics`] mirrors every Prometheus family into OpenTelemetry
//! instruments read every `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 s) and posted to
//! `{endpoint}/v1/metrics`. Honoured: `OTEL_EXPORTER_OTLP_ENDPOINT` (and `…_TRACES_ENDPOINT`,
//! `…_HEADERS`), `OTEL_SERVICE_NAME` (default `sluice`), `OTEL_SERVICE_VERSION` (default this
//! build's version), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`. An incoming W3C `traceparent` is
//! continued by [`continue_trace`].

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _, ObservableGauge};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
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

/// Whether metrics are to be exported: `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set and not empty.
pub fn metrics_enabled() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
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
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("sluice");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((layer, Tracing { provider }))
}

/// `service.name` (`OTEL_SERVICE_NAME`, default `sluice`), `service.version`
/// (`OTEL_SERVICE_VERSION`, default this build's) and `OTEL_RESOURCE_ATTRIBUTES`.
fn resource() -> Resource {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    Resource::builder()
        .with_service_name(env("OTEL_SERVICE_NAME").unwrap_or_else(|| "sluice".into()))
        .with_attribute(KeyValue::new(
            "service.version",
            env("OTEL_SERVICE_VERSION").unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
        ))
        .build()
}

/// The running metrics exporter; [`Metering::shutdown`] sends a last collection.
pub struct Metering {
    provider: SdkMeterProvider,
}

impl Metering {
    /// Collects and exports once more, then stops the reader's thread.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(5));
    }
}

/// Starts exporting the metrics of [`crate::metrics`] over OTLP/HTTP: from now on each of its
/// recording calls also records into an OpenTelemetry instrument of the same meaning (names in
/// OpenTelemetry's dotted style, e.g. `sluice.runs`, `sluice.run.duration` in seconds; the same
/// bounded attribute values), and the gauges are read from the source given to
/// [`crate::Metrics::set_snapshot_source`]. Counters are cumulative from process start; what was
/// counted before this call is not in them.
pub fn metrics() -> Result<Metering, OtelError> {
    let exporter = MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    // The reader's interval: OTEL_METRIC_EXPORT_INTERVAL (ms), read by the SDK.
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter).build())
        .with_resource(resource())
        .build();
    let _ = crate::metrics().otel.set(Instruments::new(&provider));
    Ok(Metering { provider })
}

/// The OpenTelemetry twins of the Prometheus families.
pub(crate) struct Instruments {
    runs: Counter<u64>,
    committed_records: Counter<u64>,
    committed_bytes: Counter<u64>,
    committed_files: Counter<u64>,
    run_duration: Histogram<f64>,
    call_duration: Histogram<f64>,
    outbound_requests: Counter<u64>,
    retries: Counter<u64>,
    retry_wait: Counter<f64>,
    rate_limit_waits: Counter<u64>,
    rate_limit_wait: Counter<f64>,
    plugin_load_failures: Counter<u64>,
    connections_closed_for_room: Counter<u64>,
    /// Kept alive: their callbacks run at each collection.
    _gauges: Vec<ObservableGauge<i64>>,
}

fn kv(k: &'static str, v: &str) -> KeyValue {
    KeyValue::new(k, v.to_string())
}

impl Instruments {
    fn new(provider: &SdkMeterProvider) -> Self {
        let m = provider.meter("sluice");
        let count = |name: &'static str, unit: &'static str, what: &'static str| {
            m.u64_counter(name)
                .with_unit(unit)
                .with_description(what)
                .build()
        };
        let secs = |name: &'static str, what: &'static str| {
            m.f64_counter(name)
                .with_unit("s")
                .with_description(what)
                .build()
        };
        let gauge =
            |name: &'static str, unit: &'static str, what: &'static str, read: fn() -> i64| {
                m.i64_observable_gauge(name)
                    .with_unit(unit)
                    .with_description(what)
                    .with_callback(move |o| o.observe(read(), &[]))
                    .build()
            };
        Self {
            runs: count(
                "sluice.runs",
                "{run}",
                "Runs that ended, by connector and outcome",
            ),
            committed_records: count(
                "sluice.committed.records",
                "{row}",
                "Rows committed, by connector and stream",
            ),
            committed_bytes: count(
                "sluice.committed.bytes",
                "By",
                "Parquet bytes committed, by connector and stream",
            ),
            committed_files: count(
                "sluice.committed.files",
                "{file}",
                "Parquet files committed, by connector and stream",
            ),
            run_duration: m
                .f64_histogram("sluice.run.duration")
                .with_unit("s")
                .with_description("Runs from their slot to their end, by connector")
                .with_boundaries(super::run_bounds())
                .build(),
            call_duration: m
                .f64_histogram("sluice.plugin_call.duration")
                .with_unit("s")
                .with_description("Plugin calls, by plugin and export")
                .with_boundaries(super::call_bounds())
                .build(),
            outbound_requests: count(
                "sluice.outbound.requests",
                "{request}",
                "Upstream attempts, by plugin, host and status",
            ),
            retries: count(
                "sluice.outbound.retries",
                "{retry}",
                "Upstream requests retried, by plugin",
            ),
            retry_wait: secs(
                "sluice.outbound.retry_wait",
                "Time waited before retries, by plugin",
            ),
            rate_limit_waits: count(
                "sluice.outbound.rate_limit_waits",
                "{wait}",
                "Waits on upstream rate limits, by plugin",
            ),
            rate_limit_wait: secs(
                "sluice.outbound.rate_limit_wait",
                "Time waited on upstream rate limits, by plugin",
            ),
            plugin_load_failures: count(
                "sluice.plugin.load_failures",
                "{file}",
                "Plugin files that failed to load",
            ),
            connections_closed_for_room: count(
                "sluice.http.connections_closed_for_room",
                "{connection}",
                "HTTP connections closed at the connection cap to make room",
            ),
            _gauges: vec![
                gauge(
                    "sluice.queued_runs",
                    "{run}",
                    "Runs waiting for a slot",
                    || gauge_of(crate::metrics().snapshot().queued_runs),
                ),
                gauge("sluice.running_runs", "{run}", "Runs executing", || {
                    gauge_of(crate::metrics().snapshot().running_runs)
                }),
                gauge(
                    "sluice.staging.bytes",
                    "By",
                    "Bytes of the files in the staging directory",
                    || gauge_of(crate::metrics().snapshot().staging_bytes),
                ),
                gauge(
                    "sluice.plugin_call.slots_in_use",
                    "{slot}",
                    "Pooled plugin call slots held by calls",
                    || gauge_of(crate::metrics().snapshot().call_slots_in_use),
                ),
                gauge(
                    "sluice.plugin_call.slots_waiting",
                    "{call}",
                    "Plugin calls waiting for a call slot",
                    || gauge_of(crate::metrics().snapshot().call_slots_waiting),
                ),
                gauge(
                    "sluice.plugin_memory.pages_in_use",
                    "{page}",
                    "64 KiB pages of the plugin memory budget held by calls",
                    || gauge_of(crate::metrics().snapshot().memory_pages_in_use),
                ),
                gauge(
                    "sluice.plugin_memory.pages_waiting",
                    "{call}",
                    "Plugin calls waiting for pages of the memory budget",
                    || gauge_of(crate::metrics().snapshot().memory_pages_waiting),
                ),
                gauge(
                    "process.memory.usage",
                    "By",
                    "Resident set size of the process",
                    || gauge_of(crate::resident_bytes().unwrap_or(0)),
                ),
            ],
        }
    }

    pub(crate) fn run_ended(&self, connector: &str, outcome: &str, duration: Duration) {
        self.runs
            .add(1, &[kv("connector", connector), kv("outcome", outcome)]);
        self.run_duration
            .record(duration.as_secs_f64(), &[kv("connector", connector)]);
    }

    pub(crate) fn committed(
        &self,
        connector: &str,
        stream: &str,
        records: u64,
        bytes: u64,
        files: u64,
    ) {
        let a = [kv("connector", connector), kv("stream", stream)];
        self.committed_records.add(records, &a);
        self.committed_bytes.add(bytes, &a);
        self.committed_files.add(files, &a);
    }

    pub(crate) fn plugin_call(&self, plugin: &str, export: &str, duration: Duration) {
        self.call_duration.record(
            duration.as_secs_f64(),
            &[kv("plugin", plugin), kv("export", export)],
        );
    }

    pub(crate) fn outbound_request(&self, plugin: &str, host: &str, status: &str) {
        self.outbound_requests.add(
            1,
            &[kv("plugin", plugin), kv("host", host), kv("status", status)],
        );
    }

    pub(crate) fn retry(&self, plugin: &str, waited: Duration) {
        self.retries.add(1, &[kv("plugin", plugin)]);
        self.retry_wait
            .add(waited.as_secs_f64(), &[kv("plugin", plugin)]);
    }

    pub(crate) fn rate_limit_wait(&self, plugin: &str, waited: Duration) {
        self.rate_limit_waits.add(1, &[kv("plugin", plugin)]);
        self.rate_limit_wait
            .add(waited.as_secs_f64(), &[kv("plugin", plugin)]);
    }

    pub(crate) fn plugin_load_failed(&self) {
        self.plugin_load_failures.add(1, &[]);
    }

    pub(crate) fn connection_closed_for_room(&self) {
        self.connections_closed_for_room.add(1, &[]);
    }
}

fn gauge_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
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
