//! The `bad-manifest` test connector: builds and loads, but its manifest is invalid (an id that
//! is not `[a-z][a-z0-9-]*` and a config schema that is not JSON). The host must refuse it.

use sluice_sdk::{Connector, Manifest, Result, SyncRequest, Value, json};

struct BadManifest;

impl Connector for BadManifest {
    fn manifest() -> Manifest {
        let mut manifest = Manifest::new("Not A Valid Id!", "Bad manifest", "0.1.0")
            .description("A manifest the host must refuse.");
        manifest.config_schema = "not json".to_string();
        manifest
    }

    fn validate(_config: Value) -> Result<Value> {
        Ok(json!({}))
    }

    fn sync(_request: SyncRequest) -> Result<()> {
        Ok(())
    }
}

sluice_sdk::export_connector!(BadManifest);
