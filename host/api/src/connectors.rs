//! Health, readiness and the connector list.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;
use sluice_runtime::Plugin;
use sluice_runtime::registry::LoadFailure;

use crate::AppState;
use crate::error::{ApiError, AuthErrorBody, ErrorBody, Json, Path};

/// `{"status": "ok"}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Status {
    pub status: String,
}

#[utoipa::path(get, path = "/health", tag = "service", operation_id = "getHealth",
    responses((status = 200, body = Status, description = "The process is up: `{\"status\": \"ok\"}`")))]
pub async fn health() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

#[utoipa::path(get, path = "/ready", tag = "service", operation_id = "getReadiness", responses(
    (status = 200, body = Status, description = "Plugins are loaded: `{\"status\": \"ready\"}`"),
    (status = 503, body = Status, description = "Still loading plugins (`{\"status\": \"loading\"}`), or `SERVICES_FILE` is set and no version of it has loaded yet (`{\"status\": \"services_registry_not_loaded\"}`; its error is in `GET /internal/services` and the log)"),
))]
pub async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    let services = s.services.registry();
    if services.file().is_some() && services.snapshot().loaded_at.is_none() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status {
                status: "services_registry_not_loaded".into(),
            }),
        );
    }
    if s.registry.is_ready() {
        (
            StatusCode::OK,
            Json(Status {
                status: "ready".into(),
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status {
                status: "loading".into(),
            }),
        )
    }
}

/// A loaded connector.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectorInfo {
    /// The id requests name it by, e.g. `github`.
    pub id: String,
    pub name: String,
    /// Semantic version, MAJOR.MINOR.PATCH.
    pub version: String,
    pub description: String,
    /// Version of the WIT world (`sluice:connector@X`) the component was built against, from
    /// the `connector` interface it exports, e.g. `0.2.1`. The host serves `0.2.1` (current; it also
    /// serves `0.2.0` components, by semver) and `0.1.0` side by side; a 0.1.0 component gets no
    /// `started-at`/`run-id` and no `clock`, a 0.2.0 one no `records.emit-fields`.
    #[schema(example = "0.2.1")]
    pub wit_version: String,
    /// SHA-256 of the `.wasm` file, hex.
    pub sha256: String,
    pub size_bytes: u64,
    /// The file it was loaded from (null for a connector not loaded from a file).
    #[schema(required = true)]
    pub file: Option<String>,
    /// The streams (tables) it declares; `discover` may add more for a given config.
    pub streams: Vec<StreamInfo>,
    /// The credentials it reads, by name.
    pub secrets: Vec<SecretInfo>,
    /// Hosts it may reach (`{config.FIELD}` is filled from the request's config).
    pub hosts: Vec<String>,
    /// The JSON Schema (2020-12) the request's `config` must match.
    #[schema(schema_with = crate::schema::json_schema)]
    pub config_schema: Value,
    /// Memory one call may use, MiB, as the connector declares it (null: the host's default).
    #[schema(required = true)]
    pub memory_mib: Option<u32>,
    /// The compiler of the code new calls run: `baseline` (Winch: a version without a cached
    /// optimized artifact serves on it as soon as it loads) until the optimizing compile
    /// (Cranelift, in the background) is swapped in, then `optimized`.
    #[schema(example = "optimized")]
    pub tier: String,
}

/// A stream (table) a connector declares.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StreamInfo {
    pub name: String,
    pub description: String,
    /// Fields identifying a record; rows are deduplicated on them.
    pub primary_key: Vec<String>,
    /// The field an incremental sync advances on, if any.
    #[schema(required = true)]
    pub cursor_field: Option<String>,
    /// The JSON Schema of one record.
    #[schema(schema_with = crate::schema::json_schema)]
    pub json_schema: Value,
}

impl From<&sluice_runtime::StreamSpec> for StreamInfo {
    fn from(s: &sluice_runtime::StreamSpec) -> Self {
        Self {
            name: s.name.clone(),
            description: s.description.clone(),
            primary_key: s.primary_key.clone(),
            cursor_field: s.cursor_field.clone(),
            json_schema: s.json_schema.clone(),
        }
    }
}

/// A credential a connector reads (the request's `credentials` carries it by `name`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretInfo {
    pub name: String,
    pub description: String,
    /// Whether a request without it is refused (422).
    pub required: bool,
}

