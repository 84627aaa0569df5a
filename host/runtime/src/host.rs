//! Per-call host state and the implementations of the WIT imports.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use zeroize::Zeroizing;

use crate::bindings::sluice::connector::{clock, http, log, records, secrets, types};
use crate::budget::Share;
use crate::manifest::Manifest;
use crate::outbound::{
    Outbound, OutboundError, OutboundRequest, UPSTREAM_DENIED_PREFIX, plugin_headers, upstream_sent,
};
use crate::policy::Destinations;
use crate::read_ahead::{Lookup, ReadAhead, Sent};
use crate::redact::{Redactor, loggable_url};

/// What one plugin log line costs beyond its message and fields: timestamp, level, plugin,
/// version, run and connection labels, JSON framing (~250 bytes in the JSON format).
const LOG_LINE_OVERHEAD: usize = 256;

/// Most secret headers one request may ask for (a manifest declares a handful of secrets).
const MAX_SECRET_HEADERS: usize = 16;

/// Credentials for one call, by declared name; wiped from memory when dropped. Carries the
/// [`Redactor`] for its values, so every place that holds the secrets can redact.
#[derive(Default, Clone)]
pub struct Secrets {
    values: HashMap<String, Zeroizing<String>>,
    redactor: Redactor,
}

impl Secrets {
    pub fn new(values: impl IntoIterator<Item = (String, String)>) -> Self {
        let values: HashMap<String, Zeroizing<String>> = values
            .into_iter()
            .map(|(k, v)| (k, Zeroizing::new(v)))
            .collect();
        let redactor = Redactor::new(values.values().map(|v| v.as_str()));
        Self { values, redactor }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|v| v.as_str())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// `text` with every secret value, in every encoding [`Redactor`] knows, replaced.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text).into_owned()
    }

    /// The redactor of these secrets.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

/// Where a sync's records and checkpoints go (the host's staging).
///
/// The sink is the one place records are parsed, so it is also where they are checked: a
/// record that is not a JSON object (or that the sink refuses) rejects the whole batch with
/// [`SinkError::Rejected`], which the plugin receives as `invalid-record`; nothing of a
/// rejected batch may be kept.
pub trait RecordSink: Send {
    /// A batch of records of one stream, all kept or none.
    fn emit(&mut self, stream: &str, records: Vec<String>) -> Result<(), SinkError>;
    /// A batch given field by field (`records.emit-fields`), all kept or none: what
    /// [`RecordSink::emit`] of its records' JSON text does. By default that is what it does,
    /// writing each record's text ([`FieldBatch::records`]); staging reads the fields as given.
    fn emit_fields(&mut self, stream: &str, batch: FieldBatch) -> Result<(), SinkError> {
        let records = batch
            .records()
            .map_err(|(index, reason)| SinkError::Rejected { index, reason })?;
        self.emit(stream, records)
    }
    /// The state a stream reached; covers every record emitted before it.
    fn checkpoint(&mut self, stream: &str, state: serde_json::Value) -> anyhow::Result<()>;
}

/// A batch of records given field by field (`records.emit-fields`, WIT 0.2.1), as the plugin
/// sent it (nothing checked): the keys (JSON strings) and values (JSON text) of every record are
/// cut from `text` by `spans` (four per field: key start and end, value start and end, in
/// order), and `fields` says how many fields each record has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldBatch {
    pub text: String,
    pub spans: Vec<u32>,
    pub fields: Vec<u32>,
}

