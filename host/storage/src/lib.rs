//! Where committed data lives: a [`Store`] trait with an S3 and a local-directory backend,
//! and the layout and commit protocol of runs ([`commit`]).

pub mod commit;
mod local;
mod s3;

use std::path::Path;

pub use local::LocalStore;
pub use s3::{S3Store, S3Target};

/// Storage failures; messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {url}: {message}")]
    Backend {
        op: &'static str,
        url: String,
        message: String,
    },
    #[error("storage I/O on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// A conditional write found the object changed since it was read (HTTP 412 from S3,
    /// RFC 9110 §13.1.1; or the local store's own check): another writer got there first.
    /// A presigned write reached the store after its validity ended (the writer stalled or the
    /// network held it); it did not land.
    #[error("{key}: the write arrived after its validity ended and was refused")]
    Expired { key: String },
    /// The commit's fence refused: the attempt lost its claim (see `commit::CommitFence`).
    #[error("commit refused: {0}")]
    Fenced(String),
    #[error(
        "{key} changed since it was read (another writer committed first); this write was refused"
    )]
    Precondition { key: String },
}

/// The version of an object a conditional write expects to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The object must not exist yet (`If-None-Match: *`).
    Absent,
    /// The object's current entity tag (S3 `ETag`, quoted as the server sent it; the local
    /// store's is the SHA-256 of the bytes) must still be this one (`If-Match`).
    Tag(String),
}

/// A write that is refused unless the object is still what [`Expect`] says, and, when
/// `valid_for` is set, unless it reaches the store within that time: an S3 request is then
/// presigned with `X-Amz-Expires` (AWS SigV4 query authentication), so a writer that stalls
/// past it (SIGSTOP, a GC pause) has its write refused by the server, whatever its own clock does.
#[derive(Debug, Clone)]
pub struct Conditional {
    pub expect: Expect,
    pub valid_for: Option<std::time::Duration>,
}

/// An object store, addressed by `/`-separated keys.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Uploads a local file (multipart when large).
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError>;
    /// Writes a small object.
    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError>;
    /// Reads an object; `None` when it does not exist.
    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Reads an object with its entity tag, for a later [`Store::put_if`].
    async fn get_tagged(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, StorageError>;
    /// Writes a small object only if it is still as `cond` expects; a changed object is
    /// [`StorageError::Precondition`]. S3 sends `If-Match`/`If-None-Match`, which AWS S3 and
    /// MinIO enforce (Garage 2.5 ignores them on PUT: there the presigned expiry and the
    /// caller's own fencing are what hold); the local store checks under an exclusive lock.
    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        cond: &Conditional,
    ) -> Result<(), StorageError>;
    /// Keys under a prefix.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// How a reader (DuckDB) addresses the object: `s3://bucket/key` or a local path.
    fn url(&self, key: &str) -> String;
}
