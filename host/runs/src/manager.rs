//! The service's runs: admission, execution on a capped pool, cancellation, shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sluice_runtime::registry::Registry;
use sluice_runtime::{CancellationToken, Plugin, Secrets};
use sluice_staging::StagingConfig;
use sluice_storage::commit::Layout;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use crate::pipeline::{self, Progress, RunError, RunLimits, RunSpec};
use crate::records::{RunBook, RunErrorInfo, RunRecord, RunStatus};
use crate::target::{Backend, StorageSpec};

/// Operator settings for runs.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub max_concurrent_runs: usize,
    /// Runs that may wait for a slot; beyond that, submissions are refused.
    pub max_queued_runs: usize,
    pub run_deadline: Duration,
    /// Bytes of plugin log one run may write (all its calls together).
    pub run_log_bytes: u64,
    pub staging: StagingConfig,
    pub backend: Backend,
}

/// A run request, as the API received it.
pub struct SubmitRun {
    pub connection_id: String,
    pub connector: String,
    pub config: Value,
    pub credentials: BTreeMap<String, Zeroizing<String>>,
    pub streams: Vec<String>,
    pub full_refresh: bool,
    pub storage: StorageSpec,
    pub idempotency_key: Option<String>,
}

/// Why a run was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("unknown connector {0:?}")]
    UnknownConnector(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("connection {connection_id:?} already has an active run {run_id}")]
    Conflict {
        connection_id: String,
        run_id: String,
    },
    #[error("the run queue is full; retry later")]
    QueueFull,
    #[error("the service is shutting down")]
    ShuttingDown,
    /// An `Idempotency-Key` that an earlier, different request already used.
    #[error("Idempotency-Key {key:?} was used for run {run_id} with a different request")]
    KeyReused { key: String, run_id: String },
}

impl SubmitRun {
    /// SHA-256 of what identifies the request, credentials excepted (their names are in).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let doc = serde_json::json!({
            "connection_id": self.connection_id,
            "connector": self.connector,
            "config": self.config,
            "credentials": self.credentials.keys().collect::<Vec<_>>(),
            "streams": self.streams,
            "full_refresh": self.full_refresh,
            "bucket": self.storage.bucket,
            "prefix": self.storage.prefix,
            "region": self.storage.region,
        });
        hex::encode(sha2::Sha256::digest(doc.to_string().as_bytes()))
    }
}

/// Checks credentials against the declared secrets and config against the config schema.
pub fn check_request(
    plugin: &Plugin,
    config: &Value,
    credentials: &BTreeMap<String, Zeroizing<String>>,
) -> Result<(), SubmitError> {
    let m = plugin.manifest();
    for s in &m.secrets {
        if s.required && credentials.get(&s.name).is_none_or(|v| v.trim().is_empty()) {
            return Err(SubmitError::Invalid {
                field: format!("credentials.{}", s.name),
                message: format!("required secret {:?} is missing or empty", s.name),
            });
        }
    }
    for name in credentials.keys() {
        if m.secret(name).is_none() {
            let declared: Vec<&str> = m.secrets.iter().map(|s| s.name.as_str()).collect();
            return Err(SubmitError::Invalid {
                field: format!("credentials.{name}"),
                message: format!(
                    "connector {} declares no secret {name:?} (it declares: {})",
                    m.id,
                    declared.join(", ")
                ),
            });
        }
    }
    check_config(plugin, config)
}

