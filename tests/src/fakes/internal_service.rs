//! The reference implementation of an internal service (`docs/internal-service-protocol.yaml`):
//! the token-exchange protocol (exchange, revoke, health) behind a shared secret, and a small
//! purchase-order data API that accepts exactly the keys it issued and has not revoked.
//!
//! [`Faults`] make it break the protocol in the ways `sluice service check` must catch (wrong
//! status for a wrong secret, TTL ignored, revoke not idempotent, revoked keys still working)
//! and the ways Sluice must cope with (slow or failing answers, answers that are not tokens,
//! users it refuses).
//!
//! Routes:
//! - `POST /api/internal/token-exchange`, `POST /api/internal/token-revoke`,
//!   `GET /api/internal/health` (Bearer shared secret)
//! - `GET /api/me` → `{email, token_id}`; `GET /api/purchase-orders?page=N` →
//!   `{data: [...], next: url|null}`, 50 a page (Bearer issued key; 401 otherwise)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Rng;

/// Purchase orders a page holds.
pub const PAGE_SIZE: usize = 50;

/// Ways to break the protocol.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer a wrong shared secret with this status instead of 401.
    pub wrong_secret_status: Option<u16>,
    /// Issue every key for 90 days, whatever `ttl_days` asks.
    pub ignore_ttl: bool,
    /// Answer 404 to a revoke of a token already revoked (or unknown).
    pub revoke_not_idempotent: bool,
    /// Keep accepting revoked keys on the data API.
    pub revoked_key_works: bool,
    /// Sleep this long before answering `health`.
    pub health_delay: Option<Duration>,
    /// Sleep this long before answering `token-exchange` (after issuing the key).
    pub exchange_delay: Option<Duration>,
    /// Issue the key but answer without `api_key` (the token must then be revoked by the caller).
    pub malformed_exchange: bool,
    /// Answer `token-exchange` with this status (and issue nothing).
    pub exchange_status: Option<u16>,
    /// Users refused with 403.
    pub refused_users: Vec<String>,
    /// Accept calls that carry no `Authorization` at all (only a wrong secret is refused).
    pub no_auth_accepted: bool,
    /// Use the key itself as `token_id` (a shortcut that would put the key in audit logs).
    pub token_id_is_key: bool,
    /// A refusal's `detail` quotes the shared secret after 175 characters of text (so that it
    /// straddles a 200-character cut).
    pub refusal_echoes_secret: bool,
    /// Every protocol call answers 307 to this URL (after the secret check).
    pub redirect_to: Option<String>,
    /// `health` answers 200 with a plain-text `OK` instead of `{"status": "ok"}`.
    pub health_not_json: bool,
    /// `token-revoke` answers 200 with this instead of `{"status": "ok"}`, and revokes nothing
    /// (a single sign-on proxy in front of the service, or a service that failed).
    pub revoke_answer: Option<BadAnswer>,
    /// `token-exchange` answers 200 with this instead of a token, and issues nothing.
    pub exchange_answer: Option<BadAnswer>,
    /// `health` answers 200 with this instead of `{"status": "ok"}`.
    pub health_answer: Option<BadAnswer>,
}

/// A 200 answer that is not the protocol's success shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadAnswer {
    /// A `text/html` single sign-on login page.
    Html,
    /// `{"status": "error", "detail": …}`.
    StatusError,
    /// `{}`: JSON without `status`.
    NoStatus,
    /// No body at all.
    Empty,
    /// `OK` as `text/plain`.
    Text,
}

impl BadAnswer {
    /// Parses `html`, `status-error`, `no-status`, `empty` or `text`.
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "html" => Self::Html,
            "status-error" => Self::StatusError,
            "no-status" => Self::NoStatus,
            "empty" => Self::Empty,
            "text" => Self::Text,
            _ => {
                return Err(format!(
                    "{name:?}: expected html, status-error, no-status, empty or text"
                ));
            }
        })
    }

    /// The 200 answer.
    pub fn response(self) -> Response {
        use axum::http::header::CONTENT_TYPE;
        match self {
            Self::Html => (
                [(CONTENT_TYPE, "text/html; charset=utf-8")],
                "<!doctype html><html><head><title>Sign in</title></head><body><form action=\"/sso/login\" method=\"post\"><input name=\"user\"></form></body></html>",
            )
                .into_response(),
            Self::StatusError => {
                axum::Json(json!({"status": "error", "detail": "the request failed"})).into_response()
            }
            Self::NoStatus => axum::Json(json!({})).into_response(),
            Self::Empty => StatusCode::OK.into_response(),
            Self::Text => ([(CONTENT_TYPE, "text/plain")], "OK").into_response(),
        }
    }
}

