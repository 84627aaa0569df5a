//! `http-json`: a generic connector for a company's internal HTTP JSON services (purchase
//! orders, invoicing, CRM...).
//!
//! Each configured stream is a `GET` endpoint returning a JSON array of records, or a JSON
//! document holding one at `records_pointer`. The host injects the `api_token` secret as
//! `Authorization: Bearer …`. Pages are followed through a `Link: <…>; rel="next"` header, else
//! a `next` URL at `next_pointer` in the body. A stream with a `cursor_field` syncs
//! incrementally: the committed cursor is sent as the `cursor_param` query parameter, and the
//! largest cursor seen is checkpointed after every page.

use std::cmp::Ordering;
use std::collections::HashSet;

use serde::Deserialize;
use sluice_sdk::http::{Request, resolve_url};
use sluice_sdk::records::Batcher;
use sluice_sdk::serde_json;
use sluice_sdk::{
    Connector, ConnectorError, Manifest, Result, StreamSpec, SyncRequest, Value, json, log,
    parse_config,
};

const TOKEN: &str = "api_token";

struct HttpJson;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Origin (and optional base path) of the service, e.g. `https://orders.corp.example/api`.
    base_url: String,
    /// Path `validate` GETs; its JSON body becomes the account.
    #[serde(default = "default_validate_path")]
    validate_path: String,
    /// Where a page's body holds the next page's URL, unless a stream says otherwise.
    #[serde(default = "default_next_pointer")]
    next_pointer: String,
    #[serde(default)]
    streams: Vec<StreamConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamConfig {
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// Path under `base_url` (or an absolute URL on the same origin).
    path: String,
    /// JSON pointer to the records array in the body; `""` means the body is the array.
    #[serde(default)]
    records_pointer: String,
    #[serde(default = "default_primary_key")]
    primary_key: Vec<String>,
    /// Top-level record field the stream advances on (a number or an ISO 8601 string).
    #[serde(default)]
    cursor_field: Option<String>,
    /// Query parameter the committed cursor is sent as.
    #[serde(default)]
    cursor_param: Option<String>,
    #[serde(default)]
    next_pointer: Option<String>,
}

fn default_validate_path() -> String {
    "/me".into()
}

fn default_next_pointer() -> String {
    "/next".into()
}

fn default_primary_key() -> Vec<String> {
    vec!["id".into()]
}

impl Config {
    fn load(config: &Value) -> Result<Self> {
        let config: Config = parse_config(config)?;
        let invalid = |msg: String| Err(ConnectorError::invalid_config(msg));
        if !(config.base_url.starts_with("https://") || config.base_url.starts_with("http://")) {
            return invalid("base_url must be an http:// or https:// URL".into());
        }
        let mut names = HashSet::new();
        for stream in &config.streams {
            if !is_stream_name(&stream.name) {
                return invalid(format!(
                    "stream name {:?} must match [a-z][a-z0-9_]*",
                    stream.name
                ));
            }
            if !names.insert(stream.name.as_str()) {
                return invalid(format!("stream {:?} is configured twice", stream.name));
            }
            if stream.primary_key.is_empty() {
                return invalid(format!("stream {}: primary_key is empty", stream.name));
            }
            let pointers = [Some(&stream.records_pointer), stream.next_pointer.as_ref()];
            if let Some(p) = pointers.into_iter().flatten().find(|p| !is_pointer(p)) {
                return invalid(format!(
                    "stream {}: {p:?} is not a JSON pointer",
                    stream.name
                ));
            }
            if stream.cursor_param.is_some() && stream.cursor_field.is_none() {
                return invalid(format!(
                    "stream {}: cursor_param needs cursor_field",
                    stream.name
                ));
            }
        }
        if !is_pointer(&config.next_pointer) {
            return invalid(format!(
                "next_pointer {:?} is not a JSON pointer",
                config.next_pointer
            ));
        }
        Ok(config)
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("https://") || path.starts_with("http://") {
            return path.to_string();
        }
        let base = self.base_url.trim_end_matches('/');
        match path.trim_start_matches('/') {
            "" => base.to_string(),
            path => format!("{base}/{path}"),
        }
    }
}

