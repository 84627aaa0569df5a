//! Runtime benchmarks with printed figures (`scripts/dev.sh bench`):
//! cold compile, cached load, instantiate + `manifest` call, and emit throughput.
//! Plugins come from `$SLUICE_PLUGIN_OUT` (scripts/build-plugins.sh).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_runtime::{CallOptions, RecordSink, Runtime, RuntimeConfig, SyncRequest};

fn plugin(name: &str) -> PathBuf {
    let dir =
        std::env::var("SLUICE_PLUGIN_OUT").unwrap_or_else(|_| "/var/cache/sluice/plugins".into());
    PathBuf::from(dir).join(format!("{name}.wasm"))
}

fn stats(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    (p(0.5), p(0.1), p(0.9))
}

struct Count(Arc<AtomicU64>, Arc<AtomicU64>);

impl RecordSink for Count {
    fn emit(&mut self, _stream: &str, records: Vec<String>) -> anyhow::Result<()> {
        self.0.fetch_add(records.len() as u64, Ordering::Relaxed);
        self.1.fetch_add(
            records.iter().map(|r| r.len() as u64).sum(),
            Ordering::Relaxed,
        );
        Ok(())
    }
    fn checkpoint(&mut self, _stream: &str, _state: serde_json::Value) -> anyhow::Result<()> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::var("BENCH_PLUGIN").unwrap_or_else(|_| "http-json".into());
    let file = plugin(&name);
    let size = std::fs::metadata(&file)?.len();
    println!("plugin {name}.wasm ({size} bytes)");

    // Cold compile: a fresh cache each time.
    let mut cold = vec![];
    for _ in 0..5 {
        let dir = tempfile::tempdir()?;
        let rt = Runtime::new(RuntimeConfig::new(dir.path()))?;
        let t = Instant::now();
        let p = rt
            .load_file(&file)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        cold.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(!p.info().compiled_from_cache);
    }
    let (m, lo, hi) = stats(cold);
    println!(
        "cold load (compile + link + manifest)   median {m:8.2} ms   p10 {lo:.2}  p90 {hi:.2}   n=5"
    );

    // Cached load: same engine settings, artifact on disk.
    let dir = tempfile::tempdir()?;
    let rt = Runtime::new(RuntimeConfig::new(dir.path()))?;
    rt.load_file(&file)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut warm = vec![];
    let mut plugin_handle = None;
    for _ in 0..50 {
        let t = Instant::now();
        let p = rt
            .load_file(&file)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(p.info().compiled_from_cache);
        plugin_handle = Some(p);
    }
    let (m, lo, hi) = stats(warm);
    println!(
        "cached load (read + sha256 + deserialize + link + manifest)   median {m:6.3} ms   p10 {lo:.3}  p90 {hi:.3}   n=50"
    );

    // instantiate_pre → fresh Store → instantiate → manifest call.
    let p = plugin_handle.expect("loaded");
    for _ in 0..200 {
        p.call_manifest().await?;
    }
    let mut calls = vec![];
    for _ in 0..2000 {
        let t = Instant::now();
        p.call_manifest().await?;
        calls.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (m, lo, hi) = stats(calls);
    println!(
        "instantiate + manifest call              median {m:8.1} µs   p10 {lo:.1}  p90 {hi:.1}   n=2000"
    );

    // Emit throughput: the probe guest emits small records in batches of 1000 to a counting sink.
    let probe = rt
        .load_file(&plugin("probe"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let n: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    for round in 0..3 {
        let (count, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let req = SyncRequest {
            config: serde_json::json!({"count": n, "batch": 1000}),
            streams: vec!["items".into()],
            state: vec![],
        };
        let opts = CallOptions {
            deadline: Duration::from_secs(600),
            ..Default::default()
        };
        let t = Instant::now();
        probe
            .sync(req, Box::new(Count(count.clone(), bytes.clone())), opts)
            .await?;
        let secs = t.elapsed().as_secs_f64();
        let got = count.load(Ordering::Relaxed);
        assert_eq!(got, n);
        println!(
            "emit across the boundary (round {round})     {:8.2} M records/s   {:.1} MB/s   {} records of ~{} B, batches of 1000, {secs:.2} s",
            got as f64 / secs / 1e6,
            bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
            got,
            bytes.load(Ordering::Relaxed) / got.max(1)
        );
    }
    Ok(())
}