impl Faults {
    /// Parses a fault name as the `reference-service` binary takes it: `wrong-secret-status=403`,
    /// `ignore-ttl`, `revoke-not-idempotent`, `revoked-key-works`, `slow-health=MS`,
    /// `slow-exchange=MS`, `malformed-exchange`, `exchange-status=500`, `refuse-user=EMAIL`,
    /// `no-auth-accepted`, `token-id-is-key`, `refusal-echoes-secret`, `redirect-to=URL`,
    /// `health-not-json`, and `revoke-answers=KIND`, `exchange-answers=KIND`,
    /// `health-answers=KIND` with a [`BadAnswer`] kind (`html`, `status-error`, `no-status`,
    /// `empty`, `text`).
    pub fn apply(&mut self, spec: &str) -> Result<(), String> {
        let (name, value) = spec.split_once('=').unwrap_or((spec, ""));
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{spec}: expected a number"))
        };
        match name {
            "wrong-secret-status" => self.wrong_secret_status = Some(num()? as u16),
            "ignore-ttl" => self.ignore_ttl = true,
            "revoke-not-idempotent" => self.revoke_not_idempotent = true,
            "revoked-key-works" => self.revoked_key_works = true,
            "slow-health" => self.health_delay = Some(Duration::from_millis(num()?)),
            "slow-exchange" => self.exchange_delay = Some(Duration::from_millis(num()?)),
            "malformed-exchange" => self.malformed_exchange = true,
            "exchange-status" => self.exchange_status = Some(num()? as u16),
            "refuse-user" => self.refused_users.push(value.to_string()),
            "no-auth-accepted" => self.no_auth_accepted = true,
            "token-id-is-key" => self.token_id_is_key = true,
            "refusal-echoes-secret" => self.refusal_echoes_secret = true,
            "redirect-to" => self.redirect_to = Some(value.to_string()),
            "health-not-json" => self.health_not_json = true,
            "revoke-answers" => self.revoke_answer = Some(BadAnswer::parse(value)?),
            "exchange-answers" => self.exchange_answer = Some(BadAnswer::parse(value)?),
            "health-answers" => self.health_answer = Some(BadAnswer::parse(value)?),
            _ => return Err(format!("unknown fault {name:?}")),
        }
        Ok(())
    }
}

/// An issued key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token_id: String,
    pub api_key: String,
    pub user_email: String,
    pub expires_at: OffsetDateTime,
    pub revoked: bool,
}

struct Inner {
    secret: String,
    /// Changed while serving by [`ReferenceService::set_faults`].
    faults: std::sync::RwLock<Faults>,
    orders: Vec<Value>,
    base: String,
    tokens: Mutex<HashMap<String, Issued>>,
    rng: Mutex<Rng>,
    exchanges: AtomicU64,
    revokes: AtomicU64,
    data_requests: AtomicU64,
}

/// A running reference service.
#[derive(Clone)]
pub struct ReferenceService {
    pub url: String,
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl ReferenceService {
    /// Serves on an ephemeral loopback port: `orders` purchase orders, `secret` as the shared
    /// secret.
    pub async fn start(secret: &str, orders: usize, faults: Faults) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(listener, secret, orders, faults)
    }

    /// Serves on `listener`.
    pub fn serve(
        listener: tokio::net::TcpListener,
        secret: &str,
        orders: usize,
        faults: Faults,
    ) -> Self {
        let addr = listener.local_addr().expect("addr");
        let url = format!("http://{addr}");
        let inner = Arc::new(Inner {
            secret: secret.to_string(),
            faults: std::sync::RwLock::new(faults),
            orders: purchase_orders(orders),
            base: url.clone(),
            tokens: Mutex::new(HashMap::new()),
            rng: Mutex::new(Rng::new(
                OffsetDateTime::now_utc().unix_timestamp_nanos() as u64
            )),
            exchanges: AtomicU64::new(0),
            revokes: AtomicU64::new(0),
            data_requests: AtomicU64::new(0),
        });
        let app = router(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, addr, inner }
    }

