//! One run, start to commit: plugin → staging → Parquet → storage.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_runtime::{
    CallError, CallLabels, CallOptions, CancellationToken, FieldBatch, LogBudget, Plugin,
    RecordSink, Secrets, SinkError, StreamSpec, SyncRequest,
};
use sluice_staging::{RunStage, StagingConfig, StagingError, StreamDef};
use sluice_storage::StorageError;
use sluice_storage::Store;
use sluice_storage::commit::{
    self, ColumnSpec, Commit, CommitFence, CommittedState, ConnectorRef, FileEntry, Layout,
    RunManifest, StreamManifest,
};

/// What to run.
pub struct RunSpec {
    pub run_id: String,
    pub connection_id: String,
    pub config: Value,
    pub secrets: Secrets,
    /// Streams to sync; empty means every stream the connector has.
    pub streams: Vec<String>,
    pub full_refresh: bool,
    pub store: Arc<dyn Store>,
    pub layout: Layout,
    /// Names this attempt's objects: the run id, or `{run_id}.a{n}` ([`commit::commit_id`]).
    pub commit_id: String,
    /// The shared queue's fence (replicated mode): the commit is refused once this attempt
    /// has lost its claim. `None` in the embedded mode.
    pub fence: Option<Arc<dyn CommitFence>>,
}

/// Limits and hooks of a run.
#[derive(Clone)]
pub struct RunLimits {
    pub staging: StagingConfig,
    /// Wall-clock budget of the whole run: `discover` and `sync` share it.
    pub deadline: Duration,
    pub cancel: CancellationToken,
    /// Bytes of plugin log the run's calls may write together.
    pub log_bytes: u64,
}

/// Live per-stream counters, shared with whoever reports progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StreamStats {
    pub records: u64,
    pub bytes: u64,
    pub files: u64,
    /// Rows committed (after the run succeeded).
    pub committed_rows: u64,
    /// Committed rows with a value that did not fit its declared column: the column is NULL
    /// and the original value is in the row's `_sluice_errors`.
    #[serde(default)]
    #[schema(required = true)]
    pub invalid_rows: u64,
    /// Records in batches the host refused at `emit` (`invalid-record`: not an object, a
    /// lone surrogate, no primary key…). Any refusal fails the run (`records_refused`), even
    /// when the connector went on: its later checkpoints would cover records never kept.
    #[serde(default)]
    #[schema(required = true)]
    pub refused_records: u64,
}

pub type Progress = Arc<Mutex<BTreeMap<String, StreamStats>>>;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Plugin(#[from] CallError),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("staging failed: {0}")]
    Staging(String),
    #[error("{0}")]
    StagingQuota(String),
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("cancelled")]
    Cancelled,
    /// The host failed in a way it did not foresee (e.g. the run's task panicked).
    #[error("internal error: {0}")]
    Internal(String),
    /// A stream that asked for strictness had values that did not fit their columns.
    #[error("{0}")]
    InvalidValues(String),
    /// Replicated mode: the commit's fence refused (this attempt's claim ran out).
    #[error("commit refused: {0}")]
    Fenced(String),
    /// The host refused a batch the connector emitted and the connector went on: committing
    /// would keep a state past records that were never stored.
    #[error("{0}")]
    RecordsRefused(String),
}

impl RunError {
    /// A stable snake_case code for run status.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Plugin(e) => e.code(),
            Self::Invalid(_) => "invalid_config",
            Self::Staging(_) => "staging_error",
            Self::StagingQuota(_) => "staging_quota_exceeded",
            Self::Storage(_) => "storage_error",
            Self::Cancelled => "cancelled",
            Self::Internal(_) => "internal",
            Self::InvalidValues(_) => "invalid_values",
            Self::Fenced(_) => "interrupted",
            Self::RecordsRefused(_) => "records_refused",
        }
    }
}

/// What a successful run committed.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub manifest: RunManifest,
    pub state: CommittedState,
}

struct StagingSink {
    stage: Arc<Mutex<Option<RunStage>>>,
    states: Arc<Mutex<BTreeMap<String, Value>>>,
    progress: Progress,
    /// Set when staging refused a batch over its disk quota (the run's error then says so).
    quota: Arc<Mutex<Option<String>>>,
    /// The first batch staging refused as invalid: `(stream, record index, reason)`.
    refused: Arc<Mutex<Option<(String, usize, String)>>>,
}

