//! Service settings, from the environment (the deployment's contract) with flag overrides.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

/// Every setting of `sluice serve`. Each flag also reads the environment variable it names.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Bind address. Must be 0.0.0.0 in a container.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,
    /// Shared secret the backend sends in `x-connect-service-token`. Required.
    #[arg(
        long,
        env = "CONNECT_SERVICE_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    pub token: String,
    /// MinIO/Garage endpoint; switches storage to S3 with path-style addressing.
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// `local` or `s3`. Default: `s3` when S3_ENDPOINT is set, else `local`. `s3` without
    /// S3_ENDPOINT is AWS S3 proper.
    #[arg(long, env = "STORAGE_BACKEND")]
    pub storage_backend: Option<String>,
    /// Root of the local storage backend; each bucket is a subdirectory.
    #[arg(long, env = "LOCAL_STORAGE_DIR")]
    pub local_storage_dir: Option<PathBuf>,
    /// Directory of connector `.wasm` files, watched for changes.
    #[arg(long, env = "PLUGINS_DIR", default_value = ".sluice/plugins")]
    pub plugins_dir: PathBuf,
    /// Run records, the compile cache and (by default) staging live here.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = ".sluice")]
    pub data_dir: PathBuf,
    /// Where runs stage records before writing Parquet.
    #[arg(long, env = "STAGING_DIR")]
    pub staging_dir: Option<PathBuf>,
    /// Comma-separated destinations any plugin may reach (still only those it declares).
    #[arg(long, env = "SLUICE_ALLOWED_HOSTS", default_value = "*")]
    pub allowed_hosts: String,
    /// Non-public address classes plugins may reach: none, loopback, private (comma list).
    #[arg(long, env = "SLUICE_ALLOW_PRIVATE_ADDRESSES", default_value = "none")]
    pub allow_private_addresses: String,
    #[arg(long, env = "SLUICE_MAX_CONCURRENT_RUNS", default_value_t = 2)]
    pub max_concurrent_runs: usize,
    #[arg(long, env = "SLUICE_MAX_QUEUED_RUNS", default_value_t = 16)]
    pub max_queued_runs: usize,
    /// Wall-clock limit of one run, in seconds.
    #[arg(long, env = "SLUICE_RUN_TIMEOUT_SECS", default_value_t = 6 * 3600)]
    pub run_timeout_secs: u64,
    /// Wall-clock limit of a validate or discover call, in seconds.
    #[arg(long, env = "SLUICE_CALL_TIMEOUT_SECS", default_value_t = 30)]
    pub call_timeout_secs: u64,
    /// The most linear memory one plugin call may use, in MiB.
    #[arg(long, env = "SLUICE_PLUGIN_MEMORY_MIB", default_value_t = 128)]
    pub plugin_memory_mib: u32,
    /// Plugin calls (validate, discover, sync) running at once; more wait for a slot.
    #[arg(long, env = "SLUICE_MAX_CONCURRENT_CALLS", default_value_t = 32)]
    pub max_concurrent_calls: u32,
    /// Emitted JSON one run buffers before writing it as Parquet row groups, in MiB (all its
    /// streams together; also the most one row group holds).
    #[arg(long, env = "SLUICE_STAGING_BUFFER_MIB", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub staging_buffer_mib: u32,
    /// Seconds running runs get to finish on SIGTERM before they are cancelled.
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// Upstream request timeout, in seconds (per attempt).
    #[arg(long, env = "SLUICE_HTTP_TIMEOUT_SECS", default_value_t = 60)]
    pub http_timeout_secs: u64,
    /// Longest single rate-limit or `Retry-After` wait, in seconds; past it the upstream's
    /// answer goes to the plugin as it is.
    #[arg(long, env = "SLUICE_MAX_RATE_LIMIT_WAIT_SECS", default_value_t = 900)]
    pub max_rate_limit_wait_secs: u64,
    /// Least spacing of HubSpot CRM search requests per account, in milliseconds (HubSpot
    /// allows five a second; four leave room for jitter); 0 turns the pacing off.
    #[arg(long, env = "SLUICE_HUBSPOT_SEARCH_INTERVAL_MS", default_value_t = 250)]
    pub hubspot_search_interval_ms: u64,
    /// Seconds a client has to send a complete request head; also how long a keep-alive
    /// connection may stay idle between requests. The connection is closed after that.
    #[arg(long, env = "SLUICE_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// HTTP connections open at once, lowered to the open-file limit minus 256 (at least 16);
    /// more wait in the listen backlog. An idle or slow connection costs ~16 KiB (measured:
    /// 1,500 unfinished request heads added 24 MiB of RSS), so 2048 costs at most ~32 MiB.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = 2048)]
    pub max_connections: usize,
    /// Linear memory all plugin calls together may hold, in MiB. A call reserves its own limit
    /// (the plugin's `memory-mib`, default 64, capped by SLUICE_PLUGIN_MEMORY_MIB) before it
    /// starts and waits for it within its deadline.
    #[arg(long, env = "SLUICE_PLUGIN_MEMORY_BUDGET_MIB", default_value_t = 192)]
    pub plugin_memory_budget_mib: u32,
    /// Plugin files larger than this are refused before they are read, in MiB.
    #[arg(long, env = "SLUICE_MAX_PLUGIN_MIB", default_value_t = 64)]
    pub max_plugin_mib: u64,
    /// A plugin whose compile takes longer is refused, in seconds.
    #[arg(long, env = "SLUICE_COMPILE_TIMEOUT_SECS", default_value_t = 60)]
    pub compile_timeout_secs: u64,
    /// Records one run may stage, in MiB; the run fails with `staging_quota_exceeded` past it.
    #[arg(long, env = "SLUICE_STAGING_RUN_QUOTA_MIB", default_value_t = 4096)]
    pub staging_run_quota_mib: u64,
    /// Records all runs together may stage, in MiB (size STAGING_DIR's volume above this).
    #[arg(long, env = "SLUICE_STAGING_TOTAL_MIB", default_value_t = 8192)]
    pub staging_total_mib: u64,
    /// Longest plugin log message kept, in bytes (fields get as much again).
    #[arg(long, env = "SLUICE_PLUGIN_LOG_LINE_BYTES", default_value_t = 4096)]
    pub plugin_log_line_bytes: usize,
    /// Plugin log one call may write, in KiB; further lines are counted and dropped.
    #[arg(long, env = "SLUICE_PLUGIN_LOG_CALL_KIB", default_value_t = 1024)]
    pub plugin_log_call_kib: u64,
    /// The internal-service registry (YAML or JSON), watched and hot-reloaded. Unset: no services.
    #[arg(long, env = "SERVICES_FILE")]
    pub services_file: Option<PathBuf>,
    /// Wall-clock limit of one call to an internal service (token exchange, revoke, health),
    /// in seconds, retries included.
    #[arg(long, env = "SLUICE_SERVICE_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub service_timeout_secs: u64,
    /// Plugin log one run may write (all its calls), in KiB.
    #[arg(long, env = "SLUICE_PLUGIN_LOG_RUN_KIB", default_value_t = 8192)]
    pub plugin_log_run_kib: u64,
    /// `true`: `GET /metrics` answers without the service token (for a scraper that holds no
    /// secret); `false` (default): it needs the token like `/internal`.
    #[arg(long, env = "METRICS_PUBLIC", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_public: bool,
}