impl FieldBatch {
    /// Each record's JSON text, `{k1:v1,k2:v2,...}`: the records `emit` would have carried.
    /// Keys and values are not checked here (the sink checks the records).
    ///
    /// # Errors
    /// `(index, reason)` of the first record whose spans are not in order within the text (or
    /// inside a character), or when the spans and counts do not add up.
    pub fn records(&self) -> Result<Vec<String>, (u32, String)> {
        let mut out = Vec::with_capacity(self.fields.len());
        let (mut at, mut end) = (0usize, 0usize);
        for (index, &n) in self.fields.iter().enumerate() {
            let wrong = || {
                (
                    u32::try_from(index).unwrap_or(u32::MAX),
                    FIELD_SPANS_WRONG.to_string(),
                )
            };
            let spans = self.spans.get(at..at + 4 * n as usize).ok_or_else(wrong)?;
            let mut record = String::from("{");
            for (i, piece) in spans.chunks_exact(2).enumerate() {
                let (from, to) = (piece[0] as usize, piece[1] as usize);
                let text = self
                    .text
                    .get(from..to)
                    .filter(|_| from >= end)
                    .ok_or_else(wrong)?;
                record.push_str(match i {
                    0 => "",
                    _ if i % 2 == 1 => ":",
                    _ => ",",
                });
                record.push_str(text);
                end = to;
            }
            record.push('}');
            out.push(record);
            at += spans.len();
        }
        if at != self.spans.len() {
            let index = u32::try_from(self.fields.len().saturating_sub(1)).unwrap_or(u32::MAX);
            return Err((index, FIELD_SPANS_WRONG.to_string()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod field_batch_tests {
    use super::FieldBatch;

    #[test]
    fn a_field_batch_is_the_records_its_spans_cut_from_its_text() {
        // What lies between spans is not read (here `,` and `:`, and a dropped field).
        let text = r#"{"id":1,"url":"x","name":"é"} {} {"id":2}"#.to_string();
        let batch = FieldBatch {
            spans: vec![1, 5, 6, 7, 18, 24, 25, 29, 35, 39, 40, 41],
            fields: vec![2, 0, 1],
            text,
        };
        assert_eq!(
            batch.records().unwrap(),
            vec![r#"{"id":1,"name":"é"}"#, "{}", r#"{"id":2}"#]
        );
        for (spans, fields, index) in [
            (
                vec![1, 5, 6, 7, 18, 24, 25, 29, 35, 39, 40],
                vec![2, 0, 1],
                2,
            ),
            (
                vec![1, 5, 6, 7, 18, 24, 25, 29, 35, 39, 40, 41],
                vec![2, 0, 0],
                2,
            ),
            (
                vec![1, 5, 6, 7, 18, 24, 25, 27, 35, 39, 40, 41],
                vec![2, 0, 1],
                0,
            ),
            (
                vec![1, 5, 6, 7, 3, 24, 25, 29, 35, 39, 40, 41],
                vec![2, 0, 1],
                0,
            ),
            (
                vec![1, 5, 6, 7, 18, 24, 25, 29, 35, 39, 40, 99],
                vec![2, 0, 1],
                2,
            ),
        ] {
            let bad = FieldBatch {
                spans,
                fields,
                ..batch.clone()
            };
            assert_eq!(bad.records().unwrap_err().0, index, "{bad:?}");
        }
    }
}

/// Why a field batch whose spans do not cut its text into keys and values is refused.
const FIELD_SPANS_WRONG: &str = "the batch's spans do not cut its text into keys and values (four per field, each at or after the one before, within the text)";

/// Why a [`RecordSink`] did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Record `index` of the batch is not acceptable; the plugin is told and may go on.
    #[error("record {index}: {reason}")]
    Rejected { index: u32, reason: String },
    /// The sink itself failed (e.g. a full disk): the call stops.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Why the host stopped a call from inside (carried through wasmtime as the trap's error).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stop {
    #[error("deadline exceeded")]
    Deadline,
    #[error("cancelled")]
    Cancelled,
    #[error("memory limit exceeded")]
    MemoryLimit,
    /// The global plugin memory budget could not cover a growth in time.
    #[error("{0}")]
    MemoryBudget(String),
    #[error("{0}")]
    Contract(String),
    #[error("{0}")]
    Host(String),
}

/// Labels that every log line of a call carries.
#[derive(Debug, Clone, Default)]
pub struct CallLabels {
    pub run_id: Option<String>,
    pub connection_id: Option<String>,
}

/// Everything one call may use: its capabilities, secrets, sink and limits.
pub(crate) struct CallState {
    pub manifest: Arc<Manifest>,
    pub destinations: Destinations,
    pub outbound: Arc<Outbound>,
    pub secrets: Secrets,
    pub sink: Option<Box<dyn RecordSink>>,
    /// Streams `emit` accepts in this call (a sync's selection).
    pub streams: HashSet<String>,
    pub cancel: CancellationToken,
    pub deadline: Instant,
    pub labels: CallLabels,
    pub log: LogLimits,
    /// What the host knows of the call's last `http.fetch`, when it failed in a way the WIT
    /// error carries no words for (`timeout`, `too-large`): read when the call returns an error.
    pub last_http_failure: Arc<std::sync::Mutex<Option<HttpFailure>>>,
    /// The operator setting the deadline comes from, for the deadline's message.
    pub deadline_setting: Option<&'static str>,
    /// `METHOD url` (no query) of the `http.fetch` under way, for the deadline's message.
    pub in_flight: Arc<std::sync::Mutex<Option<String>>>,
}

/// The host's account of a failed `http.fetch` whose WIT error has no message of its own.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HttpFailure {
    /// The words an SDK puts in a connector error made from this failure (Rust and JS
    /// `too-large: N` / `timeout`, Python `TooLarge: N` / `Timeout`).
    pub markers: [&'static str; 2],
    /// Which request, and which limit: no query, no credentials.
    pub detail: String,
}

impl HttpFailure {
    /// The account of `e` for `method url` (shown without its query) after `elapsed`, if `e`
    /// is a failure the WIT error leaves without words.
    pub(crate) fn of(
        e: &OutboundError,
        method: &reqwest::Method,
        shown_url: &str,
        request_timeout: std::time::Duration,
        elapsed: std::time::Duration,
    ) -> Option<Self> {
        match e {
            OutboundError::TooLarge(cap) => Some(Self {
                markers: ["too-large", "TooLarge"],
                detail: format!(
                    "the response of {method} {shown_url} exceeded the {} response cap",
                    bytes_shown(*cap)
                ),
            }),
            OutboundError::Timeout => Some(Self {
                markers: ["timeout", "Timeout"],
                detail: format!(
                    "{method} {shown_url} got no complete response within the {} s per-attempt \
                     request timeout; the host gave up after {} s",
                    request_timeout.as_secs(),
                    elapsed.as_secs()
                ),
            }),
            _ => None,
        }
    }

    /// `message` with this account appended when it speaks of this failure (and lacks it).
    pub(crate) fn explain(&self, message: &str) -> Option<String> {
        (self.markers.iter().any(|m| message.contains(m)) && !message.contains(&self.detail))
            .then(|| format!("{message} ({})", self.detail))
    }
}

/// `n` bytes as `32 MiB` when a whole number of MiB, else `n bytes`.
fn bytes_shown(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// How much a plugin may log: per line, per call, and per run (a budget its calls share).
#[derive(Debug, Clone)]
pub struct LogLimits {
    /// Longest message kept, in bytes; the rest is cut and marked. Fields get the same again.
    pub line_bytes: usize,
    /// Bytes of log one call may write (stdout/stderr included).
    pub call_bytes: u64,
    /// The budget shared by the calls of one run, if the call belongs to one.
    pub run: Option<Arc<LogBudget>>,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            line_bytes: 4 << 10,
            call_bytes: 1 << 20,
            run: None,
        }
    }
}

/// A byte budget shared by several calls (those of one run). Lines past it are dropped and
/// counted.
#[derive(Debug)]
pub struct LogBudget {
    left: AtomicU64,
}

impl LogBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicU64::new(bytes),
        })
    }