    /// Misbehaves as `faults` say from now on (e.g. a proxy in front of it is fixed).
    pub fn set_faults(&self, faults: Faults) {
        *self.inner.faults.write().unwrap() = faults;
    }

    /// The purchase orders the data API serves (what a full sync brings).
    pub fn orders(&self) -> &[Value] {
        &self.inner.orders
    }

    /// Every key issued so far, by token id.
    pub fn issued(&self) -> HashMap<String, Issued> {
        self.inner.tokens.lock().unwrap().clone()
    }

    pub fn exchanges(&self) -> u64 {
        self.inner.exchanges.load(Ordering::Relaxed)
    }

    pub fn revokes(&self) -> u64 {
        self.inner.revokes.load(Ordering::Relaxed)
    }

    pub fn data_requests(&self) -> u64 {
        self.inner.data_requests.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn faults(&self) -> Faults {
        self.faults.read().unwrap().clone()
    }
}

fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/api/internal/token-exchange", post(exchange))
        .route("/api/internal/token-revoke", post(revoke))
        .route("/api/internal/health", get(health))
        .route("/api/me", get(me))
        .route("/api/purchase-orders", get(orders))
        .with_state(inner)
}

fn purchase_orders(n: usize) -> Vec<Value> {
    let mut rng = Rng::new(42);
    let suppliers = ["Acme", "Globex", "Initech", "Umbrella", "Stark"];
    let statuses = ["draft", "approved", "received", "paid"];
    (1..=n)
        .map(|i| {
            json!({
                "id": format!("po-{i:05}"),
                "number": i,
                "supplier": rng.pick(&suppliers),
                "amount": (rng.below(1_000_000) as f64) / 100.0,
                "currency": "EUR",
                "status": rng.pick(&statuses),
                "updated_at": format!("2026-01-{:02}T10:00:00Z", 1 + i % 28),
            })
        })
        .collect()
}

fn error(status: StatusCode, detail: &str) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "detail": detail})),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// A 307 to `to`.
fn redirect(to: &str) -> Response {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(axum::http::header::LOCATION, to.to_string())],
    )
        .into_response()
}

/// A refusal: its status and detail (a small `Err`, turned into the answer by the handler).
struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// `Err` with the answer for a missing or wrong shared secret.
fn require_secret(s: &Inner, headers: &HeaderMap) -> Result<(), Refusal> {
    let f = s.faults();
    if bearer(headers) == Some(s.secret.as_str()) {
        return Ok(());
    }
    if f.no_auth_accepted && headers.get("authorization").is_none() {
        return Ok(());
    }
    let status = f
        .wrong_secret_status
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::UNAUTHORIZED);
    Err(Refusal(status, "invalid shared secret"))
}

/// The token of a valid issued key, or the 401.
fn require_key(s: &Inner, headers: &HeaderMap) -> Result<Issued, Refusal> {
    let f = s.faults();
    s.data_requests.fetch_add(1, Ordering::Relaxed);
    let key = bearer(headers).ok_or(Refusal(StatusCode::UNAUTHORIZED, "no API key"))?;
    let tokens = s.tokens.lock().unwrap();
    let t = tokens
        .values()
        .find(|t| t.api_key == key)
        .ok_or(Refusal(StatusCode::UNAUTHORIZED, "unknown API key"))?;
    if t.revoked && !f.revoked_key_works {
        return Err(Refusal(StatusCode::UNAUTHORIZED, "revoked API key"));
    }
    if t.expires_at <= OffsetDateTime::now_utc() {
        return Err(Refusal(StatusCode::UNAUTHORIZED, "expired API key"));
    }
    Ok(t.clone())
}

