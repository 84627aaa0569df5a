//! `/internal/mirror-connections/*`: ping, validate, runs, schema-sync.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_runs::catalog::{self, Catalog};
use sluice_runs::manager::{SubmitError, SubmitRun, check_config, check_request};
use sluice_runs::records::RunRecord;
use sluice_runs::target::StorageSpec;
use sluice_runtime::{CallError, CallOptions, Plugin, Secrets};
use sluice_storage::commit::Layout;
use zeroize::Zeroizing;

use crate::AppState;
use crate::connectors::Status;
use crate::error::{ApiError, AuthErrorBody, ErrorBody, Json, Path, Query};

/// Credentials by declared secret name. Never logged or echoed; wiped when dropped.
pub type Credentials = BTreeMap<String, Zeroizing<String>>;

#[utoipa::path(post, path = "/internal/mirror-connections/ping", tag = "mirror-connections", security(("token" = [])), responses(
    (status = 200, body = Status),
    (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
))]
pub async fn ping() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

/// `POST validate` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub connector: String,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: Value,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub credentials: Credentials,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Why credentials did not validate.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ValidationError {
    /// invalid_credentials, insufficient_scope, invalid_config, unreachable, rate_limited or internal.
    pub code: String,
    pub message: String,
}

/// `POST validate` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ValidateResponse {
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub account: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ValidationError>,
}

fn plugin(state: &AppState, id: &str) -> Result<Plugin, ApiError> {
    state
        .registry
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("unknown connector {id:?}")))
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::UnknownConnector(_) => ApiError::not_found(e.to_string()),
        SubmitError::Invalid { .. } => ApiError::unprocessable(e.to_string()),
        SubmitError::KeyReused { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            e.to_string(),
        ),
        SubmitError::Conflict { .. } => {
            ApiError::new(StatusCode::CONFLICT, "run_active", e.to_string())
        }
        SubmitError::QueueFull => ApiError {
            retry_after: Some(30),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", e.to_string())
        },
        SubmitError::ShuttingDown => ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            )
        },
    }
}

fn secrets(c: &Credentials) -> Secrets {
    Secrets::new(c.iter().map(|(k, v)| (k.clone(), v.to_string())))
}

#[utoipa::path(post, path = "/internal/mirror-connections/validate", tag = "mirror-connections", security(("token" = [])),
    request_body = ValidateRequest,
    responses(
        (status = 200, body = ValidateResponse, description = "Validated, or the reason it did not"),
        (status = 400, body = ErrorBody), (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
pub async fn validate(
    State(s): State<AppState>,
    Json(req): Json<ValidateRequest>,
) -> Result<Json<ValidateResponse>, ApiError> {
    let p = plugin(&s, &req.connector)?;
    let invalid = |code: &str, message: String| {
        Json(ValidateResponse {
            valid: false,
            account: None,
            error: Some(ValidationError {
                code: code.into(),
                message,
            }),
        })
    };
    if let Err(e) = check_request(&p, &Value::Object(Default::default()), &req.credentials)
        && !matches!(&e, SubmitError::Invalid { field, .. } if field.starts_with("config"))
    {
        return Err(submit_error(e));
    }
    if let Err(e) = check_config(&p, &req.config) {
        return Ok(invalid("invalid_config", e.to_string()));
    }
    let opts = CallOptions {
        secrets: secrets(&req.credentials),
        deadline: s.call_deadline,
        ..Default::default()
    };
    Ok(match p.validate(&req.config, opts).await {
        Ok(account) => Json(ValidateResponse {
            valid: true,
            account: Some(account),
            error: None,
        }),
        Err(CallError::Connector { code, message }) => invalid(code.as_str(), message),
        Err(e @ CallError::Deadline(_)) => invalid("unreachable", e.to_string()),
        Err(e) => invalid("internal", format!("connector failed: {e}")),
    })
}

/// `POST runs` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    pub connection_id: String,
    pub connector: String,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: Value,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub credentials: Credentials,
    /// Streams to sync; all when absent or empty.
    #[serde(default)]
    pub streams: Option<Vec<String>>,
    /// Ignore the committed state and read everything again.
    #[serde(default)]
    pub full_refresh: Option<bool>,
    pub storage: StorageSpec,
}

/// `POST runs` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunAccepted {
    pub run_id: String,
    pub status: sluice_runs::records::RunStatus,
}