    /// Takes `n` bytes if that many are left.
    fn take(&self, n: u64) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }
}

/// What one call has logged so far.
#[derive(Debug, Default)]
struct LogUse {
    bytes: u64,
    dropped_lines: u64,
    dropped_bytes: u64,
}

/// The `Store` data of one call.
pub(crate) struct HostState {
    pub call: CallState,
    pub limits: MemoryLimits,
    log_use: LogUse,
    /// Made at the first WASI call: components built for our world alone never pay for it.
    wasi: Option<Wasi>,
    /// The next page of the last listing, fetched while the plugin works (see [`ReadAhead`]).
    read_ahead: ReadAhead,
}

/// A locked-down WASI p2 context: no preopens, env, args or network; stdout/stderr captured.
struct Wasi {
    ctx: WasiCtx,
    table: ResourceTable,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl Wasi {
    fn new() -> Self {
        let stdout = MemoryOutputPipe::new(64 << 10);
        let stderr = MemoryOutputPipe::new(64 << 10);
        let ctx = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            ctx,
            table: ResourceTable::new(),
            stdout,
            stderr,
        }
    }
}

impl HostState {
    /// `share`: the call's part of the global memory budget, taken as its memories grow.
    pub fn new(call: CallState, memory_bytes: usize, share: Option<Share>) -> Self {
        Self {
            call,
            limits: MemoryLimits::new(memory_bytes, share),
            log_use: LogUse::default(),
            wasi: None,
            read_ahead: ReadAhead::default(),
        }
    }

