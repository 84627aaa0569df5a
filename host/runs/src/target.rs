//! Which object store a request writes to.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_storage::{LocalStore, S3Store, S3Target, Store};

/// The operator's storage backend (from the environment).
#[derive(Debug, Clone)]
pub enum Backend {
    /// A local directory; each bucket is a subdirectory. The default without `S3_ENDPOINT`.
    Local { root: PathBuf },
    /// S3: AWS proper when `endpoint` is `None`, else MinIO/Garage with path-style addressing.
    S3 { endpoint: Option<String> },
}

/// The storage part of a request body: bucket, prefix and per-request credentials.
/// Serialized only to be sealed into the shared queue (`sealed`); never logged (its `Debug`
/// shows bucket and prefix only).
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
}

impl std::fmt::Debug for StorageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSpec")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl StorageSpec {
    /// Opens the store this spec names on `backend`.
    pub fn open(&self, backend: &Backend) -> Result<Arc<dyn Store>, String> {
        let b = &self.bucket;
        if b.is_empty()
            || b.len() > 63
            || !b
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            || b.starts_with('.')
            || b.contains("..")
        {
            return Err(format!("bucket {b:?} is not a valid bucket name"));
        }
        // The same request shape on both backends: a client tested against local storage
        // must not start failing when the deployment moves to S3.
        let pair = match (&self.access_key_id, &self.secret_access_key) {
            (Some(a), Some(s)) if !a.is_empty() && !s.is_empty() => Some((a.clone(), s.clone())),
            (None, None) => None,
            _ => {
                return Err(
                    "storage.access_key_id and storage.secret_access_key go together".into(),
                );
            }
        };
        match backend {
            Backend::Local { root } => Ok(Arc::new(LocalStore::new(root.join(b)))),
            Backend::S3 { endpoint } => {
                let (ak, sk) = match pair {
                    Some(pair) => pair,
                    None => {
                        match (
                            std::env::var("AWS_ACCESS_KEY_ID"),
                            std::env::var("AWS_SECRET_ACCESS_KEY"),
                        ) {
                            (Ok(a), Ok(s)) => (a, s),
                            _ => return Err(
                                "storage.access_key_id and storage.secret_access_key are required"
                                    .into(),
                            ),
                        }
                    }
                };
                Ok(Arc::new(S3Store::new(S3Target {
                    endpoint: endpoint.clone(),
                    region: self
                        .region
                        .clone()
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "us-east-1".into()),
                    bucket: b.clone(),
                    access_key_id: ak,
                    secret_access_key: sk,
                    session_token: self
                        .session_token
                        .clone()
                        .or_else(|| std::env::var("AWS_SESSION_TOKEN").ok()),
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ak: Option<&str>, sk: Option<&str>) -> StorageSpec {
        StorageSpec {
            bucket: "b".into(),
            prefix: String::new(),
            access_key_id: ak.map(Into::into),
            secret_access_key: sk.map(Into::into),
            session_token: None,
            region: None,
        }
    }

    /// A half key pair is refused on both backends (local storage took `access_key_id` alone
    /// with 202 while S3 answered 422), a whole pair or none is fine on local storage.
    #[test]
    fn a_half_key_pair_is_refused_on_every_backend() {
        let local = Backend::Local {
            root: std::env::temp_dir(),
        };
        let s3 = Backend::S3 {
            endpoint: Some("http://127.0.0.1:9".into()),
        };
        for backend in [&local, &s3] {
            for half in [
                spec(Some("AKIA"), None),
                spec(None, Some("secret")),
                spec(Some(""), Some("secret")),
            ] {
                let e = half.open(backend).err().expect("refused");
                assert!(e.contains("go together"), "{e}");
            }
        }
        assert!(spec(Some("AKIA"), Some("secret")).open(&local).is_ok());
        assert!(spec(None, None).open(&local).is_ok());
        assert!(spec(Some("AKIA"), Some("secret")).open(&s3).is_ok());
    }
}
