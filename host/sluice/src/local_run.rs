//! `sluice run`: the service's pipeline into a local directory, with progress bars.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sluice_runs::pipeline::{self, Progress, RunLimits, RunSpec};
use sluice_runtime::outbound::OutboundConfig;
use sluice_runtime::{CancellationToken, Secrets};
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
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let work = args.out.join(".sluice");
    let policy = sluice_runtime::policy::OperatorPolicy {
        allow: sluice_runtime::policy::OperatorPolicy::parse_allow("*")
            .map_err(anyhow::Error::msg)?,
        addresses: sluice_runtime::policy::AddressGrant::parse(&args.allow_private_addresses)
            .map_err(anyhow::Error::msg)?,
    };
    let rt = crate::runtime(crate::runtime_config(
        &work.join("cache"),
        256,
        4,
        // Compile out of process, as `serve` does: the compiler's memory and code pages never
        // stay in this process while it syncs (the compiled artifact is cached under --out).
        std::env::current_exe().ok(),
        policy,
        OutboundConfig::default(),
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
    let config: serde_json::Value = match &args.config {
        Some(p) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not JSON", p.display()))?,
        None => serde_json::json!({}),
    };
    let mut secrets = Vec::new();
    for s in &args.secrets {
        let (k, v) = s.split_once('=').context("--secret takes NAME=VALUE")?;
        secrets.push((k.to_string(), v.to_string()));
    }
    let creds = secrets
        .iter()
        .map(|(k, v)| (k.clone(), zeroize::Zeroizing::new(v.clone())))
        .collect();
    sluice_runs::manager::check_request(&plugin, &config, &creds)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let run_id = uuid::Uuid::now_v7().to_string();
    let spec = RunSpec {
        run_id: run_id.clone(),
        connection_id: args.connection_id.clone(),
        config,
        secrets: Secrets::new(secrets),
        streams: args.streams.clone(),
        full_refresh: args.full_refresh,
        store: Arc::new(LocalStore::new(&args.out)),
        layout: Layout::new("", &args.connection_id)?,
        commit_id: run_id.clone(),
        fence: None,
    };
    let cancel = CancellationToken::new();
    let limits = RunLimits {
        staging: StagingConfig::new(work.join("staging")),
        deadline: Duration::from_secs(24 * 3600),
        cancel: cancel.clone(),
        log_bytes: 64 << 20,
    };
    let progress: Progress = Default::default();
    let bars = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{spinner} {prefix:>20} {human_pos:>10} records  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut shown: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c.cancel();
        }
    });
    eprintln!(
        "run {run_id}: {} {} → {}",
        plugin.info().id,
        plugin.info().version,
        args.out.display()
    );
    let exec = pipeline::execute(&plugin, spec, limits, progress.clone());
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
    let outcome = outcome.map_err(|e| anyhow::anyhow!("run failed ({}): {e}", e.code()))?;
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
        args.out
            .join(Layout::new("", &args.connection_id)?.manifest_key(&outcome.manifest.run_id))
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
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
    {
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
