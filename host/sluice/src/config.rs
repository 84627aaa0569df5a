//! Service settings, from the environment (the deployment's contract) with flag overrides.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

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
    /// Most time one upstream request may spend waiting on rate limits and retry backoff, all
    /// its waits together, in seconds; a wait that would pass it is not made and the upstream's
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
    /// The most data memory (RLIMIT_DATA: heap and private writable mappings) a compile child
    /// may map, in MiB; a plugin whose compile needs more is refused with an error naming this
    /// setting. 0: no limit. One compile child runs at a time.
    #[arg(long, env = "SLUICE_COMPILE_MEMORY_MIB", default_value_t = sluice_runtime::DEFAULT_COMPILE_MEMORY_MIB)]
    pub compile_memory_mib: u32,
    /// The most the compile cache (`SLUICE_DATA_DIR/cache`) may hold, in MiB: past it the least
    /// recently used artifacts not in use by a loaded plugin are removed.
    #[arg(long, env = "SLUICE_COMPILE_CACHE_MIB", default_value_t = sluice_runtime::DEFAULT_COMPILE_CACHE_MIB)]
    pub compile_cache_mib: u64,
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
    /// Minisign public keys (the `RW…` line of a `.pub` file), comma- or space-separated: when
    /// set, a plugin loads only with a `{file}.minisig` signature by one of them.
    /// (Read as text and parsed by [`Self::trusted_keys`], so that a bad value — a secret key
    /// pasted by mistake — is never repeated in an error.)
    #[arg(
        long = "trusted-keys",
        env = "SLUICE_TRUSTED_KEYS",
        hide_env_values = true
    )]
    pub trusted_keys_text: Option<String>,
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
    /// PostgreSQL URL (`postgres://user:password@host:5432/db`): run records, the queue, the
    /// one-active-run-per-connection rule and idempotency keys live there, shared by every
    /// replica. Unset: the embedded mode (records in SLUICE_DATA_DIR, one replica).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// With DATABASE_URL: 64 hex characters (32 random bytes, the same on every replica) that
    /// seal queued runs' requests (credentials, storage keys) in the database.
    #[arg(long, env = "SLUICE_RUN_SECRETS_KEY", hide_env_values = true)]
    pub run_secrets_key: Option<String>,
    /// With DATABASE_URL: this replica's name in claims and run records (default: the host
    /// name, which is the pod name in Kubernetes, and the process id).
    #[arg(long, env = "SLUICE_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// With DATABASE_URL: seconds a claim on a run holds without a heartbeat (renewed every
    /// third of it); a replica silent that long loses its runs to the others.
    #[arg(long, env = "SLUICE_LEASE_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_secs: u64,
    /// With DATABASE_URL: claims of one run before it fails `interrupted`.
    #[arg(long, env = "SLUICE_MAX_RUN_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_run_attempts: u32,
    /// The container's memory limit (cgroup v2 `memory.max`); the memory settings must fit it.
    #[arg(long, hide = true, default_value = CGROUP_MEMORY_MAX)]
    pub cgroup_memory_max: PathBuf,
}

/// Where cgroup v2 puts the container's memory limit (`max`: none).
pub const CGROUP_MEMORY_MAX: &str = "/sys/fs/cgroup/memory.max";
/// The same limit under cgroup v1 (a huge number: none).
const CGROUP_V1_LIMIT: &str = "/sys/fs/cgroup/memory/memory.limit_in_bytes";

/// Memory the service itself takes beside plugin memory and staging buffers, in MiB (measured
/// idle RSS with the built-in connectors loaded, rounded up).
const SERVICE_MIB: u64 = 40;

/// Without a cgroup limit, the deployment's (the chart's 512 MiB) less a margin, in MiB.
const ASSUMED_LIMIT_MIB: u64 = 480;

/// The shortest `CONNECT_SERVICE_TOKEN` taken without a warning (`openssl rand -hex 16` is
/// 32 characters, 128 bits).
pub const RECOMMENDED_TOKEN_CHARS: usize = 32;

