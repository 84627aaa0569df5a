//! `sluice plugin test`: a connector's validate, discover and sync through the host's real
//! pipeline into a local directory, with what came out printed; with `--cassette`, offline.
//!
//! ```text
//! sluice plugin test github.wasm --config cfg.json --secret token=… --cassette tests/gh --record
//! sluice plugin test github.wasm --config cfg.json --secret token=x --cassette tests/gh
//! ```
//! The first records every upstream exchange (secrets masked); the second answers every request
//! from the cassette and refuses any other (exit 1, naming it). Exit status: 0 when validate,
//! discover and sync succeeded and the cassette answered every request; 1 otherwise.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_runs::pipeline::RunOutcome;
use sluice_runtime::cassette::Cassette;
use sluice_runtime::outbound::OutboundConfig;
use sluice_runtime::redact::MIN_SECRET_LEN;
use sluice_runtime::{CallOptions, Plugin, Secrets};

use crate::local_run::{LocalSync, local_policy, parse_secrets, read_config};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The connector component (`.wasm`).
    file: PathBuf,
    /// Config file (JSON).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A credential, `name=value` (repeatable). Replay matches whatever value of 8 or more
    /// characters is given; `--record` refuses shorter ones (they could not be masked).
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    secrets: Vec<String>,
    /// A cassette directory (`cassette.jsonl` inside): replayed with no network, unless
    /// `--record`.
    #[arg(long, value_name = "DIR")]
    cassette: Option<PathBuf>,
    /// Send the requests for real and record every exchange into `--cassette`; the cassette is
    /// replaced only when the test passes and every exchange could be recorded.
    #[arg(long, requires = "cassette")]
    record: bool,
    /// Streams to sync (repeatable); all by default.
    #[arg(long = "stream")]
    streams: Vec<String>,
    /// Records shown per stream.
    #[arg(long, default_value_t = 3)]
    show: usize,
    /// Output directory (kept; a second test into it continues from its committed state).
    /// Default: a temporary directory, removed at exit.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Ignore the committed state in `--out`.
    #[arg(long)]
    full_refresh: bool,
    /// Non-public address classes the connector may reach live: none, loopback, private.
    #[arg(long, default_value = "none")]
    allow_private_addresses: String,
}

/// Runs the test; `Ok(false)` when a step failed (already printed).
pub async fn run(args: TestArgs) -> anyhow::Result<bool> {
    check_recordable(&args)?;
    let cassette = open_cassette(&args)?;
    let temp;
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir().context("making a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let outbound = OutboundConfig {
        cassette: cassette.clone(),
        address_setting: sluice_runtime::outbound::ADDRESS_SETTING_FLAG,
        ..OutboundConfig::default()
    };
    let rt = crate::runtime(crate::runtime_config(
        &crate::cli_cache_dir(),
        256,
        4,
        std::env::current_exe().ok(),
        local_policy(&args.allow_private_addresses)?,
        outbound,
    ))?;
    let plugin = rt
        .load_file(&args.file)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    println!(
        "plugin: {} {} (WIT {}, {} bytes)",
        plugin.info().id,
        plugin.info().version,
        plugin.info().wit_version,
        plugin.info().size
    );
    let config = read_config(args.config.as_deref())?;
    let secrets = parse_secrets(&args.secrets)?;
    let ok = steps(&args, &plugin, &out, config, secrets, cassette.as_deref()).await?;
    Ok(report_cassette(cassette.as_deref(), ok)? && ok)
}

/// A recording masks secrets of [`MIN_SECRET_LEN`] bytes or more only: a shorter one would be
/// written in clear, so it is refused before anything is sent.
fn check_recordable(args: &TestArgs) -> anyhow::Result<()> {
    if !args.record {
        return Ok(());
    }
    for (name, value) in parse_secrets(&args.secrets)? {
        if value.len() < MIN_SECRET_LEN {
            anyhow::bail!(
                "--record: secret {name:?} is shorter than {MIN_SECRET_LEN} characters and could not be masked in the cassette; record with a real credential"
            );
        }
    }
    Ok(())
}

fn open_cassette(args: &TestArgs) -> anyhow::Result<Option<Arc<Cassette>>> {
    let Some(dir) = &args.cassette else {
        return Ok(None);
    };
    let cassette = if args.record {
        Cassette::record(dir)?
    } else {
        Cassette::replay(dir)?
    };
    Ok(Some(Arc::new(cassette)))
}

