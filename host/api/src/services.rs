//! `/internal/services/*`: the internal-service registry, connect (token exchange), disconnect
//! (revoke) and health. Thin: the work is in `sluice-services`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_runs::catalog::{CatalogStream, planned_stream};
use sluice_runs::docs::ServiceEntry;
use sluice_runtime::CallOptions;
use sluice_services::client::TransportError;
use sluice_services::{HealthReport, HealthState, Service, ServiceError, UpstreamError};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use crate::AppState;
use crate::error::{ApiError, AuthErrorBody, ErrorBody, Json, Path};

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// How a service's data is synced: pass `id`, `config` and the key (as the credential named
/// `secret`) to `POST /internal/mirror-connections/runs`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ServiceConnector {
    /// Connector id, e.g. `http-json`.
    pub id: String,
    /// The connector's config (for `http-json`, `base_url` is the service's).
    #[schema(schema_with = crate::schema::free_object)]
    pub config: Value,
    /// The credential name the analyst's key goes into, e.g. `api_token`.
    pub secret: String,
}

/// What a health probe found.
#[derive(Serialize, Clone, Copy, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceHealthState {
    /// The service answered 2xx.
    Up,
    /// Connection refused or reset, or the name does not resolve.
    Unreachable,
    /// The service answered 401: it does not take Sluice's shared secret.
    BadSecret,
    /// No answer within `SLUICE_SERVICE_TIMEOUT_SECS`.
    Timeout,
    /// The operator's outbound policy (`SLUICE_ALLOWED_HOSTS`, `SLUICE_ALLOW_PRIVATE_ADDRESSES`) forbids the destination.
    Denied,
    /// Another status, or an oversized answer.
    Error,
    /// Sluice has no usable `SC_SECRET_<ID>`; nothing was sent.
    SecretMissing,
}

impl From<HealthState> for ServiceHealthState {
    fn from(s: HealthState) -> Self {
        match s {
            HealthState::Up => Self::Up,
            HealthState::Unreachable => Self::Unreachable,
            HealthState::BadSecret => Self::BadSecret,
            HealthState::Timeout => Self::Timeout,
            HealthState::Denied => Self::Denied,
            HealthState::Error => Self::Error,
            HealthState::SecretMissing => Self::SecretMissing,
        }
    }
}

/// One health probe.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ServiceHealth {
    /// Service id.
    pub service: String,
    pub state: ServiceHealthState,
    /// Milliseconds from sending the probe to its answer (or to giving up, for `timeout`); null
    /// when nothing was sent or the service could not be reached.
    #[schema(required = true)]
    pub latency_ms: Option<u64>,
    /// The service's HTTP status, when it answered.
    #[schema(required = true)]
    pub http_status: Option<u16>,
    /// A short explanation.
    pub detail: String,
    /// When the probe ran.
    #[schema(format = DateTime)]
    pub checked_at: String,
}

impl ServiceHealth {
    fn new(service: &str, r: HealthReport) -> Self {
        Self {
            service: service.to_string(),
            state: r.state.into(),
            latency_ms: r.latency_ms,
            http_status: r.http_status,
            detail: r.detail,
            checked_at: rfc3339(r.checked_at),
        }
    }
}

/// A registered internal service.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ServiceInfo {
    /// The id requests name it by, e.g. `purchase-orders`.
    pub id: String,
    pub name: String,
    pub description: String,
    /// Where the service is; the protocol is under `{base_url}api/internal/`.
    pub base_url: String,
    pub connector: ServiceConnector,
    /// Variables the analyst's key is exported under (`env` of the connect answer), e.g. `PO_API_KEY`.
    pub env: Vec<String>,
    /// A variable the base URL is exported under, if any.
    #[schema(required = true)]
    pub url_env: Option<String>,
    /// Lifetime of a key when the connect request names none, days.
    pub ttl_days: u32,
    /// Markdown documentation for analysts.
    pub docs: String,
    /// The environment variable Sluice reads the shared secret from (`SC_SECRET_<ID>`).
    pub secret_env: String,
    /// Whether that variable holds a usable secret.
    pub secret_configured: bool,
    /// Why it does not, if it does not.
    #[schema(required = true)]
    pub secret_error: Option<String>,
    /// Unexpired keys this process obtained and has not revoked (kept in memory only).
    pub active_tokens: u64,
    /// The last health probe (`GET …/health`), null before the first.
    #[schema(required = true)]
    pub last_health: Option<ServiceHealth>,
    /// Why the service's connector config would be refused by its connector (a typo in an
    /// `http-json` stream, say), or that the connector is not loaded; null when it is fine.
    /// The file loads without this check (the connectors may load later).
    #[schema(required = true)]
    pub connector_error: Option<String>,
}

