//! The one choke point for plugin HTTP: destination checks on every hop, address checks at
//! resolution, timeouts, a response size cap, retries with jittered backoff and rate-limit waits.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::cassette::{Cassette, Key};
use crate::policy::{AddressGrant, Destinations, HostRule, OperatorPolicy, origin};
use crate::redact::{Redactor, loggable_url};

/// Most headers a plugin request may carry (a `HeaderMap` holds at most 32,768; real APIs need
/// a dozen).
pub const MAX_REQUEST_HEADERS: usize = 128;
/// Most bytes of header names and values a plugin request may carry.
pub const MAX_REQUEST_HEADER_BYTES: usize = 64 << 10;
/// The longest wait an upstream's `Retry-After` or reset header is read as; longer values (up
/// to `1e20` seconds, seen from hostile upstreams) are clamped here before any arithmetic.
const MAX_HINTED_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// Limits that apply to every plugin request.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    pub connect_timeout: Duration,
    /// Time for one attempt, from sending to the last body byte.
    pub request_timeout: Duration,
    pub max_response_bytes: u64,
    /// Attempts for connection errors and 5xx of idempotent requests.
    pub max_attempts: u32,
    /// Redirects followed (each checked like the first request); 0: a redirect is not
    /// followed but returned as the answer, its status for the caller to read.
    pub max_redirects: u32,
    /// The most time one request may spend waiting on rate limits and retry backoff, all its
    /// waits together (pacing, `Retry-After`, reset headers, backoff after 5xx and transport
    /// errors): a wait that would pass it is not made, and the plugin gets the answer (a 429
    /// stays a 429) or the error at once. So it also caps every single wait.
    pub max_rate_limit_wait: Duration,
    /// Rate-limit waits per request before the response is returned as it is.
    pub max_rate_limit_waits: u32,
    /// First backoff step; doubles each attempt, with full jitter.
    pub backoff_base: Duration,
    /// Least spacing of HubSpot CRM search requests per origin and credential (see
    /// [`is_hubspot_search`]); zero turns the pacing off.
    pub hubspot_search_interval: Duration,
    /// Record every exchange to a cassette, or answer from one with no network (`sluice plugin
    /// test`; see [`crate::cassette`]). `None` in the service.
    pub cassette: Option<Arc<Cassette>>,
    /// How the operator grants loopback and private addresses, named in a refusal so the user
    /// knows what to change: [`ADDRESS_SETTING_ENV`] in the service, [`ADDRESS_SETTING_FLAG`]
    /// in `sluice run` and `sluice plugin test`.
    pub address_setting: &'static str,
}

/// The service's setting of the address classes plugins may reach.
pub const ADDRESS_SETTING_ENV: &str = "SLUICE_ALLOW_PRIVATE_ADDRESSES";
/// The CLI's flag of the address classes a connector may reach.
pub const ADDRESS_SETTING_FLAG: &str = "--allow-private-addresses";

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_response_bytes: 32 << 20,
            max_attempts: 5,
            max_redirects: 5,
            max_rate_limit_wait: Duration::from_secs(15 * 60),
            max_rate_limit_waits: 20,
            backoff_base: Duration::from_millis(250),
            hubspot_search_interval: HUBSPOT_SEARCH_INTERVAL,
            cassette: None,
            address_setting: ADDRESS_SETTING_ENV,
        }
    }
}

/// HubSpot's CRM search endpoints allow five requests per second per account ("CRM API |
/// Search", Limitations; developers.hubspot.com) and their 429s carry no rate-limit headers
/// to wait on: the host spaces them 250 ms apart (four a second) instead of hammering and
/// backing off. Spacing at exactly 200 ms let arrival jitter put a sixth request into some
/// one-second window: against the fake's strict window, ~36 429s (1 s each) per 250 searches.
pub const HUBSPOT_SEARCH_INTERVAL: Duration = Duration::from_millis(250);

/// A request as the host sends it (after secrets were resolved into headers).
#[derive(Debug)]
pub struct OutboundRequest {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    /// Injected secret headers: sensitive, and dropped when a redirect leaves the origin.
    pub secret_headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    pub idempotent: bool,
    /// Masks the call's secrets in what this module logs about the request.
    pub redactor: Redactor,
}