/// validate → discover → sync, each printed; stops at the first failure.
async fn steps(
    args: &TestArgs,
    plugin: &Plugin,
    out: &Path,
    config: serde_json::Value,
    secrets: Vec<(String, String)>,
    cassette: Option<&Cassette>,
) -> anyhow::Result<bool> {
    // A request the cassette holds no answer for reaches the connector as `denied`, which it
    // reports in its own words (`invalid_config` for the SDKs): say what really happened.
    let failed = |step: &str, what: String| {
        let misses = cassette.map(Cassette::misses).unwrap_or_default();
        match misses.first() {
            Some(miss) => println!(
                "{step}: failed: the cassette has no recorded answer for {miss} (the connector \
                 reported: {what}); record it with --record against the real API"
            ),
            None if what.starts_with('(') => println!("{step}: failed {what}"),
            None => println!("{step}: failed: {what}"),
        }
    };
    let opts = || CallOptions {
        secrets: Secrets::new(secrets.clone()),
        deadline: Duration::from_secs(120),
        ..CallOptions::default()
    };
    // The service's checks first (a misnamed credential or config field named as unknown), not
    // the connector's own reading of what it was given.
    let creds = secrets
        .iter()
        .map(|(k, v)| (k.clone(), zeroize::Zeroizing::new(v.clone())))
        .collect();
    if let Err(e) = sluice_runs::manager::check_request(plugin, &config, &creds) {
        println!("request: refused: {e}");
        return Ok(false);
    }
    match plugin.validate(&config, opts()).await {
        Ok(account) => println!("validate: ok {account}"),
        Err(e) => {
            failed("validate", format!("({}): {e}", e.code()));
            return Ok(false);
        }
    }
    match plugin.discover(&config, opts()).await {
        Ok(streams) => {
            println!("discover: {} stream(s)", streams.len());
            for s in &streams {
                println!(
                    "  {:<20} key {:?}  cursor {}",
                    s.name,
                    s.primary_key,
                    s.cursor_field.as_deref().unwrap_or("-")
                );
            }
        }
        Err(e) => {
            failed("discover", format!("({}): {e}", e.code()));
            return Ok(false);
        }
    }
    let local = LocalSync {
        out,
        connection_id: "test",
        streams: &args.streams,
        full_refresh: args.full_refresh,
        run_quota_mib: 4096,
        buffer_mib: 4,
    };
    let outcome = match local.sync(plugin, config, secrets, false).await {
        Ok(o) => o,
        Err(e) => {
            failed("sync", format!("{e:#}"));
            return Ok(false);
        }
    };
    print_sync(&outcome, out, args.show)?;
    Ok(true)
}

/// Per stream: rows, files, the committed state, and the first `show` records as JSON lines.
fn print_sync(outcome: &RunOutcome, out: &Path, show: usize) -> anyhow::Result<()> {
    println!("sync: committed run {}", outcome.manifest.run_id);
    for (name, s) in &outcome.manifest.streams {
        let rows: u64 = s.files.iter().map(|f| f.rows).sum();
        let state = s.state.as_ref().map(|v| v.to_string());
        println!(
            "  {name}: {rows} records in {} file(s), state {}",
            s.files.len(),
            state.as_deref().unwrap_or("-")
        );
        let keys: Vec<PathBuf> = s.files.iter().map(|f| out.join(&f.key)).collect();
        for line in first_records(&keys, show)? {
            println!("    {line}");
        }
    }
    Ok(())
}

/// The first `n` rows of these Parquet files, one JSON object per row, without the run's own
/// columns ([`RUN_COLUMNS`]).
fn first_records(files: &[PathBuf], n: usize) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for path in files {
        if lines.len() >= n {
            break;
        }
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("reading {}", path.display()))?
            .with_limit(n - lines.len())
            .build()?;
        for batch in reader {
            let batch = without_run_columns(batch?)?;
            let mut buf = Vec::new();
            let mut writer = arrow_json::LineDelimitedWriter::new(&mut buf);
            writer.write(&batch)?;
            writer.finish()?;
            lines.extend(String::from_utf8_lossy(&buf).lines().map(str::to_string));
        }
    }
    lines.truncate(n);
    Ok(lines)
}

/// Host columns that differ from run to run (the run id, the extraction time), left out so
/// that a replayed test prints exactly what its recording printed.
const RUN_COLUMNS: [&str; 2] = ["_sluice_run_id", "_sluice_extracted_at"];

fn without_run_columns(
    batch: arrow_array::RecordBatch,
) -> Result<arrow_array::RecordBatch, arrow_schema::ArrowError> {
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| !RUN_COLUMNS.contains(&batch.schema().field(i).name().as_str()))
        .collect();
    batch.project(&keep)
}

/// Prints what the cassette did, and puts a recording in place when the test passed and every
/// exchange was recorded; false when replay met a request it did not hold or a recording left
/// an exchange out.
fn report_cassette(cassette: Option<&Cassette>, passed: bool) -> anyhow::Result<bool> {
    let Some(c) = cassette else {
        return Ok(true);
    };
    if c.is_recording() {
        let refused = c.refused();
        for r in &refused {
            println!("cassette: not recorded: {r}");
        }
        if !passed || !refused.is_empty() {
            println!(
                "cassette: recording discarded; {} is unchanged",
                c.path().display()
            );
            return Ok(false);
        }
        c.finish()?;
        println!(
            "cassette: recorded {} exchange(s) into {}",
            c.len(),
            c.path().display()
        );
        return Ok(true);
    }
    let misses = c.misses();
    println!(
        "cassette: replayed from {} ({} exchange(s), {} unused)",
        c.path().display(),
        c.len(),
        c.unused()
    );
    for m in &misses {
        println!("cassette: not in the cassette: {m}");
    }
    if !misses.is_empty() {
        println!(
            "cassette: {} request(s) had no recorded answer; to record them, run again with \
             --record (and a real credential) against the real API",
            misses.len()
        );
    }
    Ok(misses.is_empty())
}
