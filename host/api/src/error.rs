//! JSON errors: `{"detail": "...", "code": "..."}` with an honest status.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub retry_after: Option<u32>,
}

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub detail: String,
    pub code: String,
}

/// The body of a 401, exactly as the deployment Sluice replaces answered it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuthErrorBody {
    /// Always "Invalid connect service token".
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            axum::Json(ErrorBody {
                detail: self.detail,
                code: self.code.to_string(),
            }),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// `Json<T>` whose rejections are JSON errors naming the offending field.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                without_values(&e.body_text()),
            ),
            JsonRejection::JsonSyntaxError(e) => {
                Self::new(StatusCode::BAD_REQUEST, "malformed_json", e.body_text())
            }
            JsonRejection::MissingJsonContentType(e) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e.body_text(),
            ),
            JsonRejection::BytesRejection(e) => {
                let status = e.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "body_too_large"
                } else {
                    "bad_body"
                };
                Self::new(status, code, e.body_text())
            }
            other => Self::new(StatusCode::BAD_REQUEST, "bad_request", other.body_text()),
        }
    }
}

/// `Path<T>` whose rejections (e.g. a segment that is not UTF-8 once decoded) are JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `Query<T>` whose rejections (e.g. a repeated single-valued parameter) are JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(r.status(), "bad_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text())
    }
}

/// A deserialization message without the values it quotes: serde echoes the offending string
/// (`invalid type: string "…", expected a map`) or scalar (`invalid type: integer `…``), and it
/// may be a credential a client sent in the wrong shape. Field names (`unknown field `x``) stay.
fn without_values(message: &str) -> String {
    without_scalars(&without_strings(message))
}

/// serde's `Unexpected` scalars: `integer `5``, `floating point `1.5``, `boolean `true``,
/// `character `c`` (serde `de::Unexpected`'s Display) lose what is between the backticks.
fn without_scalars(message: &str) -> String {
    let mut out = message.to_string();
    for kind in ["integer `", "floating point `", "boolean `", "character `"] {
        let mut from = 0;
        while let Some(at) = out[from..].find(kind).map(|i| from + i + kind.len()) {
            let Some(end) = out[at..].find('`').map(|i| at + i) else {
                break;
            };
            out.replace_range(at..end, "…");
            from = at + "…".len() + 1;
        }
    }
    out
}

fn without_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_value = false;
    for c in message.chars() {
        match (c, in_value) {
            ('"', false) => {
                in_value = true;
                out.push_str("\"…");
            }
            ('"', true) => {
                in_value = false;
                out.push('"');
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// A known route asked with a method it does not serve: the JSON error, like every other.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not serve that method",
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rejected_values_are_not_echoed() {
        let m = r#"credentials: invalid type: string "SECRETASSTRING123", expected a map at line 1 column 40"#;
        let out = super::without_values(m);
        assert!(!out.contains("SECRETASSTRING123"), "{out}");
        assert!(
            out.starts_with("credentials: invalid type: string"),
            "{out}"
        );
        assert_eq!(
            super::without_values("unknown field `x`"),
            "unknown field `x`"
        );
        // A credential sent as a number (an outside attack, session 11, echoed it).
        let m = "credentials.token: invalid type: integer `12345678901234`, expected a string at line 1 column 9";
        assert_eq!(
            super::without_values(m),
            "credentials.token: invalid type: integer `…`, expected a string at line 1 column 9"
        );
        for m in [
            "invalid type: floating point `3.25`, expected a string",
            "invalid type: boolean `true`, expected a string",
            "invalid type: character `Z`, expected a string",
        ] {
            let out = super::without_values(m);
            assert!(
                out.contains("`…`")
                    && !out.contains("3.25")
                    && !out.contains("true`")
                    && !out.contains("`Z`"),
                "{out}"
            );
        }
    }
}
