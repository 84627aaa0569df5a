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

#[utoipa::path(get, path = "/health", tag = "service", responses((status = 200, body = Status, description = "The process is up")))]
pub async fn health() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

#[utoipa::path(get, path = "/ready", tag = "service", responses(
    (status = 200, body = Status, description = "Plugins are loaded"),
    (status = 503, body = Status, description = "Still loading plugins"),
))]
pub async fn ready(State(s): State<AppState>) -> impl IntoResponse {
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
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub wit_version: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub file: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub streams: Vec<sluice_runtime::StreamSpec>,
    #[schema(value_type = Vec<Object>)]
    pub secrets: Vec<sluice_runtime::SecretSpec>,
    pub hosts: Vec<String>,
    #[schema(value_type = Object)]
    pub config_schema: Value,
    pub memory_mib: Option<u32>,
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
            streams: m.streams.clone(),
            secrets: m.secrets.clone(),
            hosts: m.hosts.iter().map(ToString::to_string).collect(),
            config_schema: m.config_schema.clone(),
            memory_mib: m.memory_mib,
        }
    }
}

/// A plugin file that failed to load.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FailureInfo {
    pub file: String,
    pub error: String,
    /// The version still serving in its place, if any.
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

#[utoipa::path(get, path = "/internal/connectors", tag = "connectors", security(("token" = [])), responses(
    (status = 200, body = ConnectorList),
    (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
))]
pub async fn list(State(s): State<AppState>) -> Json<ConnectorList> {
    let snap = s.registry.snapshot();
    Json(ConnectorList {
        connectors: snap.plugins().map(ConnectorInfo::from).collect(),
        failures: snap.failures().iter().map(FailureInfo::from).collect(),
    })
}

#[utoipa::path(get, path = "/internal/connectors/{id}", tag = "connectors", security(("token" = [])),
    params(("id" = String, Path, description = "Connector id")),
    responses(
        (status = 200, body = ConnectorInfo),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 404, body = ErrorBody),
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
