//! Builders for the [`Manifest`] and [`StreamSpec`] records. All fields stay public.

use serde_json::Value;

pub use crate::bindings::exports::sluice::connector::connector::{
    ConnectorManifest as Manifest, SecretSpec,
};
pub use crate::bindings::sluice::connector::types::StreamSpec;

impl Manifest {
    /// A manifest with an id (`[a-z][a-z0-9-]*`), a display name and a semantic version; the
    /// config schema defaults to `{"type":"object"}`, everything else to empty.
    pub fn new(id: impl Into<String>, name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            version: version.into(),
            description: String::new(),
            config_schema: r#"{"type":"object"}"#.to_string(),
            secrets: Vec::new(),
            hosts: Vec::new(),
            streams: Vec::new(),
            memory_mib: None,
        }
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the JSON Schema (draft 2020-12) of the config object.
    pub fn config_schema(mut self, schema: &Value) -> Self {
        self.config_schema = schema.to_string();
        self
    }

    /// Declares a secret.
    pub fn secret(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        required: bool,
    ) -> Self {
        self.secrets.push(SecretSpec {
            name: name.into(),
            description: description.into(),
            required,
        });
        self
    }

    /// Declares an outbound destination: `https://api.example.com`, `https://*.example.com`,
    /// `http://host:port`, or `{config.FIELD}` for the origin of a URL in the config.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into());
        self
    }

    /// Adds a stream every config produces.
    pub fn stream(mut self, stream: StreamSpec) -> Self {
        self.streams.push(stream);
        self
    }

    /// Sets the linear memory the connector needs, in MiB.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = Some(mib);
        self
    }
}

impl StreamSpec {
    /// A stream named `name` (`[a-z][a-z0-9_]*`) with the schema `{"type":"object"}`, no
    /// primary key and no cursor.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            primary_key: Vec::new(),
            cursor_field: None,
            json_schema: r#"{"type":"object"}"#.to_string(),
        }
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the fields that identify a record.
    pub fn primary_key<S: AsRef<str>>(mut self, fields: &[S]) -> Self {
        self.primary_key = fields.iter().map(|f| f.as_ref().to_string()).collect();
        self
    }

    /// Sets the field an incremental sync advances on.
    pub fn cursor_field(mut self, field: impl Into<String>) -> Self {
        self.cursor_field = Some(field.into());
        self
    }

    /// Sets the JSON Schema (draft 2020-12) of one record.
    pub fn json_schema(mut self, schema: &Value) -> Self {
        self.json_schema = schema.to_string();
        self
    }
}
