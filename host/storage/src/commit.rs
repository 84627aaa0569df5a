//! The storage layout of a connection and the commit protocol of a run.
//!
//! ```text
//! {prefix}/{connection_id}/{stream}/{commit_id}-{part}.parquet   data (1)
//! {prefix}/{connection_id}/_runs/{commit_id}.json                run manifest (2)
//! {prefix}/{connection_id}/_state.json                        commit point (3)
//! {prefix}/{connection_id}/_schema.json                       catalog, written by schema-sync
//! {prefix}/{connection_id}/_README.md                         analysts' docs, written by schema-sync
//! ```
//! Written in that order. `_state.json` lists the committed runs; a reader trusts only the
//! data files their manifests name, so a run that dies before (3) leaves garbage that no
//! reader sees, and the state a plugin checkpointed is stored only after the data it covers.
//!
//! `commit_id` is the run id, or `{run_id}.a{attempt}` for a run's second and later attempts
//! (replicas sharing runs through PostgreSQL retry a run whose replica died): every attempt
//! writes under its own names, so an attempt that stalled and woke up late can never overwrite
//! what a newer attempt committed. With a [`CommitFence`] the state write is conditional
//! (the state must be the one the attempt read) and must reach the store within the fence's
//! lease; see [`commit_run`].

use std::time::Duration;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Conditional, Expect, StorageError, Store};

/// Format version of the JSON documents below.
pub const FORMAT: u32 = 1;

/// The longest storage prefix accepted, in bytes (S3 keys are at most 1024).
pub const MAX_PREFIX_BYTES: usize = 512;

/// Where one connection's objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    base: String,
}

impl Layout {
    /// `prefix` may be empty; `connection_id` must be a safe path segment.
    /// Errors: a connection id outside `[A-Za-z0-9._-]{1,128}`, a prefix with `.`/`..` segments,
    /// or a prefix over [`MAX_PREFIX_BYTES`] (200 per segment).
    pub fn new(prefix: &str, connection_id: &str) -> Result<Self, StorageError> {
        if !is_segment(connection_id) {
            return Err(StorageError::Invalid(format!(
                "connection_id {connection_id:?} must be 1-128 characters of [A-Za-z0-9._-] and not . or .."
            )));
        }
        let prefix = prefix.trim_matches('/');
        // A NUL or another control character is no valid file name, and S3 advises against
        // them in keys (AWS "Creating object key names": characters to avoid).
        if prefix.chars().any(char::is_control) {
            return Err(StorageError::Invalid(format!(
                "prefix {prefix:?} may not contain control characters (NUL, newlines, …)"
            )));
        }
        if prefix.split('/').any(|p| p == ".." || p == ".") {
            return Err(StorageError::Invalid(format!(
                "prefix {prefix:?} may not contain . or .. segments"
            )));
        }
        // S3 keys are at most 1024 bytes, and a local file name 255: leave room for the
        // connection, stream and run parts of every key.
        if prefix.len() > MAX_PREFIX_BYTES || prefix.split('/').any(|p| p.len() > 200) {
            return Err(StorageError::Invalid(format!(
                "prefix is {} bytes; at most {MAX_PREFIX_BYTES}, and 200 per segment",
                prefix.len()
            )));
        }
        let base = if prefix.is_empty() {
            connection_id.to_string()
        } else {
            format!("{prefix}/{connection_id}")
        };
        Ok(Self { base })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn data_key(&self, stream: &str, run_id: &str, part: usize) -> String {
        format!("{}/{stream}/{run_id}-{part}.parquet", self.base)
    }

    pub fn manifest_key(&self, run_id: &str) -> String {
        format!("{}/_runs/{run_id}.json", self.base)
    }

    pub fn state_key(&self) -> String {
        format!("{}/_state.json", self.base)
    }

    pub fn schema_key(&self) -> String {
        format!("{}/_schema.json", self.base)
    }

    /// Where schema-sync writes the connection's Markdown docs for analysts.
    pub fn readme_key(&self) -> String {
        format!("{}/_README.md", self.base)
    }
}

fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// The connector that produced a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectorRef {
    pub id: String,
    pub version: String,
    pub sha256: String,
}

