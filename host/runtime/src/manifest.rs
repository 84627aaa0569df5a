//! A connector's manifest, checked once at load time and typed so the rest of the host
//! never sees an invalid one.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::bindings::exports::sluice::connector::connector as wit;
use crate::bindings::sluice::connector::types as wit_types;
use crate::policy::HostRule;

/// Most streams one connector may declare, in its manifest or in one `discover` answer. Each
/// stream is a directory, a view and a Parquet writer in every run: 5,000 made a run's commit
/// take 24 s and 20,000 took a 512 MiB pod (an outside attack, session 11).
pub const MAX_STREAMS: usize = 1_000;

/// Most text a manifest may hold in all (names, descriptions, schemas, hosts), in bytes. The
/// host keeps every loaded manifest and `GET /internal/connectors` answers them all: twelve
/// small files whose manifests held 40 MiB descriptions took a 512 MiB pod at rest, on every
/// restart (an outside attack, session 11). The bundled connectors' manifests are well under
/// 100 KiB.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// Most text the streams of one `discover` answer may hold in all, in bytes (a config's streams
/// reach run records, `_schema.json` and the listing of a connection).
pub const MAX_DISCOVER_BYTES: usize = 8 << 20;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid manifest: {0}")]
pub struct ManifestError(pub String);

/// A validated connector manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub config_schema: Value,
    pub secrets: Vec<SecretSpec>,
    pub hosts: Vec<HostRule>,
    pub streams: Vec<StreamSpec>,
    pub memory_mib: Option<u32>,
}

/// A secret the connector declares.
#[derive(Debug, Clone, Serialize)]
pub struct SecretSpec {
    pub name: String,
    pub description: String,
    pub required: bool,
}

/// One stream (table) of a connector.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct StreamSpec {
    pub name: String,
    pub description: String,
    pub primary_key: Vec<String>,
    pub cursor_field: Option<String>,
    pub json_schema: Value,
}

impl Manifest {
    /// Checks and converts the manifest a plugin returned. Every problem is reported (joined
    /// by `; `), not only the first.
    pub fn from_wit(m: wit::ConnectorManifest) -> Result<Self, ManifestError> {
        // Sized before anything is parsed: a huge schema is refused without building its tree.
        let size = m.id.len()
            + m.name.len()
            + m.version.len()
            + m.description.len()
            + m.config_schema.len()
            + m.secrets
                .iter()
                .map(|s| s.name.len() + s.description.len())
                .sum::<usize>()
            + m.hosts.iter().map(String::len).sum::<usize>()
            + streams_text(&m.streams);
        check_size("the manifest", m.streams.len(), size, MAX_MANIFEST_BYTES)?;
        let mut problems = Vec::new();
        if !is_connector_id(&m.id) {
            problems.push(format!("id {:?} must match [a-z][a-z0-9-]{{0,62}}", m.id));
        }
        if m.name.trim().is_empty() {
            problems.push("name is empty".into());
        }
        if !is_semver(&m.version) {
            problems.push(format!("version {:?} is not MAJOR.MINOR.PATCH", m.version));
        }
        let config_schema = parse_schema("config-schema", &m.config_schema)
            .map_err(|e| problems.push(e.0))
            .unwrap_or(Value::Null);
        let mut names = BTreeSet::new();
        for s in &m.secrets {
            if !is_identifier(&s.name) || !names.insert(s.name.clone()) {
                problems.push(format!("secret name {:?} is invalid or repeated", s.name));
            }
        }
        let mut hosts = Vec::new();
        for h in &m.hosts {
            match HostRule::parse(h) {
                Ok(rule) => hosts.push(rule),
                Err(e) => problems.push(format!("host {h:?}: {e}")),
            }
        }
        let mut streams = Vec::new();
        let mut stream_names = BTreeSet::new();
        for s in m.streams {
            if !stream_names.insert(s.name.clone()) {
                problems.push(format!("stream {:?} is declared twice", s.name));
            }
            match StreamSpec::from_wit(s) {
                Ok(s) => streams.push(s),
                Err(e) => problems.push(e.0),
            }
        }
        if m.memory_mib == Some(0) {
            problems.push("memory-mib must be positive".into());
        }
        if !problems.is_empty() {
            return Err(ManifestError(problems.join("; ")));
        }
        Ok(Self {
            id: m.id,
            name: m.name,
            version: m.version,
            description: m.description,
            config_schema,
            secrets: m
                .secrets
                .into_iter()
                .map(|s| SecretSpec {
                    name: s.name,
                    description: s.description,
                    required: s.required,
                })
                .collect(),
            hosts,
            streams,
            memory_mib: m.memory_mib,
        })
    }