async fn exchange(State(s): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    if let Err(r) = require_secret(&s, &headers) {
        return r.into_response();
    }
    let f = s.faults();
    s.exchanges.fetch_add(1, Ordering::Relaxed);
    if let Some(to) = &f.redirect_to {
        return redirect(to);
    }
    if let Some(bad) = f.exchange_answer {
        return bad.response();
    }
    if let Some(code) = f.exchange_status {
        return error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "exchange failed",
        );
    }
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let (Some(email), Some(ttl)) = (
        req["user_email"].as_str().filter(|e| e.contains('@')),
        req["ttl_days"].as_u64().filter(|t| (1..=3650).contains(t)),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "user_email and ttl_days (1-3650) are required",
        );
    };
    if f.refused_users.iter().any(|u| u == email) {
        if f.refusal_echoes_secret {
            let detail = format!("{} {}", "p".repeat(175), s.secret);
            return error(StatusCode::FORBIDDEN, &detail);
        }
        // Names the user, as services do ("user … is disabled"): not a secret.
        return error(StatusCode::FORBIDDEN, &format!("user {email} is disabled"));
    }
    let ttl = if f.ignore_ttl { 90 } else { ttl };
    let (token_id, api_key) = {
        let mut rng = s.rng.lock().unwrap();
        (
            format!("tok_{:016x}", rng.next_u64()),
            format!("po_live_{:016x}{:016x}", rng.next_u64(), rng.next_u64()),
        )
    };
    let token_id = if f.token_id_is_key {
        api_key.clone()
    } else {
        token_id
    };
    let expires_at = OffsetDateTime::now_utc() + time::Duration::days(ttl as i64);
    s.tokens.lock().unwrap().insert(
        token_id.clone(),
        Issued {
            token_id: token_id.clone(),
            api_key: api_key.clone(),
            user_email: email.to_string(),
            expires_at,
            revoked: false,
        },
    );
    if let Some(d) = f.exchange_delay {
        tokio::time::sleep(d).await;
    }
    let expires = expires_at.format(&Rfc3339).unwrap();
    if f.malformed_exchange {
        return axum::Json(json!({"status": "ok", "token_id": token_id, "expires_at": expires}))
            .into_response();
    }
    axum::Json(
        json!({"status": "ok", "api_key": api_key, "token_id": token_id, "expires_at": expires}),
    )
    .into_response()
}

async fn revoke(State(s): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    if let Err(r) = require_secret(&s, &headers) {
        return r.into_response();
    }
    let f = s.faults();
    s.revokes.fetch_add(1, Ordering::Relaxed);
    if let Some(to) = &f.redirect_to {
        return redirect(to);
    }
    let Some(token_id) = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["token_id"].as_str().map(str::to_string))
    else {
        return error(StatusCode::BAD_REQUEST, "token_id is required");
    };
    if let Some(bad) = f.revoke_answer {
        return bad.response();
    }
    let mut tokens = s.tokens.lock().unwrap();
    let live = tokens.get_mut(&token_id).filter(|t| !t.revoked);
    match live {
        Some(t) => t.revoked = true,
        None if f.revoke_not_idempotent => {
            return error(StatusCode::NOT_FOUND, "no such live token");
        }
        None => {}
    }
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn health(State(s): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if let Err(r) = require_secret(&s, &headers) {
        return r.into_response();
    }
    let f = s.faults();
    if let Some(d) = f.health_delay {
        tokio::time::sleep(d).await;
    }
    if let Some(to) = &f.redirect_to {
        return redirect(to);
    }
    if f.health_not_json {
        return "OK".into_response();
    }
    if let Some(bad) = f.health_answer {
        return bad.response();
    }
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn me(State(s): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    match require_key(&s, &headers) {
        Ok(t) => axum::Json(json!({"email": t.user_email, "token_id": t.token_id})).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn orders(
    State(s): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = require_key(&s, &headers) {
        return r.into_response();
    }
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let start = page * PAGE_SIZE;
    let data: Vec<Value> = s
        .orders
        .iter()
        .skip(start)
        .take(PAGE_SIZE)
        .cloned()
        .collect();
    let next = (start + PAGE_SIZE < s.orders.len())
        .then(|| format!("{}/api/purchase-orders?page={}", s.base, page + 1));
    axum::Json(json!({"data": data, "next": next})).into_response()
}
