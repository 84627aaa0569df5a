//! The `probe` test connector, version 1.0.0. The code lives in `probe.rs`, shared with
//! `probe-v2`.

mod probe;

sluice_sdk::export_connector!(probe::Probe);
