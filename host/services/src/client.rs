//! Calls to an internal service, through the host's outbound choke point
//! ([`sluice_runtime::outbound::Outbound`]): the operator's destination rules and private-address
//! grants, its timeouts and response cap. Only `token-revoke` is sent as idempotent (retried on
//! 5xx and connection errors); `token-exchange` is sent once — a retry could issue two keys —
//! and so is `health`, which reports what one attempt saw.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Serialize;
use serde_json::Value;
use sluice_runtime::CancellationToken;
use sluice_runtime::outbound::{Outbound, OutboundError, OutboundRequest};
use sluice_runtime::policy::{Destinations, HostPattern, HostRule};
use sluice_runtime::redact::Redactor;
use time::OffsetDateTime;
use url::Url;

use crate::protocol::{
    self, EXCHANGE_PATH, ExchangeRequest, HEALTH_PATH, IssuedToken, Malformed, REVOKE_PATH,
    RevokeRequest,
};
use crate::secret::SharedSecret;

/// A call that did not produce an HTTP answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer in time")]
    Timeout,
    #[error("not allowed by the outbound policy: {0}")]
    Denied(String),
    #[error("answer larger than {0} bytes")]
    TooLarge(u64),
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `Content-Type` header, if any (to describe an answer that is not the protocol's).
    pub content_type: Option<String>,
    /// A redirect's `Location`, without credentials, query or fragment (redirects are answers,
    /// never followed).
    pub location: Option<String>,
    /// From sending to the last body byte (all attempts).
    pub elapsed: Duration,
}

/// Why a protocol call failed. Messages never hold the key, the shared secret or an answer's
/// body (beyond a short reason a refusal gives).
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("the service refused the shared secret (401)")]
    SecretRejected,
    #[error("the service refused the user (403){}", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    UserRefused(String),
    #[error("the service answered HTTP {0}")]
    Status(u16),
    /// A 3xx: not followed (the secret goes to `base_url` only).
    #[error("the service answered {}", protocol::describe_status(*.status, .location.as_deref()))]
    Redirect {
        status: u16,
        location: Option<String>,
    },
    #[error("the service's answer is not a token: {}", .0.reason)]
    Malformed(Malformed),
    /// A `token-revoke` (or other `{"status": "ok"}` call) answered something that is not its
    /// success shape: nothing is known to have been done.
    #[error(
        "the service's {call} answer is not the protocol's {{\"status\": \"ok\"}}: HTTP {status}, {what}"
    )]
    NotOk {
        call: &'static str,
        status: u16,
        /// [`protocol::describe_answer`] of the body.
        what: String,
    },
}

impl UpstreamError {
    /// The stable error code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Transport(TransportError::Unreachable(_)) => "service_unreachable",
            Self::Transport(TransportError::Timeout) => "service_timeout",
            Self::Transport(TransportError::Denied(_)) => "service_denied",
            Self::Transport(TransportError::TooLarge(_)) => "service_bad_answer",
            Self::SecretRejected => "service_secret_rejected",
            Self::UserRefused(_) => "user_refused",
            Self::Status(_) | Self::Redirect { .. } => "service_error",
            Self::Malformed(_) | Self::NotOk { .. } => "service_bad_answer",
        }
    }
}

/// What a revoke found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// 2xx with `{"status": "ok"}`: revoked now or before (the protocol's idempotent answer).
    Ok,
    /// 404 with a JSON object (the service's own error answer): the service does not know the
    /// token (treated as revoked; the checker flags it). A 404 of anything else (an HTML page
    /// of a proxy or a wrong `base_url`) is an error.
    Unknown,
}

/// A redirect's target as an error message may show it: resolved against the request's URL,
/// without credentials, query or fragment (a login page's `?next=…` or a token); `None` when
/// it is not a URL.
fn shown_location(request: &Url, location: &str) -> Option<String> {
    let mut url = request.join(location).ok()?;
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    Some(
        url.to_string()
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect(),
    )
}

/// How a health probe went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// 2xx with `{"status": "ok"}`.
    Up,
    /// Connection refused, reset, DNS failure.
    Unreachable,
    /// 401: the service does not take Sluice's shared secret.
    BadSecret,
    /// No answer within the timeout.
    Timeout,
    /// The operator's outbound policy forbids the destination.
    Denied,
    /// Another status (a redirect included: not followed), a 2xx without `{"status": "ok"}`,
    /// or an oversized answer.
    Error,
    /// Sluice has no usable shared secret for the service (nothing was sent).
    SecretMissing,
}

