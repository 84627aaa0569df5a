//! The `synthetic` test connector: deterministic records, generated cheaply, for throughput
//! benchmarks of the host.
//!
//! Three streams, `alpha`, `beta` and `gamma`. `sync` emits `records_per_stream` records (default
//! 1000) to every selected stream, in batches of `batch` (default 2000), each about
//! `record_bytes` (default 1000) bytes long, ids running from the stream's state cursor + 1 (or
//! 1), with a checkpoint `{"cursor": last_id}` after every batch.

use std::fmt::Write;

use serde::Deserialize;
use sluice_sdk::records::Batcher;
use sluice_sdk::{Connector, Manifest, Result, StreamSpec, SyncRequest, Value, json};

const STREAMS: [&str; 3] = ["alpha", "beta", "gamma"];
/// The payload is a window of this pattern repeated, starting at an offset derived from the id.
const PATTERN: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";

struct Synthetic;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Config {
    records_per_stream: u64,
    batch: usize,
    record_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            records_per_stream: 1000,
            batch: 2000,
            record_bytes: 1000,
        }
    }
}

impl Connector for Synthetic {
    fn manifest() -> Manifest {
        let schema = json!({
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "amount": {"type": "number"},
                "active": {"type": "boolean"},
                "created_at": {"type": "string", "format": "date-time"},
                "payload": {"type": "string"}
            }
        });
        let mut manifest = Manifest::new("synthetic", "Synthetic", env!("CARGO_PKG_VERSION"))
            .description("Deterministic generated records, for benchmarks.")
            .config_schema(&json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {
                    "records_per_stream": {"type": "integer", "minimum": 0, "default": 1000},
                    "batch": {"type": "integer", "minimum": 1, "default": 2000},
                    "record_bytes": {"type": "integer", "minimum": 0, "default": 1000}
                },
                "additionalProperties": false
            }));
        for name in STREAMS {
            manifest = manifest.stream(
                StreamSpec::new(name)
                    .description(format!("Generated records of stream {name}."))
                    .primary_key(&["id"])
                    .cursor_field("id")
                    .json_schema(&schema),
            );
        }
        manifest
    }

    fn validate(_config: Value) -> Result<Value> {
        Ok(json!({"ok": true}))
    }

    fn sync(request: SyncRequest) -> Result<()> {
        let config: Config = request.config()?;
        let batch = config.batch.max(1);
        // Long enough for any window: payload length + the largest offset.
        let pattern = PATTERN.repeat(config.record_bytes / PATTERN.len() + 2);
        let mut out = Batcher::new(batch);
        for stream in STREAMS.into_iter().filter(|s| request.selected(s)) {
            let after = request
                .state(stream)
                .and_then(|s| s.get("cursor"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let last = after + config.records_per_stream;
            for id in after + 1..=last {
                out.push_json(stream, record(stream, id, config.record_bytes, &pattern))?;
                if (id - after).is_multiple_of(batch as u64) || id == last {
                    out.checkpoint(stream, &json!({"cursor": id}))?;
                }
            }
        }
        Ok(())
    }
}

/// One record of about `bytes` bytes (never less than its fixed fields).
fn record(stream: &str, id: u64, bytes: usize, pattern: &str) -> String {
    let mut s = String::with_capacity(bytes.max(160) + 2);
    let (secs, mins, hours) = (id % 60, id / 60 % 60, id / 3600 % 24);
    let (day, month) = (1 + id / 86_400 % 28, 1 + id / (86_400 * 28) % 12);
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        r#"{{"id":{id},"name":"{stream}-{id}","amount":{}.{:02},"active":{},"created_at":"2024-{month:02}-{day:02}T{hours:02}:{mins:02}:{secs:02}Z","payload":""#,
        id / 4,
        id % 4 * 25,
        id.is_multiple_of(2),
    );
    let len = bytes.saturating_sub(s.len() + 2);
    let offset = (id % PATTERN.len() as u64) as usize;
    s.push_str(&pattern[offset..offset + len]);
    s.push_str("\"}");
    s
}

sluice_sdk::export_connector!(Synthetic);
