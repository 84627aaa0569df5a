//! `sluice`: the service (`serve`), plugin tools (`plugin inspect|validate`), local runs (`run`)
//! and the internal-service conformance checker (`service check`).

mod config;
mod local_run;
mod plugin_build;
mod plugin_new;
mod plugin_test;
mod services;
mod signing;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_runs::manager::{Book, ManagerConfig, RunManager};
use sluice_runs::records::RunBook;
use sluice_runtime::manifest::Level;
use sluice_runtime::outbound::OutboundConfig;
use sluice_runtime::registry::Registry;
use sluice_runtime::{Runtime, RuntimeConfig};
use sluice_staging::StagingConfig;

use crate::config::ServeConfig;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Runs data connectors as sandboxed WebAssembly components"
)]
struct Cli {
    /// Log format: json or text (default: json for `serve`, text for `run` and `plugin test`).
    #[arg(long, env = "LOG_FORMAT", global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(Box<ServeConfig>),
    /// Plugin files: inspect, validate, sign and verify.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run a connector into a local directory, without the service.
    Run(local_run::RunArgs),
    /// Internal-service tools.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the configuration report `serve` logs at startup (every resolved setting, secrets
    /// masked, warnings) without starting; exits 1 naming each setting `serve` would refuse or a
    /// SERVICES_FILE it could not load (and, with `--strict`, when there is any warning, e.g. a
    /// short CONNECT_SERVICE_TOKEN or a service without a usable SC_SECRET_<ID>).
    Check(Box<CheckArgs>),
}

