//! The conformance checker (`sluice service check`): runs the protocol against a service the
//! way Sluice will, and names each check that fails.
//!
//! Checks, in order (a check whose input an earlier failure took away is skipped, which fails
//! the run too):
//! 1. `health` — `GET health` with the secret answers 2xx with `{"status": "ok"}`.
//! 2. `wrong_secret_rejected` — exchange, revoke and health with a wrong secret answer 401.
//! 3. `exchange` — an exchange answers 200/201 with `api_key`, `token_id`, `expires_at`.
//! 4. `ttl_honoured` — `expires_at` is the asked `ttl_days` after the request (± 1 hour),
//!    for 30 days and for 1 day.
//! 5. `key_accepted` — the data API (`GET {probe_path}`) accepts the key (2xx).
//! 6. `revoke` — revoking the token answers 2xx with `{"status": "ok"}`.
//! 7. `revoke_idempotent` — revoking it again answers the same.
//!
//! Every answer is held to the success shape Sluice holds it to (`protocol`); a redirect is
//! reported as one, never followed.
//! 8. `revoked_key_rejected` — the data API refuses the revoked key (401 or 403).

use std::time::Instant;

use reqwest::Method;
use serde::Serialize;
use time::OffsetDateTime;
use url::Url;

use crate::client::{Reply, ServiceClient};
use crate::protocol::{
    self, EXCHANGE_PATH, ExchangeRequest, HEALTH_PATH, IssuedToken, REVOKE_PATH, RevokeRequest,
};
use crate::secret::SharedSecret;

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckTarget {
    pub base_url: Url,
    pub secret: SharedSecret,
    /// A data API path (relative to `base_url`) that must accept an issued key as
    /// `Authorization: Bearer …`, e.g. `api/me`.
    pub probe_path: String,
    /// The user the test keys are issued for.
    pub user_email: String,
}

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not run: an earlier failure left it nothing to check.
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub outcome: Outcome,
    /// What was seen (on failure: what was expected instead).
    pub detail: String,
    pub ms: u64,
}

/// Every check's result, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome == Outcome::Pass)
    }
}

struct Run<'a> {
    client: &'a ServiceClient,
    target: &'a CheckTarget,
    wrong: SharedSecret,
    checks: Vec<CheckResult>,
}

impl Run<'_> {
    fn record(
        &mut self,
        name: &'static str,
        started: Instant,
        result: Result<String, String>,
    ) -> bool {
        let ms = started.elapsed().as_millis() as u64;
        let (outcome, detail) = match result {
            Ok(d) => (Outcome::Pass, d),
            Err(d) => (Outcome::Fail, d),
        };
        self.checks.push(CheckResult {
            name,
            outcome,
            detail,
            ms,
        });
        outcome == Outcome::Pass
    }

    fn skip(&mut self, name: &'static str, why: &str) {
        self.checks.push(CheckResult {
            name,
            outcome: Outcome::Skip,
            detail: format!("skipped: {why}"),
            ms: 0,
        });
    }

    async fn call(
        &self,
        secret: &str,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Reply, String> {
        self.client
            .send(&self.target.base_url, secret, method, path, body, false)
            .await
            .map_err(|e| format!("{path}: {e}"))
    }

    async fn exchange(&self, ttl_days: u32) -> Result<(IssuedToken, OffsetDateTime), String> {
        let sent_at = OffsetDateTime::now_utc();
        let body = ExchangeRequest {
            user_email: &self.target.user_email,
            ttl_days,
        };
        let r = self
            .call(
                self.target.secret.expose(),
                Method::POST,
                EXCHANGE_PATH,
                Some(&body),
            )
            .await?;
        if !matches!(r.status, 200 | 201) {
            // What a 2xx named is revoked before reporting, as Sluice does.
            if (200..300).contains(&r.status) {
                let expected = protocol::Expected {
                    secret: self.target.secret.expose(),
                    ttl_days: None,
                };
                let m = protocol::unexpected_success(r.status, &r.body, sent_at, &expected);
                if let Some(token_id) = &m.token_id {
                    let _ = self.revoke(token_id).await;
                }
            }
            return Err(format!(
                "token-exchange answered {}, expected 200",
                protocol::describe_status(r.status, r.location.as_deref())
            ));
        }
        let expected = protocol::Expected {
            secret: self.target.secret.expose(),
            ttl_days: None,
        };
        match protocol::parse_issued(&r.body, sent_at, &expected) {
            Ok(t) => Ok((t, sent_at)),
            Err(m) => {
                // What the service may have issued is revoked before reporting.
                if let Some(token_id) = &m.token_id {
                    let _ = self.revoke(token_id).await;
                }
                Err(format!("token-exchange answer: {}", m.reason))
            }
        }
    }

    /// `path` with no `Authorization` header at all.
    async fn call_without_auth(&self, path: &str, body: &impl Serialize) -> Result<Reply, String> {
        self.client
            .send_unauthenticated(&self.target.base_url, Method::POST, path, Some(body))
            .await
            .map_err(|e| format!("{path}: {e}"))
    }

    async fn revoke(&self, token_id: &str) -> Result<Reply, String> {
        let body = RevokeRequest { token_id };
        self.call(
            self.target.secret.expose(),
            Method::POST,
            REVOKE_PATH,
            Some(&body),
        )
        .await
    }

    async fn probe(&self, key: &str) -> Result<u16, String> {
        let path = self.target.probe_path.trim_start_matches('/').to_string();
        Ok(self
            .call(key, Method::GET, &path, None::<&()>)
            .await?
            .status)
    }
}