    /// Traps when the call was cancelled: a cancelled run stops at its next host call.
    fn check_cancel(&self) -> wasmtime::Result<()> {
        if self.call.cancel.is_cancelled() {
            return Err(wasmtime::Error::new(Stop::Cancelled));
        }
        Ok(())
    }

    /// Writes one plugin log line if the call's and the run's budgets allow it. `message` and
    /// `fields` must already be redacted; both are cut to the line limit.
    fn log_event(&mut self, level: log::Level, message: &str, fields: &str) {
        let limits = &self.call.log;
        let message = truncate(message, limits.line_bytes);
        let fields = truncate(fields, limits.line_bytes);
        // What a line really costs the log: its text and the labels and framing around it, so
        // that a flood of empty lines runs out of budget too.
        let cost = (message.len() + fields.len() + LOG_LINE_OVERHEAD) as u64;
        let call_ok = self.log_use.bytes.saturating_add(cost) <= limits.call_bytes;
        let run_ok = call_ok && limits.run.as_ref().is_none_or(|b| b.take(cost));
        if !run_ok {
            if self.log_use.dropped_lines == 0 {
                self.emit_log(
                    log::Level::Warn,
                    "plugin log budget exhausted; further lines of this call are dropped",
                    "",
                );
            }
            self.log_use.dropped_lines += 1;
            self.log_use.dropped_bytes = self.log_use.dropped_bytes.saturating_add(cost);
            return;
        }
        self.log_use.bytes += cost;
        self.emit_log(level, &message, &fields);
    }

    fn emit_log(&self, level: log::Level, message: &str, fields: &str) {
        let plugin = self.call.manifest.id.as_str();
        let version = self.call.manifest.version.as_str();
        let run = self.call.labels.run_id.as_deref().unwrap_or("");
        let connection = self.call.labels.connection_id.as_deref().unwrap_or("");
        macro_rules! ev {
            ($lvl:expr) => {
                tracing::event!(target: "plugin", $lvl, plugin, version, run_id = run, connection_id = connection, fields, "{message}")
            };
        }
        match level {
            log::Level::Trace => ev!(tracing::Level::TRACE),
            log::Level::Debug => ev!(tracing::Level::DEBUG),
            log::Level::Info => ev!(tracing::Level::INFO),
            log::Level::Warn => ev!(tracing::Level::WARN),
            log::Level::Error => ev!(tracing::Level::ERROR),
        }
    }

    /// Forwards what a WASI plugin printed to the log, then reports lines dropped over budget.
    /// Called once when the call ends.
    pub fn finish_logs(&mut self) {
        let printed: Vec<(Vec<u8>, log::Level)> = match &self.wasi {
            Some(wasi) => vec![
                (wasi.stdout.contents().to_vec(), log::Level::Info),
                (wasi.stderr.contents().to_vec(), log::Level::Warn),
            ],
            None => vec![],
        };
        for (bytes, level) in printed {
            if bytes.is_empty() {
                continue;
            }
            let text = self.call.secrets.redact(&String::from_utf8_lossy(&bytes));
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                self.log_event(level, line, "stdio");
            }
        }
        if self.log_use.dropped_lines > 0 {
            let fields = format!(
                "dropped_lines={} dropped_bytes={}",
                self.log_use.dropped_lines, self.log_use.dropped_bytes
            );
            self.emit_log(
                log::Level::Warn,
                "plugin log lines dropped over budget",
                &fields,
            );
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
pub(crate) fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… [{} bytes cut]", &s[..end], s.len() - end))
}

/// Caps what one call's store may hold over *all* its linear memories and tables together
/// (a component can have several core instances, each with its own memory); going past the
/// cap traps with [`Stop::MemoryLimit`]. What the store holds is also taken from the global
/// plugin memory budget as it grows (see [`crate::budget`]); a growth the budget cannot cover
/// in time traps with [`Stop::MemoryBudget`].
pub(crate) struct MemoryLimits {
    pub max_bytes: usize,
    /// Bytes of every memory and table of the store (tables at [`TABLE_ELEMENT_BYTES`] each).
    used: usize,
    /// The most `used` has been.
    pub peak: usize,
    /// This store's part of the global budget (given back when the store is dropped); `None`
    /// in unit tests of the per-call cap alone.
    share: Option<Share>,
}

/// What a table element is counted as (a function reference in wasmtime is at most this).
pub(crate) const TABLE_ELEMENT_BYTES: usize = 16;

impl MemoryLimits {
    pub fn new(max_bytes: usize, share: Option<Share>) -> Self {
        Self {
            max_bytes,
            used: 0,
            peak: 0,
            share,
        }
    }

