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

#[utoipa::path(post, path = "/internal/mirror-connections/ping", tag = "mirror-connections", operation_id = "ping", security(("token" = [])), responses(
    (status = 200, body = Status, description = "The token is right: `{\"status\": \"ok\"}`"),
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
    /// Connector id (`GET /internal/connectors`).
    #[schema(examples("http-json"))]
    pub connector: String,
    /// The connector's config: an object matching its `config_schema`. Default `{}`.
    #[serde(default = "empty_object")]
    #[schema(schema_with = crate::schema::free_object)]
    pub config: Value,
    /// Credential values by the connector's secret names. Never logged or echoed.
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
    #[schema(examples("invalid_credentials"))]
    pub code: String,
    pub message: String,
}

/// `POST validate` answer: `valid` tells which of the two it is.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ValidateResponse {
    Valid(Validated),
    Invalid(NotValidated),
}

/// The config and credentials work.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Validated {
    /// Always true.
    #[schema(schema_with = crate::schema::always_true)]
    pub valid: bool,
    /// What the connector reports about the account the credentials belong to: the JSON it
    /// returned (an object for the bundled connectors; http-json passes its `validate_path`
    /// body through, whatever it is), secrets masked.
    #[schema(schema_with = crate::schema::any_json)]
    pub account: Value,
}

/// The config or the credentials do not work, and why.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NotValidated {
    /// Always false.
    #[schema(schema_with = crate::schema::always_false)]
    pub valid: bool,
    pub error: ValidationError,
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
        SubmitError::Unavailable(e) => database_error(e),
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

/// Replicated mode: the run database did not answer (503, retry shortly).
fn database_error(e: sluice_runs::shared::DbError) -> ApiError {
    tracing::warn!("{e}");
    ApiError {
        retry_after: Some(5),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the run database is unavailable; retry shortly",
        )
    }
}

fn secrets(c: &Credentials) -> Secrets {
    Secrets::new(c.iter().map(|(k, v)| (k.clone(), v.to_string())))
}

#[utoipa::path(post, path = "/internal/mirror-connections/validate", tag = "mirror-connections", operation_id = "validateConnection", security(("token" = [])),
    request_body(content = ValidateRequest, example = json!({
        "connector": "http-json",
        "config": {"base_url": "https://orders.corp.example/api"},
        "credentials": {"api_token": "0123456789abcdef"}
    })),
    responses(
        (status = 200, body = ValidateResponse, description = "Validated (`valid: true` and the account), or why not (`valid: false` and an error)"),
        (status = 400, body = ErrorBody, description = "The body is not JSON (`malformed_json`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 404, body = ErrorBody, description = "Unknown connector (`not_found`)"),
        (status = 413, body = ErrorBody, description = "The body is over 128 KiB (`body_too_large`)"),
        (status = 408, body = ErrorBody, description = "The body did not arrive within `SLUICE_HEADER_READ_TIMEOUT_SECS` of the request head (`body_timeout`); the connection is closed"),
        (status = 415, body = ErrorBody, description = "The body is not `application/json` (`unsupported_media_type`)"),
        (status = 422, body = ErrorBody, description = "The body does not fit the schema, or a required credential is missing (`invalid_request`)"),
    ))]
pub async fn validate(
    State(s): State<AppState>,
    Json(req): Json<ValidateRequest>,
) -> Result<Json<ValidateResponse>, ApiError> {
    let p = plugin(&s, &req.connector)?;
    let invalid = |code: &str, message: String| {
        Json(ValidateResponse::Invalid(NotValidated {
            valid: false,
            error: ValidationError {
                code: code.into(),
                message,
            },
        }))
    };
    if let Err(e) = check_request(&p, &Value::Object(Default::default()), &req.credentials)
        && !matches!(&e, SubmitError::Invalid { field, .. } if field.starts_with("config"))
    {
        return Err(submit_error(e));
    }
    if let Err(e) = check_config(&p, &req.config) {
        return Ok(invalid("invalid_config", e.to_string()));
    }
    // A client that goes away stops the call (also while it waits for a call slot or memory):
    // the handler is dropped, and with it this guard.
    let cancel = sluice_runtime::CancellationToken::new();
    let _stop_when_dropped = cancel.clone().drop_guard();
    let opts = CallOptions {
        secrets: secrets(&req.credentials),
        deadline: s.call_deadline,
        deadline_setting: Some("SLUICE_CALL_TIMEOUT_SECS"),
        cancel,
        ..Default::default()
    };
    let config = req.config;
    Ok(
        match crate::off_http(async move { p.validate(&config, opts).await }).await {
            Ok(account) => Json(ValidateResponse::Valid(Validated {
                valid: true,
                account,
            })),
            Err(CallError::Connector { code, message }) => invalid(code.as_str(), message),
            Err(e @ CallError::Deadline(_)) => invalid("unreachable", e.to_string()),
            Err(e) => invalid("internal", format!("connector failed: {e}")),
        },
    )
}

