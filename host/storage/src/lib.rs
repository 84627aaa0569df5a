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
    /// Keys under a prefix.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// How a reader (DuckDB) addresses the object: `s3://bucket/key` or a local path.
    fn url(&self, key: &str) -> String;
}
