//! The internal-service protocol on the wire (`docs/internal-service-protocol.yaml` is its
//! OpenAPI document): paths, bodies, and the checks an answer must pass.
//!
//! Every call carries `Authorization: Bearer <shared secret>`:
//! - `POST {base}/api/internal/token-exchange` `{user_email, ttl_days}` → 200/201
//!   `{status: "ok", api_key, token_id, expires_at}` (RFC 3339); 401 wrong secret; 403 the user
//!   may not have a key.
//! - `POST {base}/api/internal/token-revoke` `{token_id}` → 200 `{status: "ok"}`, also for a
//!   token already revoked or unknown (idempotent); 401 wrong secret.
//! - `GET {base}/api/internal/health` → 200 `{status: "ok"}`; 401 wrong secret.
//!
//! Every answer is held to its success shape: an exchange's 200/201 must be a token
//! ([`parse_issued`]), a revoke's or a health probe's 2xx must be `{"status": "ok"}`
//! ([`is_ok_body`]); anything else (an HTML login page answered 200 by a proxy, `{"status":
//! "error"}`, an empty body) is not a success. Redirects are answers, never followed.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

pub const EXCHANGE_PATH: &str = "api/internal/token-exchange";
pub const REVOKE_PATH: &str = "api/internal/token-revoke";
pub const HEALTH_PATH: &str = "api/internal/health";

/// Longest token id accepted, in bytes.
pub const MAX_TOKEN_ID_LEN: usize = 256;
/// Longest API key accepted, in bytes.
pub const MAX_API_KEY_LEN: usize = 4096;

/// `token-exchange` request body.
#[derive(Debug, Serialize)]
pub struct ExchangeRequest<'a> {
    pub user_email: &'a str,
    /// Lifetime asked for, in days.
    pub ttl_days: u32,
}

/// `token-revoke` request body.
#[derive(Debug, Serialize)]
pub struct RevokeRequest<'a> {
    pub token_id: &'a str,
}

/// A key the service issued. `Debug` leaves the key out; it is wiped when dropped.
pub struct IssuedToken {
    pub api_key: Zeroizing<String>,
    pub token_id: String,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("api_key", &"[redacted]")
            .field("token_id", &self.token_id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why an exchange answer is not a token. `token_id` is set when the answer named one that
/// looks valid, so that the caller can revoke what the service may have created. The reason
/// never quotes the answer (it may hold the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub reason: String,
    pub token_id: Option<String>,
    /// The `token_id` holds the key or the shared secret: use it to revoke, never show or
    /// log it.
    pub token_id_is_secret: bool,
}

/// What a token-exchange answer is checked against besides its shape.
pub struct Expected<'a> {
    /// The shared secret the request carried: neither the key nor the token id may hold it.
    pub secret: &'a str,
    /// The lifetime asked for, days: `expires_at` must be the request time plus that
    /// ([`check_ttl`]). `None`: not checked (the conformance checker checks it on its own).
    pub ttl_days: Option<u32>,
}

/// How far `expires_at` may be from the request time plus `ttl_days` (the protocol's "within
/// an hour", `docs/internal-service-protocol.yaml`).
pub const TTL_TOLERANCE: time::Duration = time::Duration::HOUR;

/// Whether `expires_at` is `sent_at` plus `ttl_days`, within [`TTL_TOLERANCE`].
pub fn check_ttl(
    expires_at: OffsetDateTime,
    sent_at: OffsetDateTime,
    ttl_days: u32,
) -> Result<(), String> {
    let expected = sent_at + time::Duration::days(i64::from(ttl_days));
    if (expires_at - expected).abs() > TTL_TOLERANCE {
        let shown = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        return Err(format!(
            "ttl_days {ttl_days}: expires_at is {}, expected about {} (± 1 h)",
            shown(expires_at),
            shown(expected)
        ));
    }
    Ok(())
}