/// `POST runs` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    /// The backend's id of the connection; names the storage folder, one active run at a time.
    #[schema(examples("conn-42"))]
    pub connection_id: String,
    /// Connector id (`GET /internal/connectors`).
    #[schema(examples("http-json"))]
    pub connector: String,
    /// The connector's config: an object matching its `config_schema`. Default `{}`.
    #[serde(default = "empty_object")]
    #[schema(schema_with = crate::schema::free_object)]
    pub config: Value,
    /// Credential values by the connector's secret names. Never logged or echoed.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub credentials: Credentials,
    /// Streams to sync, each named once; leave the member out to sync all. An empty list or a
    /// stream named twice is refused (422).
    #[serde(default)]
    #[schema(min_items = 1)]
    pub streams: Option<Vec<String>>,
    /// Ignore the committed state and read everything again.
    #[serde(default)]
    pub full_refresh: Option<bool>,
    pub storage: StorageSpec,
}

/// `POST runs` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunAccepted {
    /// For `GET /internal/mirror-connections/runs/{run_id}` and `.../cancel`.
    pub run_id: String,
    /// `queued` for a new run; a retried request with the same `Idempotency-Key` gets the run's
    /// current status.
    pub status: sluice_runs::records::RunStatus,
}

#[utoipa::path(post, path = "/internal/mirror-connections/runs", tag = "mirror-connections", operation_id = "createRun", security(("token" = [])),
    request_body(content = CreateRunRequest, example = json!({
        "connection_id": "conn-42",
        "connector": "http-json",
        "config": {"base_url": "https://orders.corp.example/api", "streams": [{"name": "orders", "path": "/orders"}]},
        "credentials": {"api_token": "0123456789abcdef"},
        "storage": {"bucket": "mirror-data", "prefix": "mirror"}
    })),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
        description = "A retried POST with the same key and the same body returns the same run (202); the same key with another body is refused (422, `idempotency_key_reused`)")),
    responses(
        (status = 202, body = RunAccepted, description = "Queued (or, for a retried Idempotency-Key, the run it created)",
            links(
                ("getRun" = (operation_id = "getRun", parameters(("run_id" = "$response.body#/run_id")))),
                ("cancelRun" = (operation_id = "cancelRun", parameters(("run_id" = "$response.body#/run_id")))),
            )),
        (status = 400, body = ErrorBody, description = "The body is not JSON (`malformed_json`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 404, body = ErrorBody, description = "Unknown connector (`not_found`)"),
        (status = 409, body = ErrorBody, description = "The connection already has an active run (`run_active`)"),
        (status = 413, body = ErrorBody, description = "The body is over 128 KiB (`body_too_large`)"),
        (status = 408, body = ErrorBody, description = "The body did not arrive within `SLUICE_HEADER_READ_TIMEOUT_SECS` of the request head (`body_timeout`); the connection is closed"),
        (status = 415, body = ErrorBody, description = "The body is not `application/json` (`unsupported_media_type`)"),
        (status = 422, body = ErrorBody, description = "Refused before queueing (`invalid_request`: the body does not fit the schema, a credential is missing, the config fails the connector's schema (the detail names its path), an unknown stream, an empty `streams` list or a stream named twice, a bad connection_id, storage or Idempotency-Key; `idempotency_key_reused`: the key was used with another request)"),
        (status = 503, body = ErrorBody, description = "The run queue is full (`queue_full`), the service is shutting down (`shutting_down`), or (replicated mode) the run database is unavailable (`database_unavailable`); retry after Retry-After",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
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
    sluice_runs::manager::check_stream_selection(req.streams.as_deref()).map_err(submit_error)?;
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
        .await
        .map_err(submit_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunAccepted {
            run_id: record.run_id,
            status: record.status,
        }),
    ))
}

