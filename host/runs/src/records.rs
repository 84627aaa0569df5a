//! Run status, persisted as one JSON file per run so it survives a restart.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::pipeline::StreamStats;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
    }

    /// The status as the API spells it (`succeeded`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Why a run failed, as the API reports it (never containing credentials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunErrorInfo {
    pub code: String,
    pub message: String,
}

/// A run as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRecord {
    pub run_id: String,
    pub connection_id: String,
    /// Connector id.
    pub connector: String,
    /// Version of the connector the run was submitted to (null if unknown).
    #[schema(required = true)]
    pub connector_version: Option<String>,
    pub status: RunStatus,
    pub full_refresh: bool,
    /// The streams the request named, or null when it left `streams` out (every stream of the
    /// connector) — the request's own spelling, since an empty list is refused at submit.
    /// Records written before this rule stored `[]` for "all": read back as null.
    #[serde(default, deserialize_with = "empty_selection_is_all")]
    #[schema(required = true)]
    pub requested_streams: Option<Vec<String>>,
    /// Counters per stream, by stream name.
    pub streams: BTreeMap<String, StreamStats>,
    pub bucket: String,
    pub prefix: String,
    /// When the run was accepted (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it started executing (null while queued).
    #[schema(required = true, format = DateTime)]
    pub started_at: Option<String>,
    /// When it ended (null while queued or running).
    #[schema(required = true, format = DateTime)]
    pub finished_at: Option<String>,
    /// Why it failed or was cancelled (null otherwise).
    #[schema(required = true)]
    pub error: Option<RunErrorInfo>,
    /// Times the run was started: 0 while first queued, 1 once running; in replicated mode
    /// more when a replica died or stalled and another retried it (at most
    /// `SLUICE_MAX_RUN_ATTEMPTS`). A run handed back at a graceful shutdown does not count
    /// that attempt: it was stopped, not lost, and restarts under the same number.
    #[serde(default)]
    pub attempts: u32,
    /// Replicated mode: the replica (`SLUICE_REPLICA_ID`) that ran the latest attempt; null
    /// in the embedded mode and before the first claim.
    #[serde(default)]
    #[schema(required = true)]
    pub replica: Option<String>,
    /// A client asked to cancel the run (`POST …/cancel`) while it was queued or running: the
    /// cancel was accepted and the run ends `cancelled` at its next host call (a run that
    /// finished first keeps its own status). False otherwise, and for records written before
    /// this member existed.
    #[serde(default)]
    #[schema(required = true)]
    pub cancel_requested: bool,
    /// The `Idempotency-Key` header the run was submitted with; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// With an idempotency key: SHA-256 (hex) of the request it was first used with
    /// (credentials left out), so a reuse of the key with another request is refused instead of
    /// answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_sha256: Option<String>,
}

/// Reads a stored stream selection: `null`, a missing member and `[]` (how records written
/// before the selection became optional spelled "every stream") all mean every stream.
fn empty_selection_is_all<'de, D>(deserializer: D) -> Result<Option<Vec<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let streams = Option::<Vec<String>>::deserialize(deserializer)?;
    Ok(streams.filter(|s| !s.is_empty()))
}

/// The manifest of the commit of run `r`, when its connection's `_state.json` names one (read
/// without credentials of the request: `None` when the store cannot be opened or read).
async fn committed_manifest(
    r: &RunRecord,
    backend: &crate::target::Backend,
) -> Option<sluice_storage::commit::RunManifest> {
    use sluice_storage::commit;
    let spec = crate::target::StorageSpec {
        bucket: r.bucket.clone(),
        prefix: r.prefix.clone(),
        access_key_id: None,
        secret_access_key: None,
        session_token: None,
        region: None,
    };
    let store = spec.open(backend).ok()?;
    let layout = commit::Layout::new(&r.prefix, &r.connection_id).ok()?;
    let state = commit::read_state(store.as_ref(), &layout).await.ok()?;
    let id = state
        .runs
        .iter()
        .find(|c| commit::is_attempt_of(c, &r.run_id))?;
    commit::read_manifest(store.as_ref(), &layout, id)
        .await
        .ok()
}

/// The error of a run that was in flight when the service stopped.
pub const INTERRUPTED_MESSAGE: &str = "the service stopped while this run was in flight; it committed only if its connection's _state.json names it (a stop during the commit can leave it committed), and nothing of it otherwise";

/// Persisted run records, with an in-memory index.
pub struct RunBook {
    dir: PathBuf,
    runs: RwLock<HashMap<String, RunRecord>>,
    /// Runs [`RunBook::open`] found running (not only queued) and marked `interrupted`.
    interrupted: Vec<String>,
}