/// `sluice config check`: the service's settings, and how strict the check is.
#[derive(clap::Args)]
struct CheckArgs {
    /// Exit 1 on warnings too (a CONNECT_SERVICE_TOKEN shorter than 32 characters, a loopback
    /// bind inside Kubernetes…), not only on the settings `serve` refuses.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    cfg: ServeConfig,
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// Check that a service speaks the token-exchange protocol; exits 1 naming each failed check.
    Check(services::CheckArgs),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Print a plugin's manifest, WIT version, imports, size and sha256 as JSON.
    Inspect { file: PathBuf },
    /// Build a connector written with the Python, JavaScript or Rust SDK into a component, running
    /// the SDK's build tool (componentize-py, componentize-js, cargo) for the author.
    Build(plugin_build::BuildArgs),
    /// Check a plugin: that it loads (every manifest problem listed), then what would make it
    /// misbehave (errors: keys or cursors not in the stream's schema, reserved field names,
    /// memory over the operator's limit) or deserves a look (warnings). Exits 1 on any error.
    Validate {
        file: PathBuf,
        /// The operator's per-call memory limit the plugin's `memory-mib` is checked against.
        #[arg(long, env = "SLUICE_PLUGIN_MEMORY_MIB", default_value_t = 128)]
        max_memory_mib: u32,
    },
    /// Make a minisign key pair for signing plugins: PREFIX.pub and PREFIX.key (unencrypted,
    /// mode 0600); prints the public key line for SLUICE_TRUSTED_KEYS.
    Keygen {
        /// Path and name of the pair, without extension (e.g. `keys/release`).
        prefix: PathBuf,
    },
    /// Sign a plugin file with a minisign secret key: writes FILE.minisig beside it.
    Sign {
        /// The plugin file (`.wasm`).
        file: PathBuf,
        /// The secret key file (PREFIX.key from `keygen`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Check FILE.minisig against trusted public keys, as `serve` does; exits 1 with the reason.
    Verify {
        /// The plugin file (`.wasm`); its signature is FILE.minisig.
        file: PathBuf,
        /// Minisign public keys (`RW…`), comma- or space-separated.
        #[arg(long, env = "SLUICE_TRUSTED_KEYS", hide_env_values = true)]
        trusted_keys: String,
    },
    /// Run a connector's validate, discover and sync through the host's pipeline into a local
    /// directory and print what came out; with `--cassette DIR`, offline from recorded HTTP
    /// exchanges (`--record` records them). Exits 1 when a step fails or a request is not in
    /// the cassette.
    Test(Box<plugin_test::TestArgs>),
    /// Write a connector skeleton (Rust, Python or JavaScript SDK) that builds and passes
    /// `plugin test` offline unchanged; `--help` has the build and test commands.
    New(plugin_new::NewArgs),
    /// Compile a plugin into an artifact (run by `serve` itself, in a child process).
    #[command(hide = true)]
    Compile {
        input: PathBuf,
        output: PathBuf,
        #[arg(long)]
        memory_mib: u32,
        #[arg(long)]
        max_calls: u32,
        /// `baseline` (Winch) or `optimized` (Cranelift).
        #[arg(long, default_value = "optimized")]
        tier: sluice_runtime::Tier,
    },
}

/// The log on stderr (`json` or `text`, `RUST_LOG` filters), and, with `otel`, the trace spans
/// (target [`sluice_telemetry::SPAN_TARGET`]) exported over OTLP/HTTP; the log never shows
/// those spans. Returns the exporter's handle, to flush it at exit.
fn init_logging(format: &str, otel: bool) -> Option<sluice_telemetry::otel::Tracing> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    if let Ok(off) = format!("{}=off", sluice_telemetry::SPAN_TARGET).parse() {
        filter = filter.add_directive(off);
    }
    // sqlx logs a DATABASE_URL query parameter it does not know with its value (`sslpassword=…`
    // is one): never, whatever RUST_LOG says (found from outside).
    if let Ok(off) = "sqlx_postgres::options::parse=off".parse() {
        filter = filter.add_directive(off);
    }
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if format == "text" {
        // Colours only on a terminal: piped or redirected logs stay plain text.
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    } else {
        fmt.json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed()
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    if !otel {
        registry.init();
        return None;
    }
    match sluice_telemetry::otel::layer() {
        Ok((layer, handle)) => {
            let spans =
                Targets::new().with_target(sluice_telemetry::SPAN_TARGET, LevelFilter::INFO);
            registry.with(layer.with_filter(spans)).init();
            tracing::info!("exporting traces over OTLP/HTTP");
            Some(handle)
        }
        Err(e) => {
            registry.init();
            tracing::error!("OpenTelemetry is off: {e}");
            None
        }
    }
}

/// Runs the command; an error is a user's or the environment's (a bad flag value, a missing
/// file, a refused setting), printed as its chain on one line (`Error: a: b: c`) and exit 1 —
/// never with a backtrace, whatever `RUST_BACKTRACE` says (`main` returning the error printed
/// anyhow's debug form, backtrace included). A panic still prints the standard hook's message
/// and, with `RUST_BACKTRACE`, its backtrace.
fn main() -> std::process::ExitCode {
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        quiet_on_broken_pipe();
    }
    if matches!(cli.command, Command::Serve(_) | Command::Run(_)) {
        // Before the runtime's threads exist: they would otherwise get arenas of their own.
        sluice_runtime::memory::single_arena();
    }
    // `run` is one sync in a process of its own, as a peer tool runs: on one thread, with the
    // heap it frees kept for its next row group. Same 20k GitHub issues, alternating rounds
    // (scripts/bench-guest-ab.sh with A_BIN/B_BIN, session 16): CPU 0.93x with the heap kept,
    // 0.92x on one thread, 0.80-0.83x both (0.28 -> 0.23 s); records/s 1.03x; peak RSS 34 ->
    // 36-40 MiB (tap-github's: 62).
    let mut builder = if matches!(cli.command, Command::Run(_)) {
        sluice_runtime::memory::keep_freed_heap();
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(cli))
}

/// The Unix errno of a write to a pipe (or socket) whose reader is gone: 32 on Linux, macOS and
/// the BSDs.
const EPIPE: i32 = 32;

/// Makes a command whose reader went away (`sluice service check … | head`) end quietly, as a C
/// tool that SIGPIPE kills does: exit status 141 (128 + SIGPIPE, what a shell shows for such a
/// tool), nothing on stderr. Rust starts with SIGPIPE ignored, so a write to the closed pipe
/// fails with EPIPE and `println!` panics ("failed printing to stdout: Broken pipe (os error
/// 32)", with a backtrace under RUST_BACKTRACE); this panic hook turns that panic, and only it,
/// into the quiet exit, for every subcommand and every `print!` at once. Restoring SIGPIPE's
/// default action instead (what many CLIs do) would also kill the process, silently, when a
/// *socket* write fails with EPIPE: `writev` on a TCP connection the peer reset, which hyper
/// uses for the requests of `run`, `plugin test` and `service check`. `serve` keeps the default
/// hook: a broken stdout must not stop the service (its log writer ignores write errors).
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_broken_pipe_print(info.payload_as_str().unwrap_or("")) {
            std::process::exit(141);
        }
        default(info)
    }));
}

