//! A connector for the host's tests: every call does what its config asks.
//!
//! `validate` dispatches on `config.action` (default `ok`): `ok`, `loop`, `hog`, `panic`,
//! `fetch`, `secret`, `log`, `clock` (the host's clock, `clock.now`), `grow` (holds `mib` MiB,
//! touched, then does `fetch` when `url` is given, else `ok`). `sync` emits `count`
//! records to stream `items`; see [`SyncConfig`].

use std::hint::black_box;

use serde::Deserialize;
use sluice_sdk::http::Request;
use sluice_sdk::records::Batcher;
use sluice_sdk::{
    Connector, ConnectorError, Manifest, Result, StreamSpec, SyncRequest, Value, json, log,
};

/// The crate's version: 1.0.0 for `probe`, 2.0.0 for `probe-v2`.
const VERSION: &str = env!("CARGO_PKG_VERSION");
const STREAM: &str = "items";

pub struct Probe;

/// What `sync` does.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct SyncConfig {
    /// `loop` or `hog`: do that instead of emitting.
    action: Option<String>,
    /// Records to emit; ids run from the state's cursor + 1 (or 1).
    count: u64,
    /// Records per emit; a checkpoint `{"cursor": last_id}` follows every batch.
    batch: usize,
    /// Add an undeclared field `extra: {"n": id}` to every record.
    extra: bool,
    /// Fail (`internal`) once this many records were emitted in this run.
    fail_after: Option<u64>,
    /// Emit to this stream instead of `items` (to test the host's unknown-stream check).
    stream: Option<String>,
    /// Put the request's `started_at` and `run_id`, and the host's clock before the first
    /// emit (`now_ms`), into every checkpoint.
    stamp: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            action: None,
            count: 10,
            batch: 1000,
            extra: false,
            fail_after: None,
            stream: None,
            stamp: false,
        }
    }
}

impl Connector for Probe {
    fn manifest() -> Manifest {
        Manifest::new("probe", "Probe", VERSION)
            .description("Test connector: each call does what its config asks.")
            .config_schema(&json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {
                    "action": {"enum": ["ok", "loop", "hog", "panic", "fetch", "secret", "log", "clock", "grow"]},
                    "mib": {"type": "integer", "minimum": 0},
                    "url": {"type": "string"},
                    "inject": {"type": "boolean"},
                    "secret": {"type": "string"},
                    "name": {"type": "string"},
                    "message": {"type": "string"},
                    "count": {"type": "integer", "minimum": 0},
                    "batch": {"type": "integer", "minimum": 1},
                    "extra": {"type": "boolean"},
                    "fail_after": {"type": "integer", "minimum": 0},
                    "stream": {"type": "string"},
                    "stamp": {"type": "boolean"}
                }
            }))
            .secret("token", "A token the `fetch` action can inject.", true)
            .host("https://api.example.com")
            .host("{config.url}")
            .stream(
                StreamSpec::new(STREAM)
                    .description("Numbered items.")
                    .primary_key(&["id"])
                    .json_schema(&json!({
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "name": {"type": "string"},
                            "value": {"type": "integer"}
                        }
                    })),
            )
    }

    fn validate(config: Value) -> Result<Value> {
        let text = |field: &str| config.get(field).and_then(Value::as_str);
        match text("action").unwrap_or("ok") {
            "ok" => Ok(json!({"version": VERSION})),
            "loop" => spin(),
            "hog" => hog(),
            "panic" => panic!("probe panics on purpose"),
            "fetch" => {
                let url = text("url").ok_or_else(|| ConnectorError::invalid_config("no url"))?;
                let mut request = Request::get(url);
                if config.get("inject").and_then(Value::as_bool) == Some(true) {
                    let secret = text("secret").unwrap_or("token");
                    request = request.secret_header("authorization", secret, "Bearer ");
                }
                match request.send() {
                    Ok(response) => Ok(json!({
                        "version": VERSION,
                        "status": response.status,
                        "body": response.text(),
                    })),
                    Err(e) => Err(ConnectorError::unreachable(e.describe())),
                }
            }
            "secret" => {
                let name = text("name").ok_or_else(|| ConnectorError::invalid_config("no name"))?;
                let value = sluice_sdk::secret(name)?;
                Ok(json!({"length": value.len()}))
            }
            "log" => {
                log::info(text("message").unwrap_or(""), &[("k", "v")]);
                Ok(json!({}))
            }
            "clock" => Ok(json!({"now_ms": sluice_sdk::now()})),
            "grow" => {
                let mib = config.get("mib").and_then(Value::as_u64).unwrap_or(0);
                let held: Vec<Vec<u8>> = (0..mib).map(|_| touched_mib()).collect();
                let mut rest = config.clone();
                rest["action"] = json!(if text("url").is_some() { "fetch" } else { "ok" });
                let answer = Self::validate(rest);
                black_box(&held);
                answer
            }
            other => Err(ConnectorError::invalid_config(format!(
                "unknown action {other:?}"
            ))),
        }
    }

    fn sync(request: SyncRequest) -> Result<()> {
        let config: SyncConfig = request.config()?;
        match config.action.as_deref() {
            Some("loop") => spin(),
            Some("hog") => hog(),
            _ => {}
        }
        let stream = match &config.stream {
            Some(stream) => stream.as_str(),
            None if request.selected(STREAM) => STREAM,
            None => return Ok(()),
        };
        let after = request
            .state(STREAM)
            .and_then(|s| s.get("cursor"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let batch = config.batch.max(1);
        let mut out = Batcher::new(batch);
        let fail = |emitted: u64| {
            ConnectorError::internal(format!("failing on purpose after {emitted} records"))
        };
        if config.fail_after == Some(0) {
            return Err(fail(0));
        }
        let now_ms = sluice_sdk::now();
        let state = |cursor: u64| {
            if config.stamp {
                json!({"cursor": cursor, "started_at": request.started_at, "run_id": request.run_id, "now_ms": now_ms})
            } else {
                json!({"cursor": cursor})
            }
        };
        let mut emitted = 0u64;
        for id in after + 1..=after + config.count {
            let mut record = json!({"id": id, "name": format!("item-{id}"), "value": id * 2});
            if config.extra {
                record["extra"] = json!({"n": id});
            }
            out.push(stream, &record)?;
            emitted += 1;
            if emitted.is_multiple_of(batch as u64) {
                out.checkpoint(stream, &state(id))?;
            }
            if config.fail_after == Some(emitted) {
                out.flush()?;
                return Err(fail(emitted));
            }
        }
        if out.pending(stream) > 0 {
            out.checkpoint(stream, &state(after + config.count))?;
        }
        Ok(())
    }
}

/// Spins forever; the optimizer cannot remove the loop.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates and touches 1 MiB chunks, keeping them all, until the allocation traps.
fn hog() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        chunks.push(touched_mib());
        black_box(&chunks);
    }
}

/// 1 MiB, every page written.
fn touched_mib() -> Vec<u8> {
    let mut chunk = vec![0u8; 1 << 20];
    for byte in chunk.iter_mut().step_by(4096) {
        *byte = 1;
    }
    black_box(chunk)
}
