//! `http-json`: a generic connector for a company's internal HTTP JSON services (purchase
//! orders, invoicing, CRM...).
//!
//! Each configured stream is a `GET` endpoint returning a JSON array of records, or a JSON
//! document holding one at `records_pointer`. The host injects the `api_token` secret as
//! `Authorization: Bearer …`. Pages are followed through a `Link: <…>; rel="next"` header, else
//! a `next` URL at `next_pointer` in the body. A stream with a `cursor_field` syncs
//! incrementally: the committed cursor is sent as the `cursor_param` query parameter, and the
//! largest cursor seen is checkpointed after every page.
//!
//! Columns: a stream's `schema` (JSON Schema `properties`) declares them; without one,
//! `discover` infers them from the first page (`infer_schema`, on by default). Fields neither
//! declares go to the host's `_sluice_extra`; a top-level field the upstream names `_sluice_…`
//! (a prefix the host reserves) is renamed `upstream_sluice_…` (see [`rename_reserved`]).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use sluice_sdk::http::{Request, check_base_url, origin, redact, resolve_url};
use sluice_sdk::paging::LoopGuard;
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
    /// JSON Schema of one record (`{"properties": {...}}`): each property becomes a typed
    /// column; other fields go to `_sluice_extra`.
    #[serde(default)]
    schema: Option<Value>,
    /// Without `schema`: whether `discover` reads the first page to infer the columns
    /// (default true).
    #[serde(default)]
    infer_schema: Option<bool>,
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
        check_base_url("base_url", &config.base_url)?;
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
            if let Some(field) = stream
                .primary_key
                .iter()
                .chain(&stream.cursor_field)
                .find(|f| f.starts_with(RESERVED))
            {
                return invalid(format!(
                    "stream {}: {field:?} starts with {RESERVED}, which the host reserves; \
                     records have it as {:?}",
                    stream.name,
                    renamed(field)
                ));
            }
            if let Some(schema) = &stream.schema {
                stream.declared_properties(schema)?;
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
    /// The `properties` of the configured `schema`, checked: an object of objects, no name
    /// the host reserves.
    fn declared_properties(&self, schema: &Value) -> Result<serde_json::Map<String, Value>> {
        let invalid = |why: &str| {
            Err(ConnectorError::invalid_config(format!(
                "stream {}: schema {why}",
                self.name
            )))
        };
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
            return invalid("must be a JSON Schema object with a \"properties\" object");
        };
        if let Some((name, _)) = properties.iter().find(|(_, p)| !p.is_object()) {
            return invalid(&format!("property {name:?} must be a JSON Schema object"));
        }
        if let Some(name) = properties.keys().find(|n| n.starts_with(RESERVED)) {
            return invalid(&format!(
                "property {name:?} starts with {RESERVED}, which the host reserves; \
                 records have it as {:?}",
                renamed(name)
            ));
        }
        Ok(properties.clone())
    }

    /// Whether `discover` reads the first page for the columns.
    fn infers(&self) -> bool {
        self.schema.is_none() && self.infer_schema != Some(false)
    }

    /// The stream's spec: its columns from `properties` (the configured or inferred ones); a
    /// key or cursor field they do not type is declared string-or-integer (a JSON column).
    fn spec(&self, declared: Option<serde_json::Map<String, Value>>) -> StreamSpec {
        let mut properties = declared.unwrap_or_default();
        for field in self.primary_key.iter().chain(&self.cursor_field) {
            properties
                .entry(field.clone())
                .or_insert_with(|| json!({"type": ["string", "integer"]}));
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
        config
            .streams
            .iter()
            .map(|stream| {
                let declared = match &stream.schema {
                    Some(schema) => Some(stream.declared_properties(schema)?),
                    None if stream.infers() => infer_from_first_page(&config, stream),
                    None => None,
                };
                Ok(stream.spec(declared))
            })
            .collect()
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
    let base_origin = origin(&config.base_url);
    let mut seen = HashSet::new();
    let mut guard = LoopGuard::new(format!("stream {name}"));
    let mut pages = 0u64;
    let mut total = 0u64;
    loop {
        seen.insert(request.url().to_string());
        let (response, mut body) = fetch_page(request)?;
        pages += 1;
        let records = take_records(stream, &mut body, &response.url, pages)?;
        let count = records.len();
        total += count as u64;
        let identity: Vec<String> = [records.first(), records.last()]
            .into_iter()
            .flatten()
            .map(Value::to_string)
            .collect();
        let identity: Vec<&[u8]> = identity.iter().map(|s| s.as_bytes()).collect();
        for record in records {
            if let Some(field) = &stream.cursor_field
                && let Some(value) = record.get(field)
            {
                advance(&mut cursor, value);
            }
            out.push(name, &record)?;
        }
        match (&cursor, identity.is_empty()) {
            (Some(cursor), false) => out.checkpoint(name, &json!({"cursor": cursor}))?,
            _ => out.flush_stream(name)?,
        }
        let Some(next) = next_page(config, stream, &response, &body) else {
            break;
        };
        let from = redact(&response.url);
        if seen.contains(&next) {
            return Err(ConnectorError::internal(format!(
                "stream {name}: the upstream's paging goes round in circles: the next link of \
                 page {pages} (GET {from}) points back to {}, a page already read (query not \
                 shown); stopped",
                redact(&next)
            )));
        }
        if base_origin.is_some() && origin(&next) != base_origin {
            return Err(ConnectorError::internal(format!(
                "stream {name}: the upstream's next link of page {pages} (GET {from}) points to \
                 {}, outside base_url's origin {}; not followed",
                redact(&next),
                base_origin.as_deref().unwrap_or_default()
            )));
        }
        // The same records under new links, or endless empty pages: a loop too.
        guard.page(count, &identity)?;
        request = Request::get(next);
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

/// GETs one page: the response and its JSON body.
fn fetch_page(request: Request) -> Result<(sluice_sdk::http::Response, Value)> {
    let response = request.bearer_secret(TOKEN).send()?.error_for_status()?;
    let body: Value = response.json()?;
    Ok((response, body))
}

/// The next page's URL: the `Link: rel="next"` header, else the string at the stream's
/// `next_pointer` in `body`, resolved against the page's URL.
fn next_page(
    config: &Config,
    stream: &StreamConfig,
    response: &sluice_sdk::http::Response,
    body: &Value,
) -> Option<String> {
    let next_pointer = stream.next_pointer.as_ref().unwrap_or(&config.next_pointer);
    response.next_link().or_else(|| {
        body.pointer(next_pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| resolve_url(&response.url, s))
    })
}

/// Takes page `page`'s records out of `body`: each a JSON object, its reserved field names
/// renamed. No array at `records_pointer` on the first page is the config's fault (the
/// pointer); on a later page, the upstream's. A record that is no object is the upstream's.
fn take_records(
    stream: &StreamConfig,
    body: &mut Value,
    url: &str,
    page: u64,
) -> Result<Vec<Value>> {
    let name = &stream.name;
    let pointer = &stream.records_pointer;
    let records = match body.pointer_mut(pointer).map(Value::take) {
        Some(Value::Array(records)) => records,
        Some(Value::Null) => Vec::new(),
        found => {
            let found = match found {
                None => format!("nothing there; the body is {}", shape(body)),
                Some(v) => shape(&v),
            };
            let message = format!(
                "stream {name}: page {page} (GET {}) has no array at records_pointer \
                 {pointer:?} ({found})",
                redact(url)
            );
            return Err(if page == 1 {
                ConnectorError::invalid_config(message)
            } else {
                ConnectorError::internal(format!("the upstream's {message}"))
            });
        }
    };
    records
        .into_iter()
        .enumerate()
        .map(|(i, record)| match record {
            Value::Object(fields) => Ok(Value::Object(rename_reserved(fields))),
            other => Err(ConnectorError::internal(format!(
                "stream {name}: the upstream's page {page} (GET {}) holds a record that is not \
                 a JSON object (record {i}: {})",
                redact(url),
                shape(&other)
            ))),
        })
        .collect()
}

/// What a JSON value is, for messages (never its content: it may be anyone's data).
fn shape(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::Object(o) => {
            let keys: Vec<&str> = o.keys().take(8).map(String::as_str).collect();
            let more = if o.len() > 8 { ", …" } else { "" };
            format!("an object with keys {}{more}", keys.join(", "))
        }
    }
}

/// The prefix of the host's own columns; `emit` refuses a record with such a field.
const RESERVED: &str = "_sluice_";

/// `_sluice_x` → `upstream_sluice_x`.
fn renamed(name: &str) -> String {
    format!("upstream{name}")
}

/// Renames every top-level field whose name starts with `_sluice_` (reserved for the host's
/// columns: the host refuses such a record, which would fail the run) to
/// `upstream` + the name (`_sluice_seq` → `upstream_sluice_seq`), adding `upstream` again while
/// the record already has that name. Nested fields are left as they are (the host reserves
/// only top-level names).
fn rename_reserved(mut fields: serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    let reserved: Vec<String> = fields
        .keys()
        .filter(|k| k.starts_with(RESERVED))
        .cloned()
        .collect();
    for old in reserved {
        if let Some(value) = fields.remove(&old) {
            let mut new = renamed(&old);
            while fields.contains_key(&new) {
                new = renamed(&new);
            }
            fields.insert(new, value);
        }
    }
    fields
}

/// The columns of a stream inferred from its first page, or `None` (with a warning) when the
/// page cannot be read: `discover` must not fail a run over a stream it may not sync.
fn infer_from_first_page(
    config: &Config,
    stream: &StreamConfig,
) -> Option<serde_json::Map<String, Value>> {
    let url = config.url(&stream.path);
    let read = fetch_page(Request::get(url.as_str()))
        .and_then(|(response, mut body)| take_records(stream, &mut body, &response.url, 1));
    match read {
        Ok(records) => Some(infer_properties(&records)),
        Err(e) => {
            log::warn(
                "cannot read the first page to infer the columns; the stream's fields go to \
                 _sluice_extra this run",
                &[
                    ("stream", stream.name.as_str()),
                    ("error", e.message.as_str()),
                ],
            );
            None
        }
    }
}

/// JSON Schema `properties` for the top-level fields of `records`: a field whose non-null
/// values are all integers that fit 64 bits is an integer, all numbers a number, all booleans a
/// boolean, all RFC 3339 date-times (dates) a `date-time` (`date`) string, all strings a
/// string; mixed, nested or out-of-range values are declared untyped (a JSON column); a field
/// that is always null is left out (it goes to `_sluice_extra`). Every column is nullable.
fn infer_properties(records: &[Value]) -> serde_json::Map<String, Value> {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Integer,
        Number,
        Boolean,
        DateTime,
        Date,
        String,
        Json,
    }
    fn kind_of(value: &Value) -> Option<Kind> {
        Some(match value {
            Value::Null => return None,
            Value::Bool(_) => Kind::Boolean,
            Value::Number(n) if n.as_i64().is_some() => Kind::Integer,
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) && !is_integer_text(n) => {
                Kind::Number
            }
            Value::Number(_) => Kind::Json,
            Value::String(s) if is_date_time(s) => Kind::DateTime,
            Value::String(s) if is_date(s) => Kind::Date,
            Value::String(_) => Kind::String,
            Value::Array(_) | Value::Object(_) => Kind::Json,
        })
    }
    fn join(a: Kind, b: Kind) -> Kind {
        use Kind::*;
        match (a, b) {
            (a, b) if a == b => a,
            (Integer | Number, Integer | Number) => Number,
            (DateTime | Date | String, DateTime | Date | String) => String,
            _ => Json,
        }
    }
    let mut kinds: BTreeMap<&str, Kind> = BTreeMap::new();
    for record in records {
        let Some(fields) = record.as_object() else {
            continue;
        };
        for (name, value) in fields {
            if let Some(kind) = kind_of(value) {
                kinds
                    .entry(name)
                    .and_modify(|k| *k = join(*k, kind))
                    .or_insert(kind);
            }
        }
    }
    kinds
        .into_iter()
        .map(|(name, kind)| {
            let schema = match kind {
                Kind::Integer => json!({"type": ["integer", "null"]}),
                Kind::Number => json!({"type": ["number", "null"]}),
                Kind::Boolean => json!({"type": ["boolean", "null"]}),
                Kind::DateTime => json!({"type": ["string", "null"], "format": "date-time"}),
                Kind::Date => json!({"type": ["string", "null"], "format": "date"}),
                Kind::String => json!({"type": ["string", "null"]}),
                Kind::Json => json!({}),
            };
            (name.to_string(), schema)
        })
        .collect()
}