    /// Bytes of every memory and table of the store now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Accounts a growth of one memory or table from `current` to `desired` bytes: refused
    /// past the call's cap, then taken from the global budget (which may wait).
    async fn grow(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.max_bytes {
            return Err(wasmtime::Error::new(Stop::MemoryLimit));
        }
        if let Some(share) = &mut self.share {
            share
                .cover(total)
                .await
                .map_err(|e| wasmtime::Error::new(Stop::MemoryBudget(e.to_string())))?;
        }
        self.used = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }
}

#[async_trait::async_trait]
impl wasmtime::ResourceLimiterAsync for MemoryLimits {
    async fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current, desired).await
    }

    async fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
        .await
    }

    fn instances(&self) -> usize {
        crate::engine::MAX_CORE_INSTANCES
    }

    fn memories(&self) -> usize {
        crate::engine::MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        crate::engine::MAX_TABLES
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let wasi = self.wasi.get_or_insert_with(Wasi::new);
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

impl types::Host for HostState {}

impl http::Host for HostState {
    async fn fetch(
        &mut self,
        request: http::Request,
    ) -> wasmtime::Result<Result<http::Response, http::HttpError>> {
        self.check_cancel()?;
        let prepared = match self.prepare(request) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        // Owned handles: the state itself (with its record sink) is not `Sync`.
        let (outbound, destinations, cancel) = (
            self.call.outbound.clone(),
            self.call.destinations.clone(),
            self.call.cancel.clone(),
        );
        let sent = Sent::of(&prepared);
        // Whether the upstream named this URL (the `next` target of its last answer).
        let from_link = self.read_ahead.is_next(&prepared.url);
        let method = prepared.method.clone();
        let shown_url = loggable_url(&prepared.url, &prepared.redactor);
        let started = Instant::now();
        if let Ok(mut last) = self.call.last_http_failure.lock() {
            *last = None;
        }
        if let Ok(mut now) = self.call.in_flight.lock() {
            *now = Some(format!("{method} {shown_url}"));
        }
        let result = match self.read_ahead.take(prepared).await {
            Lookup::Hit(result) => result,
            Lookup::Miss(prepared) => outbound.fetch(&destinations, *prepared, &cancel).await,
        };
        if let Ok(mut now) = self.call.in_flight.lock() {
            *now = None;
        }
        let result = match result {
            Err(OutboundError::Denied(why))
                if from_link && !why.starts_with(UPSTREAM_DENIED_PREFIX) =>
            {
                Err(OutboundError::Denied(upstream_sent(
                    &format!("named {shown_url} as the next page (Link header)"),
                    &why,
                )))
            }
            other => other,
        };
        if let Err(e) = &result
            && let Some(failure) = HttpFailure::of(
                e,
                &method,
                &shown_url,
                outbound.config().request_timeout,
                started.elapsed(),
            )
        {
            tracing::warn!(plugin = %self.call.manifest.id, "outbound request failed: {}", failure.detail);
            if let Ok(mut last) = self.call.last_http_failure.lock() {
                *last = Some(failure);
            }
        }
        if let (Some(sent), Ok(resp)) = (&sent, &result) {
            self.read_ahead
                .after(sent, resp, &outbound, &destinations, &cancel);
            self.read_ahead.let_start().await;
        }
        match result {
            Ok(r) => Ok(Ok(http::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })),
            Err(OutboundError::Cancelled) => Err(wasmtime::Error::new(Stop::Cancelled)),
            Err(e) => {
                if let OutboundError::Denied(why) = &e {
                    let why = self.call.secrets.redact(why);
                    tracing::warn!(plugin = %self.call.manifest.id, "outbound request denied: {why}");
                }
                Ok(Err(to_wit_error(e)))
            }
        }
    }
}