/// A column of a stream as committed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

/// One data file of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// What a run committed for one stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamManifest {
    pub primary_key: Vec<String>,
    pub cursor_field: Option<String>,
    pub columns: Vec<ColumnSpec>,
    pub records: u64,
    pub bytes: u64,
    pub files: Vec<FileEntry>,
    /// The stream state this run commits (its last checkpoint), if it checkpointed.
    pub state: Option<Value>,
}

/// `_runs/{run_id}.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunManifest {
    pub format: u32,
    pub run_id: String,
    pub connection_id: String,
    pub connector: ConnectorRef,
    pub started_at: String,
    pub finished_at: String,
    pub full_refresh: bool,
    pub streams: BTreeMap<String, StreamManifest>,
}

/// The commit id of a run's attempt (1-based): the run id for the first, `{run_id}.a{n}` after.
pub fn commit_id(run_id: &str, attempt: u32) -> String {
    if attempt <= 1 {
        run_id.to_string()
    } else {
        format!("{run_id}.a{attempt}")
    }
}

/// Whether a committed id (an entry of [`CommittedState::runs`]) is an attempt of `run_id`.
pub fn is_attempt_of(commit_id: &str, run_id: &str) -> bool {
    commit_id == run_id
        || commit_id
            .strip_prefix(run_id)
            .and_then(|rest| rest.strip_prefix(".a"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Asked right before `_state.json` is written: may this attempt still commit?
///
/// Implemented by the shared run queue (PostgreSQL): the attempt's fencing token must still
/// be the run's current one and its lease must have time left. The answer is how long the
/// state write may take to reach the store (the lease left, minus a margin), or why not.
#[async_trait::async_trait]
pub trait CommitFence: Send + Sync {
    async fn confirm(&self) -> Result<Duration, String>;
    /// The fencing token, recorded in the committed state.
    fn token(&self) -> u64;
}

/// What [`commit_run`] commits.
pub struct Commit<'a> {
    /// The committed state the run started from.
    pub previous: &'a CommittedState,
    /// The state's tag when it was read ([`read_state_tagged`]).
    pub previous_tag: &'a Expect,
    pub manifest: &'a RunManifest,
    /// Names the manifest and is listed in the state (see [`commit_id`]).
    pub commit_id: &'a str,
    /// Each manifest key with the local file to upload.
    pub files: &'a [(String, PathBuf)],
    pub fence: Option<&'a dyn CommitFence>,
}

/// `_state.json`: the commit point.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CommittedState {
    pub format: u32,
    pub connection_id: String,
    /// Committed runs, oldest first: their manifests name every visible data file.
    pub runs: Vec<String>,
    /// The state of each stream, as its last committed run checkpointed it.
    pub streams: BTreeMap<String, Value>,
    pub connector: Option<ConnectorRef>,
    pub committed_at: Option<String>,
    /// The fencing token of the claim that committed last (replicated mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
}

fn parse<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StorageError::Invalid(format!("{key} is not a valid Sluice document: {e}")))
}

/// The committed state of a connection (empty when nothing was committed yet).
pub async fn read_state(
    store: &dyn Store,
    layout: &Layout,
) -> Result<CommittedState, StorageError> {
    let key = layout.state_key();
    match store.get_bytes(&key).await? {
        Some(bytes) => parse(&key, &bytes),
        None => Ok(CommittedState {
            format: FORMAT,
            ..Default::default()
        }),
    }
}

/// The committed state with the tag a conditional commit must find unchanged.
pub async fn read_state_tagged(
    store: &dyn Store,
    layout: &Layout,
) -> Result<(CommittedState, Expect), StorageError> {
    let key = layout.state_key();
    match store.get_tagged(&key).await? {
        Some((bytes, tag)) => Ok((parse(&key, &bytes)?, Expect::Tag(tag))),
        None => Ok((
            CommittedState {
                format: FORMAT,
                ..Default::default()
            },
            Expect::Absent,
        )),
    }
}