#[utoipa::path(post, path = "/internal/mirror-connections/runs", tag = "mirror-connections", security(("token" = [])),
    request_body = CreateRunRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retried POST with the same key returns the same run")),
    responses(
        (status = 202, body = RunAccepted, description = "Queued"),
        (status = 400, body = ErrorBody), (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The connection already has an active run"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "Run queue full (see Retry-After)"),
    ))]
pub async fn create_run(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<CreateRunRequest>,
) -> Result<(StatusCode, Json<RunAccepted>), ApiError> {
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::unprocessable("Idempotency-Key must be 1-255 visible characters")
                })?
                .to_string(),
        ),
    };
    let record = s
        .runs
        .submit(SubmitRun {
            connection_id: req.connection_id,
            connector: req.connector,
            config: req.config,
            credentials: req.credentials,
            streams: req.streams.unwrap_or_default(),
            full_refresh: req.full_refresh.unwrap_or(false),
            storage: req.storage,
            idempotency_key,
        })
        .map_err(submit_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunAccepted {
            run_id: record.run_id,
            status: record.status,
        }),
    ))
}

#[utoipa::path(get, path = "/internal/mirror-connections/runs/{run_id}", tag = "mirror-connections", security(("token" = [])),
    params(("run_id" = String, Path)),
    responses((status = 200, body = RunRecord), (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"), (status = 404, body = ErrorBody)))]
pub async fn get_run(
    State(s): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    s.runs
        .get(&run_id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("unknown run {run_id:?}")))
}

/// `GET runs` query.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListRunsQuery {
    /// Only runs of this connection.
    pub connection_id: Option<String>,
}

/// `GET runs` answer, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunList {
    pub runs: Vec<RunRecord>,
}

#[utoipa::path(get, path = "/internal/mirror-connections/runs", tag = "mirror-connections", security(("token" = [])),
    params(ListRunsQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody), (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token")))]
pub async fn list_runs(State(s): State<AppState>, Query(q): Query<ListRunsQuery>) -> Json<RunList> {
    Json(RunList {
        runs: s.runs.list(q.connection_id.as_deref()),
    })
}

#[utoipa::path(post, path = "/internal/mirror-connections/runs/{run_id}/cancel", tag = "mirror-connections", security(("token" = [])),
    params(("run_id" = String, Path)),
    responses((status = 200, body = RunRecord, description = "Cancellation requested (or the run had already ended)"), (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"), (status = 404, body = ErrorBody)))]
pub async fn cancel_run(
    State(s): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    s.runs
        .cancel(&run_id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("unknown run {run_id:?}")))
}

/// `POST schema-sync` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaSyncRequest {
    pub connection_id: String,
    pub connector: String,
    /// With a config, the connector's `discover` adds streams that have no data yet.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub credentials: Credentials,
    pub storage: StorageSpec,
}

#[utoipa::path(post, path = "/internal/mirror-connections/schema-sync", tag = "mirror-connections", security(("token" = [])),
    request_body = SchemaSyncRequest,
    responses(
        (status = 200, body = Catalog),
        (status = 400, body = ErrorBody), (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "Storage or the connector failed"),
    ))]
pub async fn schema_sync(
    State(s): State<AppState>,
    Json(req): Json<SchemaSyncRequest>,
) -> Result<Json<Catalog>, ApiError> {
    let p = plugin(&s, &req.connector)?;
    let layout = Layout::new(&req.storage.prefix, &req.connection_id)
        .map_err(|e| ApiError::unprocessable(format!("connection_id: {e}")))?;
    let store = req
        .storage
        .open(&s.runs.config().backend)
        .map_err(|m| ApiError::unprocessable(format!("storage: {m}")))?;
    let discovered = match &req.config {
        None => p.manifest().streams.clone(),
        Some(config) => {
            check_config(&p, config).map_err(|e| ApiError::unprocessable(e.to_string()))?;
            let opts = CallOptions {
                secrets: secrets(&req.credentials),
                deadline: s.call_deadline,
                ..Default::default()
            };
            p.discover(config, opts).await.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "connector_error",
                    format!("discover failed: {e}"),
                )
            })?
        }
    };
    let catalog = catalog::schema_sync(store.as_ref(), &layout, &req.connection_id, &discovered)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "storage_error", e.to_string()))?;
    Ok(Json(catalog))
}
