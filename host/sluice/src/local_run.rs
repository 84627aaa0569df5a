//! `sluice run`: the service's pipeline into a local directory, with progress bars.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;
use sluice_runs::pipeline::{self, Progress, RunLimits, RunOutcome, RunSpec};
use sluice_runtime::outbound::OutboundConfig;
use sluice_runtime::policy::{AddressGrant, OperatorPolicy};
use sluice_runtime::{CancellationToken, Plugin, Secrets};
use sluice_staging::StagingConfig;
use sluice_storage::LocalStore;
use sluice_storage::commit::Layout;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A connector: a `.wasm` file, or an id in --plugins-dir.
    connector: String,
    /// Config file (JSON).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A credential, `name=value` (repeatable).
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    secrets: Vec<String>,
    /// Output directory (the same layout as a bucket).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "local")]
    connection_id: String,
    /// Streams to sync (repeatable); all by default.
    #[arg(long = "stream")]
    streams: Vec<String>,
    #[arg(long)]
    full_refresh: bool,
    #[arg(long, env = "PLUGINS_DIR", default_value = ".sluice/plugins")]
    plugins_dir: PathBuf,
    /// Non-public address classes the connector may reach: none, loopback, private.
    #[arg(long, default_value = "none")]
    allow_private_addresses: String,
    /// Records (JSON bytes as emitted) the run may stage, in MiB; past it the run fails
    /// (`staging_quota_exceeded`), as in the service.
    #[arg(long, env = "SLUICE_STAGING_RUN_QUOTA_MIB", default_value_t = 4096)]
    staging_run_quota_mib: u64,
    /// Emitted JSON the run buffers before writing it as Parquet row groups, in MiB (all its
    /// streams together; also the most one row group holds), as in the service.
    #[arg(long, env = "SLUICE_STAGING_BUFFER_MIB", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    staging_buffer_mib: u32,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // The compile cache is the user's, as for `sluice plugin`: the output directory holds only
    // what a bucket would.
    let rt = crate::runtime(crate::runtime_config(
        &crate::cli_cache_dir(),
        256,
        4,
        // Compile out of process, as `serve` does: the compiler's memory and code pages never
        // stay in this process while it syncs (the compiled artifact is cached for the user).
        std::env::current_exe().ok(),
        local_policy(&args.allow_private_addresses)?,
        OutboundConfig {
            address_setting: sluice_runtime::outbound::ADDRESS_SETTING_FLAG,
            ..OutboundConfig::default()
        },
    ))?;
    let path = if args.connector.ends_with(".wasm") {
        PathBuf::from(&args.connector)
    } else {
        find_plugin(&rt, &args.plugins_dir, &args.connector).await?
    };
    let plugin = rt
        .load_file(&path)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let config = read_config(args.config.as_deref())?;
    let secrets = parse_secrets(&args.secrets)?;
    check_stream_flags(&plugin, &args.streams)?;
    check_discovered_streams(&plugin, &args.streams, &config, &secrets).await?;
    let local = LocalSync {
        out: &args.out,
        connection_id: &args.connection_id,
        streams: &args.streams,
        full_refresh: args.full_refresh,
        run_quota_mib: args.staging_run_quota_mib,
        buffer_mib: args.staging_buffer_mib,
    };
    // What starting up touched of the binary's code (most of it) need not stay mapped.
    sluice_runtime::memory::release_code_pages();
    let outcome = local.sync(&plugin, config, secrets, true).await?;
    print_outcome(&outcome, &args.out, &args.connection_id)
}

/// The operator policy of a local run: every destination the plugin declares, and the
/// non-public address classes named (`none`, `loopback`, `private`).
pub fn local_policy(allow_private: &str) -> anyhow::Result<OperatorPolicy> {
    Ok(OperatorPolicy {
        allow: OperatorPolicy::parse_allow("*").map_err(anyhow::Error::msg)?,
        addresses: AddressGrant::parse(allow_private).map_err(anyhow::Error::msg)?,
    })
}