impl StreamConfig {
    fn spec(&self) -> StreamSpec {
        let mut properties = serde_json::Map::new();
        for field in self.primary_key.iter().chain(&self.cursor_field) {
            properties.insert(field.clone(), json!({"type": ["string", "integer"]}));
        }
        let mut spec = StreamSpec::new(&self.name)
            .description(
                self.description
                    .clone()
                    .unwrap_or_else(|| format!("Records of GET {}", self.path)),
            )
            .primary_key(&self.primary_key)
            .json_schema(&json!({
                "type": "object",
                "properties": properties,
                "additionalProperties": true
            }));
        if let Some(cursor) = &self.cursor_field {
            spec = spec.cursor_field(cursor);
        }
        spec
    }
}

impl Connector for HttpJson {
    fn manifest() -> Manifest {
        Manifest::new("http-json", "HTTP JSON", env!("CARGO_PKG_VERSION"))
            .description(
                "Internal HTTP JSON services: each stream is a paginated GET endpoint \
                 returning records.",
            )
            .config_schema(&config_schema())
            .secret(
                TOKEN,
                "API token, sent by the host as `Authorization: Bearer <token>`.",
                true,
            )
            .host("{config.base_url}")
    }

    fn validate(config: Value) -> Result<Value> {
        let config = Config::load(&config)?;
        let response = Request::get(config.url(&config.validate_path))
            .bearer_secret(TOKEN)
            .send()?
            .error_for_status()?;
        response.json()
    }

    fn discover(config: Value) -> Result<Vec<StreamSpec>> {
        let config = Config::load(&config)?;
        Ok(config.streams.iter().map(StreamConfig::spec).collect())
    }

    fn sync(request: SyncRequest) -> Result<()> {
        let config = Config::load(&request.config)?;
        let mut out = Batcher::default();
        for stream in config.streams.iter().filter(|s| request.selected(&s.name)) {
            let state = request.state(&stream.name);
            sync_stream(&config, stream, state, &mut out)?;
        }
        out.flush()
    }
}

fn sync_stream(
    config: &Config,
    stream: &StreamConfig,
    state: Option<&Value>,
    out: &mut Batcher,
) -> Result<()> {
    let name = stream.name.as_str();
    let mut cursor = match stream.cursor_field {
        Some(_) => state.and_then(|s| s.get("cursor")).cloned(),
        None => None,
    }
    .filter(|c| !c.is_null());
    let mut request = Request::get(config.url(&stream.path));
    if let (Some(param), Some(value)) = (&stream.cursor_param, &cursor) {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        request = request.query(param, &value);
    }
    let next_pointer = stream.next_pointer.as_ref().unwrap_or(&config.next_pointer);
    let mut seen = HashSet::new();
    let mut pages = 0u64;
    let mut total = 0u64;
    loop {
        seen.insert(request.url().to_string());
        let response = request.bearer_secret(TOKEN).send()?.error_for_status()?;
        let mut body: Value = response.json()?;
        let records = match body.pointer_mut(&stream.records_pointer).map(Value::take) {
            Some(Value::Array(records)) => records,
            Some(Value::Null) => Vec::new(),
            _ => {
                return Err(ConnectorError::invalid_config(format!(
                    "stream {name}: no array at records_pointer {:?}",
                    stream.records_pointer
                )));
            }
        };
        pages += 1;
        total += records.len() as u64;
        for record in &records {
            if let Some(field) = &stream.cursor_field
                && let Some(value) = record.get(field)
            {
                advance(&mut cursor, value);
            }
            out.push(name, record)?;
        }
        match (&cursor, records.is_empty()) {
            (Some(cursor), false) => out.checkpoint(name, &json!({"cursor": cursor}))?,
            _ => out.flush_stream(name)?,
        }
        let next = response.next_link().or_else(|| {
            body.pointer(next_pointer)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| resolve_url(&response.url, s))
        });
        match next {
            Some(next) if seen.contains(&next) => {
                log::warn(
                    "pagination loops back to a page already read; stopping",
                    &[("stream", name)],
                );
                break;
            }
            Some(next) => request = Request::get(next),
            None => break,
        }
    }
    log::info(
        "stream read",
        &[
            ("stream", name),
            ("pages", &pages.to_string()),
            ("records", &total.to_string()),
        ],
    );
    Ok(())
}

