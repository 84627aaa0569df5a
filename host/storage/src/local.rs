//! A local directory with the same layout as a bucket.

use std::path::{Path, PathBuf};

use crate::{Conditional, Expect, StorageError, Store};

/// Objects as files under a root directory; writes are atomic (temp file + rename).
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        if key.split('/').any(|p| p == ".." || p == ".") || key.starts_with('/') {
            return Err(StorageError::Invalid(format!("bad key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

/// The local store's entity tag: the SHA-256 of the bytes, quoted like an HTTP ETag.
fn tag_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("\"{}\"", hex::encode(sha2::Sha256::digest(bytes)))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

async fn write_atomic(
    dest: &Path,
    write: impl AsyncFnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), StorageError> {
    if let Some(dir) = dest.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
    }
    // One name per write, not per process: concurrent writes of one key (two schema-syncs of a
    // connection) each rename their own file; with one name per process one write's rename took
    // the other's file away (an outside attack, session 11: 6 of 8 concurrent schema-syncs failed).
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dest.with_file_name(format!(
        ".{}.tmp{}-{n}",
        dest.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object"),
        std::process::id()
    ));
    write(&tmp).await.map_err(io(&tmp))?;
    let f = tokio::fs::File::open(&tmp).await.map_err(io(&tmp))?;
    f.sync_all().await.map_err(io(&tmp))?;
    tokio::fs::rename(&tmp, dest).await.map_err(io(dest))
}

#[async_trait::async_trait]
impl Store for LocalStore {
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let dest = self.path(key)?;
        write_atomic(&dest, async |tmp: &Path| {
            tokio::fs::copy(path, tmp).await.map(|_| ())
        })
        .await
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let dest = self.path(key)?;
        write_atomic(&dest, async |tmp: &Path| {
            tokio::fs::write(tmp, &bytes).await
        })
        .await
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let p = self.path(key)?;
        match tokio::fs::read(&p).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&p)(e)),
        }
    }

    async fn get_tagged(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, StorageError> {
        Ok(self.get_bytes(key).await?.map(|b| {
            let tag = tag_of(&b);
            (b, tag)
        }))
    }

    /// Compares and writes under an exclusive lock on `.{name}.lock` beside the object, so
    /// writers of this directory (several processes of one machine) are serialized. The
    /// validity is not checked: a local directory has no server to refuse a late write.
    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        cond: &Conditional,
    ) -> Result<(), StorageError> {
        let dest = self.path(key)?;
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        }
        let lock_path = dest.with_file_name(format!(
            ".{}.lock",
            dest.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("object")
        ));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|_| lock))
            .await
            .map_err(|e| StorageError::Invalid(e.to_string()))?
            .map_err(io(&lock_path))?;
        let current = self.get_bytes(key).await?;
        let holds = match (&cond.expect, &current) {
            (Expect::Absent, None) => true,
            (Expect::Tag(t), Some(b)) => *t == tag_of(b),
            _ => false,
        };
        let result = if holds {
            self.put_bytes(key, bytes).await
        } else {
            Err(StorageError::Precondition { key: key.into() })
        };
        drop(lock);
        result
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let mut rd = match tokio::fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&dir)(e)),
            };
            while let Some(e) = rd.next_entry().await.map_err(io(&dir))? {
                let p = e.path();
                if e.file_type().await.map_err(io(&p))?.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&self.root) {
                    let key = rel.to_string_lossy().replace('\\', "/");
                    if key.starts_with(prefix)
                        && !rel
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    {
                        out.push(key);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let p = self.path(key)?;
        match tokio::fs::remove_file(&p).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&p)(e)),
            _ => Ok(()),
        }
    }

    /// The object's absolute path, through the root's canonical form (symbolic links and `..`
    /// resolved once it exists): a catalog's `files` and `view_sql` name the data wherever the
    /// reader runs, not relative to the service's working directory (`SLUICE_DATA_DIR=.sluice`).
    fn url(&self, key: &str) -> String {
        let root = self
            .root
            .canonicalize()
            .or_else(|_| std::path::absolute(&self.root))
            .unwrap_or_else(|_| self.root.clone());
        root.join(key).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A store rooted at a relative path (the service's default `.sluice/storage`) names its
    /// objects by absolute, canonical path.
    #[test]
    fn urls_are_absolute_and_canonical_for_a_relative_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("bucket")).expect("mkdir");
        std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("symlink");
        let cwd = std::env::current_dir().expect("cwd");
        let relative = pathdiff(dir.path().join("link/bucket"), &cwd);
        assert!(relative.is_relative(), "{}", relative.display());
        let url = LocalStore::new(&relative).url("conn/items/run-0.parquet");
        let want = real
            .canonicalize()
            .expect("canonical")
            .join("bucket/conn/items/run-0.parquet");
        assert_eq!(url, want.display().to_string());
        // Before the root exists: still absolute.
        let later = LocalStore::new("not-yet/there").url("k");
        assert!(Path::new(&later).is_absolute(), "{later}");
        assert!(later.ends_with("not-yet/there/k"), "{later}");
    }

    /// Concurrent writes of one key all succeed and leave one of them whole (a temp name per
    /// process made all but one fail: the first rename took the others' file away).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_of_one_key_all_succeed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LocalStore::new(dir.path()));
        let writes: Vec<_> = (0..16u8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .put_bytes("conn/_schema.json", vec![i; 64 << 10])
                        .await
                })
            })
            .collect();
        for w in writes {
            w.await.expect("join").expect("every write succeeds");
        }
        let got = store
            .get_bytes("conn/_schema.json")
            .await
            .expect("read")
            .expect("written");
        assert_eq!(got.len(), 64 << 10);
        assert!(got.iter().all(|b| *b == got[0]), "one write whole");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("conn"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["_schema.json"], "no temp file left");
    }

    /// `to` relative to `from` (both absolute), with `..` steps.
    fn pathdiff(to: PathBuf, from: &Path) -> PathBuf {
        let to: Vec<_> = to.components().collect();
        let from: Vec<_> = from.components().collect();
        let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
        let mut out = PathBuf::new();
        for _ in common..from.len() {
            out.push("..");
        }
        for c in &to[common..] {
            out.push(c.as_os_str());
        }
        out
    }
}
