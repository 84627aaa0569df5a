//! The Sluice plugin runtime.
//!
//! - [`Runtime`]: one wasmtime engine (component model, async, epoch deadlines), a compile
//!   cache on disk, and calls into plugins with memory and time limits.
//! - [`policy`] and [`outbound`]: the capability rules and the one HTTP choke point.
//! - [`registry`]: the plugin directory, loaded at start and hot-reloaded.

mod bindings;
mod budget;
mod cache;
pub mod cassette;
mod engine;
mod error;
pub mod fair;
mod host;
pub mod manifest;
pub mod memory;
pub mod outbound;
pub mod policy;
mod read_ahead;
pub mod redact;
pub mod registry;
pub mod signing;
pub mod work;

pub use bindings::{WIT_PACKAGE, WIT_VERSION};
pub use cache::{CacheStats, Tier};
pub use engine::{
    CallOptions, DEFAULT_COMPILE_CACHE_MIB, DEFAULT_COMPILE_MEMORY_MIB, DEFAULT_MEMORY_GROWTH_WAIT,
    Plugin, PluginInfo, Runtime, RuntimeConfig, SyncRequest, compile_artifact,
};
pub use error::{CallError, DeadlineExceeded, ErrorCode, LoadError};
pub use host::{CallLabels, FieldBatch, LogBudget, LogLimits, RecordSink, Secrets, SinkError};
pub use manifest::{Manifest, SecretSpec, StreamSpec};
pub use tokio_util::sync::CancellationToken;