impl RunBook {
    /// Loads every record under `dir`. Runs that were queued or running when the service
    /// stopped are marked failed (`interrupted`). Whether such a run committed is not known
    /// here: a process killed between writing `_state.json` and this record left a committed
    /// run behind (an outside attack, session 11: the record said it "committed nothing" while
    /// `_state.json` named it), so the message points at `_state.json`, the one place that
    /// says, and [`RunBook::reconcile_interrupted`] looks there where it can.
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let mut runs = HashMap::new();
        let mut interrupted = Vec::new();
        let mut started = Vec::new();
        for entry in std::fs::read_dir(&dir)?.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            match serde_json::from_slice::<RunRecord>(&bytes) {
                Ok(mut r) => {
                    // Only a run that had started can have reached its commit.
                    if r.status == RunStatus::Running {
                        started.push(r.run_id.clone());
                    }
                    if r.status.is_active() {
                        r.status = RunStatus::Failed;
                        r.finished_at = Some(crate::now_rfc3339());
                        r.error = Some(RunErrorInfo {
                            code: "interrupted".into(),
                            message: INTERRUPTED_MESSAGE.into(),
                        });
                        interrupted.push(r.clone());
                    }
                    runs.insert(r.run_id.clone(), r);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), "skipping unreadable run record: {e}")
                }
            }
        }
        let book = Self {
            dir,
            runs: RwLock::new(runs),
            interrupted: started,
        };
        for r in interrupted {
            tracing::warn!(run_id = %r.run_id, connection_id = %r.connection_id, "run was in flight at the last stop; marked failed");
            book.save(&r);
        }
        Ok(book)
    }

    pub fn get(&self, run_id: &str) -> Option<RunRecord> {
        self.runs.read().ok()?.get(run_id).cloned()
    }

    /// Looks up each run [`RunBook::open`] marked `interrupted` in its connection's
    /// `_state.json`, where `backend` can be read without the run's request (local storage,
    /// or S3 credentials in the service's environment): a run the state names committed
    /// before the process died (after `_state.json` was written, before this record was), so
    /// it becomes `succeeded` with the counts of its `_runs/{run_id}.json` (an outside attack,
    /// session 11, killed the process there). Runs it cannot look up keep `interrupted`.
    /// Returns how many became `succeeded`.
    pub async fn reconcile_interrupted(&self, backend: &crate::target::Backend) -> usize {
        let mut found = 0;
        for run_id in &self.interrupted {
            let Some(r) = self.get(run_id) else { continue };
            let committed = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                committed_manifest(&r, backend),
            )
            .await;
            let Ok(Some(manifest)) = committed else {
                continue;
            };
            let updated = self.update(run_id, |r| {
                r.status = RunStatus::Succeeded;
                r.error = None;
                r.finished_at = Some(manifest.finished_at.clone());
                for (name, m) in &manifest.streams {
                    let s = r.streams.entry(name.clone()).or_default();
                    s.records = m.records;
                    s.bytes = m.bytes;
                    s.files = m.files.len() as u64;
                    s.committed_rows = m.files.iter().map(|f| f.rows).sum();
                }
            });
            if updated.is_some() {
                tracing::info!(run_id = %run_id, "a run in flight at the last stop had committed (_state.json names it): recorded succeeded");
                found += 1;
            }
        }
        found
    }

    /// Runs, newest first, optionally of one connection.
    pub fn list(&self, connection_id: Option<&str>) -> Vec<RunRecord> {
        let Ok(runs) = self.runs.read() else {
            return vec![];
        };
        let mut out: Vec<RunRecord> = runs
            .values()
            .filter(|r| connection_id.is_none_or(|c| r.connection_id == c))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then(b.run_id.cmp(&a.run_id))
        });
        out
    }

    /// The run an idempotency key created, if any.
    pub fn by_idempotency_key(&self, key: &str) -> Option<RunRecord> {
        self.runs
            .read()
            .ok()?
            .values()
            .find(|r| r.idempotency_key.as_deref() == Some(key))
            .cloned()
    }

    /// Stores (and persists) a record.
    pub fn save(&self, record: &RunRecord) {
        if let Ok(mut runs) = self.runs.write() {
            runs.insert(record.run_id.clone(), record.clone());
        }
        let path = self.dir.join(format!("{}.json", record.run_id));
        let tmp = path.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(record)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::error!(run_id = %record.run_id, "cannot persist run record: {e}");
        }
    }

    /// Applies `f` to a record and persists it.
    pub fn update(&self, run_id: &str, f: impl FnOnce(&mut RunRecord)) -> Option<RunRecord> {
        let mut r = self.get(run_id)?;
        f(&mut r);
        self.save(&r);
        Some(r)
    }
}
