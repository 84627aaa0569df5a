//! The registry file (`SERVICES_FILE`, YAML or JSON — JSON is YAML too) and its validation
//! into [`Service`]s.
//!
//! ```yaml
//! services:
//!   - id: purchase-orders            # [a-z][a-z0-9_-]*, at most 64 characters, unique
//!     name: Purchase orders
//!     description: Orders and their lines, from the PO system.
//!     base_url: https://po.corp.example   # the protocol lives under {base_url}/api/internal/
//!     connector:                        # what syncs the service's data
//!       kind: http-json                 # base_url is filled in from the service's
//!       validate_path: /api/me          # optional
//!       streams:                        # http-json's stream config, as is
//!         - {name: purchase_orders, path: /api/purchase-orders, records_pointer: /data}
//!       # or: {kind: wasm, id: po-connector, config: {...}, secret: api_token}
//!     env: [PO_API_KEY]                 # variables the analyst's key is exported under (≥ 1)
//!     url_env: PO_API_URL               # optional: a variable for base_url
//!     ttl_days: 90                      # default lifetime of an issued key, days (1–3650)
//!     docs: |                           # Markdown for analysts (optional)
//!       ...
//! ```
//!
//! The shared secret is never in the file: see [`crate::secret`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use crate::secret::{SharedSecret, secret_env_name};

/// Longest service id.
pub const MAX_ID_LEN: usize = 64;
/// The most services one file may list.
pub const MAX_SERVICES: usize = 256;
/// Largest registry file read, bytes (a ConfigMap holds at most 1 MiB).
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Lifetime of an issued key, in days, when neither the request nor the file says.
pub const DEFAULT_TTL_DAYS: u32 = 90;
/// The longest lifetime that may be asked for, in days (ten years).
pub const MAX_TTL_DAYS: u32 = 3650;