impl StagingSink {
    /// Counts a refused batch of `len` records in the stream's progress and keeps the first
    /// refusal for the run's error.
    fn note_refusal(&self, stream: &str, len: usize, index: usize, reason: &str) {
        if let Ok(mut p) = self.progress.lock() {
            p.entry(stream.to_string()).or_default().refused_records += len as u64;
        }
        if let Ok(mut first) = self.refused.lock() {
            first.get_or_insert_with(|| (stream.to_string(), index, reason.to_string()));
        }
    }
}

impl StagingSink {
    /// Stages a batch of `count` records of `stream` with `append` (which returns its bytes
    /// of JSON), and counts it or its refusal.
    fn stage(
        &mut self,
        stream: &str,
        count: usize,
        append: impl FnOnce(&mut RunStage) -> Result<u64, StagingError>,
    ) -> Result<(), SinkError> {
        let mut guard = self
            .stage
            .lock()
            .map_err(|_| anyhow::anyhow!("staging lock poisoned"))?;
        let stage = guard
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("staging closed"))?;
        let bytes = match append(stage) {
            Ok(bytes) => bytes,
            Err(StagingError::BadRecord { index, reason, .. }) => {
                self.note_refusal(stream, count, index, &reason);
                return Err(SinkError::Rejected {
                    index: index as u32,
                    reason,
                });
            }
            Err(e @ StagingError::Quota { .. }) => {
                if let Ok(mut q) = self.quota.lock() {
                    *q = Some(e.to_string());
                }
                return Err(SinkError::Failed(e.into()));
            }
            Err(e) => return Err(SinkError::Failed(e.into())),
        };
        if let Ok(mut p) = self.progress.lock() {
            let s = p.entry(stream.to_string()).or_default();
            s.records += count as u64;
            s.bytes += bytes;
        }
        Ok(())
    }
}

impl RecordSink for StagingSink {
    fn emit(&mut self, stream: &str, records: Vec<String>) -> Result<(), SinkError> {
        self.stage(stream, records.len(), |stage| {
            stage.append(stream, &records)?;
            Ok(records.iter().map(|r| r.len() as u64).sum())
        })
    }

    fn emit_fields(&mut self, stream: &str, batch: FieldBatch) -> Result<(), SinkError> {
        self.stage(stream, batch.fields.len(), |stage| {
            stage.append_fields(stream, &batch.text, &batch.spans, &batch.fields)
        })
    }

    fn checkpoint(&mut self, stream: &str, state: Value) -> anyhow::Result<()> {
        self.states
            .lock()
            .map_err(|_| anyhow::anyhow!("state lock poisoned"))?
            .insert(stream.to_string(), state);
        Ok(())
    }
}