/// Whether a panic message is std's for a `print!`/`eprint!` to a closed pipe
/// (`failed printing to stdout: Broken pipe (os error 32)`).
fn is_broken_pipe_print(message: &str) -> bool {
    let epipe = std::io::Error::from_raw_os_error(EPIPE).to_string();
    (message.starts_with("failed printing to stdout")
        || message.starts_with("failed printing to stderr"))
        && message.ends_with(&epipe)
}

/// Runs the parsed command.
async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(cfg) => {
            let format = cli.log_format.as_deref().unwrap_or("json");
            let otel = init_logging(format, sluice_telemetry::otel::enabled());
            tracing::info!(settings = %cfg.describe(), "sluice {} starting", env!("CARGO_PKG_VERSION"));
            let warnings = match cfg.check() {
                Ok(w) => w,
                Err(e) => {
                    for line in e.to_string().lines() {
                        tracing::error!("refused: {line}");
                    }
                    return Err(e);
                }
            };
            let result = serve(*cfg, warnings).await;
            if let Some(otel) = otel {
                // The batch exporter's thread blocks while it flushes.
                let _ = tokio::task::spawn_blocking(move || otel.shutdown()).await;
            }
            result
        }
        Command::Config(ConfigCommand::Check(args)) => config_check(&args.cfg, args.strict),
        Command::Plugin(cmd) => {
            if matches!(cmd, PluginCommand::Test(_)) {
                // The connector's own log lines, as an author needs them while testing.
                init_logging(cli.log_format.as_deref().unwrap_or("text"), false);
            }
            plugin_command(cmd).await
        }
        Command::Run(args) => {
            init_logging(cli.log_format.as_deref().unwrap_or("text"), false);
            local_run::run(args).await
        }
        Command::Service(ServiceCommand::Check(args)) => services::check(args).await,
    }
}

/// Starts the runtime with these settings.
pub fn runtime(rc: RuntimeConfig) -> anyhow::Result<Runtime> {
    Runtime::new(rc).context("starting the wasm runtime")
}

/// The runtime's settings, with its compile cache in `cache_dir`: the same for `serve`, its
/// compiler child and `run` (`serve` adds its budgets).
pub fn runtime_config(
    cache_dir: &std::path::Path,
    memory_mib: u32,
    max_calls: u32,
    compiler: Option<PathBuf>,
    policy: sluice_runtime::policy::OperatorPolicy,
    outbound: OutboundConfig,
) -> RuntimeConfig {
    let mut rc = RuntimeConfig::new(cache_dir);
    rc.max_memory_mib = memory_mib;
    rc.default_memory_mib = memory_mib.min(64);
    rc.max_concurrent_calls = max_calls;
    rc.compiler = compiler;
    rc.perf_map = std::env::var_os("SLUICE_PERF_MAP").is_some();
    rc.policy = policy;
    rc.outbound = outbound;
    rc
}

/// The compile cache of `sluice plugin inspect|validate`: this user's own
/// (`$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`), never a shared temp directory that
/// another user could have planted artifacts in (the runtime refuses a cache it does not own).
fn cli_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("sluice")
}

