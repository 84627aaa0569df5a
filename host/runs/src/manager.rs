//! The service's runs: admission, execution on a capped pool, cancellation, shutdown.
//!
//! Two modes behind one API. **Embedded** (no `DATABASE_URL`): records in local files
//! ([`RunBook`]), admission and the queue in this process. **Replicated**: records, queue,
//! admission rules and idempotency keys in PostgreSQL ([`SharedQueue`]); any replica admits a
//! run, the one with a free slot claims it, holds a lease by heartbeat and commits under its
//! fencing token; a run whose replica died is retried by another.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_runtime::registry::Registry;
use sluice_runtime::{CancellationToken, Plugin, Secrets};
use sluice_staging::StagingConfig;
use sluice_storage::commit::Layout;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use crate::pipeline::{self, Progress, RunError, RunLimits, RunSpec};
use crate::records::{RunBook, RunErrorInfo, RunRecord, RunStatus};
use crate::sealed::{RunRequest, SealKey};
use crate::shared::{Beat, Claim, DbError, Inserted, QueueFence, SharedQueue};
use crate::target::{Backend, StorageSpec};

/// Operator settings for runs.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub max_concurrent_runs: usize,
    /// Runs that may wait for a slot; beyond that, submissions are refused.
    pub max_queued_runs: usize,
    pub run_deadline: Duration,
    /// Limit of the `discover` that checks config-defined stream names at admission
    /// (`SLUICE_CALL_TIMEOUT_SECS`).
    pub call_deadline: Duration,
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
    /// Replicated mode: the run database did not answer.
    #[error(transparent)]
    Unavailable(#[from] DbError),
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
    // An unknown name first: a misnamed credential (`api_token` for `token`) is what the user
    // has to fix, not the required one it leaves missing.
    for name in credentials.keys() {
        if m.secret(name).is_none() {
            let declared: Vec<&str> = m.secrets.iter().map(|s| s.name.as_str()).collect();
            let missing = m
                .secrets
                .iter()
                .filter(|s| !credentials.contains_key(&s.name))
                .map(|s| s.name.as_str());
            return Err(SubmitError::Invalid {
                field: format!("credentials.{name}"),
                message: format!(
                    "unknown credential {name:?}: connector {} declares no such secret{} (it declares: {})",
                    m.id,
                    did_you_mean(name, missing),
                    declared.join(", ")
                ),
            });
        }
    }
    for s in &m.secrets {
        if s.required && credentials.get(&s.name).is_none_or(|v| v.trim().is_empty()) {
            return Err(SubmitError::Invalid {
                field: format!("credentials.{}", s.name),
                message: format!("required secret {:?} is missing or empty", s.name),
            });
        }
    }
    check_config(plugin, config)
}

/// For a connector whose manifest declares no streams (they come from the config, e.g.
/// `http-json`), checks requested stream names against what `discover` gives for this config,
/// within `deadline` (`SLUICE_CALL_TIMEOUT_SECS`), so an unknown stream is a 422 at submit as
/// for every other connector. A `discover` that fails (an upstream down) is no verdict: the
/// run is admitted and its own `discover` reports the failure.
pub async fn check_discovered_streams(
    plugin: &Plugin,
    config: &Value,
    credentials: &BTreeMap<String, Zeroizing<String>>,
    streams: &[String],
    deadline: Duration,
) -> Result<(), SubmitError> {
    if streams.is_empty() || !plugin.manifest().streams.is_empty() {
        return Ok(());
    }
    // A client that goes away (the submit dropped) stops the discover, also while it waits
    // for a call slot.
    let cancel = CancellationToken::new();
    let _stop_when_dropped = cancel.clone().drop_guard();
    let opts = sluice_runtime::CallOptions {
        secrets: Secrets::new(credentials.iter().map(|(k, v)| (k.clone(), v.to_string()))),
        deadline,
        deadline_setting: Some("SLUICE_CALL_TIMEOUT_SECS"),
        cancel,
        ..Default::default()
    };
    // On the work runtime, as every plugin call: never on the threads that answer the probes.
    let discovered = sluice_runtime::work::spawn({
        let (plugin, config) = (plugin.clone(), config.clone());
        async move { plugin.discover(&config, opts).await }
    })
    .await;
    let discovered = match discovered {
        Ok(d) => d,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => Err(sluice_runtime::CallError::Host(format!(
                "the discover task ended without its answer: {e}"
            ))),
        },
    };
    let available = match discovered {
        Ok(available) => available,
        Err(e) => {
            tracing::info!(connector = %plugin.manifest().id, "stream names not checked at admission: discover failed: {e}");
            return Ok(());
        }
    };
    match streams
        .iter()
        .find(|name| !available.iter().any(|s| &s.name == *name))
    {
        None => Ok(()),
        Some(name) => {
            let names: Vec<&str> = available.iter().map(|s| s.name.as_str()).collect();
            Err(SubmitError::Invalid {
                field: "streams".into(),
                message: format!(
                    "unknown stream {name:?}; connector {} has, for this config: {}{}",
                    plugin.manifest().id,
                    if names.is_empty() { "no stream" } else { "" },
                    names.join(", ")
                ),
            })
        }
    }
}

