//! The service's Prometheus metrics: one process-wide registry ([`metrics`]) with every metric
//! family, the calls the choke points make to record into them, and the text the `/metrics`
//! route answers ([`Metrics::encode`]).
//!
//! Label values that come from plugins or upstreams (connector ids, stream names, destination
//! hosts) are sanitized and capped ([`LabelCap`]): past the cap a new value is counted under
//! [`OTHER`], so a plugin cannot grow the registry without bound.
//!
//! [`otel`]: the same choke points' `tracing` spans exported as OpenTelemetry traces.

mod labels;
pub mod otel;

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub use labels::{LabelCap, MAX_LABEL_CHARS, OTHER, sanitize};

/// The `tracing` target of the spans exported as OpenTelemetry traces (run, plugin call,
/// upstream request, commit, API request). The log leaves them out (`SPAN_TARGET=off`), so they
/// cost nothing unless an exporter is set up; spans name it as the literal `"sluice_trace"`.
pub const SPAN_TARGET: &str = "sluice_trace";

/// The `Content-Type` of [`Metrics::encode`]'s text: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Distinct connector (plugin) ids kept as label values.
pub const MAX_CONNECTORS: usize = 64;
/// Distinct stream names kept as label values (all connectors together).
pub const MAX_STREAMS: usize = 256;
/// Distinct destination hosts kept as label values.
pub const MAX_HOSTS: usize = 128;