/// Whether the service's connector is loaded and takes its config (its `config_schema`).
fn connector_error(s: &AppState, svc: &Service) -> Option<String> {
    match s.registry.get(&svc.connector.id) {
        None => Some(format!("connector {:?} is not loaded", svc.connector.id)),
        Some(p) => sluice_runs::manager::check_config(&p, &svc.connector.config)
            .err()
            .map(|e| e.to_string()),
    }
}

fn info(s: &AppState, svc: &Service) -> ServiceInfo {
    ServiceInfo {
        id: svc.id.clone(),
        name: svc.name.clone(),
        description: svc.description.clone(),
        base_url: svc.base_url.to_string(),
        connector: ServiceConnector {
            id: svc.connector.id.clone(),
            config: svc.connector.config.clone(),
            secret: svc.connector.secret.clone(),
        },
        env: svc.env.clone(),
        url_env: svc.url_env.clone(),
        ttl_days: svc.ttl_days,
        docs: svc.docs.clone(),
        secret_env: svc.secret_env.clone(),
        secret_configured: svc.secret().is_some(),
        secret_error: svc.secret.as_ref().err().cloned(),
        active_tokens: s.services.tokens().count(&svc.id) as u64,
        last_health: s
            .services
            .last_health(&svc.id)
            .map(|h| ServiceHealth::new(&svc.id, h)),
        connector_error: connector_error(s, svc),
    }
}

/// Why the file on disk is not what is serving.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RegistryErrorInfo {
    pub message: String,
    /// When the failing version was read.
    #[schema(format = DateTime)]
    pub at: String,
}

/// The registry.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ServiceList {
    pub services: Vec<ServiceInfo>,
    /// `SERVICES_FILE` (null: none configured, the list is empty).
    #[schema(required = true)]
    pub file: Option<String>,
    /// When the serving version was loaded.
    #[schema(required = true, format = DateTime)]
    pub loaded_at: Option<String>,
    /// SHA-256 (hex) of the serving version.
    #[schema(required = true)]
    pub sha256: Option<String>,
    /// The last reload's error: the file on disk is broken and the previous version serves.
    #[schema(required = true)]
    pub error: Option<RegistryErrorInfo>,
}

/// `POST …/connect` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// The analyst the key is for.
    #[schema(examples("john@corp.example"), format = Email)]
    pub user_email: String,
    /// Lifetime of the key, days (1–3650). Default: the service's `ttl_days`.
    #[schema(minimum = 1, maximum = 3650)]
    pub ttl_days: Option<u32>,
}

/// A key for the analyst. Sluice keeps only `token_id`, the user and the expiry.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectResponse {
    pub service: String,
    /// The analyst's API key: store it encrypted; Sluice does not keep it.
    #[schema(value_type = String)]
    pub api_key: Zeroizing<String>,
    /// What `disconnect` revokes.
    pub token_id: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Variables for the analyst's environment: each of the service's `env` names → the key,
    /// and `url_env` → the base URL without a trailing `/` (`$PO_API_URL/api/me` is then a
    /// well-formed URL).
    #[schema(value_type = BTreeMap<String, String>)]
    pub env: BTreeMap<String, Zeroizing<String>>,
}

/// `POST …/disconnect` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    /// The `token_id` of a connect answer.
    #[schema(examples("tok_0123456789abcdef"), min_length = 1, max_length = 256)]
    pub token_id: String,
}

