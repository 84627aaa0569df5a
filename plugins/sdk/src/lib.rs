//! Write a Sluice connector as plain Rust.
//!
//! A connector is a WebAssembly component targeting the `sluice:connector/connector-plugin`
//! world (see `wit/connector.wit` and `wit/README.md`). This crate wraps the generated bindings:
//! implement [`Connector`] on `serde_json` values, then call [`export_connector!`].
//!
//! ```ignore
//! use sluice_sdk::{Connector, Manifest, Result, SyncRequest, Value, json};
//!
//! struct Hello;
//!
//! impl Connector for Hello {
//!     fn manifest() -> Manifest {
//!         Manifest::new("hello", "Hello", "0.1.0")
//!     }
//!     fn validate(_config: Value) -> Result<Value> {
//!         Ok(json!({"ok": true}))
//!     }
//!     fn sync(_request: SyncRequest) -> Result<()> {
//!         Ok(())
//!     }
//! }
//!
//! sluice_sdk::export_connector!(Hello);
//! ```
//!
//! Helpers: [`http::Request`] (outbound HTTP, secrets injected by the host),
//! [`records::Batcher`] (batched emits and checkpoints), [`fields::Fields`] (reshape items
//! without a tree of each), [`paging::LoopGuard`] (listings that
//! go round in circles), [`log`], [`secret`], [`now`] (the
//! host's clock) and [`time`] (ISO 8601 dates).
//!
//! The crate targets `sluice:connector@0.2.0` (the current world); the host still serves
//! components built against 0.1.0 by earlier versions of this crate.

pub mod error;
pub mod fields;
pub mod http;
pub mod log;
pub mod manifest;
pub mod paging;
pub mod records;
pub mod schema;
pub mod time;

/// The raw bindings generated from `wit/connector.wit` (`sluice:connector@0.2.0`). Prefer the
/// typed helpers of this crate.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "connector-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_connector_plugin",
        default_bindings_module: "sluice_sdk::bindings",
    });
}

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

pub use error::{ConnectorError, ErrorCode, Result};
pub use manifest::{Manifest, SecretSpec, StreamSpec};
pub use serde_json::{self, Value, json};
pub use time::now;

/// A connector: the four exports of the world, on JSON values.
///
/// Every function is called on a fresh or reused instance; keep no state between calls.
pub trait Connector {
    /// Static description. Must not call any import (no HTTP, no logs, no secrets).
    fn manifest() -> Manifest;

    /// Checks the config and credentials against the upstream; returns the account summary.
    fn validate(config: Value) -> Result<Value>;

    /// The streams this config produces. Defaults to the manifest's streams.
    fn discover(config: Value) -> Result<Vec<StreamSpec>> {
        let _ = config;
        Ok(Self::manifest().streams)
    }

    /// Reads the selected streams, emitting records and checkpoints as it goes.
    fn sync(request: SyncRequest) -> Result<()>;
}

/// What [`Connector::sync`] receives: the config, the selected streams and their states, and
/// when and as which run the host started it.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// The connector's config object.
    pub config: Value,
    /// Streams to sync; never empty.
    pub streams: Vec<String>,
    /// Committed state per stream, as last checkpointed (empty on a full refresh).
    pub state: BTreeMap<String, Value>,
    /// The host's clock when this run started, RFC 3339 UTC (e.g.
    /// `2026-12-01T13:05:09.123456789Z`): the upper bound of an incremental window
    /// (see [`SyncRequest::started_at_secs`]).
    pub started_at: String,
    /// The run's id, as in the host's run records and logs; opaque.
    pub run_id: String,
}

impl SyncRequest {
    /// Whether `stream` was selected for this run.
    pub fn selected(&self, stream: &str) -> bool {
        self.streams.iter().any(|s| s == stream)
    }

    /// The committed state of `stream`, if any.
    pub fn state(&self, stream: &str) -> Option<&Value> {
        self.state.get(stream)
    }