/// Whether `s` may be a token id: 1 to [`MAX_TOKEN_ID_LEN`] printable ASCII characters.
pub fn is_token_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_TOKEN_ID_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Reads a `token-exchange` success body sent for a request made at `now`.
pub fn parse_issued(
    body: &[u8],
    now: OffsetDateTime,
    expected: &Expected<'_>,
) -> Result<IssuedToken, Malformed> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Malformed {
        reason: "the answer is not JSON".into(),
        token_id: None,
        token_id_is_secret: false,
    })?;
    let token_id = v
        .get("token_id")
        .and_then(Value::as_str)
        .filter(|t| is_token_id(t))
        .map(str::to_string);
    let key = v.get("api_key").and_then(Value::as_str).unwrap_or("");
    let holds = |t: &str, needle: &str| !needle.is_empty() && t.contains(needle);
    let token_id_is_secret = token_id
        .as_deref()
        .is_some_and(|t| holds(t, key) || holds(t, expected.secret));
    let fail = |reason: &str| Malformed {
        reason: reason.into(),
        token_id: token_id.clone(),
        token_id_is_secret,
    };
    if token_id_is_secret {
        return Err(fail("`token_id` holds the API key or the shared secret"));
    }
    if key == expected.secret {
        return Err(fail("`api_key` is the shared secret"));
    }
    if !v.is_object() {
        return Err(fail("the answer is not a JSON object"));
    }
    if let Some(status) = v.get("status")
        && status != "ok"
    {
        return Err(fail("`status` is not \"ok\""));
    }
    let Some(token_id) = token_id.clone() else {
        return Err(fail(
            "`token_id` is missing or not 1-256 printable ASCII characters",
        ));
    };
    let api_key = match v.get("api_key").and_then(Value::as_str) {
        Some(k)
            if !k.is_empty() && k.len() <= MAX_API_KEY_LEN && !k.chars().any(char::is_control) =>
        {
            Zeroizing::new(k.to_string())
        }
        _ => {
            return Err(fail(
                "`api_key` is missing, empty, too long or holds control characters",
            ));
        }
    };
    let expires_at = v
        .get("expires_at")
        .and_then(Value::as_str)
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .ok_or_else(|| fail("`expires_at` is missing or not an RFC 3339 date-time"))?;
    if expires_at <= now {
        return Err(fail("`expires_at` is not in the future"));
    }
    if let Some(ttl) = expected.ttl_days {
        check_ttl(expires_at, now, ttl).map_err(|e| fail(&format!("`expires_at`: {e}")))?;
    }
    Ok(IssuedToken {
        api_key,
        token_id,
        expires_at,
    })
}

/// Whether a body is the protocol's `{"status": "ok"}` (other members allowed): the success
/// shape of `token-revoke` and `health`. A 2xx answer of any other body (a single sign-on login
/// page a proxy answers 200 with, `{"status": "error"}`, nothing) is not a success.
pub fn is_ok_body(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .is_ok_and(|v| v.get("status").and_then(Value::as_str) == Some("ok"))
}

/// Whether a body is a JSON object: what the service's own error answers are (the protocol's
/// `Error`), as opposed to an HTML page or text from something in front of it.
pub fn is_json_object(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object())
}

/// What an answer's body is, in words, for an error message: its media type and shape, never
/// its text (it may hold a key or the secret). E.g. `a text/html body of 5120 bytes, not JSON
/// (a login page or a proxy's page in front of the service?)`, `JSON with "status": "error"`.
pub fn describe_answer(content_type: Option<&str>, body: &[u8]) -> String {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 100
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/.+-_".contains(&b))
        });
    let json = serde_json::from_slice::<Value>(body);
    let shape = match (&json, body.is_empty()) {
        (_, true) => "an empty body".to_string(),
        (Ok(Value::Object(m)), _) => match m.get("status") {
            Some(Value::String(s))
                if s.len() <= 32
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                format!("JSON with \"status\": {s:?}")
            }
            Some(_) => "JSON whose `status` is not \"ok\"".to_string(),
            None => "JSON without `status`".to_string(),
        },
        (Ok(_), _) => "JSON that is not an object".to_string(),
        (Err(_), _) => format!(
            "a {}body of {} bytes, not JSON",
            media
                .as_deref()
                .map(|m| format!("{m} "))
                .unwrap_or_default(),
            body.len()
        ),
    };
    let html = media.as_deref() == Some("text/html")
        || (json.is_err() && body.trim_ascii_start().starts_with(b"<"));
    if html {
        format!("{shape} (a login page or a proxy's page in front of the service?)")
    } else {
        shape
    }
}

/// The words for an answer of `status` that the protocol has no meaning for; a redirect says
/// it is not followed (Sluice sends the protocol to `base_url` only: a redirect to a login page
/// or another host would carry the shared secret there), and where it pointed (`location`,
/// without its query).
pub fn describe_status(status: u16, location: Option<&str>) -> String {
    if (300..400).contains(&status) {
        let to = location.map(|l| format!(" to {l}")).unwrap_or_default();
        format!(
            "HTTP {status}, a redirect{to}; redirects are not followed: set the service's base_url to the address that answers the protocol"
        )
    } else {
        format!("HTTP {status}")
    }
}