/// The token is revoked (now, or it was before).
#[derive(Serialize, utoipa::ToSchema)]
pub struct DisconnectResponse {
    pub service: String,
    pub token_id: String,
    /// Always `revoked`.
    pub status: String,
    /// False when the service did not know the token (it answered 404 with a JSON object).
    pub known_to_service: bool,
}

fn service_error(e: ServiceError) -> ApiError {
    let status = match &e {
        ServiceError::UnknownService(_) => StatusCode::NOT_FOUND,
        ServiceError::SecretMissing { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ServiceError::Upstream { error, .. } => match error {
            UpstreamError::Transport(TransportError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::UserRefused(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_GATEWAY,
        },
    };
    ApiError::new(status, e.code(), e.to_string())
}

fn lookup(s: &AppState, id: &str) -> Result<std::sync::Arc<Service>, ApiError> {
    s.services
        .registry()
        .get(id)
        .ok_or_else(|| service_error(ServiceError::UnknownService(id.to_string())))
}

#[utoipa::path(get, path = "/internal/services", tag = "services", operation_id = "listServices", security(("token" = [])), responses(
    (status = 200, body = ServiceList, description = "The registered internal services, and the registry file's state",
        links(("getService" = (operation_id = "getService", parameters(("id" = "$response.body#/services/0/id")))))),
    (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
))]
pub async fn list(State(s): State<AppState>) -> Json<ServiceList> {
    let registry = s.services.registry();
    let snap = registry.snapshot();
    Json(ServiceList {
        services: snap.services().map(|svc| info(&s, svc)).collect(),
        file: registry.file().map(|p| p.display().to_string()),
        loaded_at: snap.loaded_at.map(rfc3339),
        sha256: snap.sha256.clone(),
        error: snap.failure.as_ref().map(|f| RegistryErrorInfo {
            message: f.error.to_string(),
            at: rfc3339(f.at),
        }),
    })
}

#[utoipa::path(get, path = "/internal/services/{id}", tag = "services", operation_id = "getService", security(("token" = [])),
    params(("id" = String, Path, description = "Service id", example = "purchase-orders")),
    responses(
        (status = 200, body = ServiceInfo, description = "The service"),
        (status = 400, body = ErrorBody, description = "The path is not valid UTF-8 once decoded (`bad_path`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 404, body = ErrorBody, description = "No service with this id (`not_found`)"),
    ))]
pub async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ServiceInfo>, ApiError> {
    let svc = lookup(&s, &id)?;
    Ok(Json(info(&s, &svc)))
}

#[utoipa::path(post, path = "/internal/services/{id}/connect", tag = "services", operation_id = "connectService", security(("token" = [])),
    params(("id" = String, Path, description = "Service id", example = "purchase-orders")),
    request_body(content = ConnectRequest, example = json!({"user_email": "john@corp.example", "ttl_days": 90})),
    responses(
        (status = 200, body = ConnectResponse, description = "A key for the user, from the service's token exchange"),
        (status = 400, body = ErrorBody, description = "The body is not JSON (`malformed_json`) or the path not UTF-8 (`bad_path`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 403, body = ErrorBody, description = "The service refused the user (`user_refused`)"),
        (status = 404, body = ErrorBody, description = "No service with this id (`not_found`)"),
        (status = 413, body = ErrorBody, description = "The body is larger than 128 KiB (`body_too_large`)"),
        (status = 408, body = ErrorBody, description = "The body did not arrive within `SLUICE_HEADER_READ_TIMEOUT_SECS` of the request head (`body_timeout`); the connection is closed"),
        (status = 415, body = ErrorBody, description = "The body is not declared as JSON (`unsupported_media_type`)"),
        (status = 422, body = ErrorBody, description = "Not an email, ttl_days out of 1–3650, or an unknown member (`invalid_request`)"),
        (status = 502, body = ErrorBody, description = "The service is unreachable (`service_unreachable`), forbidden by the outbound policy (`service_denied`), refused the shared secret (`service_secret_rejected`), failed or redirected (`service_error`; redirects are not followed) or answered something that is not a token (`service_bad_answer`: not a 200/201 with `api_key`, `token_id` and `expires_at`; a token it named is revoked)"),
        (status = 503, body = ErrorBody, description = "Sluice has no usable SC_SECRET_<ID> for the service (`shared_secret_missing`)"),
        (status = 504, body = ErrorBody, description = "The service did not answer in time (`service_timeout`); it may have issued a key"),
    ))]