/// Why a registry file was refused. Messages name the entry and field, never a secret (the
/// file holds none).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("not a valid registry document: {0}")]
    Parse(String),
    #[error("services[{index}] ({id}): {reason}")]
    Entry {
        index: usize,
        id: String,
        reason: String,
    },
    #[error("{0}")]
    File(String),
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    /// Required: a file without it (empty, or caught half-written) is refused, not read as
    /// "no services"; `services: []` empties the registry on purpose.
    services: Option<Vec<EntryDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryDoc {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    base_url: String,
    connector: ConnectorDoc,
    env: Vec<String>,
    #[serde(default)]
    url_env: Option<String>,
    #[serde(default)]
    ttl_days: Option<u32>,
    #[serde(default)]
    docs: String,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum ConnectorDoc {
    HttpJson(HttpJsonDoc),
    Wasm(WasmDoc),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpJsonDoc {
    streams: Vec<Map<String, Value>>,
    #[serde(default)]
    validate_path: Option<String>,
    #[serde(default)]
    next_pointer: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WasmDoc {
    id: String,
    #[serde(default)]
    config: Map<String, Value>,
    #[serde(default = "default_secret_name")]
    secret: String,
}

fn default_secret_name() -> String {
    "api_token".into()
}

/// How a service's data is synced: a connector id, the config to run it with, and the name of
/// the credential the analyst's key goes into (`POST runs` takes the three as they are).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorRef {
    /// `http-json` or a dedicated connector's id.
    pub id: String,
    /// The connector's config (for `http-json`, `base_url` is the service's).
    pub config: Value,
    /// The secret name the issued key is passed as in `credentials`.
    pub secret: String,
}

/// One registry entry, checked.
#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Origin (and optional base path) of the service; the protocol is under `api/internal/`.
    pub base_url: Url,
    pub connector: ConnectorRef,
    /// Variables the key is exported under for the analyst, e.g. `PO_API_KEY`.
    pub env: Vec<String>,
    /// A variable the base URL is exported under, if any ([`Service::exported_url`]).
    pub url_env: Option<String>,
    /// Lifetime of an issued key when the connect request names none, in days.
    pub ttl_days: u32,
    /// Markdown for analysts.
    pub docs: String,
    /// The environment variable the shared secret is read from.
    pub secret_env: String,
    /// The shared secret, or why there is none usable (`Err`: the reason, never the value).
    pub secret: Result<SharedSecret, String>,
}

impl Service {
    /// The shared secret, if the environment provides a usable one.
    pub fn secret(&self) -> Option<&SharedSecret> {
        self.secret.as_ref().ok()
    }

    /// The base URL as the analyst's `url_env` variable holds it: without the trailing `/`
    /// that [`check_base_url`] adds for joining (`https://po.corp.example`, not
    /// `https://po.corp.example/`), so that `$PO_API_URL/api/me` is the path the service
    /// serves, not `//api/me`.
    pub fn exported_url(&self) -> String {
        self.base_url.as_str().trim_end_matches('/').to_string()
    }
}

/// Parses and checks a registry document; `secret_of` reads a variable (the environment, in
/// the service). All or nothing: one bad entry refuses the whole file.
pub fn parse(
    text: &str,
    secret_of: impl Fn(&str) -> Result<Option<SharedSecret>, String>,
) -> Result<BTreeMap<String, Arc<Service>>, RegistryError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(RegistryError::File(format!(
            "the file is larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    let doc: Option<FileDoc> =
        serde_norway::from_str(text).map_err(|e| RegistryError::Parse(e.to_string()))?;
    let Some(services) = doc.and_then(|d| d.services) else {
        return Err(RegistryError::File(
            "no `services` list (an empty file, or one caught half-written; `services: []` means none)"
                .into(),
        ));
    };
    if services.len() > MAX_SERVICES {
        return Err(RegistryError::File(format!(
            "{} services; at most {MAX_SERVICES}",
            services.len()
        )));
    }
    let mut out = BTreeMap::new();
    let mut secret_vars: BTreeMap<String, String> = BTreeMap::new();
    let mut env_vars: BTreeMap<String, String> = BTreeMap::new();
    for (index, entry) in services.into_iter().enumerate() {
        let id = entry.id.clone();
        let fail = |reason: String| RegistryError::Entry {
            index,
            id: id.clone(),
            reason,
        };
        let service = check_entry(entry, &secret_of).map_err(fail)?;
        if out.contains_key(&service.id) {
            return Err(fail("the id is listed twice".into()));
        }
        if let Some(other) = secret_vars.insert(service.secret_env.clone(), service.id.clone()) {
            return Err(fail(format!(
                "shares its secret variable {} with {other:?}",
                service.secret_env
            )));
        }
        for name in service.env.iter().chain(&service.url_env) {
            if let Some(other) = env_vars.insert(name.clone(), service.id.clone()) {
                return Err(fail(format!(
                    "exports {name}, as {other:?} does: one analyst's environment would get only one of them"
                )));
            }
        }
        out.insert(service.id.clone(), Arc::new(service));
    }
    Ok(out)
}

fn check_entry(
    e: EntryDoc,
    secret_of: &impl Fn(&str) -> Result<Option<SharedSecret>, String>,
) -> Result<Service, String> {
    if !is_id(&e.id) {
        return Err(format!(
            "id must match [a-z][a-z0-9_-]* and be at most {MAX_ID_LEN} characters"
        ));
    }
    if e.name.trim().is_empty() {
        return Err("name is empty".into());
    }
    let base_url = check_base_url(&e.base_url).map_err(|r| format!("base_url: {r}"))?;
    if e.env.is_empty() {
        return Err("env names no variable for the key".into());
    }
    for name in e.env.iter().chain(&e.url_env) {
        if !is_env_name(name) {
            return Err(format!(
                "{name:?} is not a variable name ([A-Z_][A-Z0-9_]*)"
            ));
        }
        if is_reserved_env(name) {
            return Err(format!(
                "{name} would replace a variable the analyst's tools or Sluice rely on; pick a service-specific name"
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = e.env.iter().chain(&e.url_env).find(|n| !seen.insert(*n)) {
        return Err(format!("variable {dup} is named twice"));
    }
    let ttl_days = e.ttl_days.unwrap_or(DEFAULT_TTL_DAYS);
    if !(1..=MAX_TTL_DAYS).contains(&ttl_days) {
        return Err(format!("ttl_days must be 1 to {MAX_TTL_DAYS}"));
    }
    let connector =
        check_connector(e.connector, &base_url).map_err(|r| format!("connector: {r}"))?;
    let secret_env = secret_env_name(&e.id);
    let secret = match secret_of(&secret_env) {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(format!("{secret_env} is not set")),
        Err(reason) => Err(reason),
    };
    Ok(Service {
        id: e.id,
        name: e.name,
        description: e.description,
        base_url,
        connector,
        env: e.env,
        url_env: e.url_env,
        ttl_days,
        docs: e.docs,
        secret_env,
        secret,
    })
}

fn check_connector(c: ConnectorDoc, base_url: &Url) -> Result<ConnectorRef, String> {
    match c {
        ConnectorDoc::HttpJson(h) => {
            if h.streams.is_empty() {
                return Err("http-json needs at least one stream".into());
            }
            let mut config = Map::new();
            config.insert("base_url".into(), Value::String(base_url.to_string()));
            if let Some(p) = h.validate_path {
                config.insert("validate_path".into(), Value::String(p));
            }
            if let Some(p) = h.next_pointer {
                config.insert("next_pointer".into(), Value::String(p));
            }
            config.insert(
                "streams".into(),
                Value::Array(h.streams.into_iter().map(Value::Object).collect()),
            );
            Ok(ConnectorRef {
                id: "http-json".into(),
                config: Value::Object(config),
                secret: "api_token".into(),
            })
        }
        ConnectorDoc::Wasm(w) => {
            if !is_id(&w.id) {
                return Err(format!("{:?} is not a connector id", w.id));
            }
            if w.secret.trim().is_empty() {
                return Err("secret is empty".into());
            }
            Ok(ConnectorRef {
                id: w.id,
                config: Value::Object(w.config),
                secret: w.secret,
            })
        }
    }
}

/// An http(s) URL without credentials, query or fragment; a trailing `/` is added to its path
/// so that joining `api/internal/…` keeps a base path.
pub fn check_base_url(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be http:// or https://".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or fragment".into());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn is_id(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= MAX_ID_LEN
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Variables a key must never be exported under: the process environment's own (`PATH`,
/// `HOME`, the loader's `LD_*`…), interpreters' start-up hooks, and Sluice's secrets.
fn is_reserved_env(s: &str) -> bool {
    const EXACT: [&str; 16] = [
        "PATH",
        "HOME",
        "USER",
        "SHELL",
        "PWD",
        "TMPDIR",
        "TMP",
        "TEMP",
        "LANG",
        "TZ",
        "NODE_OPTIONS",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "CONNECT_SERVICE_TOKEN",
        "DATABASE_URL",
    ];
    const PREFIXES: [&str; 5] = ["LD_", "DYLD_", "LC_", "SC_SECRET_", "AWS_"];
    EXACT.contains(&s) || PREFIXES.iter().any(|p| s.starts_with(p))
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_secrets(_: &str) -> Result<Option<SharedSecret>, String> {
        Ok(None)
    }

    const GOOD: &str = r#"
services:
  - id: purchase-orders
    name: Purchase orders
    base_url: http://po.corp.example/base
    connector:
      kind: http-json
      streams:
        - {name: purchase_orders, path: /api/purchase-orders, records_pointer: /data}
    env: [PO_API_KEY]
    url_env: PO_API_URL
  - id: crm
    name: CRM
    base_url: https://crm.corp.example
    connector: {kind: wasm, id: crm-connector, config: {region: eu}}
    env: [CRM_KEY]
    ttl_days: 7
"#;

    #[test]
    fn a_good_file() {
        let s = parse(GOOD, |v| {
            Ok((v == "SC_SECRET_CRM").then(|| SharedSecret::new("x".repeat(20))))
        })
        .unwrap();
        let po = &s["purchase-orders"];
        assert_eq!(po.base_url.as_str(), "http://po.corp.example/base/");
        assert_eq!(po.exported_url(), "http://po.corp.example/base");
        assert_eq!(po.ttl_days, DEFAULT_TTL_DAYS);
        assert_eq!(po.connector.id, "http-json");
        assert_eq!(
            po.connector.config["base_url"],
            "http://po.corp.example/base/"
        );
        assert_eq!(po.secret_env, "SC_SECRET_PURCHASE_ORDERS");
        assert!(po.secret().is_none());
        let crm = &s["crm"];
        assert_eq!(crm.connector.secret, "api_token");
        assert_eq!(crm.ttl_days, 7);
        assert!(crm.secret().is_some());
    }

    #[test]
    fn json_is_accepted() {
        let text = r#"{"services": [{"id": "po", "name": "PO", "base_url": "http://x", "connector": {"kind": "wasm", "id": "po"}, "env": ["PO_API_KEY"]}]}"#;
        assert_eq!(parse(text, no_secrets).unwrap().len(), 1);
    }

    #[test]
    fn an_explicitly_empty_list_is_no_services() {
        assert!(parse("services: []", no_secrets).unwrap().is_empty());
        let big = format!("services: []\n# {}", "x".repeat(MAX_FILE_BYTES));
        let e = parse(&big, no_secrets).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn bad_files_name_the_entry() {
        for (text, wanted) in [
            (
                "services: [{id: Bad, name: x, base_url: 'http://x', connector: {kind: wasm, id: a}, env: [A]}]",
                "services[0] (Bad): id",
            ),
            (
                "services: [{id: a, name: x, base_url: 'ftp://x', connector: {kind: wasm, id: a}, env: [A]}]",
                "base_url",
            ),
            (
                "services: [{id: a, name: x, base_url: 'http://x?q=1', connector: {kind: wasm, id: a}, env: [A]}]",
                "query",
            ),
            (
                "services: [{id: a, name: x, base_url: 'http://x', connector: {kind: wasm, id: a}, env: []}]",
                "env",
            ),
            (
                "services: [{id: a, name: x, base_url: 'http://x', connector: {kind: wasm, id: a}, env: [lower]}]",
                "variable name",
            ),
            (
                "services: [{id: a, name: x, base_url: 'http://x', connector: {kind: http-json, streams: []}, env: [A]}]",
                "stream",
            ),
            (
                "services: [{id: a, name: x, base_url: 'http://x', connector: {kind: wasm, id: a}, env: [A], ttl_days: 0}]",
                "ttl_days",
            ),
            (
                "services: [{id: a, name: x, base_url: 'http://x', connector: {kind: wasm, id: a}, env: [A], secret: s}]",
                "unknown field",
            ),
            (
                "services: [{id: a, name: x, base_url: 'http://x', connector: {kind: ftp}, env: [A]}]",
                "unknown variant",
            ),
            (
                "services: [{id: a-b, name: x, base_url: 'http://x', connector: {kind: wasm, id: a}, env: [A]}, {id: a_b, name: y, base_url: 'http://y', connector: {kind: wasm, id: a}, env: [A]}]",
                "SC_SECRET_A_B",
            ),
            (
                "services: [{id: a, name: x, base_url: 'http://x', connector: {kind: wasm, id: a}, env: [A]}, {id: a, name: y, base_url: 'http://y', connector: {kind: wasm, id: a}, env: [A]}]",
                "twice",
            ),
            ("services: [", "not a valid registry document"),
            // Empty, a comment, or a half-written file: refused, never "no services".
            ("", "no `services` list"),
            ("# services\n", "no `services` list"),
            ("services:\n", "no `services` list"),
            (
                "services: [{id: a, name: x, base_url: 'http://x', connector: {kind: wasm, id: a}, env: [PATH]}]",
                "PATH would replace",
            ),
            (
                "services: [{id: a, name: x, base_url: 'http://x', connector: {kind: wasm, id: a}, env: [A], url_env: LD_PRELOAD}]",
                "LD_PRELOAD would replace",
            ),
            (
                "services: [{id: a, name: x, base_url: 'http://x', connector: {kind: wasm, id: a}, env: [SC_SECRET_B]}]",
                "SC_SECRET_B would replace",
            ),
            (
                "services: [{id: a, name: x, base_url: 'http://x', connector: {kind: wasm, id: a}, env: [KEY]}, {id: b, name: y, base_url: 'http://y', connector: {kind: wasm, id: b}, env: [KEY]}]",
                "services[1] (b): exports KEY, as \"a\" does",
            ),
        ] {
            let e = parse(text, no_secrets).unwrap_err().to_string();
            assert!(e.contains(wanted), "{text}: {e}");
        }
    }

    #[test]
    fn an_unset_secret_is_reported_not_fatal() {
        let s = parse(GOOD, |_| Ok(None)).unwrap();
        assert!(s["crm"].secret.is_err());
    }
}
