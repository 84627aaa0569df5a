//! `sluice:connector@0.2.0`, the current world (`wit/connector.wit`). The host's imports are
//! implemented once, for this version, in [`crate::host`]; older versions delegate to them.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "connector-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

/// The package version of this module's world.
pub const VERSION: &str = "0.2.0";