/// A revoke's answer as the checker reports it: 2xx with `{"status": "ok"}` passes.
fn revoke_ok(r: &Reply, what: &str) -> Result<String, String> {
    if (200..300).contains(&r.status) && protocol::is_ok_body(&r.body) {
        Ok(format!("HTTP {}", r.status))
    } else if (200..300).contains(&r.status) {
        Err(format!(
            "{what} answered HTTP {} without {{\"status\": \"ok\"}}: {}; Sluice reports such a revoke failed (502 service_bad_answer)",
            r.status,
            protocol::describe_answer(r.content_type.as_deref(), &r.body)
        ))
    } else {
        Err(format!(
            "{what} answered {}, expected 200",
            protocol::describe_status(r.status, r.location.as_deref())
        ))
    }
}

fn ttl_check(issued: &IssuedToken, sent_at: OffsetDateTime, ttl_days: u32) -> Result<(), String> {
    protocol::check_ttl(issued.expires_at, sent_at, ttl_days)
}

/// Runs every check against `target`.
pub async fn run(client: &ServiceClient, target: &CheckTarget) -> Report {
    let mut run = Run {
        client,
        target,
        wrong: SharedSecret::new(format!("wrong-{}", hex_nonce())),
        checks: Vec::new(),
    };

    let t = Instant::now();
    let r = match run
        .call(
            target.secret.expose(),
            Method::GET,
            HEALTH_PATH,
            None::<&()>,
        )
        .await
    {
        Ok(r) if (200..300).contains(&r.status) && protocol::is_ok_body(&r.body) => {
            Ok(format!("HTTP {}", r.status))
        }
        Ok(r) if (200..300).contains(&r.status) => Err(format!(
            "health answered HTTP {} without {{\"status\": \"ok\"}}: {}",
            r.status,
            protocol::describe_answer(r.content_type.as_deref(), &r.body)
        )),
        Ok(r) => Err(format!(
            "health answered {}, expected 200",
            protocol::describe_status(r.status, r.location.as_deref())
        )),
        Err(e) => Err(e),
    };
    run.record("health", t, r);

    let t = Instant::now();
    let wrong = run.wrong.expose().to_string();
    let mut seen = Vec::new();
    let ex = ExchangeRequest {
        user_email: &target.user_email,
        ttl_days: 1,
    };
    let rv = RevokeRequest {
        token_id: "tok_conformance_unknown",
    };
    let calls = [
        (
            "token-exchange",
            run.call(&wrong, Method::POST, EXCHANGE_PATH, Some(&ex))
                .await,
        ),
        (
            "token-revoke",
            run.call(&wrong, Method::POST, REVOKE_PATH, Some(&rv)).await,
        ),
        (
            "health",
            run.call(&wrong, Method::GET, HEALTH_PATH, None::<&()>)
                .await,
        ),
    ];
    // No Authorization header at all must be refused as well (the protocol: "a missing or
    // wrong secret MUST be answered 401").
    let bare = run.call_without_auth(EXCHANGE_PATH, &ex).await;
    let mut bad = Vec::new();
    let mut leaked = None;
    for (name, r) in calls
        .into_iter()
        .chain([("token-exchange without Authorization", bare)])
    {
        match r {
            Ok(r) if r.status == 401 => seen.push(format!("{name} 401")),
            Ok(r) => {
                bad.push(format!(
                    "{name} answered {}, expected 401",
                    protocol::describe_status(r.status, r.location.as_deref())
                ));
                if name.starts_with("token-exchange") && (200..300).contains(&r.status) {
                    let expected = protocol::Expected {
                        secret: target.secret.expose(),
                        ttl_days: None,
                    };
                    leaked = protocol::parse_issued(&r.body, OffsetDateTime::now_utc(), &expected)
                        .map(|t| t.token_id)
                        .unwrap_or_else(|m| m.token_id.unwrap_or_default())
                        .into();
                }
            }
            Err(e) => bad.push(e),
        }
    }
    // A key issued against a wrong secret is revoked (with the right one) before going on.
    if let Some(token_id) = leaked.filter(|t: &String| !t.is_empty()) {
        let _ = run.revoke(&token_id).await;
    }
    let r = if bad.is_empty() {
        Ok(seen.join(", "))
    } else {
        Err(format!("with a wrong shared secret: {}", bad.join("; ")))
    };
    run.record("wrong_secret_rejected", t, r);

    let t = Instant::now();
    let issued = run.exchange(30).await;
    let (token, sent_at) = match issued {
        Ok((token, sent_at)) => {
            run.record("exchange", t, Ok(format!("token {}", token.token_id)));
            (token, sent_at)
        }
        Err(e) => {
            run.record("exchange", t, Err(e));
            for name in [
                "ttl_honoured",
                "key_accepted",
                "revoke",
                "revoke_idempotent",
                "revoked_key_rejected",
            ] {
                run.skip(name, "no token was issued");
            }
            return Report { checks: run.checks };
        }
    };

    let t = Instant::now();
    let mut r = ttl_check(&token, sent_at, 30);
    if r.is_ok() {
        r = match run.exchange(1).await {
            Ok((short, at)) => {
                let checked = ttl_check(&short, at, 1);
                let _ = run.revoke(&short.token_id).await;
                checked
            }
            Err(e) => Err(format!("ttl_days 1: {e}")),
        };
    }
    run.record(
        "ttl_honoured",
        t,
        r.map(|()| "30 days and 1 day".to_string()),
    );

    let t = Instant::now();
    let r = match run.probe(&token.api_key).await {
        Ok(s) if (200..300).contains(&s) => Ok(format!("HTTP {s}")),
        Ok(s) => Err(format!(
            "GET {} with the new key answered HTTP {s}, expected 2xx",
            target.probe_path
        )),
        Err(e) => Err(e),
    };
    let key_works = run.record("key_accepted", t, r);

    let t = Instant::now();
    let r = run
        .revoke(&token.token_id)
        .await
        .and_then(|r| revoke_ok(&r, "token-revoke"));
    let revoked = run.record("revoke", t, r);

    let t = Instant::now();
    let r = run
        .revoke(&token.token_id)
        .await
        .and_then(|r| revoke_ok(&r, "a second token-revoke of the same token"));
    run.record("revoke_idempotent", t, r);

    if !(revoked && key_works) {
        run.skip(
            "revoked_key_rejected",
            "the key was not accepted before, or not revoked",
        );
    } else {
        let t = Instant::now();
        let r = match run.probe(&token.api_key).await {
            Ok(s @ (401 | 403)) => Ok(format!("HTTP {s}")),
            Ok(s) => Err(format!(
                "GET {} with the revoked key answered HTTP {s}, expected 401 or 403",
                target.probe_path
            )),
            Err(e) => Err(e),
        };
        run.record("revoked_key_rejected", t, r);
    }
    Report { checks: run.checks }
}

/// 16 hex digits that differ between runs (not a secret: the wrong secret must merely differ).
fn hex_nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .unsigned_abs(),
    );
    format!("{:016x}", h.finish())
}