/// `; did you mean "x"?` for the candidate closest to `name` (by Jaro-Winkler similarity, at
/// least 0.7, or one containing the other), else nothing.
fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let lower = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let c_lower = c.to_ascii_lowercase();
            let mut score = strsim::jaro_winkler(&lower, &c_lower);
            if c_lower.len() >= 3 && (lower.contains(&c_lower) || c_lower.contains(&lower)) {
                score = score.max(0.9);
            }
            (score, c)
        })
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("; did you mean {c:?}?"))
        .unwrap_or_default()
}

/// Checks requested stream names against the streams the connector's manifest declares, so a
/// typo is a 422 at submit rather than a failed run later. Connectors whose streams come from
/// the config alone (an empty manifest list, e.g. `http-json`) are checked by
/// [`check_discovered_streams`].
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

/// Checks the shape of a stream selection before anything else: `None` (the field left out)
/// syncs every stream; an empty list is refused (it reads as "sync nothing" but would sync all),
/// and so is a list that names a stream twice or names the empty string. The API (`streams`)
/// and `sluice run --stream` share this rule.
pub fn check_stream_selection(streams: Option<&[String]>) -> Result<(), SubmitError> {
    let Some(streams) = streams else {
        return Ok(());
    };
    let invalid = |message: String| SubmitError::Invalid {
        field: "streams".into(),
        message,
    };
    if streams.is_empty() {
        return Err(invalid(
            "is empty: name at least one stream, or leave `streams` out to sync all".into(),
        ));
    }
    let mut seen = HashSet::new();
    for name in streams {
        if name.is_empty() {
            return Err(invalid("a stream name is empty".into()));
        }
        if !seen.insert(name.as_str()) {
            return Err(invalid(format!(
                "stream {name:?} is named more than once; name each stream once"
            )));
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
    let errors: Vec<_> = validator.iter_errors(config).collect();
    let field_of = |path: String| {
        if path.is_empty() {
            "config".to_string()
        } else {
            format!("config{}", path.replace('/', "."))
        }
    };
    let schema = &plugin.manifest().config_schema;
    // A field the schema does not allow is named first, with the field it probably meant: a
    // misnamed field (`repos` for `repositories`) also leaves a required one missing, and that
    // error alone sent the user looking for the wrong mistake.
    for err in &errors {
        if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } =
            err.kind()
        {
            let schema_path = err.schema_path().to_string();
            let parent = schema_path
                .strip_suffix("/additionalProperties")
                .unwrap_or("");
            let instance = config.pointer(&err.instance_path().to_string());
            return Err(SubmitError::Invalid {
                field: field_of(err.instance_path().to_string()),
                message: unknown_fields_message(unexpected, declared_at(schema, parent), instance),
            });
        }
    }
    let Some(err) = errors.first() else {
        return Ok(());
    };
    let mut message = err.to_string();
    // The schema allows fields it does not declare (no `additionalProperties: false`): still
    // name the undeclared ones, which are likely the cause.
    if let Some(object) = config.as_object() {
        let declared = declared_at(schema, "");
        let unknown: Vec<String> = object
            .keys()
            .filter(|k| !declared.contains(&k.as_str()))
            .cloned()
            .collect();
        if !declared.is_empty() && !unknown.is_empty() {
            message = format!(
                "{message} (and {})",
                unknown_fields_message(&unknown, declared, Some(config))
            );
        }
    }
    Err(SubmitError::Invalid {
        field: field_of(err.instance_path().to_string()),
        message,
    })
}

/// The property names a (sub)schema at `pointer` declares: its `properties`, and those of its
/// `anyOf`/`oneOf`/`allOf` branches.
fn declared_at<'s>(schema: &'s Value, pointer: &str) -> Vec<&'s str> {
    let Some(node) = schema.pointer(pointer) else {
        return Vec::new();
    };
    let mut names: Vec<&str> = Vec::new();
    let mut add = |n: &'s Value| {
        if let Some(props) = n.get("properties").and_then(Value::as_object) {
            for k in props.keys() {
                if !names.contains(&k.as_str()) {
                    names.push(k);
                }
            }
        }
    };
    add(node);
    for key in ["anyOf", "oneOf", "allOf"] {
        for branch in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(branch);
        }
    }
    names
}

