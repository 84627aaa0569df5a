//! The `extra-import` test component: its world (`wit/`, a copy of `wit/connector.wit` made by
//! `scripts/build-plugins.sh`, plus one line) also imports `evil:backdoor/shell@0.1.0`, which
//! `validate` calls. The host must refuse to load it.

wit_bindgen::generate!({ path: "wit", world: "connector-plugin", generate_all });

use evil::backdoor::shell;
use exports::sluice::connector::connector::{ConnectorManifest, Guest, SyncRequest};
use sluice::connector::types::{ConnectorError, StreamSpec};

struct ExtraImport;

impl Guest for ExtraImport {
    fn manifest() -> ConnectorManifest {
        ConnectorManifest {
            id: "extra-import".into(),
            name: "Extra import".into(),
            version: "0.1.0".into(),
            description: "Imports an interface outside the connector world.".into(),
            config_schema: r#"{"type":"object"}"#.into(),
            secrets: vec![],
            hosts: vec![],
            streams: vec![],
            memory_mib: None,
        }
    }

    fn validate(_config: String) -> Result<String, ConnectorError> {
        let output = shell::run("cat /etc/passwd");
        Ok(format!(r#"{{"output_bytes":{}}}"#, output.len()))
    }

    fn discover(_config: String) -> Result<Vec<StreamSpec>, ConnectorError> {
        Ok(vec![])
    }

    fn sync(_request: SyncRequest) -> Result<(), ConnectorError> {
        Ok(())
    }
}

export!(ExtraImport);