/// The config file's JSON (`{}` without one).
pub fn read_config(path: Option<&Path>) -> anyhow::Result<Value> {
    let Some(p) = path else {
        return Ok(serde_json::json!({}));
    };
    serde_json::from_slice(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
        .with_context(|| format!("{} is not JSON", p.display()))
}

/// `NAME=VALUE` arguments as pairs.
pub fn parse_secrets(args: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    args.iter()
        .map(|s| {
            let (k, v) = s.split_once('=').context("--secret takes NAME=VALUE")?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// One sync through the service's pipeline into a local directory (the bucket's layout, the
/// state of earlier runs there read and advanced), with the work files under `out/.sluice`.
pub struct LocalSync<'a> {
    pub out: &'a Path,
    pub connection_id: &'a str,
    pub streams: &'a [String],
    pub full_refresh: bool,
    /// Records (JSON bytes as emitted) the run may stage, in MiB.
    pub run_quota_mib: u64,
    /// Emitted JSON buffered before it becomes row groups, in MiB (`SLUICE_STAGING_BUFFER_MIB`).
    pub buffer_mib: u32,
}

impl LocalSync<'_> {
    /// Checks the request as the service does, runs it, and returns what was committed;
    /// with `bars`, shows per-stream progress on stderr. Ctrl-C cancels the run.
    pub async fn sync(
        &self,
        plugin: &Plugin,
        config: Value,
        secrets: Vec<(String, String)>,
        bars: bool,
    ) -> anyhow::Result<RunOutcome> {
        let creds = secrets
            .iter()
            .map(|(k, v)| (k.clone(), zeroize::Zeroizing::new(v.clone())))
            .collect();
        sluice_runs::manager::check_request(plugin, &config, &creds)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        check_stream_flags(plugin, self.streams)?;
        let run_id = uuid::Uuid::now_v7().to_string();
        let spec = RunSpec {
            run_id: run_id.clone(),
            connection_id: self.connection_id.to_string(),
            config,
            secrets: Secrets::new(secrets),
            streams: self.streams.to_vec(),
            full_refresh: self.full_refresh,
            store: Arc::new(LocalStore::new(self.out)),
            layout: Layout::new("", self.connection_id)?,
            commit_id: run_id.clone(),
            fence: None,
        };
        let cancel = CancellationToken::new();
        let mut staging = StagingConfig::new(self.out.join(".sluice").join("staging"));
        staging.run_quota_bytes = self.run_quota_mib.saturating_mul(1 << 20);
        staging.disk = sluice_staging::DiskBudget::new(staging.run_quota_bytes);
        staging.run_buffer_bytes = (self.buffer_mib as usize) << 20;
        staging.row_group_bytes = staging.run_buffer_bytes;
        let limits = RunLimits {
            staging,
            deadline: Duration::from_secs(24 * 3600),
            cancel: cancel.clone(),
            log_bytes: 64 << 20,
        };
        let c = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                c.cancel();
            }
        });
        if bars {
            eprintln!(
                "run {run_id}: {} {} → {}",
                plugin.info().id,
                plugin.info().version,
                self.out.display()
            );
        }
        let progress: Progress = Default::default();
        let exec = pipeline::execute(plugin, spec, limits, progress.clone());
        let outcome = if bars {
            with_progress_bars(exec, &progress).await
        } else {
            exec.await
        };
        outcome.map_err(|e| anyhow::anyhow!("run failed ({}): {e}", e.code()))
    }
}

/// Refuses a bad `--stream` selection before the run starts, as the service's `POST runs`
/// does: a name given twice or empty, or one the connector's manifest does not declare (the
/// error lists the streams it has). No `--stream` selects every stream.
pub fn check_stream_flags(plugin: &Plugin, streams: &[String]) -> anyhow::Result<()> {
    if streams.is_empty() {
        return Ok(());
    }
    let refused = |e: sluice_runs::manager::SubmitError| anyhow::anyhow!("--stream: {e}");
    sluice_runs::manager::check_stream_selection(Some(streams)).map_err(refused)?;
    sluice_runs::manager::check_streams(plugin, streams).map_err(refused)
}

