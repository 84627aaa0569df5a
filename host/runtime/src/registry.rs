//! The plugin directory: every `.wasm` in it loaded at start, watched, and hot-reloaded.
//!
//! A reload swaps an immutable [`Snapshot`] atomically. Calls hold the [`Plugin`] they
//! started with, so they finish on that version. A file that fails to load leaves the
//! version it replaces serving, and its error is listed in the snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use notify::Watcher;
use serde::Serialize;

use crate::engine::{Plugin, Runtime};

/// How long the watcher waits for a burst of file events to settle before rescanning.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// A rescan also runs this often, in case the file system dropped an event.
const SAFETY_RESCAN: Duration = Duration::from_secs(10);

/// A plugin file that failed to load.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    pub file: PathBuf,
    pub error: String,
    /// The connector version still serving in its place, if any.
    pub serving: Option<String>,
}

/// The registry's state at one instant.
#[derive(Default)]
pub struct Snapshot {
    files: BTreeMap<PathBuf, FileState>,
    plugins: BTreeMap<String, Plugin>,
    failures: Vec<LoadFailure>,
}

impl Snapshot {
    /// Loaded connectors by id.
    pub fn plugins(&self) -> impl Iterator<Item = &Plugin> {
        self.plugins.values()
    }

    pub fn get(&self, id: &str) -> Option<&Plugin> {
        self.plugins.get(id)
    }

    /// Files that failed to load, with their errors.
    pub fn failures(&self) -> &[LoadFailure] {
        &self.failures
    }
}

/// A file's size and modification time.
type FileStamp = (u64, Option<SystemTime>);

#[derive(Clone)]
struct FileState {
    /// Size and modification time (following symlinks) of the bytes last tried, and of its
    /// signature file (`{file}.minisig`), so that a signature arriving or changing reloads it.
    stamp: (FileStamp, Option<FileStamp>),
    plugin: Option<Plugin>,
    error: Option<String>,
    /// Set when the last load was interrupted ([`crate::LoadError::is_transient`]): the same
    /// bytes are loaded again at `at` although the file did not change.
    retry: Option<Retry>,
}

/// The next try of a file whose compile was interrupted.
#[derive(Clone, Copy)]
struct Retry {
    at: Instant,
    /// Tries so far of these bytes (1 after the first interrupted load).
    attempt: u32,
}

impl FileState {
    /// Whether the file must be loaded again: it changed, or an interrupted load is due.
    fn needs_load(&self, stamp: &(FileStamp, Option<FileStamp>), now: Instant) -> bool {
        self.stamp != *stamp || self.retry.is_some_and(|r| r.at <= now)
    }
}

/// The set of loaded plugins, kept in step with a directory.
pub struct Registry {
    runtime: Runtime,
    dir: PathBuf,
    current: ArcSwap<Snapshot>,
    reload: tokio::sync::Mutex<()>,
    ready: AtomicBool,
}

