//! The service token check, in constant time.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;

/// The expected token, kept only as a digest.
pub struct Token([u8; 32]);

impl Token {
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Compares digests so neither the content nor the length of the token leaks in timing.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let d: [u8; 32] = Sha256::digest(presented).into();
        d.ct_eq(&self.0).into()
    }
}

/// Rejects a request to `/internal` or below, or to `/metrics` unless it is public, without the
/// right `x-connect-service-token` (401, the inherited body). Other paths pass.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let guarded = path == "/internal"
        || path.starts_with("/internal/")
        || (path == "/metrics" && !state.metrics_public);
    if !guarded {
        return next.run(req).await;
    }
    // Exactly one token header, and the right one: a request that carries a wrong one beside
    // it is refused too.
    let mut presented = req.headers().get_all("x-connect-service-token").iter();
    let ok = match (presented.next(), presented.next()) {
        (Some(v), None) => state.token.matches(v.as_bytes()),
        _ => false,
    };
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"detail": "Invalid connect service token"})),
        )
            .into_response();
    }
    next.run(req).await
}
