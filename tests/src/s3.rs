//! The real S3 server the tests write to: Garage, started by `scripts/dev.sh test` with the
//! keys and bucket of `scripts/garage.sh`.

use std::path::{Path, PathBuf};

use sluice_storage::{S3Store, S3Target, Store};

/// Key with read/write on [`BUCKET`].
pub const AK: &str = "GK5106e0a2b1c8d0e7a3f4b5c6";
pub const SK: &str = "5c1ce0a7e5c2e4b1d8f9a6b3c0d7e4f1a8b5c2d9e6f3a0b7c4d1e8f5a2b9c6d3";
/// A valid key without any permission on [`BUCKET`].
pub const NOPERM_AK: &str = "GK9f8e7d6c5b4a39281706f5e4";
pub const NOPERM_SK: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub const BUCKET: &str = "sluice-test";

/// The S3 endpoint (`SLUICE_TEST_S3_ENDPOINT`); the service gets it as `S3_ENDPOINT`.
pub fn endpoint() -> String {
    std::env::var("SLUICE_TEST_S3_ENDPOINT").expect(
        "SLUICE_TEST_S3_ENDPOINT is not set: run the tests with scripts/dev.sh test, which starts Garage",
    )
}

/// A client on [`BUCKET`] with the read/write key.
pub fn bucket() -> S3Store {
    S3Store::new(S3Target {
        endpoint: Some(endpoint()),
        region: "us-east-1".into(),
        bucket: BUCKET.into(),
        access_key_id: AK.into(),
        secret_access_key: SK.into(),
        session_token: None,
    })
}

/// A prefix no other test (or earlier run of the same test) uses: Garage's data outlives a run.
pub fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("tests/{name}-{nanos}")
}

/// Copies every object under `prefix` into `dir/{BUCKET}/{key}`, first emptying that copy, so
/// local tools (DuckDB without httpfs) can read what a run committed. Returns `dir/{BUCKET}`.
pub async fn download(prefix: &str, dir: &Path) -> PathBuf {
    let root = dir.join(BUCKET);
    let local = root.join(prefix);
    if local.exists() {
        std::fs::remove_dir_all(&local).expect("clear the old copy");
    }
    let store = bucket();
    for key in store.list(prefix).await.expect("list") {
        let bytes = store.get_bytes(&key).await.expect("get").expect("listed");
        let path = root.join(&key);
        std::fs::create_dir_all(path.parent().expect("key has a parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write");
    }
    root
}