/// Moves `cursor` to `candidate` if it is later: numbers compare as numbers, strings
/// lexicographically (ISO 8601 timestamps in one format sort in time order); other pairs are
/// ignored.
fn advance(cursor: &mut Option<Value>, candidate: &Value) {
    let later = match (cursor.as_ref(), candidate) {
        (None, Value::String(_) | Value::Number(_)) => true,
        (Some(Value::String(a)), Value::String(b)) => b > a,
        (Some(Value::Number(a)), Value::Number(b)) => {
            let int = |n: &serde_json::Number| {
                n.as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
            };
            match (int(a), int(b)) {
                (Some(a), Some(b)) => b > a,
                _ => b.as_f64().partial_cmp(&a.as_f64()) == Some(Ordering::Greater),
            }
        }
        _ => false,
    };
    if later {
        *cursor = Some(candidate.clone());
    }
}

fn is_stream_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_pointer(pointer: &str) -> bool {
    pointer.is_empty() || pointer.starts_with('/')
}

fn config_schema() -> Value {
    let pointer = json!({"type": "string", "pattern": "^(/.*)?$"});
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "HTTP JSON",
        "type": "object",
        "required": ["base_url"],
        "additionalProperties": false,
        "properties": {
            "base_url": {
                "description": "Origin and optional base path of the service.",
                "type": "string",
                "pattern": "^https?://[^/?#]+",
                "examples": ["https://orders.corp.example/api"]
            },
            "validate_path": {
                "description": "Path GET to check the token; its JSON body becomes the account.",
                "type": "string",
                "default": "/me"
            },
            "next_pointer": {
                "description": "JSON pointer to the next page's URL in a page's body (when no Link rel=\"next\" header).",
                "allOf": [pointer],
                "default": "/next"
            },
            "streams": {
                "type": "array",
                "default": [],
                "items": {
                    "type": "object",
                    "required": ["name", "path"],
                    "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                        "description": {"type": "string"},
                        "path": {
                            "description": "Path under base_url, e.g. /purchase-orders.",
                            "type": "string"
                        },
                        "records_pointer": {
                            "description": "JSON pointer to the records array; \"\" when the body is the array.",
                            "allOf": [pointer],
                            "default": ""
                        },
                        "primary_key": {
                            "type": "array",
                            "items": {"type": "string"},
                            "minItems": 1,
                            "default": ["id"]
                        },
                        "cursor_field": {
                            "description": "Field an incremental sync advances on (number or ISO 8601 string).",
                            "type": "string"
                        },
                        "cursor_param": {
                            "description": "Query parameter the last synced cursor is sent as.",
                            "type": "string"
                        },
                        "next_pointer": {
                            "description": "Overrides next_pointer for this stream.",
                            "allOf": [pointer]
                        }
                    }
                }
            }
        }
    })
}

sluice_sdk::export_connector!(HttpJson);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_advances() {
        let mut c = None;
        advance(&mut c, &json!(5));
        advance(&mut c, &json!(3));
        assert_eq!(c, Some(json!(5)));
        let mut c = Some(json!("2024-01-02T00:00:00Z"));
        advance(&mut c, &json!("2024-01-03T00:00:00Z"));
        advance(&mut c, &json!(7));
        assert_eq!(c, Some(json!("2024-01-03T00:00:00Z")));
    }

    #[test]
    fn config_defaults_and_urls() {
        let c = Config::load(&json!({
            "base_url": "https://h.example/api/",
            "streams": [{"name": "orders", "path": "/orders"}]
        }))
        .expect("valid config");
        assert_eq!(c.url(&c.validate_path), "https://h.example/api/me");
        assert_eq!(c.url("orders"), "https://h.example/api/orders");
        assert_eq!(c.streams[0].primary_key, ["id"]);
        assert!(Config::load(&json!({"base_url": "ftp://x"})).is_err());
        assert!(
            Config::load(
                &json!({"base_url": "https://x", "streams": [{"name": "A", "path": "/"}]})
            )
            .is_err()
        );
    }
}
