//! Connect, disconnect and health of registered services, with their audit events.
//!
//! Audit events are `tracing` events with target `sluice::audit` and the fields `action`
//! (`connect` | `disconnect`), `service`, `user_email`, `token_id`, `outcome` (`ok` | `failed`)
//! and, when failed, `code` and `error`. They never carry the key or the shared secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::client::{HealthReport, HealthState, Revoked, ServiceClient, UpstreamError};
use crate::model::{MAX_TTL_DAYS, Service};
use crate::registry::ServiceRegistry;
use crate::tokens::{TokenBook, TokenRecord};

/// Longest user email accepted, in bytes (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// Why connect, disconnect or health could not be done.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error("unknown service {0:?}")]
    UnknownService(String),
    #[error("no usable shared secret for {service}: {reason}")]
    SecretMissing { service: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{service}: {error}")]
    Upstream {
        service: String,
        error: UpstreamError,
    },
}

impl ServiceError {
    /// The stable error code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownService(_) => "not_found",
            Self::SecretMissing { .. } => "shared_secret_missing",
            Self::Invalid(_) => "invalid_request",
            Self::Upstream { error, .. } => error.code(),
        }
    }
}

/// A key obtained for a user. The key is wiped when dropped and left out of `Debug`.
pub struct Connection {
    pub service: Arc<Service>,
    pub api_key: Zeroizing<String>,
    pub token_id: String,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("service", &self.service.id)
            .field("token_id", &self.token_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A revoke's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnected {
    pub token_id: String,
    /// False when the service did not know the token (404 with a JSON object): nothing was
    /// left to revoke.
    pub known_to_service: bool,
}

/// The registry, the protocol client, the token records and the last health of each service.
pub struct Services {
    registry: Arc<ServiceRegistry>,
    client: ServiceClient,
    tokens: TokenBook,
    health: Mutex<HashMap<String, HealthReport>>,
}

impl Services {
    pub fn new(registry: Arc<ServiceRegistry>, client: ServiceClient) -> Arc<Self> {
        Arc::new(Self {
            registry,
            client,
            tokens: TokenBook::default(),
            health: Mutex::new(HashMap::new()),
        })
    }

    pub fn registry(&self) -> &Arc<ServiceRegistry> {
        &self.registry
    }

    pub fn tokens(&self) -> &TokenBook {
        &self.tokens
    }

    /// The last health probe of a service, if any.
    pub fn last_health(&self, id: &str) -> Option<HealthReport> {
        self.health.lock().ok()?.get(id).cloned()
    }

    fn service(&self, id: &str) -> Result<Arc<Service>, ServiceError> {
        self.registry
            .get(id)
            .ok_or_else(|| ServiceError::UnknownService(id.to_string()))
    }

    /// Obtains a key for `user_email` from the service (`ttl_days` or the service's default).
    /// An answer that is not a token but names one has that token revoked.
    pub async fn connect(
        &self,
        id: &str,
        user_email: &str,
        ttl_days: Option<u32>,
    ) -> Result<Connection, ServiceError> {
        let result = self.try_connect(id, user_email, ttl_days).await;
        // Client-sent values reach the audit log only once they passed their checks: a bad
        // email or an unknown id could carry line breaks into a text log.
        let user_email = check_email(user_email).is_ok().then_some(user_email);
        let id = self.registry.get(id).is_some().then_some(id);
        match &result {
            Ok(c) => tracing::info!(
                target: "sluice::audit",
                action = "connect",
                service = id,
                user_email,
                token_id = %c.token_id,
                expires_at = %c.expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                outcome = "ok",
                "service connected"
            ),
            Err(e) => {
                let token_id = match e {
                    ServiceError::Upstream {
                        error: UpstreamError::Malformed(m),
                        ..
                    } if !m.token_id_is_secret => m.token_id.as_deref(),
                    _ => None,
                };
                tracing::warn!(
                    target: "sluice::audit",
                    action = "connect",
                    service = id,
                    user_email,
                    token_id,
                    outcome = "failed",
                    code = e.code(),
                    error = %e,
                    "service connect failed"
                );
            }
        }
        result
    }

