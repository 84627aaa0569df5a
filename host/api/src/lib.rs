//! The HTTP API: thin handlers over the registry, the run manager and the internal services.
//!
//! `/health`, `/ready` and `/openapi.json` are open; every `/internal/*` route and `/metrics`
//! (unless made public) need the `x-connect-service-token` header (checked in [`auth`]).

mod auth;
mod body;
mod connectors;
mod error;
mod metrics;
mod mirror;
mod openapi;
mod schema;
pub mod server;
mod services;
mod trace;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use sluice_runs::manager::RunManager;
use sluice_runtime::registry::Registry;
use sluice_services::Services;

pub use error::ApiError;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub runs: Arc<RunManager>,
    /// The internal-service registry and protocol.
    pub services: Arc<Services>,
    /// Deadline of a `validate` or `discover` call.
    pub call_deadline: Duration,
    token: Arc<auth::Token>,
    /// `/metrics` answers without the token (`METRICS_PUBLIC=true`).
    metrics_public: bool,
    /// How long a request's body may take to arrive ([`body`]).
    body_read_timeout: Duration,
}

impl AppState {
    pub fn new(
        registry: Arc<Registry>,
        runs: Arc<RunManager>,
        services: Arc<Services>,
        token: &str,
        call_deadline: Duration,
    ) -> Self {
        Self {
            registry,
            runs,
            services,
            call_deadline,
            token: Arc::new(auth::Token::new(token)),
            metrics_public: false,
            body_read_timeout: Duration::from_secs(10),
        }
    }

    /// How long a request's body may take to arrive once its head has (default 10 s; `serve`
    /// gives it `SLUICE_HEADER_READ_TIMEOUT_SECS`): past it, 408 and the connection closed.
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Serves `/metrics` without the token when `public` (a scraper inside the cluster that
    /// holds no secret); by default it needs the token like `/internal`.
    pub fn with_public_metrics(mut self, public: bool) -> Self {
        self.metrics_public = public;
        self
    }
}

/// The largest request body accepted. Every body is a small JSON document (a config of at most
/// 64 KiB, credentials, storage); parsing one costs ~30× its size in memory, so 1 MiB bodies
/// sent 20 at a time took the service past 900 MiB.
pub const BODY_LIMIT: usize = 128 << 10;

/// The service's router.
pub fn router(state: AppState) -> Router {
    let internal = Router::new()
        .route("/mirror-connections/ping", post(mirror::ping))
        .route("/mirror-connections/validate", post(mirror::validate))
        .route(
            "/mirror-connections/runs",
            post(mirror::create_run).get(mirror::list_runs),
        )
        .route("/mirror-connections/runs/{run_id}", get(mirror::get_run))
        .route(
            "/mirror-connections/runs/{run_id}/cancel",
            post(mirror::cancel_run),
        )
        .route("/mirror-connections/schema-sync", post(mirror::schema_sync))
        .route("/connectors", get(connectors::list))
        .route("/connectors/{id}", get(connectors::get_one))
        .route("/connectors/{id}/docs", get(connectors::docs))
        .route("/services", get(services::list))
        .route("/services/{id}", get(services::get_one))
        .route("/services/{id}/connect", post(services::connect))
        .route("/services/{id}/disconnect", post(services::disconnect))
        .route("/services/{id}/health", get(services::health))
        .route("/services/{id}/docs", get(services::docs))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed);
    // The token is checked on the path, before routing: every `/internal` path, routed or not,
    // answers 401 without it, so the routes cannot be discovered without the token.
    Router::new()
        .route("/health", get(connectors::health))
        .route("/ready", get(connectors::ready))
        .route("/openapi.json", get(openapi::serve))
        .route("/metrics", get(metrics::serve))
        .nest("/internal", internal)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        // Inside the token check: a client without the token is answered 401 at once.
        .layer(axum::middleware::from_fn_with_state(
            state.body_read_timeout,
            body::read_in_time,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(trace::trace_request))
        .with_state(state)
}

pub use openapi::document as openapi_document;

/// Runs `work` on the work runtime ([`sluice_runtime::work`]) and waits for it: a handler's
/// plugin call and what it computes from the answer (a discover of 20,000 columns, its catalog
/// and docs page) never hold the threads that answer `/health` and `/ready`. A panic in `work`
/// goes on in the handler, as if it had run there.
pub(crate) async fn off_http<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    match sluice_runtime::work::spawn(work).await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only a runtime shutdown cancels a task, and the work runtime never shuts down.
            Err(e) => panic!("work task ended without its answer: {e}"),
        },
    }
}