/// A setting that looks wrong but does not stop the service.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    /// Logged at error level: the deployment is almost certainly broken (e.g. a loopback bind
    /// inside Kubernetes).
    pub loud: bool,
    pub message: String,
}

impl Warning {
    fn quiet(message: impl Into<String>) -> Self {
        Self {
            loud: false,
            message: message.into(),
        }
    }
}

/// The container's memory limit in bytes: cgroup v2 `memory.max` at `v2` (`max` = none), else
/// cgroup v1's `memory.limit_in_bytes` (values of 2⁶⁰ and more = none). `None` when there is no
/// limit or no cgroup file.
pub fn cgroup_memory_limit(v2: &Path) -> Option<u64> {
    if let Ok(text) = std::fs::read_to_string(v2) {
        return text.trim().parse().ok();
    }
    let v1: u64 = std::fs::read_to_string(CGROUP_V1_LIMIT)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (v1 < 1 << 60).then_some(v1)
}

/// `url` with its password (if any) replaced by `***`; unparsable text is masked whole.
pub fn mask_url_password(url: &str) -> String {
    /// Query parameters that carry a secret (libpq's `password`, `sslpassword`, tokens, keys).
    fn secret_param(name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        ["password", "secret", "token", "key"]
            .iter()
            .any(|s| n.contains(s))
    }
    match url::Url::parse(url) {
        Ok(mut u) => {
            let secret_query = u.query_pairs().any(|(k, _)| secret_param(&k));
            if u.password().is_none() && !secret_query {
                // As written (the parsed form would add a trailing slash).
                return url.to_string();
            }
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if secret_query {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if secret_param(&k) {
                            "***".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => format!("<unparsable, {} characters>", url.len()),
    }
}

fn masked(value: &str) -> String {
    format!("<set, {} characters>", value.chars().count())
}

/// Environment variables the service does not parse itself but that change what it does
/// (storage credentials, the database, OpenTelemetry, the platform), reported like the
/// settings: secrets masked.
fn environment_report(out: &mut Vec<(String, String)>) {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .collect();
    vars.sort();
    for (k, v) in vars {
        let shown = match k.as_str() {
            "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" | "AWS_SESSION_TOKEN" => masked(&v),
            // Exporter headers usually carry an API key: names only.
            "OTEL_EXPORTER_OTLP_HEADERS" | "OTEL_EXPORTER_OTLP_TRACES_HEADERS" => {
                let names: Vec<&str> = v
                    .split(',')
                    .filter_map(|kv| kv.split('=').next())
                    .map(str::trim)
                    .collect();
                format!("<set: {} (values masked)>", names.join(", "))
            }
            _ if k.starts_with("SC_SECRET_") => masked(&v),
            // An endpoint may carry credentials; a service name is shown as it is.
            _ if k.starts_with("OTEL_") => match url::Url::parse(&v) {
                Ok(_) => mask_url_password(&v),
                Err(_) => v,
            },
            "AWS_REGION"
            | "AWS_DEFAULT_REGION"
            | "AWS_ENDPOINT_URL"
            | "RUST_LOG"
            | "KUBERNETES_SERVICE_HOST" => v,
            _ => continue,
        };
        out.push((k, shown));
    }
}

impl ServeConfig {
    /// Refuses contradictory settings (every problem, each naming its variable, one a line);
    /// returns warnings about settings that look wrong.
    pub fn check(&self) -> anyhow::Result<Vec<Warning>> {
        let mut errors: Vec<String> = Vec::new();
        let mut warnings = Vec::new();
        if let Err(e) = self.trusted_keys() {
            errors.push(format!("SLUICE_TRUSTED_KEYS: {e}"));
        }
        if self.plugin_memory_mib == 0 {
            errors.push("SLUICE_PLUGIN_MEMORY_MIB must be at least 1".into());
        }
        if self.token.trim().is_empty() {
            errors.push("CONNECT_SERVICE_TOKEN must be set".into());
        } else if self.token.chars().count() < RECOMMENDED_TOKEN_CHARS {
            // Not refused: deployments with a short token keep starting. Under 16 characters
            // the warning is loud (`WARNING:`, error level in `serve`'s log).
            let n = self.token.chars().count();
            warnings.push(Warning {
                loud: n < 16,
                message: format!(
                    "CONNECT_SERVICE_TOKEN is {n} character{}: a short shared secret can be guessed; use at least {RECOMMENDED_TOKEN_CHARS} random characters (`openssl rand -hex 32` gives 64). serve starts anyway; `sluice config check --strict` fails on it",
                    if n == 1 { "" } else { "s" }
                ),
            });
        }
        if self.host.is_loopback() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            warnings.push(Warning {
                loud: true,
                message: format!(
                    "HOST={} inside Kubernetes (KUBERNETES_SERVICE_HOST is set): the pod listens on loopback only, so its Service, probes and the backend cannot reach it; set HOST=0.0.0.0",
                    self.host
                ),
            });
        }
        if let Some(ep) = &self.s3_endpoint {
            let bad = match url::Url::parse(ep) {
                Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                    Some(format!("scheme {:?}", u.scheme()))
                }
                Ok(u) if u.host_str().is_none_or(str::is_empty) => Some("no host".into()),
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = bad {
                errors.push(format!(
                    "S3_ENDPOINT must be an http:// or https:// URL with a host, got {:?} ({why})",
                    mask_url_password(ep)
                ));
            }
        }
        match self.backend_name() {
            Err(e) => errors.push(e.to_string()),
            Ok("s3") if self.s3_endpoint.is_none() => warnings.push(Warning::quiet(
                "STORAGE_BACKEND=s3 without S3_ENDPOINT: writing to AWS S3 proper",
            )),
            Ok("local") if self.s3_endpoint.is_some() => warnings.push(Warning::quiet(
                "STORAGE_BACKEND=local while S3_ENDPOINT is set: S3_ENDPOINT is ignored",
            )),
            Ok(_) => {}
        }
        if self.allowed_hosts.trim() == "*" && self.allow_private_addresses != "none" {
            warnings.push(Warning::quiet("plugins may reach private addresses of any host they declare; narrow SLUICE_ALLOWED_HOSTS"));
        }
        if let Err(e) = self.policy() {
            errors.push(format!("{e:#}"));
        }
        if self.max_concurrent_runs == 0 {
            errors.push("SLUICE_MAX_CONCURRENT_RUNS must be at least 1".into());
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                errors.push(format!(
                    "DATABASE_URL must be a postgres:// URL, got {:?}",
                    mask_url_password(url)
                ));
            }
            if matches!(
                self.backend(),
                Ok(sluice_runs::target::Backend::Local { .. })
            ) {
                warnings.push(Warning::quiet(
                    "DATABASE_URL with the local storage backend: every replica must mount the same LOCAL_STORAGE_DIR (a shared volume), or runs claimed by one replica land on its own disk",
                ));
            }
            if let Some(id) = &self.replica_id
                && (id.trim().is_empty() || id.len() > 128 || id.chars().any(char::is_control))
            {
                errors.push(
                    "SLUICE_REPLICA_ID must be 1-128 characters without control characters (the pod name is a good one)".into(),
                );
            }
            match &self.run_secrets_key {
                None => errors.push("SLUICE_RUN_SECRETS_KEY must be set when DATABASE_URL is set (64 hex characters, the same on every replica: `openssl rand -hex 32`)".into()),
                Some(k) => {
                    if let Err(e) = sluice_runs::sealed::SealKey::from_hex(k) {
                        errors.push(e.to_string());
                    }
                }
            }
        }
        if self.header_read_timeout_secs == 0 {
            errors.push("SLUICE_HEADER_READ_TIMEOUT_SECS must be at least 1".into());
        }
        // One plugin's calls may hold three quarters of the budget (the last quarter is kept
        // for the other plugins' calls: sluice_runtime::fair).
        let one_plugin = u64::from(self.plugin_memory_budget_mib) * 3 / 4;
        if u64::from(self.plugin_memory_mib) > one_plugin {
            warnings.push(Warning::quiet(format!(
                "SLUICE_PLUGIN_MEMORY_MIB ({}) is over three quarters of SLUICE_PLUGIN_MEMORY_BUDGET_MIB ({}): one call gets at most {one_plugin} MiB, what one plugin's calls may hold together",
                self.plugin_memory_mib, self.plugin_memory_budget_mib
            )));
        }
        if self.staging_run_quota_mib > self.staging_total_mib {
            warnings.push(Warning::quiet(format!(
                "SLUICE_STAGING_RUN_QUOTA_MIB ({}) is over SLUICE_STAGING_TOTAL_MIB ({}): a run is stopped by the total first",
                self.staging_run_quota_mib, self.staging_total_mib
            )));
        }
        // The service itself; then each running run buffers up to its staging buffer, held
        // twice while a row group is encoded; plugin calls together hold at most the budget.
        let worst = self.worst_case_mib();
        let sum = format!(
            "SLUICE_PLUGIN_MEMORY_BUDGET_MIB ({}) + 2 × SLUICE_STAGING_BUFFER_MIB ({}) × SLUICE_MAX_CONCURRENT_RUNS ({}) + ~{SERVICE_MIB} MiB for the service = {worst} MiB",
            self.plugin_memory_budget_mib, self.staging_buffer_mib, self.max_concurrent_runs
        );
        match cgroup_memory_limit(&self.cgroup_memory_max) {
            Some(limit) => {
                let limit_mib = limit >> 20;
                if worst > limit_mib {
                    errors.push(format!(
                        "{sum}: more than the container's memory limit of {limit_mib} MiB (cgroup memory.max); lower them or raise the limit"
                    ));
                } else if worst * 100 > limit_mib * 94 {
                    warnings.push(Warning::quiet(format!(
                        "{sum}: within 6% of the container's memory limit of {limit_mib} MiB"
                    )));
                }
            }
            None if worst > ASSUMED_LIMIT_MIB => warnings.push(Warning::quiet(format!(
                "{sum}: the 512 MiB container limit of the deployment may be hit (no cgroup limit found here)"
            ))),
            None => {}
        }
        if errors.is_empty() {
            Ok(warnings)
        } else {
            bail!("{}", errors.join("\n"))
        }
    }

    /// What `serve` would make of `SERVICES_FILE` and the shared secrets of its services, by the
    /// registry's own load ([`sluice_services::registry::check_file`], the function every load
    /// and reload of `serve` runs). `Err`: no version of the file would load — `serve` starts,
    /// but without services and with `/ready` answering 503 `services_registry_not_loaded` until
    /// the file is fixed. `Ok`: a warning for each service without a usable `SC_SECRET_<ID>`
    /// (`serve` logs the same one; the service's connect and disconnect answer 503
    /// `shared_secret_missing`).
    pub fn services_check(&self) -> Result<Vec<Warning>, String> {
        let Some(file) = &self.services_file else {
            return Ok(Vec::new());
        };
        let services = sluice_services::registry::check_file(file).map_err(|e| {
            format!(
                "SERVICES_FILE={}: {e}; serve would start without services and answer /ready 503 services_registry_not_loaded until the file loads",
                file.display()
            )
        })?;
        Ok(sluice_services::registry::secret_problems(&services)
            .into_iter()
            .map(|(id, reason)| {
                Warning::quiet(format!(
                    "service {id} (SERVICES_FILE): no usable shared secret: {reason}; serve loads it, and its connect and disconnect answer 503 shared_secret_missing"
                ))
            })
            .collect())
    }

    /// Memory the settings allow the process to reach in the worst case, in MiB.
    /// `SLUICE_TRUSTED_KEYS` parsed (`None`: unset, unsigned plugins load). The error never
    /// holds the value.
    pub fn trusted_keys(&self) -> Result<Option<sluice_runtime::signing::TrustedKeys>, String> {
        match self.trusted_keys_text.as_deref() {
            None => Ok(None),
            Some(text) => sluice_runtime::signing::TrustedKeys::parse(text).map(Some),
        }
    }

    pub fn worst_case_mib(&self) -> u64 {
        SERVICE_MIB
            + u64::from(self.plugin_memory_budget_mib)
            + 2 * u64::from(self.staging_buffer_mib) * self.max_concurrent_runs as u64
    }

    /// Copies the plugin budgets and limits into the runtime's settings, with the compile
    /// cache's cap and tiered compilation (first loads on baseline code; `serve` only).
    pub fn apply_budgets(&self, rc: &mut sluice_runtime::RuntimeConfig) {
        rc.memory_budget_mib = self.plugin_memory_budget_mib;
        rc.max_plugin_bytes = self.max_plugin_mib << 20;
        rc.compile_timeout = std::time::Duration::from_secs(self.compile_timeout_secs);
        rc.compile_memory_mib = self.compile_memory_mib;
        rc.cache_max_bytes = self.compile_cache_mib.saturating_mul(1 << 20);
        // The service publishes first loads on baseline code and optimizes in the background.
        rc.tiered = true;
        rc.log.line_bytes = self.plugin_log_line_bytes;
        rc.log.call_bytes = self.plugin_log_call_kib << 10;
        rc.trusted_keys = self.trusted_keys().ok().flatten();
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

    /// Every resolved setting by its environment variable, secrets masked (the token, S3 and
    /// AWS keys, `SC_SECRET_*`, the password of `DATABASE_URL` and of any URL), then the
    /// environment variables read by libraries or the platform; for the startup log and
    /// `sluice config check`.
    pub fn report(&self) -> Vec<(String, String)> {
        let path = |p: &Path| p.display().to_string();
        let opt = |o: Option<String>| o.unwrap_or_else(|| "(unset)".into());
        let token = if self.token.is_empty() {
            "(unset)".to_string()
        } else {
            masked(&self.token)
        };
        let local_root = match self.backend() {
            Ok(sluice_runs::target::Backend::Local { root }) => path(&root),
            _ => "(not used)".into(),
        };
        let mut out: Vec<(String, String)> = [
            ("HOST", self.host.to_string()),
            ("PORT", self.port.to_string()),
            ("CONNECT_SERVICE_TOKEN", token),
            (
                "STORAGE_BACKEND",
                self.backend_name().unwrap_or("(invalid)").to_string(),
            ),
            (
                "S3_ENDPOINT",
                opt(self.s3_endpoint.as_deref().map(mask_url_password)),
            ),
            ("LOCAL_STORAGE_DIR", local_root),
            ("PLUGINS_DIR", path(&self.plugins_dir)),
            ("SLUICE_DATA_DIR", path(&self.data_dir)),
            ("STAGING_DIR", path(&self.staging_dir())),
            ("SLUICE_ALLOWED_HOSTS", self.allowed_hosts.clone()),
            (
                "SLUICE_ALLOW_PRIVATE_ADDRESSES",
                self.allow_private_addresses.clone(),
            ),
            (
                "SLUICE_MAX_CONCURRENT_RUNS",
                self.max_concurrent_runs.to_string(),
            ),
            ("SLUICE_MAX_QUEUED_RUNS", self.max_queued_runs.to_string()),
            ("SLUICE_RUN_TIMEOUT_SECS", self.run_timeout_secs.to_string()),
            (
                "SLUICE_CALL_TIMEOUT_SECS",
                self.call_timeout_secs.to_string(),
            ),
            (
                "SLUICE_PLUGIN_MEMORY_MIB",
                self.plugin_memory_mib.to_string(),
            ),
            (
                "SLUICE_PLUGIN_MEMORY_BUDGET_MIB",
                self.plugin_memory_budget_mib.to_string(),
            ),
            (
                "SLUICE_MAX_CONCURRENT_CALLS",
                self.max_concurrent_calls.to_string(),
            ),
            ("SLUICE_MAX_PLUGIN_MIB", self.max_plugin_mib.to_string()),
            (
                "SLUICE_COMPILE_TIMEOUT_SECS",
                self.compile_timeout_secs.to_string(),
            ),
            (
                "SLUICE_COMPILE_MEMORY_MIB",
                self.compile_memory_mib.to_string(),
            ),
            (
                "SLUICE_COMPILE_CACHE_MIB",
                self.compile_cache_mib.to_string(),
            ),
            (
                "SLUICE_STAGING_BUFFER_MIB",
                self.staging_buffer_mib.to_string(),
            ),
            (
                "SLUICE_STAGING_RUN_QUOTA_MIB",
                self.staging_run_quota_mib.to_string(),
            ),
            (
                "SLUICE_STAGING_TOTAL_MIB",
                self.staging_total_mib.to_string(),
            ),
            (
                "SLUICE_PLUGIN_LOG_LINE_BYTES",
                self.plugin_log_line_bytes.to_string(),
            ),
            (
                "SLUICE_PLUGIN_LOG_CALL_KIB",
                self.plugin_log_call_kib.to_string(),
            ),
            (
                "SLUICE_PLUGIN_LOG_RUN_KIB",
                self.plugin_log_run_kib.to_string(),
            ),
            (
                "SLUICE_HTTP_TIMEOUT_SECS",
                self.http_timeout_secs.to_string(),
            ),
            (
                "SLUICE_HUBSPOT_SEARCH_INTERVAL_MS",
                self.hubspot_search_interval_ms.to_string(),
            ),
            (
                "SLUICE_MAX_RATE_LIMIT_WAIT_SECS",
                self.max_rate_limit_wait_secs.to_string(),
            ),
            (
                "SLUICE_SHUTDOWN_GRACE_SECS",
                self.shutdown_grace_secs.to_string(),
            ),
            (
                "SLUICE_HEADER_READ_TIMEOUT_SECS",
                self.header_read_timeout_secs.to_string(),
            ),
            ("SLUICE_MAX_CONNECTIONS", self.max_connections.to_string()),
            (
                "SERVICES_FILE",
                opt(self.services_file.as_deref().map(path)),
            ),
            (
                "SLUICE_TRUSTED_KEYS",
                match self.trusted_keys() {
                    Ok(None) => "(unset: unsigned plugins load)".to_string(),
                    Ok(Some(k)) => format!("key ids {}", k.ids().join(", ")),
                    Err(_) => "(invalid)".to_string(),
                },
            ),
            (
                "SLUICE_SERVICE_TIMEOUT_SECS",
                self.service_timeout_secs.to_string(),
            ),
            ("METRICS_PUBLIC", self.metrics_public.to_string()),
            (
                "DATABASE_URL",
                opt(self.database_url.as_deref().map(mask_url_password)),
            ),
            (
                "SLUICE_RUN_SECRETS_KEY",
                if self.run_secrets_key.is_some() {
                    "(set, masked)".into()
                } else {
                    "(unset)".into()
                },
            ),
            ("SLUICE_REPLICA_ID", self.replica_id()),
            ("SLUICE_LEASE_SECS", self.lease_secs.to_string()),
            ("SLUICE_MAX_RUN_ATTEMPTS", self.max_run_attempts.to_string()),
            (
                "container memory limit",
                cgroup_memory_limit(&self.cgroup_memory_max)
                    .map(|b| format!("{} MiB", b >> 20))
                    .unwrap_or_else(|| "none found".into()),
            ),
            (
                "worst-case memory of these settings",
                format!("{} MiB", self.worst_case_mib()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        environment_report(&mut out);
        out
    }

    /// This replica's name: SLUICE_REPLICA_ID, else `{hostname}-{pid}`.
    pub fn replica_id(&self) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "sluice".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// [`Self::report`] as one JSON object, for the startup log.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.report()
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::mask_url_password;

    /// Found from outside: a password given as a query parameter was printed in clear.
    #[test]
    fn url_passwords_are_masked_in_the_userinfo_and_the_query() {
        assert_eq!(
            mask_url_password("postgres://u:pw@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        let shown = mask_url_password(
            "postgres://u@db:5432/x?password=SuperSecretPw&sslmode=require&sslpassword=k3y",
        );
        assert!(
            !shown.contains("SuperSecretPw") && !shown.contains("k3y"),
            "{shown}"
        );
        assert!(shown.contains("sslmode=require"), "{shown}");
        assert_eq!(mask_url_password("http://minio:9000"), "http://minio:9000");
    }
}
