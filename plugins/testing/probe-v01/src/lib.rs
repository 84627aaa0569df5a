//! The `probe-v01` test connector: built against the frozen `sluice:connector@0.1.0` WIT
//! (`wit/versions/0.1.0`) with wit-bindgen directly, not the SDK (which moved to the current
//! world). It stands for a component someone built before 0.2.0: the host must load and run
//! it unchanged. It uses every 0.1.0 import, so each of the host's conversions is exercised.
//!
//! `validate` dispatches on `config.action` (default `ok`): `ok` (answers `{"wit": "0.1.0"}`),
//! `fetch` (GET `config.url`, with the `token` secret as a bearer header when `config.inject`),
//! `secret` (the length of secret `config.name`), `log` (logs `config.message`). `sync` emits
//! `config.count` records (default 10) to `items` (or `config.stream`), ids following the
//! state's cursor, in batches of `config.batch` (default 100), each followed by a checkpoint
//! `{"cursor": last_id}`.

wit_bindgen::generate!({ path: "../../../wit/versions/0.1.0", world: "connector-plugin" });

use exports::sluice::connector::connector::{ConnectorManifest, Guest, SecretSpec, SyncRequest};
use serde_json::{Value, json};
use sluice::connector::types::{ConnectorError, ErrorCode, StreamSpec};
use sluice::connector::{http, log, records, secrets};

const STREAM: &str = "items";

struct ProbeV01;

fn error(code: ErrorCode, message: impl Into<String>) -> ConnectorError {
    ConnectorError {
        code,
        message: message.into(),
    }
}

fn parse(config: &str) -> Result<Value, ConnectorError> {
    serde_json::from_str(config)
        .map_err(|e| error(ErrorCode::InvalidConfig, format!("config is not JSON: {e}")))
}

fn items() -> StreamSpec {
    StreamSpec {
        name: STREAM.into(),
        description: "Numbered items.".into(),
        primary_key: vec!["id".into()],
        cursor_field: Some("id".into()),
        json_schema: json!({
            "type": "object",
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}
        })
        .to_string(),
    }
}

impl Guest for ProbeV01 {
    fn manifest() -> ConnectorManifest {
        ConnectorManifest {
            id: "probe-v01".into(),
            name: "Probe (WIT 0.1.0)".into(),
            version: "0.1.0".into(),
            description: "Test connector built against sluice:connector@0.1.0.".into(),
            config_schema: json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {
                    "action": {"enum": ["ok", "fetch", "secret", "log"]},
                    "url": {"type": "string"},
                    "inject": {"type": "boolean"},
                    "name": {"type": "string"},
                    "message": {"type": "string"},
                    "count": {"type": "integer", "minimum": 0},
                    "batch": {"type": "integer", "minimum": 1},
                    "stream": {"type": "string"}
                }
            })
            .to_string(),
            secrets: vec![SecretSpec {
                name: "token".into(),
                description: "A token the `fetch` action can inject.".into(),
                required: false,
            }],
            hosts: vec!["{config.url}".into()],
            streams: vec![items()],
            memory_mib: Some(16),
        }
    }

    fn validate(config: String) -> Result<String, ConnectorError> {
        let config = parse(&config)?;
        let text = |field: &str| config.get(field).and_then(Value::as_str);
        let answer = match text("action").unwrap_or("ok") {
            "ok" => json!({"wit": "0.1.0"}),
            "fetch" => {
                let url = text("url").ok_or_else(|| error(ErrorCode::InvalidConfig, "no url"))?;
                let inject = config.get("inject").and_then(Value::as_bool) == Some(true);
                let request = http::Request {
                    method: http::Method::Get,
                    url: url.into(),
                    headers: vec![("accept".into(), "text/plain".into())],
                    body: None,
                    secret_headers: if inject {
                        vec![http::SecretHeader {
                            header: "authorization".into(),
                            secret: "token".into(),
                            prefix: "Bearer ".into(),
                        }]
                    } else {
                        vec![]
                    },
                    idempotent: false,
                };
                match http::fetch(&request) {
                    Ok(r) => json!({
                        "status": r.status,
                        "body": String::from_utf8_lossy(&r.body),
                        "headers": r.headers.len(),
                    }),
                    Err(e) => return Err(error(ErrorCode::Unreachable, format!("{e:?}"))),
                }
            }
            "secret" => {
                let name = text("name").unwrap_or("token");
                match secrets::get(name) {
                    Ok(v) => json!({"length": v.len()}),
                    Err(e) => return Err(error(ErrorCode::InvalidConfig, format!("{e:?}"))),
                }
            }
            "log" => {
                log::log(
                    log::Level::Warn,
                    text("message").unwrap_or(""),
                    &[("wit".into(), "0.1.0".into())],
                );
                json!({})
            }
            other => {
                return Err(error(
                    ErrorCode::InvalidConfig,
                    format!("unknown action {other:?}"),
                ));
            }
        };
        Ok(answer.to_string())
    }

    fn discover(_config: String) -> Result<Vec<StreamSpec>, ConnectorError> {
        Ok(vec![items()])
    }

    fn sync(request: SyncRequest) -> Result<(), ConnectorError> {
        let config = parse(&request.config)?;
        let number = |field: &str, default: u64| {
            config.get(field).and_then(Value::as_u64).unwrap_or(default)
        };
        let (count, batch) = (number("count", 10), number("batch", 100).max(1));
        let stream = config
            .get("stream")
            .and_then(Value::as_str)
            .unwrap_or(STREAM);
        if !request.streams.iter().any(|s| s == STREAM) {
            return Ok(());
        }
        let mut after = 0;
        for (name, state) in &request.state {
            if name == STREAM {
                let state: Value = serde_json::from_str(state)
                    .map_err(|e| error(ErrorCode::Internal, format!("state is not JSON: {e}")))?;
                after = state.get("cursor").and_then(Value::as_u64).unwrap_or(0);
            }
        }
        let failed = |e: records::EmitError| error(ErrorCode::Internal, format!("{e:?}"));
        let mut id = after;
        while id < after + count {
            let last = (id + batch).min(after + count);
            let batch: Vec<String> = (id + 1..=last)
                .map(|n| json!({"id": n, "name": format!("item-{n}")}).to_string())
                .collect();
            records::emit(stream, &batch).map_err(failed)?;
            records::checkpoint(stream, &json!({"cursor": last}).to_string()).map_err(failed)?;
            id = last;
        }
        Ok(())
    }
}

export!(ProbeV01);