    /// The declared stream of that name.
    pub fn stream(&self, name: &str) -> Option<&StreamSpec> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// The declared secret of that name.
    pub fn secret(&self, name: &str) -> Option<&SecretSpec> {
        self.secrets.iter().find(|s| s.name == name)
    }

    /// What `sluice plugin validate` reports of a manifest that loads: every finding, errors
    /// (the connector would misbehave) and warnings (the host copes, the author should know).
    /// `max_memory_mib` is the operator's per-call memory limit (`SLUICE_PLUGIN_MEMORY_MIB`).
    pub fn lint(&self, max_memory_mib: u32) -> Vec<Finding> {
        let mut out = Vec::new();
        if let Some(m) = self.memory_mib
            && m > max_memory_mib
        {
            out.push(Finding::error(format!(
                "memory-mib {m} is over the operator's limit of {max_memory_mib} MiB \
                 (SLUICE_PLUGIN_MEMORY_MIB): calls would get {max_memory_mib}"
            )));
        }
        lint_schema("config-schema", &self.config_schema, &mut out);
        if self.config_schema.get("type").and_then(Value::as_str) != Some("object") {
            out.push(Finding::warning(
                "config-schema: `type` is not \"object\" (a config is a JSON object)".into(),
            ));
        }
        if self.config_schema.get("properties").is_some()
            && self.config_schema.get("additionalProperties") != Some(&Value::Bool(false))
        {
            out.push(Finding::warning(
                "config-schema: no `\"additionalProperties\": false`: a misnamed config field \
                 is accepted and ignored instead of refused by name"
                    .into(),
            ));
        }
        for s in &self.streams {
            s.lint(&mut out);
        }
        out
    }
}

/// One thing `sluice plugin validate` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

/// How bad a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The connector would misbehave: `plugin validate` exits non-zero.
    Error,
    /// The host copes (e.g. keeps the values in `_sluice_extra`); worth fixing.
    Warning,
}

impl Finding {
    fn error(message: String) -> Self {
        Self {
            level: Level::Error,
            message,
        }
    }
    fn warning(message: String) -> Self {
        Self {
            level: Level::Warning,
            message,
        }
    }
}

/// JSON Schema dialect the host validates with (draft 2020-12, the `jsonschema` crate's
/// default); a schema naming another in `$schema` is still read as this one.
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

fn lint_schema(what: &str, schema: &Value, out: &mut Vec<Finding>) {
    if let Some(dialect) = schema.get("$schema").and_then(Value::as_str)
        && dialect.trim_end_matches('#') != DRAFT_2020_12
    {
        out.push(Finding::warning(format!(
            "{what}: $schema {dialect:?} is not draft 2020-12 ({DRAFT_2020_12}), which the host uses"
        )));
    }
}

impl StreamSpec {
    /// Checks and converts a stream a plugin declared (in its manifest or from `discover`).
    /// Every problem is reported (joined by `; `).
    pub fn from_wit(s: wit_types::StreamSpec) -> Result<Self, ManifestError> {
        let mut problems = Vec::new();
        if !is_identifier(&s.name) {
            problems.push(format!(
                "stream name {:?} must match [a-z][a-z0-9_]{{0,62}}",
                s.name
            ));
        }
        let json_schema = parse_schema(&format!("stream {} json-schema", s.name), &s.json_schema)
            .map_err(|e| problems.push(e.0))
            .unwrap_or(Value::Null);
        for key in s.primary_key.iter().chain(s.cursor_field.iter()) {
            if key.is_empty() {
                problems.push(format!("stream {}: empty key field name", s.name));
            }
        }
        if !problems.is_empty() {
            return Err(ManifestError(problems.join("; ")));
        }
        Ok(Self {
            name: s.name,
            description: s.description,
            primary_key: s.primary_key,
            cursor_field: s.cursor_field,
            json_schema,
        })
    }

