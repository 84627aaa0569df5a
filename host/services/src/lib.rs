//! Internal services: the registry of the company's services an analyst can connect to, and the
//! token-exchange protocol Sluice speaks to them on the backend's behalf.
//!
//! - [`model`]: the `SERVICES_FILE` format (YAML or JSON) and its checks.
//! - [`registry`]: the loaded file, hot-reloaded; a broken file keeps the previous one.
//! - [`secret`]: each service's shared secret, from `SC_SECRET_<ID>` only.
//! - [`protocol`]: the wire format (`docs/internal-service-protocol.yaml`).
//! - [`client`]: the calls, through the host's outbound choke point.
//! - [`tokens`]: what Sluice keeps of an issued key (id, user, expiry — never the key).
//! - [`connect`]: connect, disconnect, health, and their audit events.
//! - [`check`]: the conformance checker behind `sluice service check`.

pub mod check;
pub mod client;
pub mod connect;
pub mod model;
pub mod protocol;
pub mod registry;
pub mod secret;
pub mod tokens;

pub use client::{ClientConfig, HealthReport, HealthState, ServiceClient, UpstreamError};
pub use connect::{Connection, Disconnected, ServiceError, Services};
pub use model::{ConnectorRef, Service};
pub use registry::ServiceRegistry;
pub use secret::{SharedSecret, secret_env_name};