/// `sluice config check`: the report on stdout, refusals on stderr (exit 1). `SERVICES_FILE`
/// and the services' shared secrets are checked by the registry's own load, as `serve` loads
/// them: a file no version of which would load is an error (exit 1: `serve` would start but
/// never be ready), a service without a usable secret a warning.
fn config_check(cfg: &ServeConfig, strict: bool) -> anyhow::Result<()> {
    println!("sluice {} configuration", env!("CARGO_PKG_VERSION"));
    for (name, value) in cfg.report() {
        println!("{name}={value}");
    }
    let (services_error, services_warnings) = match cfg.services_check() {
        Ok(w) => (None, w),
        Err(e) => (Some(e), Vec::new()),
    };
    match cfg.check() {
        Ok(mut warnings) => {
            warnings.extend(services_warnings);
            for w in &warnings {
                let level = if w.loud { "WARNING" } else { "warning" };
                println!("{level}: {}", w.message);
            }
            if let Some(e) = services_error {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
            if strict && !warnings.is_empty() {
                eprintln!(
                    "error: --strict: {} warning(s); serve would start, but fix them first",
                    warnings.len()
                );
                std::process::exit(1);
            }
            println!("ok: serve would start with these settings");
            Ok(())
        }
        Err(e) => {
            for line in e
                .to_string()
                .lines()
                .map(str::to_string)
                .chain(services_error)
            {
                eprintln!("error: {line}");
            }
            std::process::exit(1);
        }
    }
}

async fn serve(cfg: ServeConfig, warnings: Vec<config::Warning>) -> anyhow::Result<()> {
    for w in &warnings {
        if w.loud {
            tracing::error!(loud = true, "{}", w.message);
        } else {
            tracing::warn!("{}", w.message);
        }
    }
    let http_limits = http_limits(&cfg);
    let outbound = OutboundConfig {
        request_timeout: Duration::from_secs(cfg.http_timeout_secs),
        max_rate_limit_wait: Duration::from_secs(cfg.max_rate_limit_wait_secs),
        hubspot_search_interval: Duration::from_millis(cfg.hubspot_search_interval_ms),
        ..OutboundConfig::default()
    };
    let mut rc = runtime_config(
        &cfg.data_dir.join("cache"),
        cfg.plugin_memory_mib,
        cfg.max_concurrent_calls,
        // Compile out of process: the compiler's memory and code never stay in the service.
        std::env::current_exe().ok(),
        cfg.policy()?,
        outbound,
    );
    cfg.apply_budgets(&mut rc);
    let runtime = runtime(rc)?;
    std::fs::create_dir_all(&cfg.plugins_dir)
        .with_context(|| format!("creating PLUGINS_DIR {}", cfg.plugins_dir.display()))?;
    let registry = Registry::new(runtime, cfg.plugins_dir.clone());
    let book = run_book(&cfg).await?;
    clear_staging(&cfg.staging_dir());
    let mut staging = StagingConfig::new(cfg.staging_dir());
    staging.run_buffer_bytes = (cfg.staging_buffer_mib as usize) << 20;
    staging.row_group_bytes = staging.run_buffer_bytes;
    staging.run_quota_bytes = cfg.staging_run_quota_mib << 20;
    staging.disk = sluice_staging::DiskBudget::new(cfg.staging_total_mib << 20);
    let runs = RunManager::new(
        registry.clone(),
        book,
        ManagerConfig {
            max_concurrent_runs: cfg.max_concurrent_runs,
            max_queued_runs: cfg.max_queued_runs,
            run_deadline: Duration::from_secs(cfg.run_timeout_secs),
            call_deadline: Duration::from_secs(cfg.call_timeout_secs),
            run_log_bytes: cfg.plugin_log_run_kib << 10,
            staging,
            backend: cfg.backend()?,
        },
    );
    let metering = otlp_metrics(&runs, &registry, cfg.staging_dir());
    let services = services::start(
        cfg.services_file.clone(),
        cfg.policy()?,
        Duration::from_secs(cfg.service_timeout_secs),
    )?;
    let state = sluice_api::AppState::new(
        registry.clone(),
        runs.clone(),
        services,
        &cfg.token,
        Duration::from_secs(cfg.call_timeout_secs),
    )
    .with_public_metrics(cfg.metrics_public)
    .with_body_read_timeout(Duration::from_secs(cfg.header_read_timeout_secs));
    let app = sluice_api::router(state);
    let addr = std::net::SocketAddr::new(cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "listening");

    // Load plugins after binding so /health answers at once and /ready says when they are in.
    let loader = registry.clone();
    tokio::spawn(async move {
        loader.rescan().await;
        let snap = loader.snapshot();
        tracing::info!(
            loaded = snap.plugins().count(),
            failed = snap.failures().len(),
            "plugins ready"
        );
        // What starting up touched of the binary's code need not stay mapped.
        sluice_runtime::memory::release_code_pages();
        if let Err(e) = loader.watch() {
            tracing::error!("cannot watch the plugin directory; hot reload is off: {e:#}");
        }
    });

    sluice_api::server::serve(listener, app, http_limits, shutdown_signal()).await;
    tracing::info!(
        grace_secs = cfg.shutdown_grace_secs,
        "stopped accepting; finishing runs"
    );
    runs.shutdown(Duration::from_secs(cfg.shutdown_grace_secs))
        .await;
    if let Some(m) = metering {
        // A last collection; the reader's thread blocks while it exports.
        let _ = tokio::task::spawn_blocking(move || m.shutdown()).await;
    }
    tracing::info!("bye");
    Ok(())
}

/// Run records: PostgreSQL shared by the replicas when DATABASE_URL is set (migrated here),
/// else local files.
async fn run_book(cfg: &config::ServeConfig) -> anyhow::Result<Book> {
    let Some(url) = &cfg.database_url else {
        let book = RunBook::open(cfg.data_dir.join("runs")).context("opening run records")?;
        // A run killed after its commit reached _state.json is recorded as what it was.
        book.reconcile_interrupted(&cfg.backend()?).await;
        return Ok(Book::Embedded(book));
    };
    let key = sluice_runs::sealed::SealKey::from_hex(cfg.run_secrets_key.as_deref().unwrap_or(""))?;
    let replica = cfg.replica_id();
    // A replica with another key could not open the others' queued requests, one with another
    // backend would write their runs elsewhere: both are refused at start.
    // The kind only: replicas may reach one S3 service through different endpoints (a proxy, a
    // zone); a local replica among S3 ones would write runs to its own disk.
    let storage = match cfg.backend()? {
        sluice_runs::target::Backend::Local { .. } => "local",
        sluice_runs::target::Backend::S3 { .. } => "s3",
    };
    let queue = sluice_runs::shared::SharedQueue::connect(
        url,
        sluice_runs::shared::QueueConfig {
            replica: replica.clone(),
            lease: Duration::from_secs(cfg.lease_secs),
            max_attempts: cfg.max_run_attempts,
            max_queued_runs: cfg.max_queued_runs,
        },
        &[
            ("SLUICE_RUN_SECRETS_KEY (key id)", key.id().to_string()),
            ("storage backend", storage.to_string()),
        ],
    )
    .await
    .context("connecting to DATABASE_URL")?;
    tracing::info!(replica = %replica, lease_secs = cfg.lease_secs, "runs are shared through PostgreSQL");
    Ok(Book::Shared {
        queue: std::sync::Arc::new(queue),
        key: std::sync::Arc::new(key),
    })
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the metrics also go out over OTLP/HTTP; their gauges
/// read the run queue, the staging directory, the call slots and the memory budget when
/// collected.
fn otlp_metrics(
    runs: &std::sync::Arc<RunManager>,
    registry: &std::sync::Arc<Registry>,
    staging: PathBuf,
) -> Option<sluice_telemetry::otel::Metering> {
    if !sluice_telemetry::otel::metrics_enabled() {
        return None;
    }
    let (runs, registry) = (runs.clone(), registry.clone());
    sluice_telemetry::metrics().set_snapshot_source(Box::new(move || {
        let (queued, running) = runs.load();
        let runtime = registry.runtime();
        let (slots, pages) = (runtime.call_slots(), runtime.plugin_memory_pages());
        sluice_telemetry::Snapshot {
            queued_runs: queued as u64,
            running_runs: running as u64,
            staging_bytes: sluice_telemetry::dir_bytes(&staging),
            call_slots_in_use: slots.in_use,
            call_slots_waiting: slots.waiting,
            memory_pages_in_use: pages.in_use,
            memory_pages_waiting: pages.waiting,
        }
    }));
    match sluice_telemetry::otel::metrics() {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::error!("OTLP metrics are off: {e}");
            None
        }
    }
}

/// Raises the open-file limit to its hard limit and sizes the HTTP limits within it.
fn http_limits(cfg: &ServeConfig) -> sluice_api::server::ServeLimits {
    use sluice_api::server::{connection_cap, nofile_limit, raise_nofile_limit};
    let soft = match raise_nofile_limit() {
        Ok(l) => {
            tracing::info!(
                soft = l.soft,
                hard = l.hard,
                previous_soft = l.previous_soft,
                "open file limit"
            );
            Some(l.soft)
        }
        Err(e) => {
            let now = nofile_limit().ok();
            tracing::warn!(
                soft = now.map(|l| l.0),
                hard = now.map(|l| l.1),
                "cannot raise the open file limit: {e}"
            );
            now.map(|l| l.0)
        }
    };
    let max_connections = connection_cap(cfg.max_connections, soft.unwrap_or(u64::MAX));
    if max_connections < cfg.max_connections {
        tracing::warn!(
            configured = cfg.max_connections,
            max_connections,
            "SLUICE_MAX_CONNECTIONS lowered to stay below the open file limit"
        );
    }
    tracing::info!(
        max_connections,
        header_read_timeout_secs = cfg.header_read_timeout_secs,
        "connection limits"
    );
    sluice_api::server::ServeLimits {
        header_read_timeout: Duration::from_secs(cfg.header_read_timeout_secs),
        max_connections,
    }
}

/// Removes what runs of an earlier process left in the staging directory: no run is active
/// when the service starts (runs in flight then are reported `interrupted`), so all of it is
/// garbage, and it would otherwise hold disk outside every quota.
fn clear_staging(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed staging left by an earlier process")
            }
            Err(e) => tracing::warn!(path = %path.display(), "cannot remove old staging: {e}"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// `sluice plugin compile`: the artifact `serve` asks for, compiled with the same engine
/// settings for the tier asked for (only that tier's engine is made).
fn compile_artifact(
    input: &std::path::Path,
    output: &std::path::Path,
    memory_mib: u32,
    max_calls: u32,
    tier: sluice_runtime::Tier,
) -> anyhow::Result<()> {
    let rc = runtime_config(
        output.parent().unwrap_or(std::path::Path::new(".")),
        memory_mib,
        max_calls,
        None,
        Default::default(),
        OutboundConfig::default(),
    );
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let artifact = sluice_runtime::compile_artifact(&rc, tier, &bytes)?;
    std::fs::write(output, artifact).with_context(|| format!("writing {}", output.display()))
}

async fn plugin_command(cmd: PluginCommand) -> anyhow::Result<()> {
    if let PluginCommand::Build(args) = cmd {
        return plugin_build::run(args);
    }
    if let PluginCommand::Compile {
        input,
        output,
        memory_mib,
        max_calls,
        tier,
    } = cmd
    {
        return compile_artifact(&input, &output, memory_mib, max_calls, tier);
    }
    if let PluginCommand::Test(args) = cmd {
        if !plugin_test::run(*args).await? {
            std::process::exit(1);
        }
        return Ok(());
    }
    if let PluginCommand::New(args) = cmd {
        return plugin_new::run(args);
    }
    match &cmd {
        PluginCommand::Keygen { prefix } => return signing::keygen(prefix),
        PluginCommand::Sign { file, key } => return signing::sign(file, key),
        PluginCommand::Verify { file, trusted_keys } => {
            return signing::verify(file, trusted_keys);
        }
        _ => {}
    }
    let cache = cli_cache_dir();
    let rt = runtime(runtime_config(
        &cache,
        256,
        4,
        None,
        Default::default(),
        OutboundConfig::default(),
    ))?;
    match cmd {
        PluginCommand::Inspect { file } => {
            let p = rt
                .load_file(&file)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let out = serde_json::json!({
                "file": file.display().to_string(),
                "size": p.info().size,
                "sha256": p.info().sha256,
                "wit_version": p.info().wit_version,
                "imports": p.info().imports,
                "manifest": p.manifest(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        // Done above, without this runtime.
        PluginCommand::Build(_) => Ok(()),
        PluginCommand::Compile { .. }
        | PluginCommand::Test(_)
        | PluginCommand::Keygen { .. }
        | PluginCommand::Sign { .. }
        | PluginCommand::Verify { .. }
        | PluginCommand::New(_) => Ok(()),
        PluginCommand::Validate {
            file,
            max_memory_mib,
        } => match rt.load_file(&file).await {
            Ok(p) => {
                println!(
                    "loads: {} {} (WIT {}, {} bytes)",
                    p.info().id,
                    p.info().version,
                    p.info().wit_version,
                    p.info().size
                );
                let findings = p.manifest().lint(max_memory_mib);
                for f in &findings {
                    let level = match f.level {
                        Level::Error => "error",
                        Level::Warning => "warning",
                    };
                    println!("{level}: {}", f.message);
                }
                let errors = findings.iter().filter(|f| f.level == Level::Error).count();
                if errors > 0 {
                    eprintln!("invalid: {}: {errors} error(s)", file.display());
                    std::process::exit(1);
                }
                println!("ok");
                Ok(())
            }
            Err(e) => {
                eprintln!("invalid: {}: {e}", file.display());
                std::process::exit(1);
            }
        },
    }
}