    /// The stream's findings for `sluice plugin validate`: keys and cursor that are not
    /// declared properties (the dedup view and the cursor need them as columns), field names
    /// the host keeps out of the columns (reserved `_sluice_` prefix, or equal to an earlier
    /// one but for case: DuckDB column names are case-insensitive), the dialect.
    fn lint(&self, out: &mut Vec<Finding>) {
        let what = format!("stream {}", self.name);
        lint_schema(&format!("{what} json-schema"), &self.json_schema, out);
        let props = self
            .json_schema
            .get("properties")
            .and_then(Value::as_object);
        let declared = |f: &str| props.is_some_and(|p| p.contains_key(f));
        for key in &self.primary_key {
            if !declared(key) {
                out.push(Finding::error(format!(
                    "{what}: primary key field {key:?} is not a property of its json-schema"
                )));
            }
        }
        if let Some(c) = &self.cursor_field
            && !declared(c)
        {
            out.push(Finding::error(format!(
                "{what}: cursor field {c:?} is not a property of its json-schema"
            )));
        }
        let mut seen = BTreeSet::new();
        for name in props.into_iter().flat_map(|p| p.keys()) {
            let folded = name.to_lowercase();
            if name.starts_with("_sluice_") {
                out.push(Finding::error(format!(
                    "{what}: property {name:?} uses the host's reserved prefix _sluice_; records holding it are refused"
                )));
            } else if folded.starts_with("_sluice_") {
                out.push(Finding::warning(format!(
                    "{what}: property {name:?} is the host's reserved prefix _sluice_ but for case; it is kept in _sluice_extra, not as a column"
                )));
            } else if !seen.insert(folded) {
                out.push(Finding::warning(format!(
                    "{what}: property {name:?} differs from another only by case; it is kept in _sluice_extra, not as a column"
                )));
            } else if name.is_empty() || name.chars().any(char::is_control) {
                out.push(Finding::warning(format!(
                    "{what}: property {name:?} is empty or holds control characters"
                )));
            }
        }
    }
}

/// Bytes of text in `streams` (names, descriptions, keys, schemas).
fn streams_text(streams: &[wit_types::StreamSpec]) -> usize {
    streams
        .iter()
        .map(|s| {
            s.name.len()
                + s.description.len()
                + s.json_schema.len()
                + s.primary_key.iter().map(String::len).sum::<usize>()
                + s.cursor_field.as_ref().map_or(0, String::len)
        })
        .sum()
}

/// Refuses `what` when it declares more than [`MAX_STREAMS`] streams or holds more than
/// `max_bytes` of text.
fn check_size(
    what: &str,
    streams: usize,
    bytes: usize,
    max_bytes: usize,
) -> Result<(), ManifestError> {
    if streams > MAX_STREAMS {
        return Err(ManifestError(format!(
            "{what} declares {streams} streams; at most {MAX_STREAMS} are allowed"
        )));
    }
    if bytes > max_bytes {
        return Err(ManifestError(format!(
            "{what} holds {} KiB of names, descriptions and schemas; at most {} KiB are allowed",
            bytes.div_ceil(1024),
            max_bytes / 1024
        )));
    }
    Ok(())
}

/// Checks the size of a `discover` answer before its streams are read: at most
/// [`MAX_STREAMS`] streams and [`MAX_DISCOVER_BYTES`] of text.
pub fn check_discovered(streams: &[wit_types::StreamSpec]) -> Result<(), ManifestError> {
    check_size(
        "the discover answer",
        streams.len(),
        streams_text(streams),
        MAX_DISCOVER_BYTES,
    )
}

fn parse_schema(what: &str, text: &str) -> Result<Value, ManifestError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ManifestError(format!("{what} is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ManifestError(format!("{what} must be a JSON object")));
    }
    jsonschema::meta::validate(&value)
        .map_err(|e| ManifestError(format!("{what} is not a valid JSON Schema: {e}")))?;
    Ok(value)
}

/// `[a-z][a-z0-9-]{0,62}`: a connector id.
pub fn is_connector_id(s: &str) -> bool {
    is_name(s, b'-')
}

/// `[a-z][a-z0-9_]{0,62}`: a stream or secret name.
pub fn is_identifier(s: &str) -> bool {
    is_name(s, b'_')
}

fn is_name(s: &str, sep: u8) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == sep)
}

