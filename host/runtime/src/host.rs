//! Per-call host state and the implementations of the WIT imports.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use zeroize::Zeroizing;

use crate::bindings::sluice::connector::{http, log, records, secrets, types};
use crate::manifest::Manifest;
use crate::outbound::{Outbound, OutboundError, OutboundRequest, plugin_headers};
use crate::policy::Destinations;

/// Credentials for one call, by declared name; wiped from memory when dropped.
#[derive(Default, Clone)]
pub struct Secrets(HashMap<String, Zeroizing<String>>);

impl Secrets {
    pub fn new(values: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(
            values
                .into_iter()
                .map(|(k, v)| (k, Zeroizing::new(v)))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.as_str())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Replaces every secret value that occurs in `text` (error messages, log lines).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in self.0.values().filter(|v| v.len() >= 4) {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "[redacted]");
            }
        }
        out
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
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
    /// The state a stream reached; covers every record emitted before it.
    fn checkpoint(&mut self, stream: &str, state: serde_json::Value) -> anyhow::Result<()>;
}

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
}

/// The `Store` data of one call.
pub(crate) struct HostState {
    pub call: CallState,
    pub limits: MemoryLimits,
    /// Made at the first WASI call: components built for our world alone never pay for it.
    wasi: Option<Wasi>,
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
    pub fn new(call: CallState, memory_bytes: usize) -> Self {
        Self {
            call,
            limits: MemoryLimits {
                max_bytes: memory_bytes,
            },
            wasi: None,
        }
    }

    /// Traps when the call was cancelled: a cancelled run stops at its next host call.
    fn check_cancel(&self) -> wasmtime::Result<()> {
        if self.call.cancel.is_cancelled() {
            return Err(wasmtime::Error::new(Stop::Cancelled));
        }
        Ok(())
    }

    fn log_event(&self, level: log::Level, message: &str, fields: &str) {
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

    /// Forwards what a WASI plugin printed to the log.
    pub fn flush_stdio(&self) {
        let Some(wasi) = &self.wasi else { return };
        for (pipe, level) in [
            (&wasi.stdout, log::Level::Info),
            (&wasi.stderr, log::Level::Warn),
        ] {
            let bytes = pipe.contents();
            if !bytes.is_empty() {
                let text = self.call.secrets.redact(&String::from_utf8_lossy(&bytes));
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    self.log_event(level, line, "stdio");
                }
            }
        }
    }
}

/// Caps a store's linear memory; going past the cap traps with [`Stop::MemoryLimit`].
pub(crate) struct MemoryLimits {
    pub max_bytes: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            return Err(wasmtime::Error::new(Stop::MemoryLimit));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
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
        let result = outbound.fetch(&destinations, prepared, &cancel).await;
        match result {
            Ok(r) => Ok(Ok(http::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })),
            Err(OutboundError::Cancelled) => Err(wasmtime::Error::new(Stop::Cancelled)),
            Err(e) => {
                if let OutboundError::Denied(why) = &e {
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

impl records::Host for HostState {
    async fn emit(
        &mut self,
        stream: String,
        batch: Vec<String>,
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
        match sink.emit(&stream, batch) {
            Ok(()) => Ok(Ok(())),
            Err(SinkError::Rejected { index, reason }) => {
                Ok(Err(records::EmitError::InvalidRecord((index, reason))))
            }
            Err(SinkError::Failed(e)) => Err(wasmtime::Error::new(Stop::Host(format!(
                "staging failed: {e:#}"
            )))),
        }
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
                return Ok(Err(records::EmitError::InvalidRecord((
                    0,
                    format!("state is not JSON: {e}"),
                ))));
            }
        };
        let Some(sink) = self.call.sink.as_mut() else {
            return Err(wasmtime::Error::new(Stop::Contract(
                "checkpoint is only allowed during sync".into(),
            )));
        };
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

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.check_cancel()?;
        let secrets = &self.call.secrets;
        let fields = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", secrets.redact(v)))
            .collect::<Vec<_>>()
            .join(" ");
        self.log_event(level, &secrets.redact(&message), &fields);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        let s = Secrets::new([("token".to_string(), "ghp_supersecret".to_string())]);
        assert_eq!(
            s.redact("bad token ghp_supersecret!"),
            "bad token [redacted]!"
        );
        assert!(!format!("{s:?}").contains("supersecret"));
    }
}