/// Checks requested stream names against the streams the connector's manifest declares, so a
/// typo is a 422 at submit rather than a failed run later. Connectors whose streams come from
/// the config alone (an empty manifest list, e.g. `http-json`) are checked against `discover`
/// when the run starts.
pub fn check_streams(plugin: &Plugin, streams: &[String]) -> Result<(), SubmitError> {
    let declared = &plugin.manifest().streams;
    if declared.is_empty() {
        return Ok(());
    }
    for name in streams {
        if !declared.iter().any(|s| &s.name == name) {
            let names: Vec<&str> = declared.iter().map(|s| s.name.as_str()).collect();
            return Err(SubmitError::Invalid {
                field: "streams".into(),
                message: format!(
                    "unknown stream {name:?}; connector {} has: {}",
                    plugin.manifest().id,
                    names.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// The largest config accepted, in bytes of JSON. Configs are a few hundred bytes; a request
/// body may be 1 MiB, but a megabyte of JSON parsed, checked and held by every waiting call or
/// queued run is tens of MiB each (found by sending 20 at once).
pub const MAX_CONFIG_BYTES: usize = 64 << 10;

/// Checks a config against the connector's config JSON Schema; names the failing path.
pub fn check_config(plugin: &Plugin, config: &Value) -> Result<(), SubmitError> {
    let size = config.to_string().len();
    if size > MAX_CONFIG_BYTES {
        return Err(SubmitError::Invalid {
            field: "config".into(),
            message: format!("config is {size} bytes of JSON; at most {MAX_CONFIG_BYTES}"),
        });
    }
    let validator = jsonschema::validator_for(&plugin.manifest().config_schema).map_err(|e| {
        SubmitError::Invalid {
            field: "config".into(),
            message: format!("connector config schema is unusable: {e}"),
        }
    })?;
    if let Some(err) = validator.iter_errors(config).next() {
        let path = err.instance_path().to_string();
        let field = if path.is_empty() {
            "config".to_string()
        } else {
            format!("config{}", path.replace('/', "."))
        };
        return Err(SubmitError::Invalid {
            field,
            message: err.to_string(),
        });
    }
    Ok(())
}

struct Active {
    /// connection id → its active run.
    by_connection: HashMap<String, String>,
    cancels: HashMap<String, CancellationToken>,
    progress: HashMap<String, Progress>,
    queued: usize,
}

/// Runs of this service.
pub struct RunManager {
    registry: Arc<Registry>,
    book: RunBook,
    config: ManagerConfig,
    slots: Arc<Semaphore>,
    active: Mutex<Active>,
    tasks: TaskTracker,
    closing: AtomicBool,
}

impl RunManager {
    pub fn new(registry: Arc<Registry>, book: RunBook, config: ManagerConfig) -> Arc<Self> {
        Arc::new(Self {
            registry,
            book,
            slots: Arc::new(Semaphore::new(config.max_concurrent_runs.max(1))),
            config,
            active: Mutex::new(Active {
                by_connection: HashMap::new(),
                cancels: HashMap::new(),
                progress: HashMap::new(),
                queued: 0,
            }),
            tasks: TaskTracker::new(),
            closing: AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// Admits a run (202) or says why not.
    pub fn submit(self: &Arc<Self>, req: SubmitRun) -> Result<RunRecord, SubmitError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let fingerprint = req.fingerprint();
        if let Some(key) = &req.idempotency_key
            && let Some(existing) = self.book.by_idempotency_key(key)
        {
            if existing
                .request_sha256
                .as_ref()
                .is_some_and(|f| *f != fingerprint)
            {
                return Err(SubmitError::KeyReused {
                    key: key.clone(),
                    run_id: existing.run_id,
                });
            }
            return Ok(self.with_progress(existing));
        }
        let plugin = self
            .registry
            .get(&req.connector)
            .ok_or_else(|| SubmitError::UnknownConnector(req.connector.clone()))?;
        check_request(&plugin, &req.config, &req.credentials)?;
        check_streams(&plugin, &req.streams)?;
        let layout = Layout::new(&req.storage.prefix, &req.connection_id).map_err(|e| {
            let message = e.to_string();
            let field = if message.contains("prefix") {
                "storage.prefix"
            } else {
                "connection_id"
            };
            SubmitError::Invalid {
                field: field.into(),
                message,
            }
        })?;
        let store = req
            .storage
            .open(&self.config.backend)
            .map_err(|m| SubmitError::Invalid {
                field: "storage".into(),
                message: m,
            })?;
        // Stream names are checked against `discover` when the run starts (streams may depend on the config).

        let run_id = uuid::Uuid::now_v7().to_string();
        let cancel = CancellationToken::new();
        let progress: Progress = Default::default();
        {
            let mut a = self.active.lock().map_err(|_| SubmitError::ShuttingDown)?;
            if let Some(run_id) = a.by_connection.get(&req.connection_id) {
                return Err(SubmitError::Conflict {
                    connection_id: req.connection_id.clone(),
                    run_id: run_id.clone(),
                });
            }
            let running = a.by_connection.len() - a.queued;
            if running >= self.config.max_concurrent_runs && a.queued >= self.config.max_queued_runs
            {
                return Err(SubmitError::QueueFull);
            }
            a.by_connection
                .insert(req.connection_id.clone(), run_id.clone());
            a.cancels.insert(run_id.clone(), cancel.clone());
            a.progress.insert(run_id.clone(), progress.clone());
            a.queued += 1;
        }
        let record = RunRecord {
            run_id: run_id.clone(),
            connection_id: req.connection_id.clone(),
            connector: plugin.info().id.clone(),
            connector_version: Some(plugin.info().version.clone()),
            status: RunStatus::Queued,
            full_refresh: req.full_refresh,
            requested_streams: req.streams.clone(),
            streams: BTreeMap::new(),
            bucket: req.storage.bucket.clone(),
            prefix: req.storage.prefix.clone(),
            created_at: crate::now_rfc3339(),
            started_at: None,
            finished_at: None,
            error: None,
            idempotency_key: req.idempotency_key.clone(),
            request_sha256: req.idempotency_key.as_ref().map(|_| fingerprint),
        };
        self.book.save(&record);
        tracing::info!(run_id = %run_id, connection_id = %req.connection_id, connector = %plugin.info().id, version = %plugin.info().version, "run queued");
        let spec = RunSpec {
            run_id: run_id.clone(),
            connection_id: req.connection_id,
            config: req.config,
            secrets: Secrets::new(req.credentials.into_iter().map(|(k, v)| (k, v.to_string()))),
            streams: req.streams,
            full_refresh: req.full_refresh,
            store,
            layout,
        };
        let this = self.clone();
        // The run's trace span, a child of the request that submitted it (and so of the
        // caller's `traceparent`); it covers the queueing too.
        let span = tracing::info_span!(
            target: "sluice_trace",
            "run",
            run_id = %run_id,
            connection_id = %record.connection_id,
            connector = %record.connector,
            outcome = tracing::field::Empty,
        );
        self.tasks.spawn(tracing::Instrument::instrument(
            async move { this.run(plugin, spec, cancel, progress).await },
            span,
        ));
        Ok(record)
    }

    async fn run(
        self: Arc<Self>,
        plugin: Plugin,
        spec: RunSpec,
        cancel: CancellationToken,
        progress: Progress,
    ) {
        let run_id = spec.run_id.clone();
        let permit = tokio::select! {
            p = self.slots.clone().acquire_owned() => p.ok(),
            _ = cancel.cancelled() => None,
        };
        if let Ok(mut a) = self.active.lock() {
            a.queued = a.queued.saturating_sub(1);
        }
        let started = std::time::Instant::now();
        let result = match permit {
            None => Err(RunError::Cancelled),
            Some(_permit) => {
                self.book.update(&run_id, |r| {
                    r.status = RunStatus::Running;
                    r.started_at = Some(crate::now_rfc3339());
                });
                let limits = RunLimits {
                    staging: self.config.staging.clone(),
                    deadline: self.config.run_deadline,
                    cancel: cancel.clone(),
                    log_bytes: self.config.run_log_bytes,
                };
                let staging_dir = limits.staging.dir.join(&run_id);
                // The second wall: the pipeline runs as its own task, so that a panic anywhere
                // in it (a bug, or input nobody foresaw) ends this run as `failed`, releases
                // the connection and removes the staging, instead of stranding the run.
                let task = tokio::spawn({
                    let (plugin, progress) = (plugin.clone(), progress.clone());
                    tracing::Instrument::in_current_span(async move {
                        pipeline::execute(&plugin, spec, limits, progress).await
                    })
                });
                let result = match task.await {
                    Ok(r) => r,
                    Err(e) => {
                        let why = if e.is_panic() {
                            "panicked"
                        } else {
                            "was aborted"
                        };
                        tracing::error!(run_id = %run_id, "run task {why}");
                        Err(RunError::Internal(format!(
                            "the run's task {why}; nothing of it was committed"
                        )))
                    }
                };
                if staging_dir.exists() {
                    let _ = std::fs::remove_dir_all(&staging_dir);
                }
                result
            }
        };
        let streams = progress.lock().map(|p| p.clone()).unwrap_or_default();
        // The record turns terminal and the connection is released in one critical section
        // of `active`: a client that sees `succeeded` and submits the connection's next run at
        // once is never answered 409 (`submit` checks `by_connection` under the same lock).
        let mut active = self.active.lock().ok();
        let record = self.book.update(&run_id, |r| {
            r.finished_at = Some(crate::now_rfc3339());
            r.streams = streams;
            match &result {
                Ok(_) => r.status = RunStatus::Succeeded,
                Err(e)
                    if cancel.is_cancelled()
                        || matches!(
                            e,
                            RunError::Cancelled
                                | RunError::Plugin(sluice_runtime::CallError::Cancelled)
                        ) =>
                {
                    r.status = RunStatus::Cancelled;
                    r.error = Some(RunErrorInfo {
                        code: "cancelled".into(),
                        message: "the run was cancelled; nothing of it was committed".into(),
                    });
                }
                Err(e) => {
                    r.status = RunStatus::Failed;
                    r.error = Some(RunErrorInfo {
                        code: e.code().into(),
                        message: e.to_string(),
                    });
                }
            }
        });
        if let Some(a) = active.as_mut() {
            if let Some(r) = &record {
                a.by_connection.remove(&r.connection_id);
            }
            a.cancels.remove(&run_id);
            a.progress.remove(&run_id);
        }
        drop(active);
        if let Some(r) = record {
            tracing::Span::current().record("outcome", r.status.as_str());
            sluice_telemetry::metrics().run_ended(
                &r.connector,
                r.status.as_str(),
                started.elapsed(),
            );
            let rows: u64 = r.streams.values().map(|s| s.committed_rows).sum();
            match &r.error {
                None => {
                    tracing::info!(run_id = %run_id, connection_id = %r.connection_id, connector = %r.connector, rows, "run succeeded")
                }
                Some(e) => {
                    tracing::warn!(run_id = %run_id, connection_id = %r.connection_id, connector = %r.connector, code = %e.code, "run ended: {}", e.message)
                }
            }
        }
    }

    fn with_progress(&self, mut r: RunRecord) -> RunRecord {
        if r.status.is_active()
            && let Ok(a) = self.active.lock()
            && let Some(p) = a.progress.get(&r.run_id)
            && let Ok(p) = p.lock()
        {
            r.streams = p.clone();
        }
        r
    }

    pub fn get(&self, run_id: &str) -> Option<RunRecord> {
        self.book.get(run_id).map(|r| self.with_progress(r))
    }

    pub fn list(&self, connection_id: Option<&str>) -> Vec<RunRecord> {
        self.book
            .list(connection_id)
            .into_iter()
            .map(|r| self.with_progress(r))
            .collect()
    }

    /// Asks a run to stop at its next host call. Returns its record, or `None` if unknown.
    pub fn cancel(&self, run_id: &str) -> Option<RunRecord> {
        if let Ok(a) = self.active.lock()
            && let Some(c) = a.cancels.get(run_id)
        {
            tracing::info!(run_id, "cancel requested");
            c.cancel();
        }
        self.get(run_id)
    }

    /// Stops admitting runs, lets running ones finish within `grace`, then cancels the rest
    /// and waits for them to wind down (nothing of a cancelled run is committed).
    pub async fn shutdown(&self, grace: Duration) {
        self.closing.store(true, Ordering::Release);
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            let n = self.active.lock().map(|a| a.cancels.len()).unwrap_or(0);
            tracing::warn!(runs = n, "grace period over; cancelling runs still active");
            if let Ok(a) = self.active.lock() {
                a.cancels.values().for_each(CancellationToken::cancel);
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
        }
    }

    /// Runs waiting for a slot and runs executing, now.
    pub fn load(&self) -> (usize, usize) {
        self.active
            .lock()
            .map(|a| (a.queued, a.by_connection.len().saturating_sub(a.queued)))
            .unwrap_or_default()
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}