/// The reason a `token-exchange` answered a 2xx other than 200/201: not the protocol's success.
/// The token such an answer names (if it looks like one) is kept so the caller can revoke it.
pub fn unexpected_success(
    status: u16,
    body: &[u8],
    now: OffsetDateTime,
    expected: &Expected<'_>,
) -> Malformed {
    let said = format!("HTTP {status}; the protocol answers 200 (or 201) with the token");
    match parse_issued(body, now, expected) {
        Ok(t) => Malformed {
            reason: said,
            token_id: Some(t.token_id),
            token_id_is_secret: false,
        },
        Err(m) => Malformed {
            reason: format!("{said}, and {}", m.reason),
            ..m
        },
    }
}

/// A short human reason from an error body (`detail`, `message` or `error`): `redact` runs on
/// the whole text first, then it is cut to 200 characters (cutting first could leave part of
/// a secret unmatched); empty when there is none.
pub fn reason_of(body: &[u8], redact: impl Fn(String) -> String) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    ["detail", "message", "error"]
        .iter()
        .find_map(|k| v.get(k).and_then(Value::as_str))
        .map(|s| {
            redact(s.chars().filter(|c| !c.is_control()).collect())
                .chars()
                .take(200)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    const ANY: Expected<'static> = Expected {
        secret: "shared-secret-0123456789",
        ttl_days: None,
    };

    #[test]
    fn a_good_answer() {
        let t = parse_issued(
            br#"{"status":"ok","api_key":"pk_live_0123456789","token_id":"tok_1","expires_at":"2999-01-01T00:00:00Z"}"#,
            now(),
            &ANY,
        )
        .unwrap();
        assert_eq!(t.token_id, "tok_1");
        assert_eq!(t.api_key.as_str(), "pk_live_0123456789");
        assert!(!format!("{t:?}").contains("pk_live"));
    }

    #[test]
    fn bad_answers_keep_the_token_id_when_there_is_one() {
        for (body, token) in [
            (&br#"not json"#[..], None),
            (br#"[1]"#, None),
            (br#"{"api_key":"k1234567","expires_at":"2999-01-01T00:00:00Z"}"#, None),
            (br#"{"token_id":"t1","expires_at":"2999-01-01T00:00:00Z"}"#, Some("t1")),
            (br#"{"token_id":"t1","api_key":"k","expires_at":"tomorrow"}"#, Some("t1")),
            (br#"{"token_id":"t1","api_key":"k","expires_at":"2001-01-01T00:00:00Z"}"#, Some("t1")),
            (br#"{"status":"error","token_id":"t1","api_key":"k","expires_at":"2999-01-01T00:00:00Z"}"#, Some("t1")),
            (br#"{"token_id":"t 1","api_key":"k","expires_at":"2999-01-01T00:00:00Z"}"#, None),
        ] {
            let e = parse_issued(body, now(), &ANY).unwrap_err();
            assert_eq!(e.token_id.as_deref(), token, "{}", String::from_utf8_lossy(body));
            assert!(!e.reason.contains("k1234567"));
        }
    }

    #[test]
    fn answers_that_are_not_the_success_shape_are_described_never_quoted() {
        assert!(is_ok_body(br#"{"status":"ok","extra":1}"#));
        for bad in [
            &b"<html>ok</html>"[..],
            br#"{"status":"error"}"#,
            b"",
            b"{}",
            b"OK",
        ] {
            assert!(!is_ok_body(bad), "{}", String::from_utf8_lossy(bad));
        }
        let page = b"<!doctype html><form>pk_live_secret</form>";
        let d = describe_answer(Some("text/html; charset=utf-8"), page);
        assert!(
            d.starts_with("a text/html body of 42 bytes, not JSON") && d.contains("login page"),
            "{d}"
        );
        assert!(!d.contains("pk_live"), "the body is never quoted: {d}");
        // Without a content type an HTML-looking body is still called a page.
        assert!(describe_answer(None, b"  <html>").contains("login page"));
        assert_eq!(
            describe_answer(
                Some("application/json"),
                br#"{"status":"error","detail":"x"}"#
            ),
            r#"JSON with "status": "error""#
        );
        // A status that is not a plain word is not echoed (it could be anything).
        assert_eq!(
            describe_answer(None, br#"{"status":"sk live 123 with spaces"}"#),
            "JSON whose `status` is not \"ok\""
        );
        assert_eq!(describe_answer(None, b"{}"), "JSON without `status`");
        assert_eq!(describe_answer(None, b"[]"), "JSON that is not an object");
        assert_eq!(describe_answer(Some("text/plain"), b""), "an empty body");
        assert_eq!(
            describe_answer(Some("text/plain\r\nx: y"), b"OK"),
            "a body of 2 bytes, not JSON",
            "a content type that is not a plain token is left out"
        );
        assert!(
            is_json_object(br#"{"detail":"no such token"}"#) && !is_json_object(b"<h1>404</h1>")
        );
    }

    #[test]
    fn redirects_say_they_are_not_followed() {
        let d = describe_status(302, Some("https://sso.corp.example/login"));
        assert!(
            d.starts_with(
                "HTTP 302, a redirect to https://sso.corp.example/login; redirects are not followed"
            ),
            "{d}"
        );
        assert_eq!(describe_status(500, None), "HTTP 500");
    }

    #[test]
    fn an_exchange_answered_with_another_2xx_keeps_its_token_to_revoke() {
        let ok = br#"{"api_key":"pk_live_0123456789","token_id":"tok_9","expires_at":"2999-01-01T00:00:00Z"}"#;
        let m = unexpected_success(202, ok, now(), &ANY);
        assert_eq!(m.token_id.as_deref(), Some("tok_9"));
        assert!(
            m.reason.starts_with("HTTP 202;") && !m.reason.contains("pk_live"),
            "{m:?}"
        );
        let m = unexpected_success(204, b"", now(), &ANY);
        assert_eq!(m.token_id, None);
        assert!(
            m.reason.contains("HTTP 204") && m.reason.contains("not JSON"),
            "{m:?}"
        );
    }

    #[test]
    fn reasons_are_short_and_redacted_before_the_cut() {
        let same = |s: String| s;
        assert_eq!(
            reason_of(br#"{"detail":"no such user"}"#, same),
            "no such user"
        );
        assert_eq!(reason_of(b"<html>", same), "");
        assert_eq!(
            reason_of(
                format!(r#"{{"error":"{}"}}"#, "x".repeat(500)).as_bytes(),
                same
            )
            .len(),
            200
        );
        // A secret straddling the 200th character is masked whole, not cut and then missed.
        let secret = "fake-shared-secret-0123456789";
        let body = format!(r#"{{"detail":"{} {secret}"}}"#, "p".repeat(175));
        let r = reason_of(body.as_bytes(), |s| s.replace(secret, "[redacted]"));
        assert!(!r.contains("fake-shared"), "{r}");
        assert!(r.ends_with("[redacted]"), "{r}");
    }

    #[test]
    fn keys_and_secrets_never_ride_in_a_token_id_and_the_ttl_is_honoured() {
        let at = now();
        let in_days = |d: i64| (at + time::Duration::days(d)).format(&Rfc3339).unwrap();
        let answer = |key: &str, token: &str, exp: &str| {
            format!(r#"{{"api_key":"{key}","token_id":"{token}","expires_at":"{exp}"}}"#)
        };
        let want = Expected {
            secret: "shared-secret-0123456789",
            ttl_days: Some(30),
        };
        assert!(
            parse_issued(
                answer("pk_1234567", "tok_1", &in_days(30)).as_bytes(),
                at,
                &want
            )
            .is_ok()
        );
        let e = parse_issued(
            answer("pk_1234567", "pk_1234567", &in_days(30)).as_bytes(),
            at,
            &want,
        )
        .unwrap_err();
        assert!(
            e.token_id_is_secret && !e.reason.contains("pk_1234567"),
            "{e:?}"
        );
        assert_eq!(
            e.token_id.as_deref(),
            Some("pk_1234567"),
            "kept to revoke with"
        );
        let e = parse_issued(
            answer("pk_1234567", "t-shared-secret-0123456789", &in_days(30)).as_bytes(),
            at,
            &want,
        )
        .unwrap_err();
        assert!(e.token_id_is_secret, "{e:?}");
        let e = parse_issued(
            answer("shared-secret-0123456789", "tok_2", &in_days(30)).as_bytes(),
            at,
            &want,
        )
        .unwrap_err();
        assert!(
            !e.token_id_is_secret && e.reason.contains("is the shared secret"),
            "{e:?}"
        );
        for days in [3, 3650] {
            let e = parse_issued(
                answer("pk_1234567", "tok_3", &in_days(days)).as_bytes(),
                at,
                &want,
            )
            .unwrap_err();
            assert!(e.reason.contains("ttl_days 30"), "{e:?}");
            assert_eq!(e.token_id.as_deref(), Some("tok_3"));
        }
    }
}