impl ServeConfig {
    /// Refuses to start without a token; returns warnings about settings that look wrong.
    pub fn check(&self) -> anyhow::Result<Vec<String>> {
        if self.token.trim().is_empty() {
            bail!("CONNECT_SERVICE_TOKEN must be set");
        }
        let mut warnings = Vec::new();
        if self.token.len() < 16 {
            warnings.push(
                "CONNECT_SERVICE_TOKEN is shorter than 16 characters; use `openssl rand -hex 32`"
                    .to_string(),
            );
        }
        if self.host.is_loopback() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            warnings.push("HOST is a loopback address inside Kubernetes: the Service cannot reach the pod; set HOST=0.0.0.0".into());
        }
        if let Some(ep) = &self.s3_endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            bail!("S3_ENDPOINT must be an http:// or https:// URL, got {ep:?}");
        }
        if self.backend_name()? == "s3" && self.s3_endpoint.is_none() {
            warnings
                .push("STORAGE_BACKEND=s3 without S3_ENDPOINT: writing to AWS S3 proper".into());
        }
        if self.allowed_hosts.trim() == "*" && self.allow_private_addresses != "none" {
            warnings.push("plugins may reach private addresses of any host they declare; narrow SLUICE_ALLOWED_HOSTS".into());
        }
        if self.max_concurrent_runs == 0 {
            bail!("SLUICE_MAX_CONCURRENT_RUNS must be at least 1");
        }
        if self.header_read_timeout_secs == 0 {
            bail!("SLUICE_HEADER_READ_TIMEOUT_SECS must be at least 1");
        }
        // ~40 MiB for the service itself; each running run buffers up to its staging buffer,
        // held twice while a row group is encoded.
        let worst = 40
            + u64::from(self.plugin_memory_budget_mib)
            + 2 * u64::from(self.staging_buffer_mib) * self.max_concurrent_runs as u64;
        if worst > 480 {
            warnings.push(format!("plugin memory budget + 2 × staging buffer × concurrent runs + ~40 MiB = {worst} MiB: the 512 MiB container limit may be hit"));
        }
        Ok(warnings)
    }

    /// Copies the plugin budgets and limits into the runtime's settings.
    pub fn apply_budgets(&self, rc: &mut sluice_runtime::RuntimeConfig) {
        rc.memory_budget_mib = self.plugin_memory_budget_mib;
        rc.max_plugin_bytes = self.max_plugin_mib << 20;
        rc.compile_timeout = std::time::Duration::from_secs(self.compile_timeout_secs);
        rc.log.line_bytes = self.plugin_log_line_bytes;
        rc.log.call_bytes = self.plugin_log_call_kib << 10;
    }

    pub fn backend_name(&self) -> anyhow::Result<&'static str> {
        match self.storage_backend.as_deref() {
            None | Some("") => Ok(if self.s3_endpoint.is_some() {
                "s3"
            } else {
                "local"
            }),
            Some("local") => Ok("local"),
            Some("s3") => Ok("s3"),
            Some(other) => bail!("STORAGE_BACKEND must be local or s3, got {other:?}"),
        }
    }

    pub fn backend(&self) -> anyhow::Result<sluice_runs::target::Backend> {
        Ok(match self.backend_name()? {
            "s3" => sluice_runs::target::Backend::S3 {
                endpoint: self.s3_endpoint.clone(),
            },
            _ => sluice_runs::target::Backend::Local {
                root: self
                    .local_storage_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("storage")),
            },
        })
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.staging_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("staging"))
    }

    pub fn policy(&self) -> anyhow::Result<sluice_runtime::policy::OperatorPolicy> {
        use sluice_runtime::policy::{AddressGrant, OperatorPolicy};
        Ok(OperatorPolicy {
            allow: OperatorPolicy::parse_allow(&self.allowed_hosts)
                .map_err(anyhow::Error::msg)
                .context("SLUICE_ALLOWED_HOSTS")?,
            addresses: AddressGrant::parse(&self.allow_private_addresses)
                .map_err(anyhow::Error::msg)
                .context("SLUICE_ALLOW_PRIVATE_ADDRESSES")?,
        })
    }

    /// Every resolved setting, for the startup log (the token masked).
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "host": self.host.to_string(),
            "port": self.port,
            "connect_service_token": format!("set ({} characters)", self.token.len()),
            "storage_backend": self.backend_name().unwrap_or("invalid"),
            "s3_endpoint": self.s3_endpoint,
            "local_storage_dir": self.backend().ok().and_then(|b| match b { sluice_runs::target::Backend::Local { root } => Some(root.display().to_string()), _ => None }),
            "plugins_dir": self.plugins_dir.display().to_string(),
            "data_dir": self.data_dir.display().to_string(),
            "staging_dir": self.staging_dir().display().to_string(),
            "allowed_hosts": self.allowed_hosts,
            "allow_private_addresses": self.allow_private_addresses,
            "max_concurrent_runs": self.max_concurrent_runs,
            "max_queued_runs": self.max_queued_runs,
            "run_timeout_secs": self.run_timeout_secs,
            "call_timeout_secs": self.call_timeout_secs,
            "plugin_memory_mib": self.plugin_memory_mib,
            "max_concurrent_calls": self.max_concurrent_calls,
            "staging_buffer_mib": self.staging_buffer_mib,
            "shutdown_grace_secs": self.shutdown_grace_secs,
            "http_timeout_secs": self.http_timeout_secs,
            "max_rate_limit_wait_secs": self.max_rate_limit_wait_secs,
            "hubspot_search_interval_ms": self.hubspot_search_interval_ms,
            "header_read_timeout_secs": self.header_read_timeout_secs,
            "max_connections": self.max_connections,
            "plugin_memory_budget_mib": self.plugin_memory_budget_mib,
            "max_plugin_mib": self.max_plugin_mib,
            "compile_timeout_secs": self.compile_timeout_secs,
            "staging_run_quota_mib": self.staging_run_quota_mib,
            "staging_total_mib": self.staging_total_mib,
            "plugin_log_line_bytes": self.plugin_log_line_bytes,
            "plugin_log_call_kib": self.plugin_log_call_kib,
            "plugin_log_run_kib": self.plugin_log_run_kib,
            "services_file": self.services_file.as_ref().map(|p| p.display().to_string()),
            "service_timeout_secs": self.service_timeout_secs,
            "metrics_public": self.metrics_public,
        })
    }
}