fn is_semver(s: &str) -> bool {
    let core = s.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_connector_id("github"));
        assert!(is_connector_id("http-json"));
        assert!(!is_connector_id("Not A Valid Id!"));
        assert!(!is_connector_id("1abc"));
        assert!(is_identifier("pull_requests"));
        assert!(!is_identifier("pull-requests"));
        assert!(is_semver("1.2.3"));
        assert!(is_semver("1.2.3-beta.1"));
        assert!(!is_semver("1.2"));
    }

    fn stream(schema: Value, pk: &[&str], cursor: Option<&str>) -> StreamSpec {
        StreamSpec {
            name: "orders".into(),
            description: String::new(),
            primary_key: pk.iter().map(|k| k.to_string()).collect(),
            cursor_field: cursor.map(str::to_string),
            json_schema: schema,
        }
    }

    fn manifest(streams: Vec<StreamSpec>, memory_mib: Option<u32>) -> Manifest {
        Manifest {
            id: "acme".into(),
            name: "Acme".into(),
            version: "1.0.0".into(),
            description: String::new(),
            config_schema: serde_json::json!({"type": "object"}),
            secrets: vec![],
            hosts: vec![],
            streams,
            memory_mib,
        }
    }

    fn wit_stream(name: String, description: String) -> wit_types::StreamSpec {
        wit_types::StreamSpec {
            name,
            description,
            primary_key: vec![],
            cursor_field: None,
            json_schema: r#"{"type":"object"}"#.into(),
        }
    }

    fn wit_manifest(
        description: String,
        streams: Vec<wit_types::StreamSpec>,
    ) -> wit::ConnectorManifest {
        wit::ConnectorManifest {
            id: "acme".into(),
            name: "Acme".into(),
            version: "1.0.0".into(),
            description,
            config_schema: r#"{"type":"object"}"#.into(),
            secrets: vec![],
            hosts: vec![],
            streams,
            memory_mib: None,
        }
    }

    #[test]
    fn manifests_and_discover_answers_are_bounded() {
        let streams = |n: usize| {
            (0..n)
                .map(|i| wit_stream(format!("s{i}"), String::new()))
                .collect::<Vec<_>>()
        };
        assert!(
            Manifest::from_wit(wit_manifest("x".repeat(64 << 10), streams(MAX_STREAMS))).is_ok()
        );
        let e = Manifest::from_wit(wit_manifest("x".repeat(40 << 20), streams(1)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 1024 KiB are allowed"), "{e}");
        assert!(e.contains("40961 KiB"), "{e}");
        let e = Manifest::from_wit(wit_manifest(String::new(), streams(MAX_STREAMS + 1)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("declares 1001 streams; at most 1000"), "{e}");
        // A big schema counts (not only descriptions).
        let mut wide = streams(1);
        wide[0].json_schema = format!(
            r#"{{"type":"object","description":"{}"}}"#,
            "y".repeat(2 << 20)
        );
        assert!(Manifest::from_wit(wit_manifest(String::new(), wide.clone())).is_err());
        assert!(check_discovered(&wide).is_ok(), "discover allows more text");
        assert!(check_discovered(&streams(MAX_STREAMS + 1)).is_err());
        wide[0].description = "z".repeat(MAX_DISCOVER_BYTES);
        assert!(check_discovered(&wide).is_err());
    }

    #[test]
    fn lint_lists_every_finding() {
        let good = stream(
            serde_json::json!({"type": "object", "properties": {"id": {}, "updated_at": {}}}),
            &["id"],
            Some("updated_at"),
        );
        assert_eq!(manifest(vec![good.clone()], Some(64)).lint(128), vec![]);
        // A config schema that declares fields but lets others through would ignore a
        // misnamed one: a warning; with `additionalProperties: false`, nothing.
        let mut open = manifest(vec![good], Some(64));
        open.config_schema = serde_json::json!({"type": "object", "properties": {"token": {}}});
        let findings = open.lint(128);
        assert!(
            findings.len() == 1
                && findings[0].level == Level::Warning
                && findings[0].message.contains("misnamed config field"),
            "{findings:?}"
        );
        open.config_schema["additionalProperties"] = false.into();
        assert_eq!(open.lint(128), vec![]);

        let bad = stream(
            serde_json::json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"ID": {}, "id": {}, "_sluice_seq": {}, "_SLUICE_x": {}}
            }),
            &["id", "tenant"],
            Some("updated_at"),
        );
        let findings = manifest(vec![bad], Some(512)).lint(128);
        let has = |level: Level, text: &str| {
            findings
                .iter()
                .any(|f| f.level == level && f.message.contains(text))
        };
        assert!(
            has(
                Level::Error,
                "memory-mib 512 is over the operator's limit of 128"
            ),
            "{findings:?}"
        );
        assert!(
            has(Level::Error, "primary key field \"tenant\""),
            "{findings:?}"
        );
        assert!(
            has(Level::Error, "cursor field \"updated_at\""),
            "{findings:?}"
        );
        assert!(
            has(
                Level::Error,
                "\"_sluice_seq\" uses the host's reserved prefix"
            ),
            "{findings:?}"
        );
        assert!(
            has(
                Level::Warning,
                "\"_SLUICE_x\" is the host's reserved prefix _sluice_ but for case"
            ),
            "{findings:?}"
        );
        assert!(
            has(Level::Warning, "differs from another only by case"),
            "{findings:?}"
        );
        assert!(has(Level::Warning, "is not draft 2020-12"), "{findings:?}");
        assert!(
            !has(Level::Error, "primary key field \"id\""),
            "{findings:?}"
        );
        assert_eq!(findings.len(), 7, "{findings:?}");
    }
}
