//! Structured logs, attached by the host to the current run.
//!
//! ```ignore
//! sluice_sdk::log::info("fetched page", &[("stream", "orders"), ("records", &n.to_string())]);
//! ```

use crate::bindings::sluice::connector::log as raw;

pub use raw::Level;

/// Logs `message` at `level` with `fields` (key, value). Never log a credential.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    raw::log(level, message, &fields);
}

/// Logs at `trace`.
pub fn trace(message: &str, fields: &[(&str, &str)]) {
    log(Level::Trace, message, fields);
}

/// Logs at `debug`.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields);
}

/// Logs at `info`.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields);
}

/// Logs at `warn`.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields);
}

/// Logs at `error`.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(Level::Error, message, fields);
}
