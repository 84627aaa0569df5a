//! A connector's manifest, checked once at load time and typed so the rest of the host
//! never sees an invalid one.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::bindings::exports::sluice::connector::connector as wit;
use crate::bindings::sluice::connector::types as wit_types;
use crate::policy::HostRule;

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
    /// Checks and converts the manifest a plugin returned.
    pub fn from_wit(m: wit::ConnectorManifest) -> Result<Self, ManifestError> {
        let bad = |msg: String| Err(ManifestError(msg));
        if !is_connector_id(&m.id) {
            return bad(format!("id {:?} must match [a-z][a-z0-9-]{{0,62}}", m.id));
        }
        if m.name.trim().is_empty() {
            return bad("name is empty".into());
        }
        if !is_semver(&m.version) {
            return bad(format!("version {:?} is not MAJOR.MINOR.PATCH", m.version));
        }
        let config_schema = parse_schema("config-schema", &m.config_schema)?;
        let mut names = BTreeSet::new();
        for s in &m.secrets {
            if !is_identifier(&s.name) || !names.insert(s.name.clone()) {
                return bad(format!("secret name {:?} is invalid or repeated", s.name));
            }
        }
        let hosts = m
            .hosts
            .iter()
            .map(|h| HostRule::parse(h).map_err(|e| ManifestError(format!("host {h:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let streams = m
            .streams
            .into_iter()
            .map(StreamSpec::from_wit)
            .collect::<Result<Vec<_>, _>>()?;
        let mut stream_names = BTreeSet::new();
        for s in &streams {
            if !stream_names.insert(s.name.as_str()) {
                return bad(format!("stream {:?} is declared twice", s.name));
            }
        }
        if m.memory_mib == Some(0) {
            return bad("memory-mib must be positive".into());
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
}

impl StreamSpec {
    /// Checks and converts a stream a plugin declared (in its manifest or from `discover`).
    pub fn from_wit(s: wit_types::StreamSpec) -> Result<Self, ManifestError> {
        if !is_identifier(&s.name) {
            return Err(ManifestError(format!(
                "stream name {:?} must match [a-z][a-z0-9_]{{0,62}}",
                s.name
            )));
        }
        let json_schema = parse_schema(&format!("stream {} json-schema", s.name), &s.json_schema)?;
        for key in s.primary_key.iter().chain(s.cursor_field.iter()) {
            if key.is_empty() {
                return Err(ManifestError(format!(
                    "stream {}: empty key field name",
                    s.name
                )));
            }
        }
        Ok(Self {
            name: s.name,
            description: s.description,
            primary_key: s.primary_key,
            cursor_field: s.cursor_field,
            json_schema,
        })
    }
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
}
