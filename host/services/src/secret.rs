//! Shared secrets: one per service, from the environment only.
//!
//! The rule: service id `purchase-orders` reads `SC_SECRET_PURCHASE_ORDERS` — `SC_SECRET_`
//! followed by the id upper-cased with every `-` turned into `_` (ids are `[a-z][a-z0-9_-]*`,
//! so the name is always a valid variable name; two ids that would share a variable are refused
//! by the registry). The value is never read from the registry file or a request, never logged,
//! never serialized, and wiped from memory when dropped.

use zeroize::Zeroizing;

/// Prefix of every shared-secret variable.
pub const SECRET_ENV_PREFIX: &str = "SC_SECRET_";

/// Shortest shared secret accepted; a shorter value is treated as unset (and reported so).
pub const MIN_SECRET_LEN: usize = 16;

/// The environment variable a service's shared secret comes from (see the module doc).
pub fn secret_env_name(service_id: &str) -> String {
    let mut name = String::with_capacity(SECRET_ENV_PREFIX.len() + service_id.len());
    name.push_str(SECRET_ENV_PREFIX);
    name.extend(service_id.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    name
}

/// A service's shared secret, sent only as `Authorization: Bearer …` to that service.
/// Neither `Debug` nor `Display` shows it.
#[derive(Clone)]
pub struct SharedSecret(Zeroizing<String>);

impl SharedSecret {
    /// Wraps a value (for the conformance checker, which takes it from a variable it is told).
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// Reads `var`: `Ok(None)` when it is unset or empty, `Err` (the reason, never the value)
    /// when it is set but unusable.
    pub fn from_env(var: &str) -> Result<Option<Self>, String> {
        match std::env::var(var) {
            Ok(v) if v.is_empty() => Ok(None),
            Ok(v) if v.len() < MIN_SECRET_LEN => Err(format!(
                "{var} is shorter than {MIN_SECRET_LEN} characters; use `openssl rand -hex 32`"
            )),
            Ok(v) if v.chars().any(|c| c.is_control() || c == ' ') => {
                Err(format!("{var} holds spaces or control characters"))
            }
            Ok(v) => Ok(Some(Self::new(v))),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{var} is not UTF-8")),
        }
    }

    /// The value, for the `Authorization` header and the redactor only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_rule() {
        assert_eq!(
            secret_env_name("purchase-orders"),
            "SC_SECRET_PURCHASE_ORDERS"
        );
        assert_eq!(secret_env_name("crm"), "SC_SECRET_CRM");
        assert_eq!(secret_env_name("in_voice-2"), "SC_SECRET_IN_VOICE_2");
    }

    #[test]
    fn debug_hides_the_value() {
        let s = SharedSecret::new("s3cr3t-value-0123456789".into());
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }
}