/// For a connector whose streams come from its config (its manifest declares none): refuses a
/// `--stream` that `discover` does not give, before the run starts, listing the ones it gives.
async fn check_discovered_streams(
    plugin: &Plugin,
    streams: &[String],
    config: &Value,
    secrets: &[(String, String)],
) -> anyhow::Result<()> {
    if streams.is_empty() || !plugin.manifest().streams.is_empty() {
        return Ok(());
    }
    let opts = sluice_runtime::CallOptions {
        secrets: Secrets::new(secrets.to_vec()),
        deadline: Duration::from_secs(120),
        ..Default::default()
    };
    let available = plugin
        .discover(config, opts)
        .await
        .map_err(|e| anyhow::anyhow!("discover failed ({}): {e}", e.code()))?;
    if let Some(name) = streams
        .iter()
        .find(|n| !available.iter().any(|s| &s.name == *n))
    {
        let names: Vec<&str> = available.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "--stream: unknown stream {name:?}; connector {} has: {}",
            plugin.info().id,
            names.join(", ")
        );
    }
    Ok(())
}

/// Awaits `exec`, drawing a spinner per stream from `progress` every 100 ms.
async fn with_progress_bars<T>(
    exec: impl std::future::Future<Output = T>,
    progress: &Progress,
) -> T {
    let bars = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{spinner} {prefix:>20} {human_pos:>10} records  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut shown: BTreeMap<String, ProgressBar> = BTreeMap::new();
    tokio::pin!(exec);
    let outcome = loop {
        tokio::select! {
            r = &mut exec => break r,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let snapshot = progress.lock().map(|p| p.clone()).unwrap_or_default();
                for (name, s) in snapshot {
                    let bar = shown.entry(name.clone()).or_insert_with(|| {
                        let b = bars.add(ProgressBar::new_spinner().with_style(style.clone()).with_prefix(name));
                        b.enable_steady_tick(Duration::from_millis(120));
                        b
                    });
                    bar.set_position(s.records);
                    bar.set_message(format!("{:.1} MiB", s.bytes as f64 / (1 << 20) as f64));
                }
            }
        }
    };
    for b in shown.values() {
        b.finish();
    }
    outcome
}

/// Prints what a run committed: rows, files and state per stream, and the manifest's path.
pub fn print_outcome(outcome: &RunOutcome, out: &Path, connection_id: &str) -> anyhow::Result<()> {
    println!(
        "committed run {} of {} {}",
        outcome.manifest.run_id, outcome.manifest.connector.id, outcome.manifest.connector.version
    );
    for (name, s) in &outcome.manifest.streams {
        let rows: u64 = s.files.iter().map(|f| f.rows).sum();
        println!(
            "  {name:<20} {rows:>10} rows  {:>3} files  state {}",
            s.files.len(),
            s.state
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    println!(
        "manifest: {}",
        out.join(Layout::new("", connection_id)?.manifest_key(&outcome.manifest.run_id))
            .display()
    );
    Ok(())
}

async fn find_plugin(
    rt: &sluice_runtime::Runtime,
    dir: &std::path::Path,
    id: &str,
) -> anyhow::Result<PathBuf> {
    let direct = dir.join(format!("{id}.wasm"));
    if direct.is_file() {
        return Ok(direct);
    }
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "connector {id:?}: cannot read the plugin directory {} (give a .wasm file, or the directory with --plugins-dir or PLUGINS_DIR)",
            dir.display()
        )
    })?;
    for entry in entries.filter_map(Result::ok) {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "wasm")
            && let Ok(plugin) = rt.load_file(&p).await
            && plugin.info().id == id
        {
            return Ok(p);
        }
    }
    bail!("no connector {id:?} in {}", dir.display())
}
