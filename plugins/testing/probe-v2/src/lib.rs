//! The `probe` test connector, version 2.0.0: the same code as `probe` (its `probe.rs`), with the
//! version taken from this crate.

#[path = "../../probe/src/probe.rs"]
mod probe;

sluice_sdk::export_connector!(probe::Probe);
