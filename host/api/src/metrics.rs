//! `GET /metrics`: the service's Prometheus metrics (`sluice-telemetry`), in the Prometheus
//! text format. Behind the service token unless the operator made it public
//! (`METRICS_PUBLIC=true`, see [`crate::AppState::with_public_metrics`]).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use sluice_telemetry::{Snapshot, metrics};

use crate::AppState;
use crate::error::{ApiError, AuthErrorBody, ErrorBody};

#[utoipa::path(get, path = "/metrics", tag = "service", operation_id = "getMetrics",
    security((), ("token" = [])),
    responses(
        (status = 200, content_type = "text/plain", body = String, description = "Prometheus text format 0.0.4 (`text/plain; version=0.0.4`): runs by connector and outcome; rows, Parquet bytes and files committed by connector and stream; run and plugin-call duration histograms; upstream attempts by plugin, host and status; retries and rate-limit waits (count and seconds); staging bytes, queued and running runs; plugin call slots and memory-budget pages in use and waited for; HTTP connections closed for room at the connection cap; plugin load failures; resident memory."),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token (the token is not asked for when the service runs with METRICS_PUBLIC=true)"),
        (status = 500, body = ErrorBody, description = "The metrics could not be encoded (`internal`)"),
    ))]
pub async fn serve(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (queued, running) = s.runs.load();
    let staging = s.runs.config().staging.dir.clone();
    // Walking the staging directory is file-system work: off the async workers.
    let staging_bytes = tokio::task::spawn_blocking(move || sluice_telemetry::dir_bytes(&staging))
        .await
        .unwrap_or(0);
    let runtime = s.registry.runtime();
    let (slots, pages) = (runtime.call_slots(), runtime.plugin_memory_pages());
    let text = metrics()
        .encode(Snapshot {
            queued_runs: queued as u64,
            running_runs: running as u64,
            staging_bytes,
            call_slots_in_use: slots.in_use,
            call_slots_waiting: slots.waiting,
            memory_pages_in_use: pages.in_use,
            memory_pages_waiting: pages.waiting,
        })
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("encoding the metrics failed: {e}"),
            )
        })?;
    Ok((
        [(header::CONTENT_TYPE, sluice_telemetry::CONTENT_TYPE)],
        text,
    ))
}