/// `{connector, outcome}`: outcome is the run's final status (`succeeded`, `failed`,
/// `cancelled`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    connector: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    connector: String,
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorLabels {
    connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    export: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundLabels {
    plugin: String,
    host: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type SecondsCounter = Counter<f64, std::sync::atomic::AtomicU64>;

/// Runs last from seconds to the 6-hour run limit: 0.5 s × 2ⁿ up to 16384 s (4.6 h), then +Inf.
fn run_bounds() -> Vec<f64> {
    exponential_buckets(0.5, 2.0, 16).collect()
}

/// Plugin calls: a validate takes milliseconds, a sync as long as its run: 5 ms × 4ⁿ up to
/// ~1300 s (22 min), then +Inf.
fn call_bounds() -> Vec<f64> {
    exponential_buckets(0.005, 4.0, 10).collect()
}

fn run_buckets() -> Histogram {
    Histogram::new(run_bounds())
}

fn call_buckets() -> Histogram {
    Histogram::new(call_bounds())
}

/// Every metric family of the service, registered once in one registry.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    committed_records: Family<StreamLabels, Counter>,
    committed_bytes: Family<StreamLabels, Counter>,
    committed_files: Family<StreamLabels, Counter>,
    run_duration: HistogramFamily<ConnectorLabels>,
    call_duration: HistogramFamily<CallLabels>,
    outbound_requests: Family<OutboundLabels, Counter>,
    retries: Family<PluginLabels, Counter>,
    retry_wait: Family<PluginLabels, SecondsCounter>,
    rate_limit_waits: Family<PluginLabels, Counter>,
    rate_limit_wait: Family<PluginLabels, SecondsCounter>,
    plugin_load_failures: Counter,
    staging_bytes: Gauge,
    queued_runs: Gauge,
    running_runs: Gauge,
    call_slots_in_use: Gauge,
    call_slots_waiting: Gauge,
    memory_pages_in_use: Gauge,
    memory_pages_waiting: Gauge,
    connections_closed_for_room: Counter,
    resident_memory: Gauge,
    connectors: LabelCap,
    streams: LabelCap,
    hosts: LabelCap,
    /// The same families as OpenTelemetry instruments, once [`otel::metrics`] set them up.
    otel: std::sync::OnceLock<otel::Instruments>,
    /// Where the scrape-time values come from for an OTLP export (set by the service).
    snapshot_source: std::sync::OnceLock<SnapshotSource>,
}

/// Reads the scrape-time values ([`Snapshot`]) when OTLP metrics are collected.
pub type SnapshotSource = Box<dyn Fn() -> Snapshot + Send + Sync>;

/// Values read when `/metrics` is scraped rather than counted as they happen.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Runs admitted and waiting for a slot.
    pub queued_runs: u64,
    /// Runs executing.
    pub running_runs: u64,
    /// Bytes of the files under the staging directory (the Parquet parts being written).
    pub staging_bytes: u64,
    /// Pooled plugin call slots held by calls (`SLUICE_MAX_CONCURRENT_CALLS` in all).
    pub call_slots_in_use: u64,
    /// Plugin calls waiting for a call slot.
    pub call_slots_waiting: u64,
    /// 64 KiB pages of the plugin memory budget held by calls.
    pub memory_pages_in_use: u64,
    /// Plugin calls waiting for pages of the memory budget.
    pub memory_pages_waiting: u64,
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    /// A fresh registry with every family (the process uses [`metrics`]; tests make their own).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            runs: Family::default(),
            committed_records: Family::default(),
            committed_bytes: Family::default(),
            committed_files: Family::default(),
            run_duration: Family::new_with_constructor(run_buckets),
            call_duration: Family::new_with_constructor(call_buckets),
            outbound_requests: Family::default(),
            retries: Family::default(),
            retry_wait: Family::default(),
            rate_limit_waits: Family::default(),
            rate_limit_wait: Family::default(),
            plugin_load_failures: Counter::default(),
            staging_bytes: Gauge::default(),
            queued_runs: Gauge::default(),
            running_runs: Gauge::default(),
            call_slots_in_use: Gauge::default(),
            call_slots_waiting: Gauge::default(),
            memory_pages_in_use: Gauge::default(),
            memory_pages_waiting: Gauge::default(),
            connections_closed_for_room: Counter::default(),
            resident_memory: Gauge::default(),
            connectors: LabelCap::new(MAX_CONNECTORS),
            streams: LabelCap::new(MAX_STREAMS),
            hosts: LabelCap::new(MAX_HOSTS),
            otel: std::sync::OnceLock::new(),
            snapshot_source: std::sync::OnceLock::new(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "sluice_runs",
            "Runs that ended, by connector and outcome (succeeded, failed, cancelled)",
            m.runs.clone(),
        );
        r.register(
            "sluice_committed_records",
            "Rows committed to storage, by connector and stream",
            m.committed_records.clone(),
        );
        r.register_with_unit(
            "sluice_committed",
            "Parquet bytes committed to storage, by connector and stream",
            Unit::Bytes,
            m.committed_bytes.clone(),
        );
        r.register(
            "sluice_committed_files",
            "Parquet files committed to storage, by connector and stream",
            m.committed_files.clone(),
        );
        r.register_with_unit(
            "sluice_run_duration",
            "Wall-clock time of runs from start to end (queueing excluded), by connector",
            Unit::Seconds,
            m.run_duration.clone(),
        );
        r.register_with_unit(
            "sluice_plugin_call_duration",
            "Wall-clock time of plugin calls (waiting for memory and a slot included), by plugin and export",
            Unit::Seconds,
            m.call_duration.clone(),
        );
        r.register(
            "sluice_outbound_requests",
            "Upstream HTTP attempts of plugins, by plugin, destination host and status (HTTP status, or error kind)",
            m.outbound_requests.clone(),
        );
        r.register(
            "sluice_outbound_retries",
            "Upstream requests retried after a 5xx or a transport error, by plugin",
            m.retries.clone(),
        );
        r.register_with_unit(
            "sluice_outbound_retry_wait",
            "Time spent waiting before retries, by plugin",
            Unit::Seconds,
            m.retry_wait.clone(),
        );
        r.register(
            "sluice_outbound_rate_limit_waits",
            "Waits on an upstream's rate limit (Retry-After, reset headers, the host's pacing), by plugin",
            m.rate_limit_waits.clone(),
        );
        r.register_with_unit(
            "sluice_outbound_rate_limit_wait",
            "Time spent waiting on upstream rate limits, by plugin",
            Unit::Seconds,
            m.rate_limit_wait.clone(),
        );
        r.register(
            "sluice_plugin_load_failures",
            "Plugin files that failed to load (each attempt; a file is retried when it changes)",
            m.plugin_load_failures.clone(),
        );
        r.register_with_unit(
            "sluice_staging",
            "Bytes of the files in the staging directory when scraped",
            Unit::Bytes,
            m.staging_bytes.clone(),
        );
        r.register(
            "sluice_queued_runs",
            "Runs admitted and waiting for a slot",
            m.queued_runs.clone(),
        );
        r.register(
            "sluice_running_runs",
            "Runs executing",
            m.running_runs.clone(),
        );
        r.register(
            "sluice_plugin_call_slots_in_use",
            "Pooled plugin call slots held by calls (SLUICE_MAX_CONCURRENT_CALLS in all)",
            m.call_slots_in_use.clone(),
        );
        r.register(
            "sluice_plugin_call_slots_waiting",
            "Plugin calls waiting for a call slot",
            m.call_slots_waiting.clone(),
        );
        r.register(
            "sluice_plugin_memory_pages_in_use",
            "64 KiB pages of the plugin memory budget (SLUICE_PLUGIN_MEMORY_BUDGET_MIB) held by calls",
            m.memory_pages_in_use.clone(),
        );
        r.register(
            "sluice_plugin_memory_pages_waiting",
            "Plugin calls waiting for pages of the memory budget",
            m.memory_pages_waiting.clone(),
        );
        r.register(
            "sluice_http_connections_closed_for_room",
            "HTTP connections closed at the connection cap (SLUICE_MAX_CONNECTIONS) to make room for a new one: the open one that waited longest on its client",
            m.connections_closed_for_room.clone(),
        );
        // The conventional name every Prometheus client uses.
        r.register_with_unit(
            "process_resident_memory",
            "Resident set size of the process (VmRSS of /proc/self/status)",
            Unit::Bytes,
            m.resident_memory.clone(),
        );
        Self { registry, ..m }
    }

    /// A run ended: its outcome and how long it ran.
    pub fn run_ended(&self, connector: &str, outcome: &str, duration: Duration) {
        let labels = RunLabels {
            connector: self.connectors.admit(connector),
            outcome: sanitize(outcome),
        };
        if let Some(o) = self.otel.get() {
            o.run_ended(&labels.connector, &labels.outcome, duration);
        }
        self.runs.get_or_create(&labels).inc();
        self.run_duration
            .get_or_create(&ConnectorLabels {
                connector: labels.connector,
            })
            .observe(duration.as_secs_f64());
    }

    /// A stream of a run was committed: its rows, Parquet bytes and files.
    pub fn committed(&self, connector: &str, stream: &str, records: u64, bytes: u64, files: u64) {
        let labels = StreamLabels {
            connector: self.connectors.admit(connector),
            stream: self.streams.admit(stream),
        };
        if let Some(o) = self.otel.get() {
            o.committed(&labels.connector, &labels.stream, records, bytes, files);
        }
        self.committed_records
            .get_or_create(&labels)
            .inc_by(records);
        self.committed_bytes.get_or_create(&labels).inc_by(bytes);
        self.committed_files.get_or_create(&labels).inc_by(files);
    }

    /// A plugin call (`export`: `validate`, `discover`, `sync`, `manifest`) ended.
    pub fn plugin_call(&self, plugin: &str, export: &'static str, duration: Duration) {
        let labels = CallLabels {
            plugin: self.connectors.admit(plugin),
            export: export.to_string(),
        };
        if let Some(o) = self.otel.get() {
            o.plugin_call(&labels.plugin, export, duration);
        }
        self.call_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    /// One upstream attempt ended: `status` is the HTTP status or an error kind
    /// (`timeout`, `connection_error`, `denied`, …).
    pub fn outbound_request(&self, plugin: &str, host: &str, status: &str) {
        let labels = OutboundLabels {
            plugin: self.connectors.admit(plugin),
            host: self.hosts.admit(host),
            status: sanitize(status),
        };
        if let Some(o) = self.otel.get() {
            o.outbound_request(&labels.plugin, &labels.host, &labels.status);
        }
        self.outbound_requests.get_or_create(&labels).inc();
    }

    /// A request is retried after waiting `waited`.
    pub fn retry(&self, plugin: &str, waited: Duration) {
        let labels = PluginLabels {
            plugin: self.connectors.admit(plugin),
        };
        if let Some(o) = self.otel.get() {
            o.retry(&labels.plugin, waited);
        }
        self.retries.get_or_create(&labels).inc();
        self.retry_wait
            .get_or_create(&labels)
            .inc_by(waited.as_secs_f64());
    }

    /// A request waited `waited` on a rate limit.
    pub fn rate_limit_wait(&self, plugin: &str, waited: Duration) {
        let labels = PluginLabels {
            plugin: self.connectors.admit(plugin),
        };
        if let Some(o) = self.otel.get() {
            o.rate_limit_wait(&labels.plugin, waited);
        }
        self.rate_limit_waits.get_or_create(&labels).inc();
        self.rate_limit_wait
            .get_or_create(&labels)
            .inc_by(waited.as_secs_f64());
    }

    /// At the connection cap, an open connection was closed to make room for a new one.
    pub fn connection_closed_for_room(&self) {
        if let Some(o) = self.otel.get() {
            o.connection_closed_for_room();
        }
        self.connections_closed_for_room.inc();
    }

    /// A plugin file failed to load.
    pub fn plugin_load_failed(&self) {
        if let Some(o) = self.otel.get() {
            o.plugin_load_failed();
        }
        self.plugin_load_failures.inc();
    }

    /// Where an OTLP export reads the queue, running runs and staging bytes (the `/metrics`
    /// route passes its own [`Snapshot`]); the first call wins.
    pub fn set_snapshot_source(&self, source: SnapshotSource) {
        let _ = self.snapshot_source.set(source);
    }

    fn snapshot(&self) -> Snapshot {
        self.snapshot_source.get().map(|f| f()).unwrap_or_default()
    }

    /// The registry in the Prometheus text format ([`CONTENT_TYPE`]), with the scrape-time
    /// values of `snapshot` and the process's resident memory.
    pub fn encode(&self, snapshot: Snapshot) -> Result<String, std::fmt::Error> {
        self.queued_runs.set(gauge_value(snapshot.queued_runs));
        self.running_runs.set(gauge_value(snapshot.running_runs));
        self.staging_bytes.set(gauge_value(snapshot.staging_bytes));
        self.call_slots_in_use
            .set(gauge_value(snapshot.call_slots_in_use));
        self.call_slots_waiting
            .set(gauge_value(snapshot.call_slots_waiting));
        self.memory_pages_in_use
            .set(gauge_value(snapshot.memory_pages_in_use));
        self.memory_pages_waiting
            .set(gauge_value(snapshot.memory_pages_waiting));
        if let Some(rss) = resident_bytes() {
            self.resident_memory.set(gauge_value(rss));
        }
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's resident set size in bytes (`VmRSS` of `/proc/self/status`, Linux).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// Bytes of the regular files under `dir` (recursively; symlinks not followed). A missing
/// directory is 0; entries that vanish while walked are skipped.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests;