/// What the plugin gets back.
#[derive(Debug)]
pub struct OutboundResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request failed (mirrors the WIT `http-error`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboundError {
    #[error("denied: {0}")]
    Denied(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("timeout")]
    Timeout,
    #[error("connection: {0}")]
    Connection(String),
    #[error("response larger than {0} bytes")]
    TooLarge(u64),
    #[error("cancelled")]
    Cancelled,
}

/// The outbound HTTP service shared by every plugin call.
pub struct Outbound {
    client: reqwest::Client,
    policy: OperatorPolicy,
    config: OutboundConfig,
    pacer: Pacer,
}

impl Outbound {
    pub fn new(policy: OperatorPolicy, config: OutboundConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .dns_resolver(Arc::new(CheckedResolver(policy.addresses)))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            policy,
            config,
            pacer: Pacer::default(),
        })
    }

    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    pub fn policy(&self) -> &OperatorPolicy {
        &self.policy
    }

    /// The destinations a plugin with these rules may reach with this config.
    pub fn destinations(&self, rules: &[HostRule], config: &serde_json::Value) -> Destinations {
        Destinations::new(rules, config, self.policy.clone())
    }

    /// Sends a request: checks, redirects, retries and rate-limit waits included. Traced as one
    /// `upstream_request` span (method, host, path without query, final status, attempts).
    pub async fn fetch(
        &self,
        dest: &Destinations,
        req: OutboundRequest,
        cancel: &CancellationToken,
    ) -> Result<OutboundResponse, OutboundError> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            target: "sluice_trace",
            "upstream_request",
            otel.kind = "client",
            plugin = dest.label(),
            http.request.method = %req.method,
            server.address = req.url.host_str().unwrap_or("-"),
            url.path = req.url.path(),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let result = self
            .fetch_or_replay(dest, req, cancel)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(r) => span.record("http.response.status_code", r.status),
            Err(e) => span.record("error.type", status_label(&Err(e.clone())).as_ref()),
        };
        result
    }

    /// With a cassette, answers from it (replay) or records the answer (record); the
    /// destination check applies either way.
    async fn fetch_or_replay(
        &self,
        dest: &Destinations,
        req: OutboundRequest,
        cancel: &CancellationToken,
    ) -> Result<OutboundResponse, OutboundError> {
        let Some(cassette) = &self.config.cassette else {
            return self.fetch_untraced(dest, req, cancel).await;
        };
        dest.check_url(&req.url).map_err(OutboundError::Denied)?;
        if let Some(answer) = cassette.answer(&req) {
            return answer;
        }
        // Recording: ask for an uncompressed answer, which can be searched for secrets.
        let mut req = req;
        req.headers.remove(reqwest::header::ACCEPT_ENCODING);
        let (key, redactor) = (Key::of(&req), req.redactor.clone());
        let result = self.fetch_untraced(dest, req, cancel).await;
        cassette.keep(key, &redactor, &result);
        result
    }

    async fn fetch_untraced(
        &self,
        dest: &Destinations,
        req: OutboundRequest,
        cancel: &CancellationToken,
    ) -> Result<OutboundResponse, OutboundError> {
        let mut attempt = 0u32;
        let mut rate_waits = 0u32;
        // One budget for every wait of this request (see `OutboundConfig::max_rate_limit_wait`).
        let max_wait = self.config.max_rate_limit_wait;
        let mut waited = Duration::ZERO;
        let paced = self.pace_key(&req);
        let metrics = sluice_telemetry::metrics();
        let host = req.url.host_str().unwrap_or("-");
        loop {
            attempt += 1;
            if let Some((key, interval)) = paced {
                let wait = self.pacer.reserve(key, interval, Instant::now());
                if !wait.is_zero() {
                    let t = Instant::now();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return Err(OutboundError::Cancelled),
                    }
                    waited = waited.saturating_add(t.elapsed());
                    metrics.rate_limit_wait(dest.label(), t.elapsed());
                }
            }
            let result = self.send_following_redirects(dest, &req, cancel).await;
            metrics.outbound_request(dest.label(), host, &status_label(&result));
            let mut rate_limited = false;
            let wait = match &result {
                Ok(resp) => {
                    if let Some(wait) = rate_limit_wait(resp, rate_waits) {
                        if waited.saturating_add(wait) > max_wait
                            || rate_waits >= self.config.max_rate_limit_waits
                        {
                            tracing::warn!(
                                status = resp.status,
                                url = %loggable_url(&req.url, &req.redactor),
                                wait_s = wait.as_secs(),
                                waited_s = waited.as_secs(),
                                max_wait_s = max_wait.as_secs(),
                                waits = rate_waits,
                                "rate limit wait would pass the request's wait budget; returning the response"
                            );
                            return result;
                        }
                        rate_waits += 1;
                        rate_limited = true;
                        attempt -= 1; // a rate-limit wait is not a failed attempt
                        tracing::info!(
                            status = resp.status,
                            url = %loggable_url(&req.url, &req.redactor),
                            wait_ms = wait.as_millis() as u64,
                            "rate limited; waiting"
                        );
                        wait
                    } else if is_retryable_status(resp.status)
                        && req.idempotent
                        && attempt < self.config.max_attempts
                    {
                        let wait =
                            retry_after(&resp.headers).unwrap_or_else(|| self.backoff(attempt));
                        if waited.saturating_add(wait) > max_wait {
                            // The same budget as rate-limit waits: the plugin gets the answer.
                            tracing::warn!(
                                status = resp.status,
                                url = %loggable_url(&req.url, &req.redactor),
                                wait_s = wait.as_secs(),
                                waited_s = waited.as_secs(),
                                max_wait_s = max_wait.as_secs(),
                                "retry wait would pass the request's wait budget; returning the response"
                            );
                            return result;
                        }
                        tracing::info!(
                            status = resp.status,
                            url = %loggable_url(&req.url, &req.redactor),
                            attempt,
                            wait_ms = wait.as_millis() as u64,
                            "upstream error; retrying"
                        );
                        wait
                    } else {
                        return result;
                    }
                }
                Err(OutboundError::Timeout | OutboundError::Connection(_))
                    if req.idempotent && attempt < self.config.max_attempts =>
                {
                    let wait = self.backoff(attempt);
                    let error = result
                        .as_ref()
                        .err()
                        .map(|e| req.redactor.redact_string(e.to_string()))
                        .unwrap_or_default();
                    if waited.saturating_add(wait) > max_wait {
                        tracing::warn!(%error, url = %loggable_url(&req.url, &req.redactor), attempt, waited_s = waited.as_secs(), "retry wait would pass the request's wait budget; returning the error");
                        return result;
                    }
                    tracing::info!(%error, url = %loggable_url(&req.url, &req.redactor), attempt, "transport error; retrying");
                    wait
                }
                Err(_) => return result,
            };
            let t = Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return Err(OutboundError::Cancelled),
            }
            waited = waited.saturating_add(t.elapsed());
            if rate_limited {
                metrics.rate_limit_wait(dest.label(), t.elapsed());
            } else {
                metrics.retry(dest.label(), t.elapsed());
            }
        }
    }

    /// The pacing key and spacing of a request an upstream limits per second without saying
    /// how long to wait (today: HubSpot search), keyed by origin and credential so that
    /// accounts do not slow each other down. The key is a hash kept in memory only.
    fn pace_key(&self, req: &OutboundRequest) -> Option<(u64, Duration)> {
        let interval = self.config.hubspot_search_interval;
        if interval.is_zero() || req.method != Method::POST || !is_hubspot_search(req.url.path()) {
            return None;
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        origin(&req.url).hash(&mut h);
        for (name, value) in &req.secret_headers {
            name.as_str().hash(&mut h);
            value.as_bytes().hash(&mut h);
        }
        Some((h.finish(), interval))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .config
            .backoff_base
            .saturating_mul(1 << attempt.min(10));
        let cap = cap.min(Duration::from_secs(30));
        cap.mul_f64(rand::random_range(0.5..=1.0))
    }

    async fn send_following_redirects(
        &self,
        dest: &Destinations,
        req: &OutboundRequest,
        cancel: &CancellationToken,
    ) -> Result<OutboundResponse, OutboundError> {
        let mut url = req.url.clone();
        let mut method = req.method.clone();
        let mut body = req.body.clone();
        let first_origin = origin(&url);
        for hop in 0..=self.config.max_redirects {
            let checked = match dest.check_url(&url) {
                Ok(()) => self.check_addresses(&url).await,
                Err(why) => Err(OutboundError::Denied(why)),
            };
            match checked {
                Ok(()) => {}
                // The upstream chose this destination, not the plugin's config: say so.
                Err(OutboundError::Denied(why)) if hop > 0 => {
                    return Err(OutboundError::Denied(upstream_sent(
                        &format!(
                            "redirected {} {} to {}",
                            req.method,
                            loggable_url(&req.url, &req.redactor),
                            loggable_url(&url, &req.redactor)
                        ),
                        &why,
                    )));
                }
                Err(e) => return Err(e),
            }
            let mut headers = req.headers.clone();
            if origin(&url) == first_origin {
                headers.extend(req.secret_headers.clone());
            }
            let mut builder = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers)
                .timeout(self.config.request_timeout);
            if let Some(b) = &body {
                builder = builder.body(b.clone());
            }
            let started = Instant::now();
            let send = async {
                let resp = builder.send().await.map_err(classify)?;
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = read_capped(resp, self.config.max_response_bytes).await?;
                Ok::<_, OutboundError>((status, headers, body))
            };
            let (status, headers, resp_body) = tokio::select! {
                r = send => r?,
                _ = cancel.cancelled() => return Err(OutboundError::Cancelled),
            };
            tracing::debug!(method = %method, url = %loggable_url(&url, &req.redactor), status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "upstream request");
            // With `max_redirects` 0 a redirect is the answer (the caller reads its status).
            if status.is_redirection()
                && self.config.max_redirects > 0
                && let Some(location) = headers.get(reqwest::header::LOCATION)
            {
                let location = location.to_str().map_err(|_| {
                    OutboundError::Connection("redirect location is not text".into())
                })?;
                url = url.join(location).map_err(|e| {
                    OutboundError::Connection(format!("bad redirect location: {e}"))
                })?;
                if status == StatusCode::SEE_OTHER
                    || ((status == StatusCode::MOVED_PERMANENTLY || status == StatusCode::FOUND)
                        && method == Method::POST)
                {
                    method = Method::GET;
                    body = None;
                }
                continue;
            }
            return Ok(OutboundResponse {
                status: status.as_u16(),
                headers: headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: resp_body,
            });
        }
        Err(OutboundError::Connection(format!(
            "more than {} redirects",
            self.config.max_redirects
        )))
    }

    /// Refuses IP-literal hosts and names that resolve to addresses the operator did not grant.
    /// (The client's resolver checks again at connect time, so a rebinding answer is refused too.)
    async fn check_addresses(&self, url: &Url) -> Result<(), OutboundError> {
        let grant = self.policy.addresses;
        let host = url
            .host()
            .ok_or_else(|| OutboundError::InvalidRequest("URL has no host".into()))?;
        let ips: Vec<IpAddr> = match host {
            url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
            url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
            url::Host::Domain(name) => {
                let port = url.port_or_known_default().unwrap_or(443);
                tokio::net::lookup_host((name, port))
                    .await
                    .map_err(|e| OutboundError::Connection(format!("cannot resolve {name}: {e}")))?
                    .map(|a| a.ip())
                    .collect()
            }
        };
        for ip in ips {
            if let Some(class) = grant.refuses(ip) {
                return Err(OutboundError::Denied(format!(
                    "{} resolves to a {class} address ({ip}){}",
                    origin(url),
                    grant_hint(grant, class, self.config.address_setting)
                )));
            }
        }
        Ok(())
    }
}

