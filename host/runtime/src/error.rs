//! Errors of loading and calling plugins.

use std::time::Duration;

use serde::Serialize;

/// The connector error codes of the WIT `error-code` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidCredentials,
    InsufficientScope,
    InvalidConfig,
    Unreachable,
    RateLimited,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "invalid_credentials",
            Self::InsufficientScope => "insufficient_scope",
            Self::InvalidConfig => "invalid_config",
            Self::Unreachable => "unreachable",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
        }
    }
}

/// Why a plugin call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The connector itself returned an error.
    #[error("{message}")]
    Connector { code: ErrorCode, message: String },
    /// The call ran past its wall-clock deadline and was stopped.
    #[error("{0}")]
    Deadline(DeadlineExceeded),
    /// The plugin tried to grow its memory past its limit and was stopped.
    #[error("plugin exceeded its memory limit of {0} MiB")]
    MemoryLimit(u64),
    /// A growth of the plugin's memory was refused because the memory budget all plugin calls
    /// share (`SLUICE_PLUGIN_MEMORY_BUDGET_MIB`) stayed short; the message says by how much.
    #[error("{0}")]
    MemoryBudget(String),
    /// The call was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// The plugin trapped (panic, unreachable, bad memory access, ...).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The plugin broke the contract (bad record, unknown stream, invalid discover output).
    #[error("plugin broke the contract: {0}")]
    Contract(String),
    /// The host failed while serving the plugin (e.g. staging could not write).
    #[error("host error: {0}")]
    Host(String),
}

impl CallError {
    /// A stable snake_case code for APIs and run status.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Connector { code, .. } => code.as_str(),
            Self::Deadline(_) => "deadline_exceeded",
            Self::MemoryLimit(_) => "memory_limit",
            Self::MemoryBudget(_) => "memory_budget",
            Self::Cancelled => "cancelled",
            Self::Trap(_) => "plugin_trap",
            Self::Contract(_) => "plugin_contract",
            Self::Host(_) => "host_error",
        }
    }
}

/// A call stopped at its deadline: how long it had, the operator setting that gave it (when
/// the caller named one) and the upstream request it was waiting for, if any (no query).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadlineExceeded {
    /// The call's whole budget.
    pub budget: Duration,
    /// The setting the budget comes from, e.g. `SLUICE_CALL_TIMEOUT_SECS`.
    pub setting: Option<&'static str>,
    /// `GET https://h/x?…`: the `http.fetch` under way when the deadline passed.
    pub waiting_for: Option<String>,
}

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "plugin call exceeded its deadline of {}",
            rounded(self.budget)
        )?;
        if let Some(setting) = self.setting {
            write!(f, " ({setting})")?;
        }
        match &self.waiting_for {
            Some(request) => write!(f, "; it was waiting for the upstream's answer to {request}"),
            None => Ok(()),
        }
    }
}

/// A budget as people write it: whole seconds from 10 s on, else tenths (`30 s`, `1.5 s`).
/// A budget is measured from when the call was set up, so it reads `29.99999s` unrounded.
fn rounded(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 10_000 {
        format!("{} s", (ms + 500) / 1000)
    } else {
        let tenths = (ms + 50) / 100;
        match tenths % 10 {
            0 => format!("{} s", tenths / 10),
            t => format!("{}.{t} s", tenths / 10),
        }
    }
}

/// Why a plugin file could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {0}")]
    Io(String),
    #[error(
        "plugin file is {size} bytes; at most {max} bytes are accepted (SLUICE_MAX_PLUGIN_MIB)"
    )]
    TooLarge { size: u64, max: u64 },
    #[error("not a WebAssembly component: {0}")]
    NotComponent(String),
    #[error("{0}")]
    IncompatibleWorld(String),
    #[error("undeclared import {0:?}: a connector may import only sluice:connector/* and wasi:*")]
    UndeclaredImport(String),
    #[error("compile failed: {0}")]
    Compile(String),
    /// The compiler process was killed by a signal the host did not send — in a container,
    /// the kernel's out-of-memory killer (the child volunteers as its first victim). Unlike
    /// the other errors this says nothing about the file: the registry tries it again later
    /// ([`LoadError::is_transient`]).
    #[error("compile interrupted: {0}")]
    Interrupted(String),
    #[error("link failed: {0}")]
    Link(String),
    #[error("{0}")]
    Manifest(String),
    /// `SLUICE_TRUSTED_KEYS` is set and the file's signature is missing or not accepted.
    #[error("signature: {0}")]
    Signature(#[from] crate::signing::SignatureError),
}

impl LoadError {
    /// Whether loading the same bytes again may succeed: only an interrupted compile
    /// ([`LoadError::Interrupted`]); every other error repeats until the file changes.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Interrupted(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Newcomer finding 4: "plugin exceeded its deadline of 29.999991277s" named neither the
    /// setting nor the request.
    #[test]
    fn a_deadline_is_rounded_and_names_its_setting_and_request() {
        let e = CallError::Deadline(DeadlineExceeded {
            budget: Duration::from_nanos(29_999_991_277),
            setting: Some("SLUICE_CALL_TIMEOUT_SECS"),
            waiting_for: Some("GET http://127.0.0.1:9/slow".into()),
        });
        assert_eq!(
            e.to_string(),
            "plugin call exceeded its deadline of 30 s (SLUICE_CALL_TIMEOUT_SECS); it was \
             waiting for the upstream's answer to GET http://127.0.0.1:9/slow"
        );
        assert_eq!(rounded(Duration::from_millis(1_499)), "1.5 s");
        assert_eq!(rounded(Duration::from_millis(4_999)), "5 s");
        assert_eq!(rounded(Duration::from_millis(40)), "0 s");
    }
}
