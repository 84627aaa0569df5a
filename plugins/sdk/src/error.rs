//! [`ConnectorError`]: what `validate`, `discover` and `sync` return on failure.

use crate::bindings::sluice::connector::{
    http::HttpError, records::EmitError, secrets::SecretError,
};

pub use crate::bindings::sluice::connector::types::{ConnectorError, ErrorCode};

/// `Result` with [`ConnectorError`] as the default error.
pub type Result<T, E = ConnectorError> = core::result::Result<T, E>;

impl ConnectorError {
    /// An error with `code` and a one-line message (never put a credential in it).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `invalid-credentials`: the upstream rejected the credentials.
    pub fn invalid_credentials(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidCredentials, message)
    }

    /// `insufficient-scope`: valid credentials lacking a permission.
    pub fn insufficient_scope(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InsufficientScope, message)
    }

    /// `invalid-config`: the configuration is wrong.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfig, message)
    }

    /// `unreachable`: the upstream could not be reached or kept failing.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unreachable, message)
    }

    /// `rate-limited`: the rate limit was still exhausted after the host's waits.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RateLimited, message)
    }

    /// `internal`: anything else (a bug, an unexpected response).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The error for an HTTP status: 401 `invalid-credentials`, 403 `insufficient-scope`,
    /// 404 `invalid-config`, 429 `rate-limited`, 5xx `unreachable`, anything else `internal`.
    pub fn from_status(status: u16, message: impl Into<String>) -> Self {
        let code = match status {
            401 => ErrorCode::InvalidCredentials,
            403 => ErrorCode::InsufficientScope,
            404 => ErrorCode::InvalidConfig,
            429 => ErrorCode::RateLimited,
            500..=599 => ErrorCode::Unreachable,
            _ => ErrorCode::Internal,
        };
        Self::new(code, message)
    }
}

impl ErrorCode {
    /// The WIT name of the code, e.g. `invalid-config`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidCredentials => "invalid-credentials",
            ErrorCode::InsufficientScope => "insufficient-scope",
            ErrorCode::InvalidConfig => "invalid-config",
            ErrorCode::Unreachable => "unreachable",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::Internal => "internal",
        }
    }
}

impl HttpError {
    /// `kind: detail` with the WIT case name, e.g. `denied: ...`, `timeout`, `too-large: 1024`.
    pub fn describe(&self) -> String {
        match self {
            HttpError::Denied(d) => format!("denied: {d}"),
            HttpError::InvalidRequest(d) => format!("invalid-request: {d}"),
            HttpError::UnknownSecret(d) => format!("unknown-secret: {d}"),
            HttpError::Timeout => "timeout".to_string(),
            HttpError::Connection(d) => format!("connection: {d}"),
            HttpError::TooLarge(cap) => format!("too-large: {cap}"),
        }
    }
}

impl EmitError {
    /// `kind: detail` with the WIT case name, e.g. `unknown-stream: foo`.
    pub fn describe(&self) -> String {
        match self {
            EmitError::UnknownStream(s) => format!("unknown-stream: {s}"),
            EmitError::InvalidRecord((index, why)) => format!("invalid-record: #{index}: {why}"),
        }
    }
}

impl SecretError {
    /// `kind: NAME` with the WIT case name: `undeclared: NAME` or `missing: NAME`.
    pub fn describe(&self) -> String {
        match self {
            SecretError::Undeclared(n) => format!("undeclared: {n}"),
            SecretError::Missing(n) => format!("missing: {n}"),
        }
    }
}

/// How the host's `denied` message begins when the upstream chose the refused destination (a
/// redirect, a `Link` header) rather than the plugin's config.
pub const UPSTREAM_DENIED_PREFIX: &str = "the upstream ";

/// `timeout` and `connection` are `unreachable`; `denied` and `invalid-request` are
/// `invalid-config` (the destination or URL comes from the config), except a `denied` for a
/// destination the upstream chose (message starting [`UPSTREAM_DENIED_PREFIX`]: a redirect or
/// `Link` header to a destination the plugin does not declare), which is `internal` (an
/// unexpected answer, not the user's config); `unknown-secret` is `invalid-credentials`;
/// `too-large` is `internal`.
impl From<HttpError> for ConnectorError {
    fn from(e: HttpError) -> Self {
        let code = match &e {
            HttpError::Timeout | HttpError::Connection(_) => ErrorCode::Unreachable,
            HttpError::Denied(why) if why.starts_with(UPSTREAM_DENIED_PREFIX) => {
                ErrorCode::Internal
            }
            HttpError::Denied(_) | HttpError::InvalidRequest(_) => ErrorCode::InvalidConfig,
            HttpError::UnknownSecret(_) => ErrorCode::InvalidCredentials,
            HttpError::TooLarge(_) => ErrorCode::Internal,
        };
        Self::new(code, e.describe())
    }
}

/// Always `internal`: the connector emitted to a wrong stream or a non-object record.
impl From<EmitError> for ConnectorError {
    fn from(e: EmitError) -> Self {
        Self::internal(e.describe())
    }
}

/// `invalid-config`, with the message `undeclared: NAME` or `missing: NAME`.
impl From<SecretError> for ConnectorError {
    fn from(e: SecretError) -> Self {
        Self::invalid_config(e.describe())
    }
}

/// `internal`: a JSON (de)serialization the connector did not expect to fail.
impl From<serde_json::Error> for ConnectorError {
    fn from(e: serde_json::Error) -> Self {
        Self::internal(format!("json: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_of_the_upstreams_choice_is_no_config_error() {
        let own = ConnectorError::from(HttpError::Denied(
            "http://169.254.169.254:80 is not declared by the plugin".into(),
        ));
        assert_eq!(own.code, ErrorCode::InvalidConfig);
        let redirect = ConnectorError::from(HttpError::Denied(
            "the upstream redirected GET https://api.example.com/x to http://169.254.169.254/, \
             which was not followed: http://169.254.169.254:80 is not declared by the plugin"
                .into(),
        ));
        assert_eq!(redirect.code, ErrorCode::Internal);
        assert!(
            redirect
                .message
                .starts_with("denied: the upstream redirected GET")
        );
        assert_eq!(
            ConnectorError::from(HttpError::TooLarge(1 << 25)).code,
            ErrorCode::Internal
        );
        assert_eq!(
            ConnectorError::from(HttpError::Timeout).code,
            ErrorCode::Unreachable
        );
    }
}