#[utoipa::path(get, path = "/internal/mirror-connections/runs/{run_id}", tag = "mirror-connections", operation_id = "getRun", security(("token" = [])),
    params(("run_id" = String, Path, description = "`run_id` of `POST /internal/mirror-connections/runs`")),
    responses(
        (status = 200, body = RunRecord, description = "The run",
            links(("cancelRun" = (operation_id = "cancelRun", parameters(("run_id" = "$response.body#/run_id")))))),
        (status = 400, body = ErrorBody, description = "The path is not valid UTF-8 once decoded (`bad_path`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 404, body = ErrorBody, description = "No run with this id (`not_found`)"),
        (status = 503, body = ErrorBody, description = "Replicated mode: the run database is unavailable (`database_unavailable`)"),
    ))]
pub async fn get_run(
    State(s): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    s.runs
        .get(&run_id)
        .await
        .map_err(database_error)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("unknown run {run_id:?}")))
}

/// `GET runs` query.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListRunsQuery {
    /// Only runs of this connection (all runs without it).
    #[param(nullable = false)]
    pub connection_id: Option<String>,
}

/// `GET runs` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunRecord>,
}

#[utoipa::path(get, path = "/internal/mirror-connections/runs", tag = "mirror-connections", operation_id = "listRuns", security(("token" = [])),
    params(ListRunsQuery),
    responses(
        (status = 200, body = RunList, description = "The runs, newest first"),
        (status = 400, body = ErrorBody, description = "The query string does not parse, e.g. a repeated connection_id (`bad_query`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 503, body = ErrorBody, description = "Replicated mode: the run database is unavailable (`database_unavailable`)"),
    ))]
pub async fn list_runs(
    State(s): State<AppState>,
    Query(q): Query<ListRunsQuery>,
) -> Result<Json<RunList>, ApiError> {
    Ok(Json(RunList {
        runs: s
            .runs
            .list(q.connection_id.as_deref())
            .await
            .map_err(database_error)?,
    }))
}

#[utoipa::path(post, path = "/internal/mirror-connections/runs/{run_id}/cancel", tag = "mirror-connections", operation_id = "cancelRun", security(("token" = [])),
    params(("run_id" = String, Path, description = "`run_id` of `POST /internal/mirror-connections/runs`")),
    responses(
        (status = 200, body = RunRecord, description = "The run as it is now. A queued or running run: the cancel is accepted, `cancel_requested` is true (the status may still read `running`: the run ends `cancelled` at its next host call, committing nothing). A run that had already ended is unchanged (200 rather than 202 for every case, as before: clients check 200)"),
        (status = 400, body = ErrorBody, description = "The path is not valid UTF-8 once decoded (`bad_path`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 404, body = ErrorBody, description = "No run with this id (`not_found`)"),
        (status = 503, body = ErrorBody, description = "Replicated mode: the run database is unavailable (`database_unavailable`)"),
    ))]
pub async fn cancel_run(
    State(s): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    s.runs
        .cancel(&run_id)
        .await
        .map_err(database_error)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("unknown run {run_id:?}")))
}

/// `POST schema-sync` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaSyncRequest {
    #[schema(examples("conn-42"))]
    pub connection_id: String,
    /// Connector id (`GET /internal/connectors`).
    #[schema(examples("http-json"))]
    pub connector: String,
    /// With a config, the connector's `discover` adds streams that have no data yet (an object
    /// matching the connector's `config_schema`).
    #[schema(schema_with = crate::schema::nullable_free_object)]
    pub config: Option<Value>,
    /// Credential values by secret name, for `discover`.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub credentials: Credentials,
    pub storage: StorageSpec,
    /// The internal service (`GET /internal/services`) this connection syncs, if any: its
    /// `_README.md` is then the service's page (`GET /internal/services/{id}/docs`: the key's
    /// variables and the registry entry's docs above the connector's page). The service's
    /// connector must be `connector`.
    #[schema(examples("purchase-orders"))]
    pub service: Option<String>,
}