impl From<&sluice_runtime::SecretSpec> for SecretInfo {
    fn from(s: &sluice_runtime::SecretSpec) -> Self {
        Self {
            name: s.name.clone(),
            description: s.description.clone(),
            required: s.required,
        }
    }
}

impl From<&Plugin> for ConnectorInfo {
    fn from(p: &Plugin) -> Self {
        let m = p.manifest();
        let i = p.info();
        Self {
            id: m.id.clone(),
            name: m.name.clone(),
            version: m.version.clone(),
            description: m.description.clone(),
            wit_version: i.wit_version.clone(),
            sha256: i.sha256.clone(),
            size_bytes: i.size,
            file: i.path.as_ref().map(|p| p.display().to_string()),
            streams: m.streams.iter().map(StreamInfo::from).collect(),
            secrets: m.secrets.iter().map(SecretInfo::from).collect(),
            hosts: m.hosts.iter().map(ToString::to_string).collect(),
            config_schema: m.config_schema.clone(),
            memory_mib: m.memory_mib,
            tier: p.tier().to_string(),
        }
    }
}

/// A plugin file that failed to load.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FailureInfo {
    pub file: String,
    pub error: String,
    /// What still serves in its place, as `id@version` (e.g. `github@0.3.0`), if anything.
    #[schema(required = true)]
    pub serving: Option<String>,
}

impl From<&LoadFailure> for FailureInfo {
    fn from(f: &LoadFailure) -> Self {
        Self {
            file: f.file.display().to_string(),
            error: f.error.clone(),
            serving: f.serving.clone(),
        }
    }
}

/// Loaded connectors and files that failed to load.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectorList {
    pub connectors: Vec<ConnectorInfo>,
    pub failures: Vec<FailureInfo>,
}

#[utoipa::path(get, path = "/internal/connectors", tag = "connectors", operation_id = "listConnectors", security(("token" = [])), responses(
    (status = 200, body = ConnectorList, description = "Loaded connectors, by id, and the files that failed to load",
        links(("getConnector" = (operation_id = "getConnector", parameters(("id" = "$response.body#/connectors/0/id")))))),
    (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
))]
pub async fn list(State(s): State<AppState>) -> Json<ConnectorList> {
    let snap = s.registry.snapshot();
    Json(ConnectorList {
        connectors: snap.plugins().map(ConnectorInfo::from).collect(),
        failures: snap.failures().iter().map(FailureInfo::from).collect(),
    })
}

#[utoipa::path(get, path = "/internal/connectors/{id}", tag = "connectors", operation_id = "getConnector", security(("token" = [])),
    params(("id" = String, Path, description = "Connector id", example = "http-json")),
    responses(
        (status = 200, body = ConnectorInfo, description = "The connector"),
        (status = 400, body = ErrorBody, description = "The path is not valid UTF-8 once decoded (`bad_path`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 404, body = ErrorBody, description = "No connector with this id (`not_found`)"),
    ))]
pub async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ConnectorInfo>, ApiError> {
    let p = s
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("unknown connector {id:?}")))?;
    Ok(Json(ConnectorInfo::from(&p)))
}

#[utoipa::path(get, path = "/internal/connectors/{id}/docs", tag = "connectors", operation_id = "getConnectorDocs", security(("token" = [])),
    params(("id" = String, Path, description = "Connector id", example = "http-json")),
    responses(
        (status = 200, content_type = "text/markdown", body = String, description = "The connector's docs for analysts (Markdown): authentication, configuration, streams with columns, types, primary keys and cursors, and how to query the Parquet with DuckDB. Columns are those the manifest's schemas give; a connection's `_README.md` (written by schema-sync) has the committed ones."),
        (status = 400, body = ErrorBody, description = "The path is not valid UTF-8 once decoded (`bad_path`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 404, body = ErrorBody, description = "No connector with this id (`not_found`)"),
    ))]
pub async fn docs(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let p = s
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("unknown connector {id:?}")))?;
    // Off the HTTP threads: the page grows with the manifest's columns.
    let page = crate::off_http(async move {
        let m = p.manifest();
        let streams: Vec<_> = m
            .streams
            .iter()
            .map(sluice_runs::catalog::planned_stream)
            .collect();
        sluice_runs::docs::connector_markdown(m, &streams)
    })
    .await;
    Ok(markdown(page))
}

/// A Markdown page as an answer (`text/markdown; charset=utf-8`, RFC 7763).
pub(crate) fn markdown(body: String) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/markdown; charset=utf-8",
        )],
        body,
    )
}