    /// [`SyncRequest::started_at`] in seconds since the Unix epoch (`None` if the host sent
    /// something unparsable).
    pub fn started_at_secs(&self) -> Option<i64> {
        time::parse_iso(&self.started_at)
    }

    /// The config deserialized into `T` (an `invalid-config` error if it does not fit).
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        parse_config(&self.config)
    }
}

/// Deserializes a config value into `T`; a mismatch is an `invalid-config` error.
pub fn parse_config<T: DeserializeOwned>(config: &Value) -> Result<T> {
    T::deserialize(config)
        .map_err(|e| ConnectorError::invalid_config(format!("invalid config: {e}")))
}

/// The value of a declared secret. Prefer [`http::Request::bearer_secret`] and
/// [`http::Request::secret_header`]: they keep the value out of plugin memory.
///
/// Errors are `invalid-config` with the message `undeclared: NAME` or `missing: NAME`.
pub fn secret(name: &str) -> Result<String> {
    bindings::sluice::connector::secrets::get(name).map_err(ConnectorError::from)
}

/// Exports a [`Connector`] implementation as the component's `connector` interface.
///
/// Call it once, at the top level of the connector crate (a `cdylib`).
#[macro_export]
macro_rules! export_connector {
    ($connector:ty) => {
        const _: () = {
            struct __SluiceExport;

            impl $crate::bindings::exports::sluice::connector::connector::Guest for __SluiceExport {
                fn manifest() -> $crate::Manifest {
                    <$connector as $crate::Connector>::manifest()
                }
                fn validate(config: ::std::string::String) -> $crate::__private::ExportResult<::std::string::String> {
                    $crate::__private::validate::<$connector>(config)
                }
                fn discover(config: ::std::string::String) -> $crate::__private::ExportResult<::std::vec::Vec<$crate::StreamSpec>> {
                    $crate::__private::discover::<$connector>(config)
                }
                fn sync(request: $crate::__private::RawSyncRequest) -> $crate::__private::ExportResult<()> {
                    $crate::__private::sync::<$connector>(request)
                }
            }

            $crate::bindings::__export_connector_plugin!(__SluiceExport with_types_in $crate::bindings);
        };
    };
}

/// Glue used by [`export_connector!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use crate::bindings::exports::sluice::connector::connector::SyncRequest as RawSyncRequest;

    pub type ExportResult<T> = core::result::Result<T, ConnectorError>;

    fn parse_json(what: &str, text: &str, code: ErrorCode) -> Result<Value> {
        serde_json::from_str(text)
            .map_err(|e| ConnectorError::new(code, format!("{what} is not valid JSON: {e}")))
    }

    /// Routes panic messages to the run's log (at `error`) before the call traps, so a panic
    /// is diagnosable from the host. Installed on the first `validate`, `discover` or `sync`.
    fn install_panic_hook() {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let payload = info.payload();
                let message = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(no message)");
                crate::log::error(
                    &format!("connector panicked: {message}"),
                    &[("location", &location)],
                );
            }));
        });
    }

    pub fn validate<C: Connector>(config: String) -> Result<String> {
        install_panic_hook();
        let config = parse_json("config", &config, ErrorCode::InvalidConfig)?;
        let account = C::validate(config)?;
        Ok(account.to_string())
    }

    pub fn discover<C: Connector>(config: String) -> Result<Vec<StreamSpec>> {
        install_panic_hook();
        let config = parse_json("config", &config, ErrorCode::InvalidConfig)?;
        C::discover(config)
    }

    pub fn sync<C: Connector>(request: RawSyncRequest) -> Result<()> {
        install_panic_hook();
        let config = parse_json("config", &request.config, ErrorCode::InvalidConfig)?;
        let mut state = BTreeMap::new();
        for (stream, value) in request.state {
            let value = parse_json(&format!("state of {stream}"), &value, ErrorCode::Internal)?;
            state.insert(stream, value);
        }
        C::sync(SyncRequest {
            config,
            streams: request.streams,
            state,
            started_at: request.started_at,
            run_id: request.run_id,
        })
    }
}
