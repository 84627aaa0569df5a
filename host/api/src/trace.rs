//! One trace span per API request (`request`, server kind), continuing the caller's W3C
//! `traceparent`: the runs a request submits are its children. Exported only when
//! OpenTelemetry is set up (`sluice_telemetry::otel`); otherwise the span is disabled.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Wraps a request in its span.
pub async fn trace_request(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        target: "sluice_trace",
        "request",
        otel.name = %format_args!("{} {}", req.method(), req.uri().path()),
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = req.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        sluice_telemetry::otel::continue_trace(&span, req.headers());
    }
    let response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