impl HealthState {
    /// The state as the API and the log spell it (`bad_secret`…).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Unreachable => "unreachable",
            Self::BadSecret => "bad_secret",
            Self::Timeout => "timeout",
            Self::Denied => "denied",
            Self::Error => "error",
            Self::SecretMissing => "secret_missing",
        }
    }
}

/// One health probe's result.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub state: HealthState,
    /// Milliseconds from sending to the answer, or to giving up for `Timeout`; None when the
    /// service could not be reached or nothing was sent.
    pub latency_ms: Option<u64>,
    /// The HTTP status, when there was an answer.
    pub http_status: Option<u16>,
    /// A short human explanation.
    pub detail: String,
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
}

/// Limits of the service calls.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Wall-clock limit of one call, all attempts included.
    pub timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
        }
    }
}

/// Speaks the protocol to any service, through one [`Outbound`].
#[derive(Clone)]
pub struct ServiceClient {
    outbound: Arc<Outbound>,
    config: ClientConfig,
}

impl ServiceClient {
    pub fn new(outbound: Arc<Outbound>, config: ClientConfig) -> Self {
        Self { outbound, config }
    }

    /// One request to `base_url` joined with `path`, bearing `secret`.
    pub async fn send(
        &self,
        base_url: &Url,
        bearer: &str,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        idempotent: bool,
    ) -> Result<Reply, TransportError> {
        self.send_with(base_url, Some(bearer), method, path, body, idempotent)
            .await
    }

    /// One request with no `Authorization` header (the conformance checker's probe), sent once.
    pub async fn send_unauthenticated(
        &self,
        base_url: &Url,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Reply, TransportError> {
        self.send_with(base_url, None, method, path, body, false)
            .await
    }

    async fn send_with(
        &self,
        base_url: &Url,
        bearer: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        idempotent: bool,
    ) -> Result<Reply, TransportError> {
        let url = base_url
            .join(path)
            .map_err(|e| TransportError::Unreachable(format!("bad URL: {e}")))?;
        let rule = HostPattern::origin_of(&url).map_err(TransportError::Denied)?;
        let dest = Destinations::new(
            &[HostRule::Pattern(rule)],
            &Value::Null,
            self.outbound.policy().clone(),
        );
        let redactor = Redactor::new(bearer);
        let mut secret_headers = HeaderMap::new();
        if let Some(bearer) = bearer {
            let mut auth = HeaderValue::from_str(&format!("Bearer {bearer}")).map_err(|_| {
                TransportError::Unreachable("the secret is not a header value".into())
            })?;
            auth.set_sensitive(true);
            secret_headers.insert(AUTHORIZATION, auth);
        }
        let mut headers = HeaderMap::new();
        let body = match body {
            Some(b) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Some(
                    serde_json::to_vec(b)
                        .map_err(|e| TransportError::Unreachable(format!("encoding: {e}")))?,
                )
            }
            None => None,
        };
        let req_url = url.clone();
        let req = OutboundRequest {
            method,
            url,
            headers,
            secret_headers,
            body,
            idempotent,
            redactor: redactor.clone(),
        };
        let started = Instant::now();
        let cancel = CancellationToken::new();
        let fetched = tokio::time::timeout(
            self.config.timeout,
            self.outbound.fetch(&dest, req, &cancel),
        )
        .await;
        cancel.cancel();
        let resp = match fetched {
            Err(_) => return Err(TransportError::Timeout),
            Ok(Err(e)) => {
                return Err(match e {
                    OutboundError::Timeout | OutboundError::Cancelled => TransportError::Timeout,
                    OutboundError::Denied(m) => TransportError::Denied(m),
                    OutboundError::TooLarge(n) => TransportError::TooLarge(n),
                    OutboundError::Connection(m) | OutboundError::InvalidRequest(m) => {
                        TransportError::Unreachable(redactor.redact_string(m))
                    }
                });
            }
            Ok(Ok(r)) => r,
        };
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let content_type = header("content-type");
        // The service chose the location: the secret is masked in it like in any other text.
        let location = header("location")
            .and_then(|l| shown_location(&req_url, &l))
            .map(|l| redactor.redact_string(l));
        Ok(Reply {
            status: resp.status,
            body: resp.body,
            content_type,
            location,
            elapsed: started.elapsed(),
        })
    }