/// A number written without a fraction or exponent that does not fit 64 bits
/// (`18446744073709551616`): as a DOUBLE it would be rounded.
fn is_integer_text(n: &serde_json::Number) -> bool {
    let text = n.to_string();
    !text.contains(['.', 'e', 'E'])
}

/// `YYYY-MM-DD` with a plausible month and day.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
        && (1..=12).contains(&((b[5] - b'0') * 10 + (b[6] - b'0')))
        && (1..=31).contains(&((b[8] - b'0') * 10 + (b[9] - b'0')))
}

/// An RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (no leap second, which no
/// Parquet timestamp holds).
fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || !is_date(&s[..10]) || !matches!(b[10], b'T' | b't') {
        return false;
    }
    let two = |i: usize| {
        b[i].is_ascii_digit()
            && b[i + 1].is_ascii_digit()
            && (b[i] - b'0') * 10 + (b[i + 1] - b'0') < 60
    };
    if !(two(11) && b[13] == b':' && two(14) && b[16] == b':' && two(17)) {
        return false;
    }
    if (b[11] - b'0') * 10 + (b[12] - b'0') > 23 {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &frac[digits..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                && (h1 - b'0') * 10 + (h2 - b'0') < 24
                && (m1 - b'0') * 10 + (m2 - b'0') < 60
        }
        _ => false,
    }
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
                "description": "Origin and optional base path of the service; no query, fragment or credentials (the token is the api_token secret).",
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
                        },
                        "schema": {
                            "description": "JSON Schema of one record: each of its properties becomes a typed column (integer, number, boolean, string, string with format date-time or date; anything else JSON). Other fields go to _sluice_extra.",
                            "type": "object",
                            "required": ["properties"],
                            "properties": {
                                "properties": {
                                    "type": "object",
                                    "additionalProperties": {"type": "object"}
                                }
                            },
                            "examples": [{"properties": {"id": {"type": "integer"}, "amount": {"type": "number"}, "updated_at": {"type": "string", "format": "date-time"}}}]
                        },
                        "infer_schema": {
                            "description": "Without schema: whether discover reads the stream's first page to infer its columns and their types.",
                            "type": "boolean",
                            "default": true
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
        // A query or fragment would be glued to every path (newcomer finding 5).
        for base in ["http://h:9711/?apikey=k", "http://h:9711/x#frag"] {
            let e = Config::load(&json!({"base_url": base})).unwrap_err();
            assert_eq!(e.code, sluice_sdk::ErrorCode::InvalidConfig);
            assert!(
                e.message.starts_with("base_url: must not have a"),
                "{}",
                e.message
            );
        }
        assert!(
            Config::load(
                &json!({"base_url": "https://x", "streams": [{"name": "A", "path": "/"}]})
            )
            .is_err()
        );
    }

    /// Newcomer finding 6: one upstream field named like a host column must not fail the run.
    #[test]
    fn reserved_field_names_are_renamed() {
        let Value::Object(fields) = json!({"id": 1, "_sluice_seq": 2, "upstream_sluice_x": 3, "_sluice_x": 4, "n": {"_sluice_y": 5}})
        else {
            unreachable!()
        };
        assert_eq!(
            Value::Object(rename_reserved(fields)),
            json!({"id": 1, "upstream_sluice_seq": 2, "upstream_sluice_x": 3, "upstreamupstream_sluice_x": 4, "n": {"_sluice_y": 5}})
        );
    }

    /// Newcomer finding 1: columns are inferred from the first page.
    #[test]
    fn properties_are_inferred_from_records() {
        let records = [
            serde_json::from_str::<Value>(
                r#"{"id": 1, "amount": 2, "paid": true, "at": "2024-01-02T03:04:05Z", "day": "2024-01-02", "who": "a", "tags": ["x"], "none": null, "big": 18446744073709551616}"#,
            )
            .unwrap(),
            json!({"id": 2, "amount": 2.5, "paid": false, "at": "2024-01-02T03:04:05.123+01:00", "day": "2024-01-03", "who": "2024-01-02", "tags": null}),
        ];
        let p = infer_properties(&records);
        assert_eq!(p["id"], json!({"type": ["integer", "null"]}));
        assert_eq!(p["amount"], json!({"type": ["number", "null"]}));
        assert_eq!(p["paid"], json!({"type": ["boolean", "null"]}));
        assert_eq!(
            p["at"],
            json!({"type": ["string", "null"], "format": "date-time"})
        );
        assert_eq!(
            p["day"],
            json!({"type": ["string", "null"], "format": "date"})
        );
        assert_eq!(p["who"], json!({"type": ["string", "null"]}));
        assert_eq!(p["tags"], json!({}));
        assert_eq!(
            p["big"],
            json!({}),
            "past BIGINT: a JSON column, never rounded"
        );
        assert!(!p.contains_key("none"));
        assert!(!is_date_time("2016-12-31T23:59:60Z"));
        assert!(!is_date_time("2016-12-31 23:59:59Z"));
        assert!(!is_date("2016-13-01"));
    }

    #[test]
    fn a_configured_schema_is_checked() {
        let with = |schema: Value| {
            Config::load(
                &json!({"base_url": "https://x", "streams": [{"name": "a", "path": "/", "schema": schema}]}),
            )
        };
        assert!(with(json!({"properties": {"id": {"type": "integer"}}})).is_ok());
        assert!(with(json!({"type": "object"})).is_err());
        assert!(with(json!({"properties": {"id": 5}})).is_err());
        let e = with(json!({"properties": {"_sluice_x": {}}})).unwrap_err();
        assert!(e.message.contains("upstream_sluice_x"), "{}", e.message);
        let c =
            with(json!({"properties": {"id": {"type": "integer"}, "amount": {"type": "number"}}}))
                .unwrap();
        let spec = c.streams[0].spec(Some(
            c.streams[0]
                .declared_properties(c.streams[0].schema.as_ref().unwrap())
                .unwrap(),
        ));
        let schema: Value = serde_json::from_str(&spec.json_schema).unwrap();
        assert_eq!(schema["properties"]["id"], json!({"type": "integer"}));
        assert_eq!(schema["properties"]["amount"], json!({"type": "number"}));
        assert_eq!(schema["additionalProperties"], json!(true));
    }

    #[test]
    fn records_pointer_misses_blame_the_config_then_the_upstream() {
        let c = Config::load(&json!({"base_url": "https://x", "streams": [{"name": "a", "path": "/", "records_pointer": "/data"}]}))
            .unwrap();
        let first = take_records(
            &c.streams[0],
            &mut json!({"items": []}),
            "https://x/a?k=s",
            1,
        )
        .unwrap_err();
        assert_eq!(first.code, sluice_sdk::ErrorCode::InvalidConfig);
        assert!(first.message.contains("keys items"), "{}", first.message);
        assert!(!first.message.contains("k=s"), "{}", first.message);
        let later =
            take_records(&c.streams[0], &mut json!({"items": []}), "https://x/a", 2).unwrap_err();
        assert_eq!(later.code, sluice_sdk::ErrorCode::Internal);
        assert!(
            later.message.starts_with("the upstream's"),
            "{}",
            later.message
        );
        let odd = take_records(
            &c.streams[0],
            &mut json!({"data": [{"id": 1}, "x"]}),
            "https://x/a",
            1,
        )
        .unwrap_err();
        assert_eq!(odd.code, sluice_sdk::ErrorCode::Internal);
        assert!(
            odd.message.contains("record 1: a string"),
            "{}",
            odd.message
        );
    }
}