pub async fn connect(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<ConnectRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let c = s
        .services
        .connect(&id, &req.user_email, req.ttl_days)
        .await
        .map_err(service_error)?;
    let mut env: BTreeMap<String, Zeroizing<String>> = c
        .service
        .env
        .iter()
        .map(|name| (name.clone(), c.api_key.clone()))
        .collect();
    if let Some(name) = &c.service.url_env {
        env.insert(name.clone(), Zeroizing::new(c.service.exported_url()));
    }
    // The answer holds the key: no cache on the way may keep it (RFC 9111 §5.2.2.5).
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(ConnectResponse {
            service: c.service.id.clone(),
            expires_at: rfc3339(c.expires_at),
            token_id: c.token_id.clone(),
            api_key: c.api_key.clone(),
            env,
        }),
    ))
}

#[utoipa::path(post, path = "/internal/services/{id}/disconnect", tag = "services", operation_id = "disconnectService", security(("token" = [])),
    params(("id" = String, Path, description = "Service id", example = "purchase-orders")),
    request_body(content = DisconnectRequest, example = json!({"token_id": "tok_0123456789abcdef"})),
    responses(
        (status = 200, body = DisconnectResponse, description = "Revoked (also when it already was: idempotent)"),
        (status = 400, body = ErrorBody, description = "The body is not JSON (`malformed_json`) or the path not UTF-8 (`bad_path`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 404, body = ErrorBody, description = "No service with this id (`not_found`)"),
        (status = 413, body = ErrorBody, description = "The body is larger than 128 KiB (`body_too_large`)"),
        (status = 408, body = ErrorBody, description = "The body did not arrive within `SLUICE_HEADER_READ_TIMEOUT_SECS` of the request head (`body_timeout`); the connection is closed"),
        (status = 415, body = ErrorBody, description = "The body is not declared as JSON (`unsupported_media_type`)"),
        (status = 422, body = ErrorBody, description = "token_id is not 1–256 printable ASCII characters, or an unknown member (`invalid_request`)"),
        (status = 502, body = ErrorBody, description = "The service is unreachable (`service_unreachable`), forbidden (`service_denied`), refused the shared secret (`service_secret_rejected`), failed or redirected (`service_error`; redirects are not followed), or answered something that is not the protocol's 200 `{\"status\": \"ok\"}` (`service_bad_answer`: e.g. an HTML login page or `{\"status\": \"error\"}`, also a 404 that is not JSON, or over 1 MiB); the token may still be valid and stays tracked: retry"),
        (status = 503, body = ErrorBody, description = "Sluice has no usable SC_SECRET_<ID> for the service (`shared_secret_missing`)"),
        (status = 504, body = ErrorBody, description = "The service did not answer in time (`service_timeout`); retry"),
    ))]
pub async fn disconnect(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<DisconnectRequest>,
) -> Result<Json<DisconnectResponse>, ApiError> {
    let d = s
        .services
        .disconnect(&id, &req.token_id)
        .await
        .map_err(service_error)?;
    Ok(Json(DisconnectResponse {
        service: id,
        token_id: d.token_id,
        status: "revoked".into(),
        known_to_service: d.known_to_service,
    }))
}

#[utoipa::path(get, path = "/internal/services/{id}/health", tag = "services", operation_id = "checkServiceHealth", security(("token" = [])),
    params(("id" = String, Path, description = "Service id", example = "purchase-orders")),
    responses(
        (status = 200, body = ServiceHealth, description = "The service's health now (`state`), with latency; every outcome of the probe is a state, not an error"),
        (status = 400, body = ErrorBody, description = "The path is not valid UTF-8 once decoded (`bad_path`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 404, body = ErrorBody, description = "No service with this id (`not_found`)"),
    ))]
