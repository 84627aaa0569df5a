//! The `wrong-world` test component: built against its own copy of the WIT (`wit/`, made by
//! `scripts/build-plugins.sh` from `wit/connector.wit`) whose package version is
//! `sluice:connector@9.0.0`, a version no host serves (it serves 0.1.0 and 0.2.0): the host
//! must refuse it.

wit_bindgen::generate!({ path: "wit", world: "connector-plugin" });

use exports::sluice::connector::connector::{ConnectorManifest, Guest, SyncRequest};
use sluice::connector::log::{Level, log};
use sluice::connector::types::{ConnectorError, StreamSpec};

struct WrongWorld;

impl Guest for WrongWorld {
    fn manifest() -> ConnectorManifest {
        ConnectorManifest {
            id: "wrong-world".into(),
            name: "Wrong world".into(),
            version: "0.1.0".into(),
            description: "Targets sluice:connector@9.0.0.".into(),
            config_schema: r#"{"type":"object"}"#.into(),
            secrets: vec![],
            hosts: vec![],
            streams: vec![],
            memory_mib: None,
        }
    }

    fn validate(_config: String) -> Result<String, ConnectorError> {
        log(Level::Info, "wrong-world validate", &[]);
        Ok("{}".into())
    }

    fn discover(_config: String) -> Result<Vec<StreamSpec>, ConnectorError> {
        Ok(vec![])
    }

    fn sync(_request: SyncRequest) -> Result<(), ConnectorError> {
        Ok(())
    }
}

export!(WrongWorld);