    async fn try_connect(
        &self,
        id: &str,
        user_email: &str,
        ttl_days: Option<u32>,
    ) -> Result<Connection, ServiceError> {
        let service = self.service(id)?;
        check_email(user_email)?;
        let ttl = ttl_days.unwrap_or(service.ttl_days);
        if !(1..=MAX_TTL_DAYS).contains(&ttl) {
            return Err(ServiceError::Invalid(format!(
                "ttl_days must be 1 to {MAX_TTL_DAYS}"
            )));
        }
        let secret = service
            .secret
            .as_ref()
            .map_err(|reason| ServiceError::SecretMissing {
                service: service.id.clone(),
                reason: reason.clone(),
            })?;
        let upstream = |error| ServiceError::Upstream {
            service: service.id.clone(),
            error,
        };
        let issued = match self
            .client
            .exchange(&service.base_url, secret, user_email, ttl)
            .await
        {
            Ok(t) => t,
            Err(UpstreamError::Malformed(m)) => {
                // Nothing half done: what the service may have created is revoked.
                if let Some(token_id) = &m.token_id {
                    let revoked = self
                        .client
                        .revoke(&service.base_url, secret, token_id)
                        .await;
                    // A token id that holds the key or the secret is used, never logged.
                    let shown = if m.token_id_is_secret {
                        "[redacted]"
                    } else {
                        token_id.as_str()
                    };
                    tracing::warn!(
                        target: "sluice::audit",
                        action = "revoke_unusable",
                        service = %service.id,
                        user_email = %user_email,
                        token_id = %shown,
                        outcome = if revoked.is_ok() { "ok" } else { "failed" },
                        error = revoked.err().map(|e| e.to_string()),
                        "revoked the token of an unusable exchange answer"
                    );
                }
                return Err(upstream(UpstreamError::Malformed(m)));
            }
            Err(e) => return Err(upstream(e)),
        };
        self.tokens.insert(TokenRecord {
            service: service.id.clone(),
            token_id: issued.token_id.clone(),
            user_email: user_email.to_string(),
            expires_at: issued.expires_at,
            connected_at: OffsetDateTime::now_utc(),
        });
        Ok(Connection {
            service,
            api_key: issued.api_key,
            token_id: issued.token_id,
            expires_at: issued.expires_at,
        })
    }

    /// Revokes a token; revoking one already revoked (or unknown to the service) succeeds. An
    /// answer that is not the protocol's success (see [`ServiceClient::revoke`]) is an error
    /// and the token stays tracked, so that a retry revokes it.
    pub async fn disconnect(&self, id: &str, token_id: &str) -> Result<Disconnected, ServiceError> {
        let known = self
            .registry
            .get(id)
            .and_then(|_| self.tokens.get(id, token_id));
        let result = self.try_disconnect(id, token_id).await;
        let user_email = known.as_ref().map(|r| r.user_email.as_str());
        let id_logged = self.registry.get(id).is_some().then_some(id);
        // A client-sent id is logged only when it can be a token id (no control characters).
        let token_id_logged = crate::protocol::is_token_id(token_id).then_some(token_id);
        match &result {
            Ok(d) => tracing::info!(
                target: "sluice::audit",
                action = "disconnect",
                service = id_logged,
                user_email,
                token_id = token_id_logged,
                outcome = "ok",
                known_to_service = d.known_to_service,
                "service disconnected"
            ),
            Err(e) => tracing::warn!(
                target: "sluice::audit",
                action = "disconnect",
                service = id_logged,
                user_email,
                token_id = token_id_logged,
                outcome = "failed",
                code = e.code(),
                error = %e,
                "service disconnect failed"
            ),
        }
        result
    }

    async fn try_disconnect(&self, id: &str, token_id: &str) -> Result<Disconnected, ServiceError> {
        let service = self.service(id)?;
        if !crate::protocol::is_token_id(token_id) {
            return Err(ServiceError::Invalid(
                "token_id must be 1-256 printable ASCII characters".into(),
            ));
        }
        let secret = service
            .secret
            .as_ref()
            .map_err(|reason| ServiceError::SecretMissing {
                service: service.id.clone(),
                reason: reason.clone(),
            })?;
        let revoked = self
            .client
            .revoke(&service.base_url, secret, token_id)
            .await
            .map_err(|error| ServiceError::Upstream {
                service: service.id.clone(),
                error,
            })?;
        self.tokens.remove(id, token_id);
        Ok(Disconnected {
            token_id: token_id.to_string(),
            known_to_service: revoked == Revoked::Ok,
        })
    }

    /// Probes a service's health now and remembers the result.
    pub async fn check_health(&self, id: &str) -> Result<HealthReport, ServiceError> {
        let service = self.service(id)?;
        let report = match service.secret() {
            Some(secret) => self.client.health(&service.base_url, secret).await,
            None => HealthReport {
                state: HealthState::SecretMissing,
                latency_ms: None,
                http_status: None,
                detail: service.secret.as_ref().err().cloned().unwrap_or_default(),
                checked_at: OffsetDateTime::now_utc(),
            },
        };
        if report.state != HealthState::Up {
            tracing::warn!(service = %id, state = report.state.as_str(), detail = %report.detail, "service health");
        }
        if let Ok(mut h) = self.health.lock() {
            h.insert(id.to_string(), report.clone());
        }
        Ok(report)
    }
}

/// A plausible address: one `@` with text on both sides, no spaces or control characters.
fn check_email(email: &str) -> Result<(), ServiceError> {
    let ok = email.len() <= MAX_EMAIL_LEN
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "user_email must be an email address of at most {MAX_EMAIL_LEN} characters"
        )))
    }
}

/// Zero-width and bidirectional formatting characters (Unicode's "Cf" ones that matter here:
/// U+200B–U+200F, U+202A–U+202E, U+2060–U+2069, U+FEFF): invisible, they would let one
/// address look like another in the audit log.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    #[test]
    fn emails() {
        for ok in ["john@corp.example", "a.b+c@x", "jürgen@corp.example"] {
            assert!(super::check_email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "john",
            "@x",
            "a@",
            "a@b@c",
            "a b@c",
            "a@b\n",
            "a\u{200b}b@corp.example",
            "john\u{202e}@corp.example",
        ] {
            assert!(super::check_email(bad).is_err(), "{bad:?}");
        }
    }
}