impl Registry {
    pub fn new(runtime: Runtime, dir: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            dir: dir.into(),
            current: ArcSwap::from_pointee(Snapshot::default()),
            reload: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// True once the first scan has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The current version of a connector.
    pub fn get(&self, id: &str) -> Option<Plugin> {
        self.current.load().get(id).cloned()
    }

    /// Brings the registry in step with the directory: loads new and changed files, drops
    /// deleted ones. Unchanged files (same size and mtime) are not read again.
    ///
    /// Files load concurrently and each is published as soon as it has loaded, so a slow
    /// compile (bounded by [`crate::RuntimeConfig::compile_timeout`]) delays no other plugin; a
    /// changed file's previous version serves until its new one is in. A plugin without a
    /// cached optimized artifact is published on baseline code when the runtime is tiered
    /// ([`crate::RuntimeConfig::tiered`]); its optimized code replaces it later in place.
    /// Afterwards the compile cache is collected ([`Runtime::collect_cache`]) with the versions
    /// present.
    pub async fn rescan(&self) {
        let _guard = self.reload.lock().await;
        let old = self.current.load_full();
        let mut files = BTreeMap::new();
        let mut pending = futures::stream::FuturesUnordered::new();
        for path in list_wasm_files(&self.dir) {
            let stamp = match std::fs::metadata(&path) {
                Ok(m) => (
                    (m.len(), m.modified().ok()),
                    std::fs::metadata(crate::signing::signature_path(&path))
                        .ok()
                        .map(|m| (m.len(), m.modified().ok())),
                ),
                Err(_) => continue,
            };
            let previous = old.files.get(&path).cloned();
            if let Some(prev) = &previous
                && !prev.needs_load(&stamp, Instant::now())
            {
                files.insert(path, prev.clone());
                continue;
            }
            if let Some(prev) = &previous {
                files.insert(path.clone(), prev.clone());
            }
            let runtime = self.runtime.clone();
            pending.push(async move {
                let result = runtime.load_file(&path).await;
                (path, stamp, previous, result)
            });
        }
        for gone in old.files.keys().filter(|p| !files.contains_key(*p)) {
            tracing::info!(file = %gone.display(), "plugin file removed; unloaded");
        }
        self.current.store(Arc::new(build_snapshot(files.clone())));
        use futures::StreamExt;
        while let Some((path, stamp, previous, result)) = pending.next().await {
            let state = match result {
                Ok(plugin) => {
                    let i = plugin.info();
                    tracing::info!(file = %path.display(), id = %i.id, version = %i.version, sha256 = %i.sha256, cached = i.compiled_from_cache, tier = %plugin.tier(), load_ms = i.load_ms, "plugin loaded");
                    FileState {
                        stamp,
                        plugin: Some(plugin),
                        error: None,
                        retry: None,
                    }
                }
                Err(e) => {
                    sluice_telemetry::metrics().plugin_load_failed();
                    tracing::warn!(file = %path.display(), "plugin failed to load: {e}");
                    let (retry, error) = retry_after(&e, previous.as_ref(), &stamp);
                    FileState {
                        stamp,
                        plugin: previous.and_then(|p| p.plugin),
                        error: Some(error),
                        retry,
                    }
                }
            };
            files.insert(path, state);
            self.current.store(Arc::new(build_snapshot(files.clone())));
        }
        self.ready.store(true, Ordering::Release);
        // The cache keeps what the versions present use (and what calls still run on).
        let present: std::collections::HashSet<String> = files
            .values()
            .filter_map(|f| f.plugin.as_ref())
            .map(|p| p.info().sha256.clone())
            .collect();
        let runtime = self.runtime.clone();
        let _ = tokio::task::spawn_blocking(move || runtime.collect_cache(Some(&present))).await;
    }

    /// When the earliest interrupted load is due to be tried again, if any.
    fn next_retry(&self) -> Option<Instant> {
        self.current
            .load()
            .files
            .values()
            .filter_map(|f| f.retry.map(|r| r.at))
            .min()
    }

    /// Watches the directory and rescans on changes (debounced) until the registry is dropped.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok() {
                let _ = tx.send(());
            }
        })?;
        std::fs::create_dir_all(&self.dir)?;
        watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
        let weak = Arc::downgrade(self);
        Ok(tokio::spawn(async move {
            let _watcher = watcher;
            loop {
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                let wait = registry.next_retry().map_or(SAFETY_RESCAN, |at| {
                    at.saturating_duration_since(Instant::now())
                        .min(SAFETY_RESCAN)
                });
                drop(registry);
                let got = tokio::time::timeout(wait, rx.recv()).await;
                if matches!(got, Ok(None)) {
                    return;
                }
                // Settle: a copy or a volume update is a burst of events.
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                registry.rescan().await;
            }
        }))
    }
}

/// The retry of a failed load and the error to show: an interrupted compile
/// ([`crate::LoadError::is_transient`]) is tried again after [`crate::engine::retry_delay`],
/// counting the tries of the same bytes; any other error waits for the file to change.
fn retry_after(
    e: &crate::LoadError,
    previous: Option<&FileState>,
    stamp: &(FileStamp, Option<FileStamp>),
) -> (Option<Retry>, String) {
    if !e.is_transient() {
        return (None, e.to_string());
    }
    let attempt = previous
        .filter(|p| p.stamp == *stamp)
        .and_then(|p| p.retry)
        .map_or(1, |r| r.attempt.saturating_add(1));
    let wait = crate::engine::retry_delay(attempt);
    let error = format!("{e} (try {attempt}; trying again in {} s)", wait.as_secs());
    let at = Instant::now() + wait;
    (Some(Retry { at, attempt }), error)
}

fn build_snapshot(files: BTreeMap<PathBuf, FileState>) -> Snapshot {
    let mut plugins: BTreeMap<String, Plugin> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut owner: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (path, state) in &files {
        if let Some(plugin) = &state.plugin {
            let id = plugin.info().id.clone();
            if let Some(first) = owner.get(&id) {
                // A file that failed to reload keeps its last good version, and that version's
                // id is taken: the reload's own error is what the file's owner needs (a storm
                // left "already provided" shown for a file that held garbage by then).
                let duplicate = format!(
                    "connector id {id:?} is already provided by {}",
                    first.display()
                );
                let error = match &state.error {
                    Some(e) => format!("{e} (its last good version is not served: {duplicate})"),
                    None => duplicate,
                };
                failures.push(LoadFailure {
                    file: path.clone(),
                    error,
                    serving: None,
                });
                continue;
            }
            owner.insert(id.clone(), path.clone());
            plugins.insert(id, plugin.clone());
        }
        if let Some(error) = &state.error {
            failures.push(LoadFailure {
                file: path.clone(),
                error: error.clone(),
                serving: state
                    .plugin
                    .as_ref()
                    .map(|p| format!("{}@{}", p.info().id, p.info().version)),
            });
        }
    }
    Snapshot {
        files,
        plugins,
        failures,
    }
}

/// `*.wasm` files in `dir` (following symlinks), skipping hidden entries such as the
/// `..data` directories of a Kubernetes volume.
fn list_wasm_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.ends_with(".wasm") && p.is_file()
        })
        .collect();
    out.sort();
    out
}
