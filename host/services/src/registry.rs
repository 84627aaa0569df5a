//! The loaded registry: read from `SERVICES_FILE` at start, watched with `notify` (the same
//! approach as the plugin directory) and swapped atomically. A file that fails to read, parse or
//! check leaves the previous services serving; its error is logged and kept in the snapshot
//! until a good file replaces it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::Watcher;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::model::{self, RegistryError, Service};
use crate::secret::SharedSecret;

/// How long the watcher lets a burst of events settle before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A reload also runs this often, in case the file system dropped an event.
const SAFETY_RELOAD: Duration = Duration::from_secs(10);

/// Why the file on disk is not what is serving.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub error: RegistryError,
    /// When the failing version was read.
    pub at: OffsetDateTime,
}

/// The registry at one instant.
#[derive(Debug, Default)]
pub struct Snapshot {
    services: BTreeMap<String, Arc<Service>>,
    /// When the serving version was loaded (None: nothing was ever loaded).
    pub loaded_at: Option<OffsetDateTime>,
    /// SHA-256 (hex) of the serving file's bytes.
    pub sha256: Option<String>,
    /// The last load's failure, if the file on disk is not what is serving.
    pub failure: Option<LoadFailure>,
}

impl Snapshot {
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Service>> {
        self.services.get(id)
    }
}

/// The service registry, in step with its file.
pub struct ServiceRegistry {
    file: Option<PathBuf>,
    current: ArcSwap<Snapshot>,
    reload: std::sync::Mutex<()>,
}

impl ServiceRegistry {
    /// A registry of `file` (None: no file configured, always empty), loaded once.
    pub fn open(file: Option<PathBuf>) -> Arc<Self> {
        let r = Arc::new(Self {
            file,
            current: ArcSwap::from_pointee(Snapshot::default()),
            reload: std::sync::Mutex::new(()),
        });
        r.reload();
        r
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Service>> {
        self.current.load().get(id).cloned()
    }

    /// Reads the file again. Unchanged bytes (same SHA-256) are not parsed again; a bad file
    /// keeps the serving services and records its error.
    pub fn reload(&self) {
        let Some(path) = &self.file else {
            return;
        };
        let Ok(_guard) = self.reload.lock() else {
            return;
        };
        let old = self.current.load_full();
        let now = OffsetDateTime::now_utc();
        let result = read_file(path).and_then(|bytes| {
            let sha = hex::encode(Sha256::digest(&bytes));
            if old.sha256.as_deref() == Some(sha.as_str()) && old.failure.is_none() {
                return Ok(None);
            }
            Ok(Some((sha, parse_file(bytes)?)))
        });
        let next = match result {
            Ok(None) => return,
            Ok(Some((sha, services))) => {
                tracing::info!(
                    file = %path.display(),
                    sha256 = %sha,
                    services = services.len(),
                    "service registry loaded"
                );
                for (id, reason) in secret_problems(&services) {
                    tracing::warn!(service = %id, "no usable shared secret: {reason}");
                }
                Snapshot {
                    services,
                    loaded_at: Some(now),
                    sha256: Some(sha),
                    failure: None,
                }
            }
            Err(error) => {
                let same = old
                    .failure
                    .as_ref()
                    .is_some_and(|f| f.error.to_string() == error.to_string());
                if !same && old.loaded_at.is_none() {
                    tracing::error!(
                        file = %path.display(),
                        "service registry not loaded; no services, and /ready answers 503 until the file is fixed: {error}"
                    );
                } else if !same {
                    tracing::error!(
                        file = %path.display(),
                        serving = old.services.len(),
                        "service registry not reloaded; the previous version keeps serving: {error}"
                    );
                }
                Snapshot {
                    services: old.services.clone(),
                    loaded_at: old.loaded_at,
                    sha256: old.sha256.clone(),
                    failure: Some(LoadFailure {
                        error,
                        at: if same {
                            old.failure.as_ref().map_or(now, |f| f.at)
                        } else {
                            now
                        },
                    }),
                }
            }
        };
        self.current.store(Arc::new(next));
    }

    /// Watches the file's directory (so that an editor's rename or a Kubernetes ConfigMap's
    /// `..data` swap is seen) and reloads on changes, debounced, until the registry is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<Option<tokio::task::JoinHandle<()>>, notify::Error> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok() {
                let _ = tx.send(());
            }
        })?;
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        let weak = Arc::downgrade(self);
        Ok(Some(tokio::spawn(async move {
            let _watcher = watcher;
            loop {
                let got = tokio::time::timeout(SAFETY_RELOAD, rx.recv()).await;
                if matches!(got, Ok(None)) {
                    return;
                }
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                // Reading and parsing a small file: off the async workers all the same.
                let _ = tokio::task::spawn_blocking(move || registry.reload()).await;
            }
        })))
    }
}