/// `unknown field "repos"; did you mean "repositories"? (the connector's schema declares: …)`.
fn unknown_fields_message(
    unexpected: &[String],
    declared: Vec<&str>,
    instance: Option<&Value>,
) -> String {
    let absent: Vec<&str> = declared
        .iter()
        .copied()
        .filter(|d| instance.and_then(|i| i.get(d)).is_none())
        .collect();
    let named: Vec<String> = unexpected
        .iter()
        .map(|u| format!("{u:?}{}", did_you_mean(u, absent.iter().copied())))
        .collect();
    format!(
        "unknown field{} {} (the connector's schema declares: {})",
        if unexpected.len() == 1 { "" } else { "s" },
        named.join(", "),
        if declared.is_empty() {
            "no fields".to_string()
        } else {
            declared.join(", ")
        }
    )
}

/// Where run records live and who admits runs.
pub enum Book {
    /// Local files; this process admits and queues (no `DATABASE_URL`).
    Embedded(RunBook),
    /// PostgreSQL, shared by every replica; requests sealed with the replicas' common key.
    Shared {
        queue: Arc<SharedQueue>,
        key: Arc<SealKey>,
    },
}

/// Runs executing (or, in the embedded mode, waiting) in this process.
#[derive(Default)]
struct Active {
    /// Embedded mode: connection id → its active run.
    by_connection: HashMap<String, String>,
    cancels: HashMap<String, CancellationToken>,
    progress: HashMap<String, Progress>,
    /// Runs whose cancel came from a client (not from a shutdown).
    cancelled_by_client: HashSet<String>,
    /// Embedded mode: runs waiting for a slot.
    queued: usize,
    /// Replicated mode: the fencing token of each run's attempt here. A stale attempt still
    /// winding down must not forget the entries of a newer attempt of the same run.
    fences: HashMap<String, u64>,
}

/// Runs of this service.
pub struct RunManager {
    registry: Arc<Registry>,
    book: Book,
    config: ManagerConfig,
    /// Replicated mode: this replica's run slots (the database orders the queue).
    slots: Arc<Semaphore>,
    /// Embedded mode: the run slots, shared fairly between connectors
    /// ([`sluice_runtime::fair`]): a freed slot goes to a queued run of the connector with the
    /// fewest running; from 4 slots on, one connector's runs leave a quarter to the others.
    run_slots: Arc<sluice_runtime::fair::FairPool>,
    active: Mutex<Active>,
    tasks: TaskTracker,
    closing: AtomicBool,
    /// Replicated mode: wakes the claim loop (a slot freed, or shutdown began).
    wake: Notify,
    /// Replicated mode: queued runs in the cluster, as last counted (every 5 s).
    cluster_queued: AtomicUsize,
}

impl RunManager {
    pub fn new(registry: Arc<Registry>, book: Book, config: ManagerConfig) -> Arc<Self> {
        let this = Arc::new(Self {
            registry,
            book,
            slots: Arc::new(Semaphore::new(config.max_concurrent_runs.max(1))),
            run_slots: sluice_runtime::fair::FairPool::quarter_reserve(
                config.max_concurrent_runs.max(1) as u64,
                |reserve| (reserve / 4).max(1),
            ),
            config,
            active: Mutex::new(Active::default()),
            tasks: TaskTracker::new(),
            closing: AtomicBool::new(false),
            wake: Notify::new(),
            cluster_queued: AtomicUsize::new(0),
        });
        if let Book::Shared { queue, .. } = &this.book {
            let (me, queue) = (this.clone(), queue.clone());
            this.tasks.spawn(async move { me.claim_loop(queue).await });
        }
        this
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// Whether records live in PostgreSQL (replicated mode).
    pub fn is_replicated(&self) -> bool {
        matches!(self.book, Book::Shared { .. })
    }

    /// Admits a run (202) or says why not.
    pub async fn submit(self: &Arc<Self>, req: SubmitRun) -> Result<RunRecord, SubmitError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let fingerprint = req.fingerprint();
        if let Some(key) = &req.idempotency_key
            && let Some(existing) = self.by_idempotency_key(key).await?
        {
            return self.replay(existing, key, &fingerprint);
        }
        let plugin = self
            .registry
            .get(&req.connector)
            .ok_or_else(|| SubmitError::UnknownConnector(req.connector.clone()))?;
        check_request(&plugin, &req.config, &req.credentials)?;
        check_streams(&plugin, &req.streams)?;
        check_discovered_streams(
            &plugin,
            &req.config,
            &req.credentials,
            &req.streams,
            self.config.call_deadline,
        )
        .await?;
        let layout = layout_of(&req.storage, &req.connection_id)?;
        let store = req
            .storage
            .open(&self.config.backend)
            .map_err(|m| SubmitError::Invalid {
                field: "storage".into(),
                message: m,
            })?;
        let record = RunRecord {
            run_id: uuid::Uuid::now_v7().to_string(),
            connection_id: req.connection_id.clone(),
            connector: plugin.info().id.clone(),
            connector_version: Some(plugin.info().version.clone()),
            status: RunStatus::Queued,
            full_refresh: req.full_refresh,
            requested_streams: (!req.streams.is_empty()).then(|| req.streams.clone()),
            streams: BTreeMap::new(),
            bucket: req.storage.bucket.clone(),
            prefix: req.storage.prefix.clone(),
            created_at: crate::now_rfc3339(),
            started_at: None,
            finished_at: None,
            error: None,
            cancel_requested: false,
            attempts: 0,
            replica: None,
            idempotency_key: req.idempotency_key.clone(),
            request_sha256: req.idempotency_key.as_ref().map(|_| fingerprint.clone()),
        };
        match &self.book {
            Book::Embedded(book) => self.admit_here(book, plugin, record, req, store, layout),
            Book::Shared { queue, key } => {
                self.admit_shared(queue, key, record, req, &fingerprint)
                    .await
            }
        }
    }

