//! HubSpot's error answers as connector errors.
//!
//! HubSpot answers errors with a JSON body (`Error` in the CRM OpenAPI documents):
//! `{status, message, correlationId, category, errors?: [{message, context?}], context?}`.
//! - 401 (`category: INVALID_AUTHENTICATION` / `EXPIRED_AUTHENTICATION`): the token is bad,
//!   expired or revoked → `invalid-credentials`.
//! - 403 `category: MISSING_SCOPES`: a valid token without a scope; the scopes that would do
//!   are listed in `errors[].context.requiredGranularScopes` (older answers: `requiredScopes`;
//!   the OpenAPI example names `missingScopes`) → `insufficient-scope` naming them.
//! - 429 (`errorType: RATE_LIMIT`, `policyName`): what the host handed back after its waits
//!   → `rate-limited`.
//! - 400 `VALIDATION_ERROR` (e.g. search paged past 10,000 results) → `internal`: a bug here.
//! - 404 → `invalid-config`; 5xx → `unreachable`.
//!
//! Messages are one line, cut to [`MAX_DETAIL`] characters, and never hold a credential
//! (HubSpot's messages do not echo the token; the host redacts secrets as well).

use sluice_sdk::serde_json::Value;
use sluice_sdk::{ConnectorError, ErrorCode};

/// Longest part of HubSpot's own message kept in an error.
pub const MAX_DETAIL: usize = 200;

/// The scopes a `MISSING_SCOPES` answer says would do, in order, without duplicates.
pub fn missing_scopes(body: &Value) -> Vec<String> {
    let mut contexts: Vec<&Value> = body.get("context").into_iter().collect();
    if let Some(errors) = body.get("errors").and_then(Value::as_array) {
        contexts.extend(errors.iter().filter_map(|e| e.get("context")));
    }
    let mut scopes = Vec::new();
    for context in contexts.iter().filter_map(|c| c.as_object()) {
        for (key, value) in context {
            if !key.to_ascii_lowercase().contains("scope") {
                continue;
            }
            for scope in value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !scopes.iter().any(|s| s == scope) {
                    scopes.push(scope.to_string());
                }
            }
        }
    }
    scopes
}

/// Whether an answer is HubSpot's `MISSING_SCOPES` 403.
pub fn is_missing_scopes(status: u16, body: &Value) -> bool {
    status == 403 && body.get("category").and_then(Value::as_str) == Some("MISSING_SCOPES")
}

/// HubSpot's `message`, on one line and cut to [`MAX_DETAIL`] characters.
pub fn detail(body: &Value) -> String {
    let text = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_DETAIL) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// The error for a non-2xx answer to `what` (e.g. `search of contacts`).
pub fn hubspot_error(status: u16, body: &Value, what: &str) -> ConnectorError {
    let category = body
        .get("category")
        .or_else(|| body.get("errorType"))
        .and_then(Value::as_str)
        .unwrap_or("no category");
    let detail = detail(body);
    let code = match status {
        401 => ErrorCode::InvalidCredentials,
        403 => ErrorCode::InsufficientScope,
        404 => ErrorCode::InvalidConfig,
        429 => ErrorCode::RateLimited,
        500..=599 => ErrorCode::Unreachable,
        _ => ErrorCode::Internal,
    };
    let message = if is_missing_scopes(status, body) {
        let scopes = missing_scopes(body);
        let scopes = if scopes.is_empty() {
            "a scope HubSpot did not name".to_string()
        } else {
            scopes.join(" or ")
        };
        format!("the token lacks the scope {scopes} that {what} needs (HTTP 403 MISSING_SCOPES)")
    } else if status == 401 {
        format!("HubSpot rejected the token on {what} (HTTP 401 {category}): {detail}")
    } else if status == 429 {
        let policy = body
            .get("policyName")
            .and_then(Value::as_str)
            .unwrap_or("no policy");
        format!("HubSpot still rate limits {what} after the host's waits (HTTP 429 {policy})")
    } else {
        format!("HubSpot answered HTTP {status} {category} to {what}: {detail}")
    };
    ConnectorError::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::json;

    fn missing(context_key: &str) -> Value {
        json!({
            "status": "error",
            "message": "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
            "correlationId": "4f2071b3-bf52-4e77-8dbe-6f80ad4f3a5f",
            "errors": [{"message": "One or more of the following scopes are required.",
                        "context": {context_key: ["crm.objects.deals.read"]}}],
            "links": {"scopes": "https://developers.hubspot.com/scopes"},
            "category": "MISSING_SCOPES"
        })
    }

    #[test]
    fn missing_scopes_are_named() {
        for key in ["requiredGranularScopes", "requiredScopes", "missingScopes"] {
            let e = hubspot_error(403, &missing(key), "deals");
            assert_eq!(e.code, ErrorCode::InsufficientScope);
            assert!(
                e.message.contains("crm.objects.deals.read"),
                "{}",
                e.message
            );
        }
        assert_eq!(
            missing_scopes(&json!({"context": {"requiredScopes": ["a", "a", "b"]}})),
            ["a", "b"]
        );
        let e = hubspot_error(403, &json!({"category": "MISSING_SCOPES"}), "x");
        assert!(e.message.contains("did not name"));
    }

    #[test]
    fn statuses_map_to_codes_on_one_line() {
        let unauthorized = json!({"status": "error", "message": "Authentication credentials not found.\nThis API supports OAuth 2.0 authentication", "category": "INVALID_AUTHENTICATION"});
        let e = hubspot_error(401, &unauthorized, "account details");
        assert_eq!(e.code, ErrorCode::InvalidCredentials);
        assert!(!e.message.contains('\n') && e.message.contains("INVALID_AUTHENTICATION"));
        let limited =
            json!({"status": "error", "errorType": "RATE_LIMIT", "policyName": "SECONDLY"});
        let e = hubspot_error(429, &limited, "search of contacts");
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert!(e.message.contains("SECONDLY"));
        assert_eq!(
            hubspot_error(502, &json!({}), "x").code,
            ErrorCode::Unreachable
        );
        assert_eq!(
            hubspot_error(404, &json!({}), "x").code,
            ErrorCode::InvalidConfig
        );
        let cap =
            json!({"status": "error", "message": "x".repeat(500), "category": "VALIDATION_ERROR"});
        let e = hubspot_error(400, &cap, "search");
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.len() < 320, "{}", e.message.len());
        assert_eq!(
            hubspot_error(403, &json!({"category": "FORBIDDEN"}), "x").code,
            ErrorCode::InsufficientScope
        );
    }
}