/// What would let a refused address class through: `; run with --allow-private-addresses
/// loopback to allow it` (the flag) or `; set SLUICE_ALLOW_PRIVATE_ADDRESSES=loopback …` (the
/// variable), keeping the classes already granted; link-local (cloud metadata) and
/// non-routable addresses are never granted.
fn grant_hint(grant: AddressGrant, class: &str, setting: &str) -> String {
    let loopback = grant.loopback || class == "loopback";
    let private = grant.private || class == "private";
    if class != "loopback" && class != "private" {
        return format!("; {class} addresses are never reachable");
    }
    let value = match (loopback, private) {
        (true, true) => "loopback,private",
        (true, false) => "loopback",
        _ => "private",
    };
    if setting.starts_with("--") {
        format!("; run with {setting} {value} to allow it")
    } else {
        format!("; set {setting}={value} to allow it")
    }
}

/// How every `denied` message about a destination the upstream chose (a redirect, a `Link`
/// header) begins. The SDKs read it to tell such a refusal (`internal`: an unexpected answer)
/// from one of a destination the plugin's config named (`invalid-config`).
pub const UPSTREAM_DENIED_PREFIX: &str = "the upstream ";

/// The `denied` message for a destination the upstream chose: `what` it did (e.g. `redirected
/// GET https://a/b to http://169.254.169.254/`) and `why` the host refused it. URLs in `what`
/// carry no query or credentials (see [`loggable_url`]).
pub fn upstream_sent(what: &str, why: &str) -> String {
    format!("{UPSTREAM_DENIED_PREFIX}{what}, which was not followed: {why}")
}

