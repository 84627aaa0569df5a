//! Host bindings generated from `wit/connector.wit`.
//!
//! Every import is async (an http fetch must not block a tokio worker) and trappable (the
//! host stops a cancelled run at its next host call by trapping).

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "connector-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

/// The WIT package version this host implements.
pub const WIT_VERSION: &str = "0.1.0";
/// The package every connector import and export belongs to.
pub const WIT_PACKAGE: &str = "sluice:connector";