/// The checks `serve` runs on `SERVICES_FILE`, for `sluice config check`: the file read,
/// parsed and checked with the shared secrets of this environment, exactly as a (re)load does
/// ([`read_file`], [`parse_file`]). `Err`: `serve` would load no version of it (no services,
/// and `/ready` answers 503 `services_registry_not_loaded` until a good one is written).
pub fn check_file(path: &Path) -> Result<BTreeMap<String, Arc<Service>>, RegistryError> {
    parse_file(read_file(path)?)
}

/// The services of a loaded file that have no usable shared secret (`SC_SECRET_<ID>` unset,
/// shorter than 16 characters, …), with the reason: `serve` logs each as a warning and answers
/// their connect and disconnect 503 `shared_secret_missing`.
pub fn secret_problems(services: &BTreeMap<String, Arc<Service>>) -> Vec<(String, String)> {
    services
        .values()
        .filter_map(|s| s.secret.as_ref().err().map(|r| (s.id.clone(), r.clone())))
        .collect()
}

/// The file's bytes, at most one past the size cap: enough for [`model::parse`] to refuse a
/// larger file without reading a huge one whole.
fn read_file(path: &Path) -> Result<Vec<u8>, RegistryError> {
    read_capped(path, model::MAX_FILE_BYTES as u64 + 1).map_err(|e| RegistryError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The file's bytes checked into services, the secrets read from the environment.
fn parse_file(bytes: Vec<u8>) -> Result<BTreeMap<String, Arc<Service>>, RegistryError> {
    let text = String::from_utf8(bytes)
        .map_err(|_| RegistryError::Parse("the file is not UTF-8".into()))?;
    model::parse(&text, SharedSecret::from_env)
}

/// The first `limit` bytes of the file at `path`.
fn read_capped(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "services: [{id: po, name: PO, base_url: 'http://x', connector: {kind: wasm, id: po}, env: [PO_API_KEY]}]\n";

    #[test]
    fn a_broken_file_keeps_the_previous_services() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("services.yaml");
        std::fs::write(&file, ONE).unwrap();
        let r = ServiceRegistry::open(Some(file.clone()));
        assert!(r.get("po").is_some());
        assert!(r.snapshot().failure.is_none());
        std::fs::write(&file, "services: [{id: po").unwrap();
        r.reload();
        let snap = r.snapshot();
        assert!(snap.get("po").is_some(), "still serving");
        assert!(snap.failure.is_some());
        std::fs::write(&file, ONE.replace("po,", "po2,")).unwrap();
        r.reload();
        let snap = r.snapshot();
        assert!(snap.get("po2").is_some() && snap.get("po").is_none());
        assert!(snap.failure.is_none());
    }

    #[test]
    fn no_file_is_an_empty_registry() {
        let r = ServiceRegistry::open(None);
        assert_eq!(r.snapshot().services().count(), 0);
        assert!(r.snapshot().failure.is_none());
    }
}