    async fn by_idempotency_key(&self, key: &str) -> Result<Option<RunRecord>, SubmitError> {
        Ok(match &self.book {
            Book::Embedded(book) => book.by_idempotency_key(key),
            Book::Shared { queue, .. } => queue.by_idempotency_key(key).await?,
        })
    }

    /// The answer to a request that reuses an idempotency key: the run it created, unless
    /// the request differs.
    fn replay(
        &self,
        existing: RunRecord,
        key: &str,
        fingerprint: &str,
    ) -> Result<RunRecord, SubmitError> {
        if existing
            .request_sha256
            .as_ref()
            .is_some_and(|f| f != fingerprint)
        {
            return Err(SubmitError::KeyReused {
                key: key.to_string(),
                run_id: existing.run_id,
            });
        }
        Ok(self.with_progress(existing))
    }

    /// Embedded mode: admission and the queue in this process.
    fn admit_here(
        self: &Arc<Self>,
        book: &RunBook,
        plugin: Plugin,
        record: RunRecord,
        req: SubmitRun,
        store: Arc<dyn sluice_storage::Store>,
        layout: Layout,
    ) -> Result<RunRecord, SubmitError> {
        let run_id = record.run_id.clone();
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
            // Beyond the queue's cap, as many as there are free slots (those start at once; a
            // slot kept for other connectors by `run_slots` is one of them).
            let free = self.config.max_concurrent_runs.saturating_sub(running);
            if a.queued >= self.config.max_queued_runs + free {
                return Err(SubmitError::QueueFull);
            }
            a.by_connection
                .insert(req.connection_id.clone(), run_id.clone());
            a.cancels.insert(run_id.clone(), cancel.clone());
            a.progress.insert(run_id.clone(), progress.clone());
            a.queued += 1;
        }
        book.save(&record);
        tracing::info!(run_id = %run_id, connection_id = %req.connection_id, connector = %record.connector, version = %plugin.info().version, "run queued");
        let spec = RunSpec {
            run_id: run_id.clone(),
            connection_id: req.connection_id,
            config: req.config,
            secrets: Secrets::new(req.credentials.into_iter().map(|(k, v)| (k, v.to_string()))),
            streams: req.streams,
            full_refresh: req.full_refresh,
            store,
            layout,
            commit_id: run_id.clone(),
            fence: None,
        };
        let this = self.clone();
        let span = run_span(&record);
        self.tasks.spawn(tracing::Instrument::instrument(
            async move { this.run_here(plugin, spec, cancel, progress).await },
            span,
        ));
        Ok(record)
    }

    /// Replicated mode: the run is queued in PostgreSQL, with its request sealed.
    async fn admit_shared(
        &self,
        queue: &SharedQueue,
        key: &SealKey,
        record: RunRecord,
        req: SubmitRun,
        fingerprint: &str,
    ) -> Result<RunRecord, SubmitError> {
        let request = RunRequest {
            config: req.config,
            credentials: req.credentials,
            streams: req.streams,
            full_refresh: req.full_refresh,
            storage: req.storage,
        };
        let sealed = key
            .seal(&record.run_id, &request)
            .map_err(|e| SubmitError::Invalid {
                field: "credentials".into(),
                message: e.to_string(),
            })?;
        // A conflict whose active run ended meanwhile is tried again (twice at most).
        for _ in 0..3 {
            match queue.insert(&record, &sealed).await? {
                Inserted::Queued => {
                    tracing::info!(run_id = %record.run_id, connection_id = %record.connection_id, connector = %record.connector, "run queued (shared)");
                    return Ok(record);
                }
                Inserted::Existing(existing) => {
                    let key = record.idempotency_key.clone().unwrap_or_default();
                    return self.replay(*existing, &key, fingerprint);
                }
                Inserted::QueueFull => return Err(SubmitError::QueueFull),
                Inserted::Active(run_id) if !run_id.is_empty() => {
                    return Err(SubmitError::Conflict {
                        connection_id: record.connection_id.clone(),
                        run_id,
                    });
                }
                Inserted::Active(_) => continue,
            }
        }
        Err(SubmitError::Conflict {
            connection_id: record.connection_id.clone(),
            run_id: "(another run, just ended)".into(),
        })
    }

    /// Embedded mode: waits for a slot, executes, records the end.
    async fn run_here(
        self: Arc<Self>,
        plugin: Plugin,
        spec: RunSpec,
        cancel: CancellationToken,
        progress: Progress,
    ) {
        let Book::Embedded(book) = &self.book else {
            return;
        };
        let run_id = spec.run_id.clone();
        let connector: sluice_runtime::fair::Key = Arc::from(plugin.manifest().id.as_str());
        let permit = tokio::select! {
            p = self.run_slots.acquire(&connector, 1) => p,
            _ = cancel.cancelled() => None,
        };
        if let Ok(mut a) = self.active.lock() {
            a.queued = a.queued.saturating_sub(1);
        }
        let started = Instant::now();
        let result = match permit {
            None => Err(RunError::Cancelled),
            Some(_permit) => {
                book.update(&run_id, |r| {
                    r.status = RunStatus::Running;
                    r.started_at = Some(crate::now_rfc3339());
                    r.attempts = 1;
                });
                self.execute_guarded(&plugin, spec, &cancel, &progress)
                    .await
            }
        };
        let streams = progress.lock().map(|p| p.clone()).unwrap_or_default();
        // The record turns terminal and the connection is released in one critical section
        // of `active`: a client that sees `succeeded` and submits the connection's next run at
        // once is never answered 409 (`submit` checks `by_connection` under the same lock).
        let mut active = self.active.lock().ok();
        let by_client = active
            .as_ref()
            .is_some_and(|a| a.cancelled_by_client.contains(&run_id));
        let shutdown = self.closing.load(Ordering::Acquire) && !by_client;
        let record = book.update(&run_id, |r| {
            end_record(r, streams, &result, &cancel, shutdown)
        });
        if let Some(a) = active.as_mut() {
            if let Some(r) = &record {
                a.by_connection.remove(&r.connection_id);
            }
            a.forget(&run_id);
        }
        drop(active);
        if let Some(r) = record {
            report_end(&r, started);
        }
    }

    /// Runs the pipeline as its own task on the work runtime ([`sluice_runtime::work`]): a panic
    /// anywhere in it (a bug, or input nobody foresaw) ends this run as `failed`, and the run's
    /// staging is removed either way.
    async fn execute_guarded(
        &self,
        plugin: &Plugin,
        spec: RunSpec,
        cancel: &CancellationToken,
        progress: &Progress,
    ) -> Result<pipeline::RunOutcome, RunError> {
        let run_id = spec.run_id.clone();
        let staging_dir = self.config.staging.dir.join(&spec.commit_id);
        let limits = RunLimits {
            staging: self.config.staging.clone(),
            deadline: self.config.run_deadline,
            cancel: cancel.clone(),
            log_bytes: self.config.run_log_bytes,
        };
        // On the work runtime: the plugin's calls and the staging of its batches never hold the
        // threads that answer the probes (a run's task may compute for long stretches).
        let task = sluice_runtime::work::spawn({
            let (plugin, progress) = (plugin.clone(), progress.clone());
            async move { pipeline::execute(&plugin, spec, limits, progress).await }
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

    /// Replicated mode: claims queued runs while this replica has free slots; wakes on
    /// `NOTIFY` (a run queued, a cancel), a freed slot, the reaper's tick, or a slow poll that
    /// covers notifications lost while the database connection was down.
    async fn claim_loop(self: Arc<Self>, queue: Arc<SharedQueue>) {
        let lease = queue.config().lease;
        let mut reap = tokio::time::interval(lease / 2);
        let mut poll = tokio::time::interval(Duration::from_secs(5));
        let mut listener = None;
        while !self.closing.load(Ordering::Acquire) {
            if !self.registry.is_ready() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if listener.is_none() {
                listener = match queue.listener().await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::warn!("cannot listen for queued runs (retrying): {e}");
                        None
                    }
                };
            }
            self.claim_free_slots(&queue).await;
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(Some),
                    None => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Ok(None)
                    }
                }
            };
            tokio::select! {
                n = notified => match n {
                    Ok(Some(n)) if n.channel() == crate::shared::CANCEL_CHANNEL => {
                        self.cancel_here(n.payload(), true);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("lost the database notification stream (reconnecting): {e}");
                        listener = None;
                    }
                },
                _ = reap.tick() => {
                    if let Err(e) = queue.reap().await {
                        tracing::warn!("{e}");
                    }
                }
                // The queue gauge (`/metrics`) is counted here only, not on every wake-up.
                _ = poll.tick() => {
                    if let Ok(n) = queue.queued().await {
                        self.cluster_queued.store(n, Ordering::Relaxed);
                    }
                }
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Claims as many queued runs as this replica has free slots, and starts them.
    async fn claim_free_slots(self: &Arc<Self>, queue: &Arc<SharedQueue>) {
        // Not before the plugin directory's first scan: a claimed run needs its connector here.
        if !self.registry.is_ready() {
            return;
        }
        let connectors: Vec<String> = self
            .registry
            .snapshot()
            .plugins()
            .map(|p| p.info().id.clone())
            .collect();
        let mut permits = Vec::new();
        while let Ok(p) = self.slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        if permits.is_empty() {
            return;
        }
        let claims = match queue.claim(permits.len(), &connectors).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot claim runs: {e}");
                return;
            }
        };
        for (claim, permit) in claims.into_iter().zip(permits) {
            let this = self.clone();
            let queue = queue.clone();
            let span = run_span(&claim.record);
            self.tasks.spawn(tracing::Instrument::instrument(
                async move { this.run_claim(queue, claim, permit).await },
                span,
            ));
        }
    }

    /// Replicated mode: executes a claimed run under its lease, then ends it with its token.
    async fn run_claim(
        self: Arc<Self>,
        queue: Arc<SharedQueue>,
        claim: Claim,
        permit: OwnedSemaphorePermit,
    ) {
        let Claim {
            run_id,
            fence,
            attempt,
            mut record,
            sealed,
        } = claim;
        tracing::info!(run_id = %run_id, attempt, fence, "run claimed");
        let started = Instant::now();
        let cancel = CancellationToken::new();
        let progress: Progress = Default::default();
        if let Ok(mut a) = self.active.lock() {
            if let Some(stale) = a.cancels.insert(run_id.clone(), cancel.clone()) {
                stale.cancel();
            }
            a.progress.insert(run_id.clone(), progress.clone());
            a.fences.insert(run_id.clone(), fence);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat(
            queue.clone(),
            run_id.clone(),
            fence,
            cancel.clone(),
            progress.clone(),
            lost.clone(),
        ));
        let result = match self.prepare_claim(&queue, &run_id, fence, attempt, &record, &sealed) {
            Ok((plugin, spec)) => {
                self.execute_guarded(&plugin, spec, &cancel, &progress)
                    .await
            }
            Err(e) => Err(e),
        };
        heartbeat.abort();
        let by_client = self
            .active
            .lock()
            .map(|mut a| {
                let c = a.cancelled_by_client.contains(&run_id);
                if a.fences.get(&run_id) == Some(&fence) {
                    a.forget(&run_id);
                }
                c
            })
            .unwrap_or(false);
        drop(permit);
        self.wake.notify_one();
        // A commit refused by the fence means the lease ran out (the database was unreachable
        // or this replica stalled): the claim is no longer ours to end; the reaper re-queues.
        if lost.load(Ordering::Acquire) || matches!(result, Err(RunError::Fenced(_))) {
            tracing::warn!(run_id = %run_id, fence, "this attempt lost its claim; another attempt owns the run (nothing of this one is referenced)");
            return;
        }
        let shutting_down = self.closing.load(Ordering::Acquire);
        if shutting_down
            && !by_client
            && matches!(
                result,
                Err(RunError::Cancelled)
                    | Err(RunError::Plugin(sluice_runtime::CallError::Cancelled))
            )
        {
            match queue.hand_back(&run_id, fence).await {
                Ok(true) => {
                    tracing::info!(run_id = %run_id, "run handed back to the queue at shutdown");
                    return;
                }
                // A client asked for the cancel meanwhile: the run ends cancelled below.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(run_id = %run_id, "cannot hand the run back ({e}); its lease will run out and another replica retries it");
                    return;
                }
            }
        }
        let streams = progress.lock().map(|p| p.clone()).unwrap_or_default();
        // A shutdown hands the run back above: a cancel reaching here came from a client.
        end_record(&mut record, streams, &result, &cancel, false);
        record.attempts = attempt;
        record.cancel_requested |= by_client;
        // Until the lease runs out the claim is ours: keep trying to record the end (the
        // database may be restarting). If it never lands, the reaper retries the run and the
        // next attempt finds its commit in `_state.json`.
        let give_up = Instant::now() + queue.config().lease;
        loop {
            match queue.finish(&record, fence).await {
                Ok(true) => break,
                Ok(false) => {
                    tracing::warn!(run_id = %run_id, "the claim was lost before the run's end was recorded");
                    return;
                }
                Err(e) if Instant::now() < give_up => {
                    tracing::warn!(run_id = %run_id, "cannot record the run's end yet: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::error!(run_id = %run_id, "cannot record the run's end: {e}");
                    return;
                }
            }
        }
        report_end(&record, started);
    }

    /// Opens a claimed run's sealed request and builds what the pipeline needs.
    fn prepare_claim(
        &self,
        queue: &Arc<SharedQueue>,
        run_id: &str,
        fence: u64,
        attempt: u32,
        record: &RunRecord,
        sealed: &[u8],
    ) -> Result<(Plugin, RunSpec), RunError> {
        let Book::Shared { key, .. } = &self.book else {
            return Err(RunError::Internal("not in replicated mode".into()));
        };
        let request = key
            .open(run_id, sealed)
            .map_err(|e| RunError::Internal(e.to_string()))?;
        let plugin = self.registry.get(&record.connector).ok_or_else(|| {
            RunError::Invalid(format!(
                "connector {:?} is not loaded on replica {:?}",
                record.connector,
                queue.config().replica
            ))
        })?;
        let layout = layout_of(&request.storage, &record.connection_id)
            .map_err(|e| RunError::Invalid(e.to_string()))?;
        let store = request
            .storage
            .open(&self.config.backend)
            .map_err(RunError::Invalid)?;
        let spec = RunSpec {
            run_id: run_id.to_string(),
            connection_id: record.connection_id.clone(),
            config: request.config,
            secrets: Secrets::new(
                request
                    .credentials
                    .into_iter()
                    .map(|(k, v)| (k, v.to_string())),
            ),
            streams: request.streams,
            full_refresh: request.full_refresh,
            store,
            layout,
            commit_id: sluice_storage::commit::commit_id(run_id, attempt),
            fence: Some(Arc::new(QueueFence {
                queue: queue.clone(),
                run_id: run_id.to_string(),
                token: fence,
                margin: queue.config().lease / 3,
            })),
        };
        Ok((plugin, spec))
    }

    fn with_progress(&self, mut r: RunRecord) -> RunRecord {
        if r.status.is_active()
            && let Ok(a) = self.active.lock()
        {
            r.cancel_requested |= a.cancelled_by_client.contains(&r.run_id);
            if let Some(p) = a.progress.get(&r.run_id)
                && let Ok(p) = p.lock()
            {
                r.streams = p.clone();
            }
        }
        r
    }

    /// A run, or `None` if unknown.
    pub async fn get(&self, run_id: &str) -> Result<Option<RunRecord>, DbError> {
        let r = match &self.book {
            Book::Embedded(book) => book.get(run_id),
            Book::Shared { queue, .. } => queue.get(run_id).await?,
        };
        Ok(r.map(|r| self.with_progress(r)))
    }

    /// Runs, newest first, optionally of one connection.
    pub async fn list(&self, connection_id: Option<&str>) -> Result<Vec<RunRecord>, DbError> {
        let runs = match &self.book {
            Book::Embedded(book) => book.list(connection_id),
            Book::Shared { queue, .. } => queue.list(connection_id).await?,
        };
        Ok(runs.into_iter().map(|r| self.with_progress(r)).collect())
    }

    /// Cancels a run of this process; `by_client` marks it as asked for (not a shutdown).
    fn cancel_here(&self, run_id: &str, by_client: bool) -> bool {
        if let Ok(mut a) = self.active.lock()
            && let Some(c) = a.cancels.get(run_id).cloned()
        {
            tracing::info!(run_id, "cancel requested");
            if by_client {
                a.cancelled_by_client.insert(run_id.to_string());
            }
            c.cancel();
            return true;
        }
        false
    }

    /// Asks a run to stop at its next host call (in replicated mode, on whichever replica
    /// runs it). Returns its record, or `None` if unknown.
    pub async fn cancel(&self, run_id: &str) -> Result<Option<RunRecord>, DbError> {
        match &self.book {
            Book::Embedded(book) => {
                if self.cancel_here(run_id, true) {
                    book.update(run_id, |r| {
                        if r.status.is_active() {
                            r.cancel_requested = true;
                        }
                    });
                }
            }
            Book::Shared { queue, .. } => {
                self.cancel_here(run_id, true);
                queue.cancel(run_id).await?;
            }
        }
        self.get(run_id).await
    }

    /// Stops admitting and claiming runs, lets running ones finish within `grace`, then
    /// cancels the rest and waits for them to wind down (nothing of a cancelled run is
    /// committed; in replicated mode they go back to the queue for another replica).
    pub async fn shutdown(&self, grace: Duration) {
        self.closing.store(true, Ordering::Release);
        self.wake.notify_one();
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

    /// Runs waiting for a slot (in replicated mode: queued in the whole cluster, as last
    /// counted) and runs executing in this process, now.
    pub fn load(&self) -> (usize, usize) {
        let Ok(a) = self.active.lock() else {
            return (0, 0);
        };
        match &self.book {
            Book::Embedded(_) => (a.queued, a.by_connection.len().saturating_sub(a.queued)),
            Book::Shared { .. } => (self.cluster_queued.load(Ordering::Relaxed), a.cancels.len()),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

impl Active {
    fn forget(&mut self, run_id: &str) {
        self.fences.remove(run_id);
        self.cancels.remove(run_id);
        self.progress.remove(run_id);
        self.cancelled_by_client.remove(run_id);
    }
}

/// The storage layout a request names; a bad prefix or connection id is the client's error.
fn layout_of(storage: &StorageSpec, connection_id: &str) -> Result<Layout, SubmitError> {
    Layout::new(&storage.prefix, connection_id).map_err(|e| {
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
    })
}

/// The run's trace span, a child of the request that submitted it (and so of the caller's
/// `traceparent`); it covers the queueing too.
fn run_span(r: &RunRecord) -> tracing::Span {
    tracing::info_span!(
        target: "sluice_trace",
        "run",
        run_id = %r.run_id,
        connection_id = %r.connection_id,
        connector = %r.connector,
        outcome = tracing::field::Empty,
    )
}

/// A run's record at its end: status, counters, and why it failed or was cancelled.
/// Ends `r` with `result`. `shutdown`: the service is stopping and no client asked for the
/// cancel, so a cancelled run says the shutdown stopped it (it said "the run was cancelled",
/// and nobody had: an outside attack, session 11).
fn end_record(
    r: &mut RunRecord,
    streams: BTreeMap<String, pipeline::StreamStats>,
    result: &Result<pipeline::RunOutcome, RunError>,
    cancel: &CancellationToken,
    shutdown: bool,
) {
    r.finished_at = Some(crate::now_rfc3339());
    r.streams = streams;
    match result {
        Ok(_) => {
            r.status = RunStatus::Succeeded;
            r.error = None;
        }
        Err(e)
            if cancel.is_cancelled()
                || matches!(
                    e,
                    RunError::Cancelled | RunError::Plugin(sluice_runtime::CallError::Cancelled)
                ) =>
        {
            r.status = RunStatus::Cancelled;
            r.error = Some(RunErrorInfo {
                code: "cancelled".into(),
                message: if shutdown {
                    "the service shut down before the run ended (SIGTERM, past SLUICE_SHUTDOWN_GRACE_SECS); nothing of it was committed".into()
                } else {
                    "the run was cancelled; nothing of it was committed".into()
                },
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
}

/// Logs and meters a run's end.
fn report_end(r: &RunRecord, started: Instant) {
    tracing::Span::current().record("outcome", r.status.as_str());
    sluice_telemetry::metrics().run_ended(&r.connector, r.status.as_str(), started.elapsed());
    let rows: u64 = r.streams.values().map(|s| s.committed_rows).sum();
    match &r.error {
        None => {
            tracing::info!(run_id = %r.run_id, connection_id = %r.connection_id, connector = %r.connector, rows, "run succeeded")
        }
        Some(e) => {
            tracing::warn!(run_id = %r.run_id, connection_id = %r.connection_id, connector = %r.connector, code = %e.code, "run ended: {}", e.message)
        }
    }
}

/// Renews a claim every third of its lease and publishes progress; cancels the run when a
/// client asked for it, when the claim is lost, or when the lease ran out without a renewal
/// (the database unreachable for that long: another replica may take the run, so this one
/// stops — it fences itself).
async fn heartbeat(
    queue: Arc<SharedQueue>,
    run_id: String,
    fence: u64,
    cancel: CancellationToken,
    progress: Progress,
    lost: Arc<AtomicBool>,
) {
    let lease = queue.config().lease;
    let mut last_renewal = Instant::now();
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        let streams = progress
            .lock()
            .ok()
            .and_then(|p| serde_json::to_value(&*p).ok())
            .unwrap_or_default();
        match queue.heartbeat(&run_id, fence, &streams).await {
            Ok(Beat::Held { cancel_requested }) => {
                last_renewal = Instant::now();
                if cancel_requested && !cancel.is_cancelled() {
                    tracing::info!(run_id = %run_id, "cancel requested (seen by heartbeat)");
                    cancel.cancel();
                }
            }
            Ok(Beat::Lost) => {
                lost.store(true, Ordering::Release);
                cancel.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(run_id = %run_id, "cannot renew the lease: {e}");
                if last_renewal.elapsed() >= lease {
                    tracing::warn!(run_id = %run_id, "the lease ran out without a renewal; stopping this attempt");
                    lost.store(true, Ordering::Release);
                    cancel.cancel();
                    return;
                }
            }
        }
    }
}