impl HostState {
    fn prepare(&self, r: http::Request) -> Result<OutboundRequest, http::HttpError> {
        let url = url::Url::parse(&r.url)
            .map_err(|e| http::HttpError::InvalidRequest(format!("bad URL: {e}")))?;
        let headers = plugin_headers(&r.headers).map_err(to_wit_error)?;
        if r.secret_headers.len() > MAX_SECRET_HEADERS {
            return Err(http::HttpError::InvalidRequest(format!(
                "{} secret headers; at most {MAX_SECRET_HEADERS}",
                r.secret_headers.len()
            )));
        }
        let mut secret_headers = HeaderMap::new();
        for sh in &r.secret_headers {
            let value = self
                .declared_secret(&sh.secret)
                .map_err(|e| http::HttpError::UnknownSecret(describe(&e)))?;
            let name = HeaderName::from_bytes(sh.header.as_bytes()).map_err(|_| {
                http::HttpError::InvalidRequest(format!("bad header name {:?}", sh.header))
            })?;
            let mut value =
                HeaderValue::from_str(&format!("{}{}", sh.prefix, value)).map_err(|_| {
                    http::HttpError::InvalidRequest(format!(
                        "secret {:?} is not a valid header value",
                        sh.secret
                    ))
                })?;
            value.set_sensitive(true);
            secret_headers.insert(name, value);
        }
        let method = match r.method {
            http::Method::Get => reqwest::Method::GET,
            http::Method::Head => reqwest::Method::HEAD,
            http::Method::Post => reqwest::Method::POST,
            http::Method::Put => reqwest::Method::PUT,
            http::Method::Patch => reqwest::Method::PATCH,
            http::Method::Delete => reqwest::Method::DELETE,
        };
        let idempotent = r.idempotent
            || matches!(
                r.method,
                http::Method::Get | http::Method::Head | http::Method::Put | http::Method::Delete
            );
        Ok(OutboundRequest {
            method,
            url,
            headers,
            secret_headers,
            body: r.body,
            idempotent,
            redactor: self.call.secrets.redactor().clone(),
        })
    }

    fn declared_secret(&self, name: &str) -> Result<&str, secrets::SecretError> {
        if self.call.manifest.secret(name).is_none() {
            return Err(secrets::SecretError::Undeclared(name.to_string()));
        }
        self.call
            .secrets
            .get(name)
            .ok_or_else(|| secrets::SecretError::Missing(name.to_string()))
    }
}

/// A one-line description of a secret error.
fn describe(e: &secrets::SecretError) -> String {
    match e {
        secrets::SecretError::Undeclared(n) => {
            format!("secret {n:?} is not declared by the plugin")
        }
        secrets::SecretError::Missing(n) => format!("secret {n:?} was not supplied"),
    }
}

fn to_wit_error(e: OutboundError) -> http::HttpError {
    match e {
        OutboundError::Denied(m) => http::HttpError::Denied(m),
        OutboundError::InvalidRequest(m) => http::HttpError::InvalidRequest(m),
        OutboundError::Timeout => http::HttpError::Timeout,
        OutboundError::Connection(m) => http::HttpError::Connection(m),
        OutboundError::TooLarge(n) => http::HttpError::TooLarge(n),
        OutboundError::Cancelled => http::HttpError::Connection("cancelled".into()),
    }
}

impl HostState {
    /// Hands a batch of `stream` to the sink with `deliver` (`emit` or `emit_fields`), and
    /// answers the plugin.
    fn deliver(
        &mut self,
        stream: String,
        deliver: impl FnOnce(&mut dyn RecordSink, &str) -> Result<(), SinkError>,
    ) -> wasmtime::Result<Result<(), records::EmitError>> {
        self.check_cancel()?;
        if !self.call.streams.contains(&stream) {
            return Ok(Err(records::EmitError::UnknownStream(stream)));
        }
        let Some(sink) = self.call.sink.as_mut() else {
            return Err(wasmtime::Error::new(Stop::Contract(
                "emit is only allowed during sync".into(),
            )));
        };
        match deliver(sink.as_mut(), &stream) {
            Ok(()) => Ok(Ok(())),
            Err(SinkError::Rejected { index, reason }) => {
                // Logged by the host too (within the plugin's log budget, so a loop of bad
                // batches cannot flood the log): a connector that ignores the error would
                // otherwise leave no trace of the records it lost.
                let line = self.call.secrets.redact(&format!(
                    "host: emit to stream {stream} refused, no record of the batch kept: record {index}: {reason}"
                ));
                self.log_event(log::Level::Warn, &line, "");
                Ok(Err(records::EmitError::InvalidRecord((index, reason))))
            }
            Err(SinkError::Failed(e)) => Err(wasmtime::Error::new(Stop::Host(format!(
                "staging failed: {e:#}"
            )))),
        }
    }
}