    /// `token-exchange`: sent once (not idempotent).
    pub async fn exchange(
        &self,
        base_url: &Url,
        secret: &SharedSecret,
        user_email: &str,
        ttl_days: u32,
    ) -> Result<IssuedToken, UpstreamError> {
        let body = ExchangeRequest {
            user_email,
            ttl_days,
        };
        let sent_at = OffsetDateTime::now_utc();
        let r = self
            .send(
                base_url,
                secret.expose(),
                Method::POST,
                EXCHANGE_PATH,
                Some(&body),
                false,
            )
            .await?;
        let expected = protocol::Expected {
            secret: secret.expose(),
            ttl_days: Some(ttl_days),
        };
        match r.status {
            200 | 201 => protocol::parse_issued(&r.body, sent_at, &expected)
                .map_err(UpstreamError::Malformed),
            // Another 2xx is not the protocol's success, whatever it holds; a token it names
            // is revoked by the caller.
            s @ 202..=299 => Err(UpstreamError::Malformed(protocol::unexpected_success(
                s, &r.body, sent_at, &expected,
            ))),
            s @ 300..=399 => Err(UpstreamError::Redirect {
                status: s,
                location: r.location,
            }),
            401 => Err(UpstreamError::SecretRejected),
            403 => {
                // What the service holds and must not reach the backend: the shared secret,
                // in any case the service may have turned it into (the redactor also masks its
                // encoded forms). The user's email is not one: the backend sent it, and a
                // refusal that names the user ("user … is disabled") goes back as written.
                let s = secret.expose();
                let redactor = Redactor::new([s, &s.to_uppercase(), &s.to_lowercase()]);
                Err(UpstreamError::UserRefused(protocol::reason_of(
                    &r.body,
                    |t| redactor.redact_string(t),
                )))
            }
            s => Err(UpstreamError::Status(s)),
        }
    }

    /// `token-revoke`: idempotent, so retried on 5xx and connection errors. Only a 2xx with
    /// `{"status": "ok"}` is a revoke (and a 404 with a JSON object, [`Revoked::Unknown`]);
    /// any other answer is an error, so the caller keeps the token to revoke again.
    pub async fn revoke(
        &self,
        base_url: &Url,
        secret: &SharedSecret,
        token_id: &str,
    ) -> Result<Revoked, UpstreamError> {
        let body = RevokeRequest { token_id };
        let r = self
            .send(
                base_url,
                secret.expose(),
                Method::POST,
                REVOKE_PATH,
                Some(&body),
                true,
            )
            .await?;
        match r.status {
            200..=299 if protocol::is_ok_body(&r.body) => Ok(Revoked::Ok),
            404 if protocol::is_json_object(&r.body) => Ok(Revoked::Unknown),
            s @ (200..=299 | 404) => Err(UpstreamError::NotOk {
                call: "token-revoke",
                status: s,
                what: protocol::describe_answer(r.content_type.as_deref(), &r.body),
            }),
            s @ 300..=399 => Err(UpstreamError::Redirect {
                status: s,
                location: r.location,
            }),
            401 => Err(UpstreamError::SecretRejected),
            s => Err(UpstreamError::Status(s)),
        }
    }

    /// `health`: one attempt; every outcome is a [`HealthReport`].
    pub async fn health(&self, base_url: &Url, secret: &SharedSecret) -> HealthReport {
        let started = Instant::now();
        let r = self
            .send(
                base_url,
                secret.expose(),
                Method::GET,
                HEALTH_PATH,
                None::<&()>,
                false,
            )
            .await;
        let checked_at = OffsetDateTime::now_utc();
        let report = |state, latency_ms, http_status, detail: String| HealthReport {
            state,
            latency_ms,
            http_status,
            detail,
            checked_at,
        };
        match r {
            Ok(r) => {
                let ms = Some(r.elapsed.as_millis() as u64);
                match r.status {
                    200..=299 if protocol::is_ok_body(&r.body) => {
                        report(HealthState::Up, ms, Some(r.status), "up".into())
                    }
                    200..=299 => report(
                        HealthState::Error,
                        ms,
                        Some(r.status),
                        format!(
                            "the service answered HTTP {} without {{\"status\": \"ok\"}}: {}",
                            r.status,
                            protocol::describe_answer(r.content_type.as_deref(), &r.body)
                        ),
                    ),
                    401 => report(
                        HealthState::BadSecret,
                        ms,
                        Some(401),
                        "the service refused the shared secret".into(),
                    ),
                    s => report(
                        HealthState::Error,
                        ms,
                        Some(s),
                        format!(
                            "the service answered {}",
                            protocol::describe_status(s, r.location.as_deref())
                        ),
                    ),
                }
            }
            Err(e) => {
                let state = match &e {
                    TransportError::Unreachable(_) => HealthState::Unreachable,
                    TransportError::Timeout => HealthState::Timeout,
                    TransportError::Denied(_) => HealthState::Denied,
                    TransportError::TooLarge(_) => HealthState::Error,
                };
                let latency =
                    (state == HealthState::Timeout).then(|| started.elapsed().as_millis() as u64);
                report(state, latency, None, e.to_string())
            }
        }
    }
}
