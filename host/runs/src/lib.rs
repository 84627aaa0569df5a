//! Runs: syncing a connection into committed storage.
//!
//! - [`pipeline`]: one run, start to commit: plugin → staging → Parquet → storage.
//! - [`manager`]: the service's runs: admission (one active run per connection, a capped
//!   queue, idempotency keys), cancellation, graceful shutdown.
//! - [`records`]: run status, persisted so it survives a restart (embedded mode).
//! - [`shared`]: the run queue shared by replicas, in PostgreSQL (replicated mode), and
//!   [`sealed`]: the requests it holds, sealed with the replicas' key.
//! - [`catalog`]: the schema catalog of a connection, from what storage has committed.
//! - [`target`]: the storage a request names, resolved against the operator's backend.

pub mod catalog;
pub mod docs;
pub mod manager;
pub mod pipeline;
pub mod records;
pub mod sealed;
pub mod shared;
pub mod target;

/// Current time as RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