/// Resolves names for the client and drops addresses the operator did not grant.
struct CheckedResolver(AddressGrant);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let grant = self.0;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| grant.refuses(a.ip()).is_some()) {
                return Err(format!(
                    "{} resolves to a refused address ({})",
                    name.as_str(),
                    bad.ip()
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn classify(e: reqwest::Error) -> OutboundError {
    if e.is_timeout() {
        OutboundError::Timeout
    } else if e.is_builder() {
        OutboundError::InvalidRequest(e.to_string())
    } else {
        // The error chain carries the cause (refused, reset, DNS): show it, never headers.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        OutboundError::Connection(msg)
    }
}

async fn read_capped(mut resp: reqwest::Response, cap: u64) -> Result<Vec<u8>, OutboundError> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(OutboundError::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if body.len() as u64 + chunk.len() as u64 > cap {
            return Err(OutboundError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `status` label of an attempt: the HTTP status, or what went wrong.
fn status_label(
    result: &Result<OutboundResponse, OutboundError>,
) -> std::borrow::Cow<'static, str> {
    match result {
        Ok(resp) => resp.status.to_string().into(),
        Err(OutboundError::Denied(_)) => "denied".into(),
        Err(OutboundError::InvalidRequest(_)) => "invalid_request".into(),
        Err(OutboundError::Timeout) => "timeout".into(),
        Err(OutboundError::Connection(_)) => "connection_error".into(),
        Err(OutboundError::TooLarge(_)) => "too_large".into(),
        Err(OutboundError::Cancelled) => "cancelled".into(),
    }
}

fn is_retryable_status(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
}

/// `Retry-After` (RFC 9110 §10.2.3) as delay-seconds or an HTTP date, clamped to
/// [`MAX_HINTED_WAIT`]. Fractional seconds are accepted (some APIs send them); a negative,
/// non-finite or unparsable value is ignored, and a date in the past means no wait.
fn retry_after(headers: &[(String, String)]) -> Option<Duration> {
    let v = header(headers, "retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        let secs = secs.min(MAX_HINTED_WAIT.as_secs_f64());
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(MAX_HINTED_WAIT),
    )
}

/// How long to wait before retrying a rate-limited response, if it is one.
/// 429 always is; 403 is when the rate-limit headers say the budget is spent, or when the
/// body says a secondary rate limit was hit (GitHub, "Rate limits for the REST API": with no
/// `retry-after`, wait at least one minute, then back off exponentially).
/// Every header value is clamped before arithmetic, so no upstream value can overflow.
fn rate_limit_wait(resp: &OutboundResponse, waits_so_far: u32) -> Option<Duration> {
    let h = &resp.headers;
    let exhausted = header(h, "x-ratelimit-remaining") == Some("0");
    let secondary = resp.status == 403 && mentions_secondary_limit(&resp.body);
    let linear = matches!(resp.status, 200 | 400) && graphql_error_code(&resp.body, "RATELIMITED");
    let limited = resp.status == 429
        || linear
        || (resp.status == 403 && (exhausted || secondary || header(h, "retry-after").is_some()));
    if !limited {
        return None;
    }
    if let Some(d) = retry_after(h) {
        return Some(d.max(Duration::from_millis(100)));
    }
    if let Some(d) = linear_reset(h) {
        return Some(d);
    }
    if let Some(d) = hubspot_wait(resp) {
        return Some(d);
    }
    if exhausted
        && let Some(reset) = header(h, "x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok())
    {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let wait = if reset > 1_000_000_000_000 {
            Duration::from_millis(reset).saturating_sub(now)
        } else if reset > 1_000_000_000 {
            Duration::from_secs(reset).saturating_sub(now)
        } else {
            // Small values are seconds from now (Linear, HubSpot style).
            Duration::from_secs(reset)
        };
        return Some(
            wait.min(MAX_HINTED_WAIT)
                .saturating_add(Duration::from_secs(1)),
        );
    }
    // No hint: GitHub asks for at least a minute on secondary limits; elsewhere back off.
    let base: u64 = if resp.status == 403 { 60 } else { 1 };
    Some(Duration::from_secs(base << waits_so_far.min(6)))
}

/// GitHub's secondary-limit answers say so in their message (in the first few hundred bytes).
fn mentions_secondary_limit(body: &[u8]) -> bool {
    let head = &body[..body.len().min(1024)];
    String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .contains("secondary rate limit")
}

/// Whether the first 2 KiB of a body contain `needle` (error answers are short).
fn mentions(body: &[u8], needle: &str) -> bool {
    let head = &body[..body.len().min(2048)];
    head.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Whether a GraphQL answer (GraphQL over HTTP: `{"errors": [{"extensions": {"code": ...}}]}`)
/// carries an error with `code`. The body is parsed only when its head mentions the code, and
/// only `errors` counts: a data value that happens to equal the code (an issue label named
/// `RATELIMITED`) is data, not a rate limit.
fn graphql_error_code(body: &[u8], code: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        errors: Vec<GraphqlError>,
    }
    #[derive(serde::Deserialize)]
    struct GraphqlError {
        #[serde(default)]
        extensions: Option<Extensions>,
    }
    #[derive(serde::Deserialize)]
    struct Extensions {
        #[serde(default)]
        code: Option<String>,
    }
    if !mentions(body, &format!("\"{code}\"")) {
        return false;
    }
    serde_json::from_slice::<Answer>(body).is_ok_and(|a| {
        a.errors
            .iter()
            .any(|e| e.extensions.as_ref().and_then(|x| x.code.as_deref()) == Some(code))
    })
}

/// Linear ("Rate limiting", linear.app/developers): a `RATELIMITED` GraphQL error on HTTP 400
/// (or 200), with the request and complexity buckets' resets as epoch milliseconds in
/// `X-RateLimit-Requests-Reset` / `X-RateLimit-Complexity-Reset`. Waits for the reset of the
/// bucket that is spent (or the later of the two when neither says so).
fn linear_reset(h: &[(String, String)]) -> Option<Duration> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let reset = |bucket: &str| {
        let ms = header(h, &format!("x-ratelimit-{bucket}-reset"))?
            .parse::<u64>()
            .ok()?;
        let spent = header(h, &format!("x-ratelimit-{bucket}-remaining"))
            .and_then(|v| v.parse::<i64>().ok())
            .is_none_or(|left| left <= 0);
        Some((Duration::from_millis(ms).saturating_sub(now), spent))
    };
    let buckets: Vec<(Duration, bool)> = ["requests", "complexity"]
        .into_iter()
        .filter_map(reset)
        .collect();
    let spent = buckets.iter().filter(|(_, s)| *s).map(|(d, _)| *d).max();
    let any = buckets.iter().map(|(d, _)| *d).max();
    spent.or(any).map(|d| {
        d.min(MAX_HINTED_WAIT)
            .saturating_add(Duration::from_millis(100))
    })
}

/// HubSpot ("API usage guidelines", developers.hubspot.com): a 429 without `Retry-After`
/// whose body names the policy. `TEN_SECONDLY_ROLLING` waits the window that
/// `X-HubSpot-RateLimit-Interval-Milliseconds` gives (10 s); `SECONDLY` (search) one second;
/// `DAILY` until the next UTC day, which passes any sane wait cap, so the plugin gets the
/// answer.
fn hubspot_wait(resp: &OutboundResponse) -> Option<Duration> {
    if resp.status != 429 {
        return None;
    }
    let interval = header(&resp.headers, "x-hubspot-ratelimit-interval-milliseconds")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms).min(MAX_HINTED_WAIT));
    if mentions(&resp.body, "\"DAILY\"") {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        return Some(Duration::from_secs(86_400 - now % 86_400));
    }
    if mentions(&resp.body, "\"SECONDLY\"") {
        return Some(Duration::from_secs(1));
    }
    if mentions(&resp.body, "\"TEN_SECONDLY_ROLLING\"") {
        return Some(interval.unwrap_or(Duration::from_secs(10)));
    }
    interval
}

/// Whether `path` is a HubSpot CRM search endpoint: `/crm/v3/objects/{objectType}/search`
/// (or the dated `/crm/objects/{version}/{objectType}/search`).
pub fn is_hubspot_search(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    matches!(
        segments.as_slice(),
        ["", "crm", "v3", "objects", kind, "search"] | ["", "crm", "objects", _, kind, "search"]
            if !kind.is_empty()
    )
}

/// Next free send time per pacing key: each request takes the next slot and pushes it one
/// interval on, so concurrent requests of one key are spread out, not sent together.
#[derive(Debug, Default)]
struct Pacer {
    next: std::sync::Mutex<std::collections::HashMap<u64, Instant>>,
}

impl Pacer {
    /// Keys kept before slots in the past are dropped.
    const MAX_KEYS: usize = 1024;

    /// Reserves the next slot of `key` and returns how long to wait for it from `now`.
    fn reserve(&self, key: u64, interval: Duration, now: Instant) -> Duration {
        let Ok(mut next) = self.next.lock() else {
            return Duration::ZERO;
        };
        if next.len() >= Self::MAX_KEYS {
            next.retain(|_, at| *at > now);
        }
        let slot = next
            .get(&key)
            .copied()
            .filter(|at| *at > now)
            .unwrap_or(now);
        next.insert(key, slot + interval);
        slot - now
    }
}

/// Builds a header map from plugin-supplied pairs, refusing names the host owns, more than
/// [`MAX_REQUEST_HEADERS`] pairs or [`MAX_REQUEST_HEADER_BYTES`] bytes.
pub fn plugin_headers(pairs: &[(String, String)]) -> Result<HeaderMap, OutboundError> {
    if pairs.len() > MAX_REQUEST_HEADERS {
        return Err(OutboundError::InvalidRequest(format!(
            "{} headers; at most {MAX_REQUEST_HEADERS}",
            pairs.len()
        )));
    }
    let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_REQUEST_HEADER_BYTES {
        return Err(OutboundError::InvalidRequest(format!(
            "{bytes} bytes of headers; at most {MAX_REQUEST_HEADER_BYTES}"
        )));
    }
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| OutboundError::InvalidRequest(format!("bad header name {k:?}")))?;
        if matches!(
            name.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            return Err(OutboundError::InvalidRequest(format!(
                "header {k:?} is set by the host"
            )));
        }
        let value = HeaderValue::from_str(v)
            .map_err(|_| OutboundError::InvalidRequest(format!("bad value for header {k:?}")))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AddressGrant, HostRule, OperatorPolicy};

    fn resp(status: u16, headers: &[(&str, &str)]) -> OutboundResponse {
        OutboundResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: vec![],
        }
    }