impl records::Host for HostState {
    async fn emit(
        &mut self,
        stream: String,
        batch: Vec<String>,
    ) -> wasmtime::Result<Result<(), records::EmitError>> {
        self.deliver(stream, |sink, stream| sink.emit(stream, batch))
    }

    async fn emit_fields(
        &mut self,
        stream: String,
        batch: records::FieldBatch,
    ) -> wasmtime::Result<Result<(), records::EmitError>> {
        let batch = FieldBatch {
            text: batch.text,
            spans: batch.spans,
            fields: batch.fields,
        };
        self.deliver(stream, |sink, stream| sink.emit_fields(stream, batch))
    }

    async fn checkpoint(
        &mut self,
        stream: String,
        state: String,
    ) -> wasmtime::Result<Result<(), records::EmitError>> {
        self.check_cancel()?;
        if !self.call.streams.contains(&stream) {
            return Ok(Err(records::EmitError::UnknownStream(stream)));
        }
        let state: serde_json::Value = match serde_json::from_str(&state) {
            Ok(v) => v,
            Err(e) => {
                // The position only: the parser's message quotes the offending text.
                return Ok(Err(records::EmitError::InvalidRecord((
                    0,
                    format!("state is not JSON (at column {})", e.column()),
                ))));
            }
        };
        let Some(sink) = self.call.sink.as_mut() else {
            return Err(wasmtime::Error::new(Stop::Contract(
                "checkpoint is only allowed during sync".into(),
            )));
        };
        // State is stored in `_state.json` and run manifests: no secret goes there.
        let state = self.call.secrets.redactor().redact_json(state);
        sink.checkpoint(&stream, state)
            .map_err(|e| wasmtime::Error::new(Stop::Host(format!("checkpoint failed: {e:#}"))))?;
        Ok(Ok(()))
    }
}

