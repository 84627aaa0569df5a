//! `sluice:connector@0.2.1`, the current world (`wit/connector.wit`). The host's imports are
//! implemented once, for this version, in [`crate::host`]; older versions delegate to them.
//!
//! It also serves components built against 0.2.0: 0.2.1 only adds (`records.emit-fields`), and
//! wasmtime links a component's `@0.2.0` imports and finds its `@0.2.0` export under the
//! semver-compatible `@0.2.1` names.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "connector-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

/// The package version of this module's world.
pub const VERSION: &str = "0.2.1";