    #[test]
    fn rate_limit_waits_follow_the_headers() {
        assert_eq!(
            rate_limit_wait(&resp(429, &[("retry-after", "3")]), 0),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            rate_limit_wait(&resp(200, &[("retry-after", "3")]), 0),
            None
        );
        assert_eq!(
            rate_limit_wait(&resp(403, &[]), 0),
            None,
            "a plain 403 is a permission error"
        );
        let reset = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 10;
        let w = rate_limit_wait(
            &resp(
                403,
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", &reset.to_string()),
                ],
            ),
            0,
        )
        .unwrap();
        assert!(
            w > Duration::from_secs(8) && w <= Duration::from_secs(12),
            "{w:?}"
        );
        assert_eq!(
            rate_limit_wait(&resp(429, &[]), 2),
            Some(Duration::from_secs(4))
        );
    }

    #[test]
    fn absurd_wait_headers_never_panic_and_are_clamped() {
        for v in [
            "1e20",
            "-5",
            "NaN",
            "inf",
            "18446744073709551616",
            "0.25",
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "garbage",
        ] {
            let w = rate_limit_wait(&resp(429, &[("retry-after", v)]), 0).unwrap();
            assert!(w <= MAX_HINTED_WAIT, "{v}: {w:?}");
            let _ = retry_after(&[("retry-after".into(), v.into())]);
        }
        assert_eq!(
            retry_after(&[("retry-after".into(), "1e20".into())]),
            Some(MAX_HINTED_WAIT)
        );
        assert_eq!(retry_after(&[("retry-after".into(), "-5".into())]), None);
        assert_eq!(
            retry_after(&[("retry-after".into(), "0.25".into())]),
            Some(Duration::from_millis(250))
        );
        for reset in ["18446744073709551615", "99999999999999", "0"] {
            let w = rate_limit_wait(
                &resp(
                    403,
                    &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset)],
                ),
                0,
            )
            .unwrap();
            assert!(
                w <= MAX_HINTED_WAIT + Duration::from_secs(1),
                "{reset}: {w:?}"
            );
        }
        assert!(rate_limit_wait(&resp(429, &[]), u32::MAX).is_some());
    }

    #[test]
    fn a_github_secondary_limit_waits_a_minute_then_backs_off() {
        // The exact shape GitHub documents: 403, remaining > 0, no retry-after, this message.
        let mut r = resp(
            403,
            &[
                ("x-ratelimit-remaining", "4987"),
                ("content-type", "application/json; charset=utf-8"),
            ],
        );
        r.body = br#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID 1234.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits","status":"403"}"#.to_vec();
        assert_eq!(rate_limit_wait(&r, 0), Some(Duration::from_secs(60)));
        assert_eq!(rate_limit_wait(&r, 1), Some(Duration::from_secs(120)));
        assert_eq!(rate_limit_wait(&r, 3), Some(Duration::from_secs(480)));
        // A retry-after, when present, wins.
        r.headers.push(("retry-after".into(), "30".into()));
        assert_eq!(rate_limit_wait(&r, 0), Some(Duration::from_secs(30)));
        // A permission 403 is no rate limit.
        let mut denied = resp(403, &[("x-ratelimit-remaining", "4987")]);
        denied.body = br#"{"message":"Resource not accessible by integration"}"#.to_vec();
        assert_eq!(rate_limit_wait(&denied, 0), None);
    }

    #[test]
    fn linear_ratelimited_errors_wait_for_the_spent_bucket() {
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // Linear's documented shape: HTTP 400, a GraphQL error with code RATELIMITED, and the
        // buckets' state in headers (resets in epoch milliseconds).
        let requests_reset = (now_ms + 5_000).to_string();
        let complexity_reset = (now_ms + 30_000).to_string();
        let mut r = resp(
            400,
            &[
                ("x-ratelimit-requests-limit", "1500"),
                ("x-ratelimit-requests-remaining", "0"),
                ("x-ratelimit-requests-reset", &requests_reset),
                ("x-ratelimit-complexity-limit", "250000"),
                ("x-ratelimit-complexity-remaining", "240000"),
                ("x-ratelimit-complexity-reset", &complexity_reset),
            ],
        );
        r.body = br#"{"errors":[{"message":"Rate limit exceeded","extensions":{"code":"RATELIMITED","type":"ratelimited","userPresentableMessage":"Rate limit exceeded."}}]}"#.to_vec();
        let w = rate_limit_wait(&r, 0).unwrap();
        assert!(
            w > Duration::from_secs(4) && w <= Duration::from_millis(5_200),
            "{w:?}"
        );
        // The same on a 200 (GraphQL errors can come with 200).
        r.status = 200;
        assert!(rate_limit_wait(&r, 0).is_some());
        // Other GraphQL errors are not rate limits.
        r.body =
            br#"{"errors":[{"message":"Entity not found","extensions":{"code":"INVALID_INPUT"}}]}"#
                .to_vec();
        assert_eq!(rate_limit_wait(&r, 0), None);
        // A page whose data holds the word (a label named RATELIMITED) is data, not a limit.
        r.body = br#"{"data":{"issueLabels":{"nodes":[{"id":"l1","name":"RATELIMITED","code":"RATELIMITED"}]}}}"#
            .to_vec();
        assert_eq!(rate_limit_wait(&r, 0), None);
    }

    #[test]
    fn slack_tier_limits_wait_for_retry_after() {
        // Slack's documented answer for every tier: 429 with Retry-After in seconds.
        let mut r = resp(
            429,
            &[
                ("retry-after", "30"),
                ("content-type", "application/json; charset=utf-8"),
            ],
        );
        r.body = br#"{"ok":false,"error":"ratelimited"}"#.to_vec();
        assert_eq!(rate_limit_wait(&r, 0), Some(Duration::from_secs(30)));
    }

    #[test]
    fn hubspot_429s_wait_by_policy() {
        // HubSpot's documented 429 body, no Retry-After.
        let body = |policy: &str| {
            format!(r#"{{"status":"error","message":"You have reached your {} limit.","errorType":"RATE_LIMIT","correlationId":"c0ffee00-0000-4000-8000-000000000000","policyName":"{policy}","groupName":"api-calls"}}"#, policy.to_lowercase()).into_bytes()
        };
        let mut r = resp(
            429,
            &[
                ("x-hubspot-ratelimit-interval-milliseconds", "10000"),
                ("x-hubspot-ratelimit-max", "100"),
                ("x-hubspot-ratelimit-remaining", "0"),
            ],
        );
        r.body = body("TEN_SECONDLY_ROLLING");
        assert_eq!(rate_limit_wait(&r, 0), Some(Duration::from_secs(10)));
        r.body = body("SECONDLY");
        assert_eq!(rate_limit_wait(&r, 0), Some(Duration::from_secs(1)));
        r.body = body("DAILY");
        let daily = rate_limit_wait(&r, 0).unwrap();
        assert!(daily <= Duration::from_secs(86_400), "{daily:?}");
    }

    #[test]
    fn hubspot_search_is_paced_per_key() {
        assert!(is_hubspot_search("/crm/v3/objects/contacts/search"));
        assert!(is_hubspot_search("/crm/v3/objects/0-3/search"));
        assert!(is_hubspot_search("/crm/objects/2026-03/deals/search"));
        assert!(!is_hubspot_search("/crm/v3/objects/contacts"));
        assert!(!is_hubspot_search("/crm/v3/objects//search"));
        assert!(!is_hubspot_search("/search"));
        let pacer = Pacer::default();
        let now = Instant::now();
        let step = Duration::from_millis(200);
        assert_eq!(pacer.reserve(1, step, now), Duration::ZERO);
        assert_eq!(pacer.reserve(1, step, now), step);
        assert_eq!(pacer.reserve(1, step, now), step * 2);
        assert_eq!(
            pacer.reserve(2, step, now),
            Duration::ZERO,
            "another account"
        );
        let later = now + Duration::from_secs(5);
        assert_eq!(pacer.reserve(1, step, later), Duration::ZERO, "an idle key");
        for key in 10..(10 + Pacer::MAX_KEYS as u64) {
            pacer.reserve(key, step, later);
        }
        assert!(pacer.next.lock().unwrap().len() <= Pacer::MAX_KEYS + 1);
    }

    #[test]
    fn header_counts_and_sizes_are_bounded() {
        let many: Vec<(String, String)> = (0..40_000)
            .map(|i| (format!("x-h-{i}"), "v".to_string()))
            .collect();
        assert!(matches!(
            plugin_headers(&many),
            Err(OutboundError::InvalidRequest(_))
        ));
        let big = vec![("x-big".to_string(), "v".repeat(MAX_REQUEST_HEADER_BYTES))];
        assert!(plugin_headers(&big).is_err());
        let ok: Vec<(String, String)> = (0..MAX_REQUEST_HEADERS)
            .map(|i| (format!("x-h-{i}"), "v".to_string()))
            .collect();
        assert_eq!(plugin_headers(&ok).unwrap().len(), MAX_REQUEST_HEADERS);
    }

    /// An upstream that answers every path the same hostile way, counting the requests.
    async fn hostile_upstream() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::http::{HeaderMap as H, StatusCode as S};
        use std::sync::atomic::{AtomicUsize, Ordering};
        async fn answer(
            axum::extract::State(served): axum::extract::State<Arc<AtomicUsize>>,
            axum::extract::Path(mode): axum::extract::Path<String>,
        ) -> (S, H, &'static str) {
            served.fetch_add(1, Ordering::SeqCst);
            let mut h = H::new();
            let status = match mode.as_str() {
                "ra-1" => {
                    h.insert("retry-after", "1".parse().unwrap());
                    S::TOO_MANY_REQUESTS
                }
                "ra-date" => {
                    let at = SystemTime::now() + Duration::from_secs(2);
                    h.insert("retry-after", httpdate::fmt_http_date(at).parse().unwrap());
                    S::TOO_MANY_REQUESTS
                }
                "ra-negative" => {
                    h.insert("retry-after", "-3".parse().unwrap());
                    S::TOO_MANY_REQUESTS
                }
                "503-ra-1" => {
                    h.insert("retry-after", "1".parse().unwrap());
                    S::SERVICE_UNAVAILABLE
                }
                "redirect-meta" => {
                    h.insert(
                        "location",
                        "http://169.254.169.254/latest/meta-data?token=abc"
                            .parse()
                            .unwrap(),
                    );
                    S::FOUND
                }
                _ => S::OK,
            };
            (status, h, "{}")
        }
        let served = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route("/{mode}", axum::routing::get(answer))
            .with_state(served.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), served)
    }

    fn loopback(base: &str, config: OutboundConfig) -> (Outbound, Destinations) {
        let policy = OperatorPolicy {
            allow: OperatorPolicy::parse_allow("*").unwrap(),
            addresses: AddressGrant::parse("loopback").unwrap(),
        };
        let outbound = Outbound::new(policy, config).unwrap();
        let dest = outbound.destinations(&[HostRule::parse(base).unwrap()], &serde_json::json!({}));
        (outbound, dest)
    }

    fn get(url: &str) -> OutboundRequest {
        OutboundRequest {
            method: Method::GET,
            url: Url::parse(url).unwrap(),
            headers: HeaderMap::new(),
            secret_headers: HeaderMap::new(),
            body: None,
            idempotent: true,
            redactor: Redactor::default(),
        }
    }

    #[tokio::test]
    async fn all_waits_of_one_request_share_one_budget() {
        use std::sync::atomic::Ordering;
        let (base, served) = hostile_upstream().await;
        let budget = Duration::from_millis(2500);
        let (out, dest) = loopback(
            &base,
            OutboundConfig {
                max_rate_limit_wait: budget,
                ..OutboundConfig::default()
            },
        );
        let cancel = CancellationToken::new();
        // (mode, status handed back, most requests the budget allows)
        for (mode, status, most) in [
            // 1 s waits: two fit in 2.5 s (twenty did, one request waited 20 s).
            ("ra-1", 429, 3),
            // An HTTP date 1–2 s ahead: at most two waits.
            ("ra-date", 429, 3),
            // A negative value is no hint: backoff 1 s, then 2 s would pass the budget.
            ("ra-negative", 429, 2),
            // A 5xx with Retry-After: the same budget (it was five attempts, four waits).
            ("503-ra-1", 503, 3),
        ] {
            served.store(0, Ordering::SeqCst);
            let t = Instant::now();
            let resp = out
                .fetch(&dest, get(&format!("{base}/{mode}")), &cancel)
                .await
                .unwrap();
            let took = t.elapsed();
            assert_eq!(resp.status, status, "{mode}");
            assert!(
                took < budget + Duration::from_millis(700),
                "{mode}: the request took {took:?}, past its {budget:?} wait budget"
            );
            let n = served.load(Ordering::SeqCst);
            assert!(n >= 2 && n <= most, "{mode}: {n} requests");
        }
        // Transport errors back off within the same budget: a closed port, 0.4 s base (backoffs
        // of 0.4–0.8, 0.8–1.6, 1.6–3.2, 3.2–6.4 s: 6 s at least without the budget).
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let base = format!("http://127.0.0.1:{port}");
        let (out, dest) = loopback(
            &base,
            OutboundConfig {
                max_rate_limit_wait: Duration::from_secs(1),
                backoff_base: Duration::from_millis(400),
                ..OutboundConfig::default()
            },
        );
        let t = Instant::now();
        let e = out.fetch(&dest, get(&format!("{base}/x")), &cancel).await;
        assert!(matches!(e, Err(OutboundError::Connection(_))), "{e:?}");
        assert!(
            t.elapsed() < Duration::from_millis(1700),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn a_refused_redirect_says_the_upstream_sent_it_and_shows_no_query() {
        let (base, _) = hostile_upstream().await;
        let (out, dest) = loopback(&base, OutboundConfig::default());
        let e = out
            .fetch(
                &dest,
                get(&format!("{base}/redirect-meta?api_key=k")),
                &CancellationToken::new(),
            )
            .await;
        let Err(OutboundError::Denied(why)) = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            why,
            format!(
                "the upstream redirected GET {base}/redirect-meta?… to \
                 http://169.254.169.254/latest/meta-data?…, which was not followed: \
                 http://169.254.169.254:80 is not declared by the plugin"
            )
        );
        assert!(why.starts_with(UPSTREAM_DENIED_PREFIX));
        // The plugin's own undeclared destination stays a plain refusal (its config's doing).
        let e = out
            .fetch(
                &dest,
                get("http://169.254.169.254/latest"),
                &CancellationToken::new(),
            )
            .await;
        assert!(
            matches!(&e, Err(OutboundError::Denied(why)) if !why.starts_with(UPSTREAM_DENIED_PREFIX)),
            "{e:?}"
        );
    }

    #[test]
    fn host_owned_headers_are_refused() {
        assert!(plugin_headers(&[("Host".into(), "evil".into())]).is_err());
        assert!(plugin_headers(&[("accept".into(), "application/json".into())]).is_ok());
    }
}
