//! In-process load figures of one component, for scripts/bench-plugin-load.sh. One process per
//! measurement, so that no background compile of an earlier one runs beside it:
//!   bench-plugin-load baseline FILE.wasm    cold load on baseline code (fresh cache: Winch
//!                                           compile + link + manifest call), ms
//!   bench-plugin-load optimized FILE.wasm   cold load on optimized code (Cranelift), ms
//!   bench-plugin-load cached FILE.wasm DIR  load with the optimized artifact cached in DIR
//!                                           (compiled first if missing), ms; then the median of
//!                                           200 instantiate + manifest calls, µs
//! Prints the figures on one line.

use std::path::Path;
use std::time::Instant;

use sluice_runtime::{Plugin, Runtime, RuntimeConfig, Tier};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn runtime(cache: &Path, tiered: bool) -> anyhow::Result<Runtime> {
    let mut cfg = RuntimeConfig::new(cache);
    cfg.tiered = tiered;
    Runtime::new(cfg)
}

async fn load(rt: &Runtime, file: &Path) -> anyhow::Result<(Plugin, f64)> {
    let t = Instant::now();
    let p = rt
        .load_file(file)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((p, t.elapsed().as_secs_f64() * 1e3))
}

/// Median µs of `n` instantiate + manifest calls (after a warm-up).
async fn calls(p: &Plugin, n: usize) -> anyhow::Result<f64> {
    for _ in 0..n / 10 + 1 {
        p.call_manifest().await?;
    }
    let mut xs = vec![];
    for _ in 0..n {
        let t = Instant::now();
        p.call_manifest().await?;
        xs.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(xs))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = || anyhow::anyhow!("usage: baseline|optimized FILE.wasm, or cached FILE.wasm DIR");
    let mode = args.get(1).ok_or_else(usage)?;
    let file = Path::new(args.get(2).ok_or_else(usage)?);
    match mode.as_str() {
        "baseline" | "optimized" => {
            let dir = tempfile::tempdir()?;
            let rt = runtime(dir.path(), mode == "baseline")?;
            let (p, ms) = load(&rt, file).await?;
            anyhow::ensure!(p.tier().as_str() == mode && !p.info().compiled_from_cache);
            println!("{ms:.1}");
            // Exiting ends the background optimizing compile of a baseline load.
            std::process::exit(0);
        }
        "cached" => {
            let dir = Path::new(args.get(3).ok_or_else(usage)?);
            if runtime(dir, false)?.load_file(file).await.is_err() {
                anyhow::bail!("cannot load {}", file.display());
            }
            let rt = runtime(dir, true)?;
            let (p, ms) = load(&rt, file).await?;
            anyhow::ensure!(p.info().compiled_from_cache && p.tier() == Tier::Optimized);
            println!("{ms:.2} {:.1}", calls(&p, 200).await?);
        }
        _ => return Err(usage()),
    }
    Ok(())
}