#[utoipa::path(post, path = "/internal/mirror-connections/schema-sync", tag = "mirror-connections", operation_id = "syncSchema", security(("token" = [])),
    request_body(content = SchemaSyncRequest, example = json!({
        "connection_id": "conn-42",
        "connector": "http-json",
        "storage": {"bucket": "mirror-data", "prefix": "mirror"}
    })),
    responses(
        (status = 200, body = Catalog, description = "The catalog, also written to `{prefix}/{connection_id}/_schema.json`; the connector's docs for analysts (Markdown, with the committed columns) go to `{prefix}/{connection_id}/_README.md`"),
        (status = 400, body = ErrorBody, description = "The body is not JSON (`malformed_json`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 404, body = ErrorBody, description = "Unknown connector or service (`not_found`)"),
        (status = 413, body = ErrorBody, description = "The body is over 128 KiB (`body_too_large`)"),
        (status = 408, body = ErrorBody, description = "The body did not arrive within `SLUICE_HEADER_READ_TIMEOUT_SECS` of the request head (`body_timeout`); the connection is closed"),
        (status = 415, body = ErrorBody, description = "The body is not `application/json` (`unsupported_media_type`)"),
        (status = 422, body = ErrorBody, description = "The body does not fit the schema, a bad connection_id or storage, the config fails the connector's schema, or the service is synced by another connector or with another config, or the connection's data was committed by another connector (`invalid_request`)"),
        (status = 502, body = ErrorBody, description = "Storage (`storage_error`) or the connector's discover (`connector_error`) failed"),
    ))]
pub async fn schema_sync(
    State(s): State<AppState>,
    Json(req): Json<SchemaSyncRequest>,
) -> Result<Json<Catalog>, ApiError> {
    let service = match &req.service {
        None => None,
        Some(id) => Some(crate::services::for_connector(
            &s,
            id,
            &req.connector,
            req.config.as_ref(),
        )?),
    };
    let p = plugin(&s, &req.connector)?;
    let layout = Layout::new(&req.storage.prefix, &req.connection_id)
        .map_err(|e| ApiError::unprocessable(format!("connection_id: {e}")))?;
    let store = req
        .storage
        .open(&s.runs.config().backend)
        .map_err(|m| ApiError::unprocessable(format!("storage: {m}")))?;
    if let Some(config) = &req.config {
        check_config(&p, config).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    }
    let deadline = s.call_deadline;
    // A client that goes away stops the discover (also while it waits for a call slot).
    let cancel = sluice_runtime::CancellationToken::new();
    let _stop_when_dropped = cancel.clone().drop_guard();
    // The discover, the catalog and the page grow with the connector's columns: off the HTTP
    // threads.
    crate::off_http(async move {
        let discovered = match &req.config {
            None => p.manifest().streams.clone(),
            Some(config) => {
                let opts = CallOptions {
                    secrets: secrets(&req.credentials),
                    deadline,
                    deadline_setting: Some("SLUICE_CALL_TIMEOUT_SECS"),
                    cancel,
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
        let catalog = catalog::schema_sync(
            store.as_ref(),
            &layout,
            &req.connection_id,
            &req.connector,
            &discovered,
        )
        .await
        .map_err(|e| match e {
            catalog::CatalogError::OtherConnector(m) => ApiError::unprocessable(m),
            catalog::CatalogError::Storage(e) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "storage_error", e.to_string())
            }
        })?;
        let readme = match &service {
            None => sluice_runs::docs::connector_markdown(p.manifest(), &catalog.streams),
            Some(svc) => crate::services::page(svc, Some((p.manifest(), &catalog.streams))),
        };
        store
            .put_bytes(&layout.readme_key(), readme.into_bytes())
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "storage_error", e.to_string()))?;
        Ok(Json(catalog))
    })
    .await
}
