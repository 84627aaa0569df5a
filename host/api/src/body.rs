//! The whole request body within a deadline.
//!
//! hyper's header-read timeout (`SLUICE_HEADER_READ_TIMEOUT_SECS`) bounds a request's head
//! only: a client that sent a valid token, `Content-Length: 100` and one byte kept its
//! connection, its task and its slot under `SLUICE_MAX_CONNECTIONS` for as long as it liked
//! (a newcomer held one for 600 s). Every body here is a small JSON document (at most
//! [`crate::BODY_LIMIT`]), so it is read whole, within the same time a head gets, before the
//! handler runs; a body that does not arrive in time is answered 408 and the connection closed
//! (RFC 9110 §15.5.9).

use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// Why a body was not read.
enum Unread {
    TooLarge,
    Broken(String),
}

/// Middleware: reads the body of `req` whole within `timeout` (at most [`crate::BODY_LIMIT`]
/// bytes), then runs the handler with it. 408 `body_timeout` (connection closed) past the
/// deadline, 413 `body_too_large` past the limit, 400 `bad_body` when the body breaks off.
pub(crate) async fn read_in_time(
    State(timeout): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, read_whole(body)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(Unread::TooLarge)) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "Failed to buffer the request body: length limit exceeded",
        )
        .into_response(),
        Ok(Err(Unread::Broken(why))) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("Failed to read the request body: {why}"),
        )
        .into_response(),
        Err(_) => {
            let mut r = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s (SLUICE_HEADER_READ_TIMEOUT_SECS)",
                    timeout.as_secs()
                ),
            )
            .into_response();
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

async fn read_whole(mut body: Body) -> Result<Vec<u8>, Unread> {
    let mut out = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|e| Unread::Broken(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > crate::BODY_LIMIT {
                return Err(Unread::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}