/// The manifest of a committed run.
pub async fn read_manifest(
    store: &dyn Store,
    layout: &Layout,
    run_id: &str,
) -> Result<RunManifest, StorageError> {
    let key = layout.manifest_key(run_id);
    let bytes = store
        .get_bytes(&key)
        .await?
        .ok_or_else(|| StorageError::Invalid(format!("{key} is missing")))?;
    parse(&key, &bytes)
}

/// Commits a run: uploads its files, then its manifest, then the new state. Returns the new
/// state.
///
/// Without a fence the state is overwritten (one writer per connection: the embedded run
/// manager's rule). With one, the fence is confirmed first ([`CommitFence::confirm`]), then the
/// state is written only if it is still the one the attempt read (`If-Match`/`If-None-Match`,
/// [`StorageError::Precondition`] otherwise) and only if the write reaches the store within the
/// time the fence allowed (a presigned S3 request expires then).
pub async fn commit_run(
    store: &dyn Store,
    layout: &Layout,
    c: Commit<'_>,
) -> Result<CommittedState, StorageError> {
    for (key, path) in c.files {
        store.put_file(key, path).await?;
    }
    let body =
        serde_json::to_vec_pretty(c.manifest).map_err(|e| StorageError::Invalid(e.to_string()))?;
    store
        .put_bytes(&layout.manifest_key(c.commit_id), body)
        .await?;
    let mut next = c.previous.clone();
    next.format = FORMAT;
    next.connection_id = c.manifest.connection_id.clone();
    next.runs.push(c.commit_id.to_string());
    for (name, s) in &c.manifest.streams {
        if let Some(state) = &s.state {
            next.streams.insert(name.clone(), state.clone());
        } else if c.manifest.full_refresh {
            next.streams.remove(name);
        }
    }
    next.connector = Some(c.manifest.connector.clone());
    next.committed_at = Some(c.manifest.finished_at.clone());
    next.fence = c.fence.map(|f| f.token());
    let body =
        serde_json::to_vec_pretty(&next).map_err(|e| StorageError::Invalid(e.to_string()))?;
    match c.fence {
        None => store.put_bytes(&layout.state_key(), body).await?,
        Some(fence) => {
            // A write that reached the store too late did not land: while the claim still
            // holds (confirmed again), it is signed anew and sent again, twice at most.
            let mut late = 0;
            loop {
                let valid_for = fence.confirm().await.map_err(StorageError::Fenced)?;
                let cond = Conditional {
                    expect: c.previous_tag.clone(),
                    valid_for: Some(valid_for),
                };
                match store.put_if(&layout.state_key(), body.clone(), &cond).await {
                    Err(StorageError::Expired { .. }) if late < 2 => late += 1,
                    other => break other?,
                }
            }
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;

    #[test]
    fn layout_keys() {
        let l = Layout::new("mirror/acme/", "conn-1").unwrap();
        assert_eq!(
            l.data_key("issues", "r1", 0),
            "mirror/acme/conn-1/issues/r1-0.parquet"
        );
        assert_eq!(l.manifest_key("r1"), "mirror/acme/conn-1/_runs/r1.json");
        assert_eq!(l.state_key(), "mirror/acme/conn-1/_state.json");
        assert_eq!(Layout::new("", "c").unwrap().state_key(), "c/_state.json");
        assert!(Layout::new("p", "../x").is_err());
        assert!(Layout::new("p/../q", "c").is_err());
        // Found from outside: a NUL in the prefix was accepted (and in replicated mode the
        // database refused the text, answered as 503 `database_unavailable`).
        assert!(Layout::new("pre\u{0}fix", "c").is_err());
        assert!(Layout::new("a\nb", "c").is_err());
    }

    #[tokio::test]
    async fn commit_writes_data_then_manifest_then_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("bucket"));
        let layout = Layout::new("p", "c1").unwrap();
        let data = dir.path().join("part.parquet");
        std::fs::write(&data, b"PAR1").unwrap();
        let m = RunManifest {
            streams: BTreeMap::from([(
                "items".to_string(),
                StreamManifest {
                    primary_key: vec!["id".into()],
                    cursor_field: None,
                    columns: vec![],
                    records: 1,
                    bytes: 4,
                    files: vec![],
                    state: Some(serde_json::json!({"cursor": 5})),
                },
            )]),
            ..manifest("r1")
        };
        let before = read_state(&store, &layout).await.unwrap();
        assert!(before.runs.is_empty());
        let after = commit_run(
            &store,
            &layout,
            Commit {
                previous: &before,
                previous_tag: &Expect::Absent,
                manifest: &m,
                commit_id: "r1",
                files: &[(layout.data_key("items", "r1", 0), data)],
                fence: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(after.runs, vec!["r1"]);
        assert_eq!(read_state(&store, &layout).await.unwrap(), after);
        assert_eq!(read_manifest(&store, &layout, "r1").await.unwrap(), m);
        assert_eq!(
            store.list("p/c1/items/").await.unwrap(),
            vec!["p/c1/items/r1-0.parquet"]
        );
    }

    struct Token(u64);

    #[async_trait::async_trait]
    impl CommitFence for Token {
        async fn confirm(&self) -> Result<Duration, String> {
            Ok(Duration::from_secs(5))
        }
        fn token(&self) -> u64 {
            self.0
        }
    }

    fn manifest(run_id: &str) -> RunManifest {
        RunManifest {
            format: FORMAT,
            run_id: run_id.into(),
            connection_id: "c1".into(),
            connector: ConnectorRef {
                id: "x".into(),
                version: "1.0.0".into(),
                sha256: "00".into(),
            },
            started_at: "t0".into(),
            finished_at: "t1".into(),
            full_refresh: false,
            streams: BTreeMap::new(),
        }
    }

    /// Two attempts of one run read the same state; the newer commits; the stale one's state
    /// write is refused and what the newer committed stays.
    #[tokio::test]
    async fn a_stale_attempt_cannot_commit_over_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("bucket"));
        let layout = Layout::new("p", "c1").unwrap();
        let (state, tag) = read_state_tagged(&store, &layout).await.unwrap();
        let m = manifest("r1");
        let commit = |id: &'static str, fence: &'static Token| Commit {
            previous: &state,
            previous_tag: &tag,
            manifest: &m,
            commit_id: id,
            files: &[],
            fence: Some(fence),
        };
        static NEW: Token = Token(8);
        static STALE: Token = Token(7);
        let newer = commit_run(&store, &layout, commit("r1.a2", &NEW))
            .await
            .unwrap();
        let stale = commit_run(&store, &layout, commit("r1", &STALE)).await;
        assert!(
            matches!(stale, Err(StorageError::Precondition { .. })),
            "{stale:?}"
        );
        let now = read_state(&store, &layout).await.unwrap();
        assert_eq!(now, newer);
        assert_eq!(now.runs, vec!["r1.a2"]);
        assert_eq!(now.fence, Some(8));
        // The next run reads the new state and its tag, and commits over it.
        let (state, tag) = read_state_tagged(&store, &layout).await.unwrap();
        let m2 = manifest("r2");
        let after = commit_run(
            &store,
            &layout,
            Commit {
                previous: &state,
                previous_tag: &tag,
                manifest: &m2,
                commit_id: "r2",
                files: &[],
                fence: Some(&NEW),
            },
        )
        .await
        .unwrap();
        assert_eq!(after.runs, vec!["r1.a2", "r2"]);
    }

    #[test]
    fn attempts_are_told_apart_from_other_runs() {
        assert_eq!(commit_id("r", 1), "r");
        assert_eq!(commit_id("r", 3), "r.a3");
        assert!(is_attempt_of("r", "r"));
        assert!(is_attempt_of("r.a3", "r"));
        assert!(!is_attempt_of("r2", "r"));
        assert!(!is_attempt_of("r.a", "r"));
        assert!(!is_attempt_of("r.ax", "r"));
    }
}