impl secrets::Host for HostState {
    async fn get(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<String, secrets::SecretError>> {
        self.check_cancel()?;
        Ok(self.declared_secret(&name).map(str::to_string))
    }
}

impl clock::Host for HostState {
    async fn now(&mut self) -> wasmtime::Result<u64> {
        self.check_cancel()?;
        // A clock set before 1970 reads as the epoch itself.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.check_cancel()?;
        let line_bytes = self.call.log.line_bytes;
        let secrets = &self.call.secrets;
        // Field names are plugin text too: redacted like the values. Each part is cut to the
        // line limit plus the longest secret form, then redacted, then cut to the limit: a huge
        // field costs no more than its share of a line, and no cut leaves part of a secret.
        let clean = |text: &str| {
            let margin = secrets.redactor().longest_form();
            let redacted = secrets.redact(&truncate(text, line_bytes.saturating_add(margin)));
            truncate(&redacted, line_bytes).into_owned()
        };
        let fields = fields
            .iter()
            .map(|(k, v)| format!("{}={}", clean(k), clean(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let message = clean(&message);
        self.log_event(level, &message, &fields);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_too_large_or_timed_out_fetch_is_explained_in_the_plugins_error() {
        use std::time::Duration;
        let big = HttpFailure::of(
            &OutboundError::TooLarge(32 << 20),
            &reqwest::Method::GET,
            "https://api.example.com/items?…",
            Duration::from_secs(60),
            Duration::from_secs(1),
        )
        .unwrap();
        // The Rust and JS SDKs' words, then Python's.
        assert_eq!(
            big.explain("too-large: 33554432").unwrap(),
            "too-large: 33554432 (the response of GET https://api.example.com/items?… \
             exceeded the 32 MiB response cap)"
        );
        assert!(
            big.explain("https://api.example.com/items: TooLarge: 33554432")
                .is_some()
        );
        // Another error of the plugin's own is left as it is, and so is one explained already.
        assert_eq!(big.explain("invalid-config: no such repository"), None);
        assert_eq!(big.explain(&big.explain("too-large: 1").unwrap()), None);
        let slow = HttpFailure::of(
            &OutboundError::Timeout,
            &reqwest::Method::POST,
            "http://127.0.0.1:9/graphql",
            Duration::from_secs(60),
            Duration::from_secs(305),
        )
        .unwrap();
        assert_eq!(
            slow.explain("timeout").unwrap(),
            "timeout (POST http://127.0.0.1:9/graphql got no complete response within the 60 s \
             per-attempt request timeout; the host gave up after 305 s)"
        );
        assert!(
            HttpFailure::of(
                &OutboundError::Connection("refused".into()),
                &reqwest::Method::GET,
                "http://x/",
                Duration::from_secs(1),
                Duration::from_secs(1),
            )
            .is_none(),
            "a connection error carries its own words"
        );
        assert_eq!(bytes_shown(1000), "1000 bytes");
    }

    #[test]
    fn redaction() {
        let s = Secrets::new([("token".to_string(), "ghp_supersecret".to_string())]);
        assert_eq!(
            s.redact("bad token ghp_supersecret!"),
            "bad token [redacted]!"
        );
        assert!(!format!("{s:?}").contains("supersecret"));
    }

    #[tokio::test]
    async fn the_memory_budget_covers_every_memory_and_table_of_a_store() {
        async fn grow(m: &mut MemoryLimits, current: usize, desired: usize) -> bool {
            m.grow(current, desired).await.is_ok_and(|grown| grown)
        }
        let mut m = MemoryLimits::new(100 << 20, None);
        // Two memories of 40 MiB fit; a third does not, though each alone is under the cap.
        assert!(grow(&mut m, 0, 40 << 20).await);
        assert!(grow(&mut m, 0, 40 << 20).await);
        assert!(!grow(&mut m, 0, 40 << 20).await);
        // Growing one memory counts only the difference.
        assert!(grow(&mut m, 40 << 20, 50 << 20).await);
        assert!(!grow(&mut m, 50 << 20, 61 << 20).await);
        // Tables are counted in the same budget.
        use wasmtime::ResourceLimiterAsync;
        assert!(m.table_growing(0, 1000, None).await.unwrap());
        assert!(
            m.table_growing(0, (10 << 20) / TABLE_ELEMENT_BYTES, None)
                .await
                .is_err()
        );
    }

    /// The per-call cap is checked before the global budget: a growth past the cap is the
    /// call's own limit even when the budget is short too, and a refused growth takes nothing.
    #[tokio::test]
    async fn the_per_call_cap_comes_before_the_global_budget() {
        use std::time::{Duration, Instant};
        let budget = crate::budget::MemoryBudget::new(8, Duration::from_millis(50));
        let far = Instant::now() + Duration::from_secs(60);
        let mut m = MemoryLimits::new(6 << 20, Some(budget.share("m".into(), far)));
        let mut other = budget.share("other".into(), far);
        other.cover(3 << 20).await.unwrap();
        assert!(m.grow(0, 3 << 20).await.unwrap());
        let e = m.grow(3 << 20, 7 << 20).await.unwrap_err();
        assert!(
            matches!(e.downcast_ref::<Stop>(), Some(Stop::MemoryLimit)),
            "{e}"
        );
        let e = m.grow(3 << 20, 5 << 20).await.unwrap_err();
        assert!(
            matches!(e.downcast_ref::<Stop>(), Some(Stop::MemoryBudget(msg)) if msg.contains("SLUICE_PLUGIN_MEMORY_BUDGET_MIB")),
            "{e}"
        );
        assert_eq!(budget.in_use_bytes(), 6 << 20);
        drop(m);
        assert_eq!(budget.in_use_bytes(), 3 << 20);
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let s = "é".repeat(10);
        let t = truncate(&s, 5);
        assert!(t.starts_with("éé…"), "{t}");
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn a_shared_log_budget_runs_out() {
        let b = LogBudget::new(10);
        assert!(b.take(6));
        assert!(!b.take(6));
        assert!(b.take(4));
        assert!(!b.take(1));
    }
}