/// Picks the streams of a run and their specs (from `discover`, which may refine the manifest).
async fn select_streams(
    plugin: &Plugin,
    spec: &RunSpec,
    opts: &CallOptions,
) -> Result<Vec<StreamSpec>, RunError> {
    let available = plugin.discover(&spec.config, opts.clone()).await?;
    if spec.streams.is_empty() {
        return Ok(available);
    }
    let mut out = Vec::new();
    for name in &spec.streams {
        let s = available.iter().find(|s| &s.name == name).ok_or_else(|| {
            RunError::Invalid(format!(
                "unknown stream {name:?}; the connector has {}",
                available
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if !out.iter().any(|o: &StreamSpec| o.name == s.name) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

/// A connection's data belongs to the connector that committed it: its stream states and
/// tables mean nothing to another one (a GitHub run would be handed `http-json`'s cursors and
/// its tables mixed into the catalog). Sync another connector under another `connection_id`.
pub fn check_same_connector(
    committed: &CommittedState,
    connector: &str,
    connection_id: &str,
) -> Result<(), RunError> {
    match &committed.connector {
        Some(c) if c.id != connector => Err(RunError::Invalid(format!(
            "connection {connection_id:?} holds data committed by connector {:?}, not {connector:?}; sync {connector:?} under another connection_id",
            c.id
        ))),
        _ => Ok(()),
    }
}

/// Runs a sync and commits it. On any error nothing of it becomes visible.
pub async fn execute(
    plugin: &Plugin,
    spec: RunSpec,
    limits: RunLimits,
    progress: Progress,
) -> Result<RunOutcome, RunError> {
    let started_at = crate::now_rfc3339();
    let t_start = std::time::Instant::now();
    let deadline = t_start + limits.deadline;
    let mut opts = CallOptions {
        secrets: spec.secrets.clone(),
        deadline: limits.deadline,
        cancel: limits.cancel.clone(),
        labels: CallLabels {
            run_id: Some(spec.run_id.clone()),
            connection_id: Some(spec.connection_id.clone()),
        },
        log_budget: Some(LogBudget::new(limits.log_bytes)),
        deadline_setting: Some("SLUICE_RUN_TIMEOUT_SECS"),
    };
    let streams = select_streams(plugin, &spec, &opts).await?;
    let (previous, previous_tag) = commit::read_state_tagged(spec.store.as_ref(), &spec.layout)
        .await
        .map_err(|e| RunError::Storage(e.to_string()))?;
    if let Some(done) = already_committed(&spec, &previous, &progress).await? {
        return Ok(done);
    }
    check_same_connector(&previous, &plugin.info().id, &spec.connection_id)?;
    let state: Vec<(String, Value)> = if spec.full_refresh {
        vec![]
    } else {
        streams
            .iter()
            .filter_map(|s| {
                previous
                    .streams
                    .get(&s.name)
                    .map(|v| (s.name.clone(), v.clone()))
            })
            .collect()
    };
    let defs: Vec<StreamDef> = streams
        .iter()
        .map(|s| StreamDef {
            name: s.name.clone(),
            primary_key: s.primary_key.clone(),
            cursor_field: s.cursor_field.clone(),
            json_schema: s.json_schema.clone(),
        })
        .collect();
    if let Ok(mut p) = progress.lock() {
        for s in &streams {
            p.entry(s.name.clone()).or_default();
        }
    }
    // A retried attempt stages under its commit id: two attempts of one run on one replica
    // (a stale one still winding down) never share a directory.
    let mut staging = limits.staging.clone();
    if spec.commit_id != spec.run_id {
        staging.dir = staging.dir.join(&spec.commit_id);
    }
    let stage = RunStage::begin(&staging, &spec.run_id, &started_at, &defs)
        .map_err(|e| RunError::Staging(e.to_string()))?;
    let stage = Arc::new(Mutex::new(Some(stage)));
    let states = Arc::new(Mutex::new(BTreeMap::new()));
    let quota = Arc::new(Mutex::new(None));
    let refused = Arc::new(Mutex::new(None));
    let sink = StagingSink {
        stage: stage.clone(),
        states: states.clone(),
        progress: progress.clone(),
        quota: quota.clone(),
        refused: refused.clone(),
    };
    let req = SyncRequest {
        config: spec.config.clone(),
        streams: streams.iter().map(|s| s.name.clone()).collect(),
        state,
        // The run record's own start: the plugin's window ends where this attempt began.
        started_at: started_at.clone(),
        run_id: spec.run_id.clone(),
    };
    // Admission, discover and the state read (the S3 client) are done: their code pages go
    // before the sync maps its own, so a run's peak holds one phase's code, not both.
    sluice_runtime::memory::release_code_pages();
    let t_sync = std::time::Instant::now();
    // What discover and the reads before used is gone from the run's budget.
    opts.deadline = deadline.saturating_duration_since(t_sync);
    if let Err(e) = plugin.sync(req, Box::new(sink), opts).await {
        if let Some(why) = quota.lock().ok().and_then(|mut q| q.take()) {
            return Err(RunError::StagingQuota(why));
        }
        return Err(e.into());
    }
    check_refused(&refused, &progress, &spec.secrets)?;
    let t_staged = std::time::Instant::now();

    let stage = stage
        .lock()
        .ok()
        .and_then(|mut g| g.take())
        .ok_or_else(|| RunError::Staging("staging was lost".into()))?;
    if limits.cancel.is_cancelled() {
        return Err(RunError::Cancelled);
    }
    // The Parquet parts were written as the records arrived: close the last row groups.
    let staged = tokio::task::spawn_blocking(move || stage.finish())
        .await
        .map_err(|e| RunError::Staging(e.to_string()))?
        .map_err(|e| RunError::Staging(e.to_string()))?;
    check_strict(&staged.streams)?;

    // The sync's batches and row groups are freed: give that back before the uploads, and
    // the code pages the sync touched that the uploads do not run.
    sluice_runtime::memory::release_freed();
    sluice_runtime::memory::release_code_pages();
    let t_parquet = std::time::Instant::now();
    let states = states.lock().map(|s| s.clone()).unwrap_or_default();
    let mut uploads = Vec::new();
    let mut manifest_streams = BTreeMap::new();
    let invalid: BTreeMap<String, u64> = staged
        .streams
        .iter()
        .map(|s| (s.def.name.clone(), s.counts.invalid_rows))
        .collect();
    for s in &staged.streams {
        let mut files = Vec::new();
        for (part, f) in s.files.iter().enumerate() {
            let key = spec.layout.data_key(&s.def.name, &spec.commit_id, part);
            uploads.push((key.clone(), f.path.clone()));
            files.push(FileEntry {
                key,
                rows: f.rows,
                bytes: f.bytes,
                sha256: f.sha256.clone(),
            });
        }
        let mut columns: Vec<ColumnSpec> = s
            .columns
            .iter()
            .map(|c| ColumnSpec {
                name: c.name.clone(),
                data_type: c.duck_type.clone(),
                nullable: c.nullable,
            })
            .collect();
        columns.extend(host_columns());
        manifest_streams.insert(
            s.def.name.clone(),
            StreamManifest {
                primary_key: s.def.primary_key.clone(),
                cursor_field: s.def.cursor_field.clone(),
                columns,
                records: s.counts.records,
                bytes: s.counts.bytes,
                files,
                state: states.get(&s.def.name).cloned(),
            },
        );
    }
    let info = plugin.info();
    let manifest = RunManifest {
        format: commit::FORMAT,
        run_id: spec.run_id.clone(),
        connection_id: spec.connection_id.clone(),
        connector: ConnectorRef {
            id: info.id.clone(),
            version: info.version.clone(),
            sha256: info.sha256.clone(),
        },
        started_at,
        finished_at: crate::now_rfc3339(),
        full_refresh: spec.full_refresh,
        streams: manifest_streams,
    };
    if limits.cancel.is_cancelled() {
        return Err(RunError::Cancelled);
    }
    let commit_span = tracing::info_span!(
        target: "sluice_trace",
        "commit",
        run_id = %spec.run_id,
        connection_id = %spec.connection_id,
        files = uploads.len(),
    );
    let committed = tracing::Instrument::instrument(
        commit::commit_run(
            spec.store.as_ref(),
            &spec.layout,
            Commit {
                previous: &previous,
                previous_tag: &previous_tag,
                manifest: &manifest,
                commit_id: &spec.commit_id,
                files: &uploads,
                fence: spec.fence.as_deref(),
            },
        ),
        commit_span,
    )
    .await;
    let state = match committed {
        Ok(state) => state,
        Err(e @ StorageError::Precondition { .. }) => {
            // Another attempt of this run may have won the race to the state: then the run
            // is committed (by it), else some other writer moved the state under this run.
            let (now, _) = commit::read_state_tagged(spec.store.as_ref(), &spec.layout)
                .await
                .map_err(|e| RunError::Storage(e.to_string()))?;
            return match already_committed(&spec, &now, &progress).await? {
                Some(done) => Ok(done),
                None => Err(RunError::Storage(e.to_string())),
            };
        }
        Err(StorageError::Fenced(why)) => return Err(RunError::Fenced(why)),
        Err(e) => return Err(RunError::Storage(e.to_string())),
    };
    drop(staged);
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    tracing::info!(
        run_id = %spec.run_id,
        prepare_ms = ms(t_sync - t_start),
        sync_ms = ms(t_staged - t_sync),
        parquet_ms = ms(t_parquet - t_staged),
        commit_ms = ms(t_parquet.elapsed()),
        "run committed"
    );
    for (name, m) in &manifest.streams {
        sluice_telemetry::metrics().committed(
            &info.id,
            name,
            m.files.iter().map(|f| f.rows).sum(),
            m.files.iter().map(|f| f.bytes).sum(),
            m.files.len() as u64,
        );
    }
    if let Ok(mut p) = progress.lock() {
        for (name, m) in &manifest.streams {
            let s = p.entry(name.clone()).or_default();
            s.files = m.files.len() as u64;
            s.committed_rows = m.files.iter().map(|f| f.rows).sum();
            s.invalid_rows = invalid.get(name).copied().unwrap_or(0);
        }
    }
    Ok(RunOutcome { manifest, state })
}

/// Fails the run when staging refused a batch (the connector ignored the `invalid-record`
/// error and finished): its state may cover the refused records, so nothing is committed and
/// the next run reads them again. The message names the stream, the records refused and the
/// first reason (which never quotes a record; a field name it names is redacted).
fn check_refused(
    refused: &Mutex<Option<(String, usize, String)>>,
    progress: &Progress,
    secrets: &Secrets,
) -> Result<(), RunError> {
    let Some((stream, index, reason)) = refused.lock().ok().and_then(|mut r| r.take()) else {
        return Ok(());
    };
    let counts: Vec<String> = progress
        .lock()
        .map(|p| {
            p.iter()
                .filter(|(_, s)| s.refused_records > 0)
                .map(|(name, s)| format!("{name}: {}", s.refused_records))
                .collect()
        })
        .unwrap_or_default();
    Err(RunError::RecordsRefused(secrets.redact(&format!(
        "the host refused records the connector emitted and the connector went on without them \
         (records refused by stream: {}; first: stream {stream}, record {index} of its batch: \
         {reason}); nothing of this run is committed, so the next run reads them again",
        counts.join(", ")
    ))))
}

/// In replicated mode, an earlier attempt of this run may have committed before its replica
/// died (or stalled): the committed state then names it, and this attempt reports that commit
/// instead of syncing again.
async fn already_committed(
    spec: &RunSpec,
    state: &CommittedState,
    progress: &Progress,
) -> Result<Option<RunOutcome>, RunError> {
    if spec.fence.is_none() {
        return Ok(None);
    }
    let Some(id) = state
        .runs
        .iter()
        .find(|c| commit::is_attempt_of(c, &spec.run_id))
    else {
        return Ok(None);
    };
    let manifest = commit::read_manifest(spec.store.as_ref(), &spec.layout, id)
        .await
        .map_err(|e| RunError::Storage(e.to_string()))?;
    tracing::info!(run_id = %spec.run_id, commit_id = %id, "an earlier attempt of this run committed it");
    if let Ok(mut p) = progress.lock() {
        for (name, m) in &manifest.streams {
            let s = p.entry(name.clone()).or_default();
            s.records = m.records;
            s.bytes = m.bytes;
            s.files = m.files.len() as u64;
            s.committed_rows = m.files.iter().map(|f| f.rows).sum();
        }
    }
    Ok(Some(RunOutcome {
        manifest,
        state: state.clone(),
    }))
}

/// The JSON Schema keyword a stream sets to `true` to have a run fail, instead of keeping
/// misfit values in `_sluice_errors`, when a value does not fit its declared column.
pub const STRICT_KEYWORD: &str = "x-sluice-strict";

/// Fails the run if a stream that asked for strictness ([`STRICT_KEYWORD`]) had values that
/// did not fit their columns (nothing of the run is committed then).
fn check_strict(streams: &[sluice_staging::StagedStream]) -> Result<(), RunError> {
    for s in streams {
        let strict = s.def.json_schema.get(STRICT_KEYWORD) == Some(&Value::Bool(true));
        if strict && s.counts.invalid_rows > 0 {
            return Err(RunError::InvalidValues(format!(
                "stream {:?} is strict and {} of its rows had values that do not fit their declared columns",
                s.def.name, s.counts.invalid_rows
            )));
        }
    }
    Ok(())
}

/// The columns the host adds to every stream.
pub fn host_columns() -> Vec<ColumnSpec> {
    [
        (sluice_staging::EXTRA_COLUMN, "JSON"),
        (sluice_staging::ERRORS_COLUMN, "JSON"),
        (sluice_staging::RUN_ID_COLUMN, "VARCHAR"),
        (sluice_staging::EXTRACTED_AT_COLUMN, "TIMESTAMPTZ"),
        (sluice_staging::SEQ_COLUMN, "BIGINT"),
    ]
    .into_iter()
    .map(|(n, t)| ColumnSpec {
        name: n.to_string(),
        data_type: t.to_string(),
        nullable: n == sluice_staging::EXTRA_COLUMN || n == sluice_staging::ERRORS_COLUMN,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_staging::{StagedStream, StreamCounts, StreamDef};

    fn stream(strict: Option<bool>, invalid_rows: u64) -> StagedStream {
        let mut schema = serde_json::json!({"type": "object", "properties": {}});
        if let Some(s) = strict {
            schema[STRICT_KEYWORD] = Value::Bool(s);
        }
        StagedStream {
            def: StreamDef {
                name: "items".into(),
                primary_key: vec![],
                cursor_field: None,
                json_schema: schema,
            },
            columns: vec![],
            counts: StreamCounts {
                invalid_rows,
                ..Default::default()
            },
            files: vec![],
        }
    }

    #[test]
    fn only_strict_streams_fail_on_misfit_values() {
        assert!(check_strict(&[stream(None, 3)]).is_ok());
        assert!(check_strict(&[stream(Some(false), 3)]).is_ok());
        assert!(check_strict(&[stream(Some(true), 0)]).is_ok());
        let e = check_strict(&[stream(Some(true), 3)]).unwrap_err();
        assert_eq!(e.code(), "invalid_values");
        assert!(e.to_string().contains("3 of its rows"), "{e}");
    }
}