pub async fn health(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ServiceHealth>, ApiError> {
    let report = s.services.check_health(&id).await.map_err(service_error)?;
    Ok(Json(ServiceHealth::new(&id, report)))
}

/// The service `id`, which must be synced by `connector` (schema-sync's `service`).
/// The service `id`, which must be synced by `connector` with `config` when one is given
/// (schema-sync's `service`: the page written must be the connection's service's).
pub(crate) fn for_connector(
    s: &AppState,
    id: &str,
    connector: &str,
    config: Option<&serde_json::Value>,
) -> Result<std::sync::Arc<Service>, ApiError> {
    let svc = lookup(s, id)?;
    if svc.connector.id != connector {
        return Err(ApiError::unprocessable(format!(
            "service {id:?} is synced by connector {:?}, not {connector:?}",
            svc.connector.id
        )));
    }
    if config.is_some_and(|c| *c != svc.connector.config) {
        return Err(ApiError::unprocessable(format!(
            "config is not service {id:?}'s connector config (GET /internal/services/{id})"
        )));
    }
    Ok(svc)
}

/// The service's Markdown page, over its connector's page when that is loaded.
pub(crate) fn page(
    svc: &Service,
    connector: Option<(&sluice_runtime::manifest::Manifest, &[CatalogStream])>,
) -> String {
    let entry = ServiceEntry {
        id: &svc.id,
        name: &svc.name,
        description: &svc.description,
        env: &svc.env,
        url_env: svc.url_env.as_deref(),
        docs: &svc.docs,
    };
    sluice_runs::docs::service_markdown(&entry, connector)
}

#[utoipa::path(get, path = "/internal/services/{id}/docs", tag = "services", operation_id = "getServiceDocs", security(("token" = [])),
    params(("id" = String, Path, description = "Service id", example = "purchase-orders")),
    responses(
        (status = 200, content_type = "text/markdown", body = String, description = "The service's page for analysts (Markdown; the seed's `sc_*.md` skill file): the variables the analyst's key arrives in, the registry entry's `docs`, then its connector's page with the streams its `discover` gives for the service's config (the manifest's streams if discover fails). A connection's `_README.md` has the committed columns when schema-sync names the service."),
        (status = 400, body = ErrorBody, description = "The path is not valid UTF-8 once decoded (`bad_path`)"),
        (status = 401, body = AuthErrorBody, description = "Missing or wrong x-connect-service-token"),
        (status = 404, body = ErrorBody, description = "No service with this id (`not_found`)"),
    ))]
pub async fn docs(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let svc = lookup(&s, &id)?;
    let body = match s.registry.get(&svc.connector.id) {
        None => page(&svc, None),
        Some(p) => {
            // A client that goes away stops the discover (also while it waits for a slot).
            let cancel = sluice_runtime::CancellationToken::new();
            let _stop_when_dropped = cancel.clone().drop_guard();
            let opts = CallOptions {
                deadline: s.call_deadline,
                deadline_setting: Some("SLUICE_CALL_TIMEOUT_SECS"),
                cancel,
                ..Default::default()
            };
            // Off the HTTP threads: the discover and the page grow with the connector's columns.
            crate::off_http(async move {
                // Discover gets the service's config and no credentials; a connector that needs
                // them to list its streams falls back to the streams its manifest declares.
                let specs = match p.discover(&svc.connector.config, opts).await {
                    Ok(specs) => specs,
                    Err(e) => {
                        tracing::debug!(service = %svc.id, error = %e, "discover failed; the docs list the manifest's streams");
                        p.manifest().streams.clone()
                    }
                };
                let streams: Vec<CatalogStream> = specs.iter().map(planned_stream).collect();
                page(&svc, Some((p.manifest(), &streams)))
            })
            .await
        }
    };
    Ok(crate::connectors::markdown(body))
}
