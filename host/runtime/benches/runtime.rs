//! Runtime benchmarks with printed figures (`scripts/dev.sh bench`):
//! cold compile, cached load, instantiate + `manifest` call, and emit throughput.
//! Plugins come from `$SLUICE_PLUGIN_OUT` (scripts/build-plugins.sh).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_runtime::{CallOptions, RecordSink, Runtime, RuntimeConfig, SinkError, SyncRequest};
use sluice_staging::{RunStage, StagingConfig, StreamDef};

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
    fn emit(&mut self, _stream: &str, records: Vec<String>) -> Result<(), SinkError> {
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

/// Staging as a run uses it: every record parsed, checked, typed and buffered into Parquet row groups.
struct Stage {
    stage: RunStage,
    count: Arc<AtomicU64>,
}

impl RecordSink for Stage {
    fn emit(&mut self, stream: &str, records: Vec<String>) -> Result<(), SinkError> {
        self.stage
            .append(stream, &records)
            .map_err(|e| SinkError::Failed(e.into()))?;
        self.count
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn checkpoint(&mut self, _stream: &str, _state: serde_json::Value) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The probe's stream as staging declares it.
fn items_stream() -> StreamDef {
    StreamDef {
        name: "items".into(),
        primary_key: vec!["id".into()],
        cursor_field: None,
        json_schema: serde_json::json!({"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "value": {"type": "integer"}}}),
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
    for _ in 0..std::env::var("BENCH_COLD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1)
    {
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
    let n_calls: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut calls = vec![];
    for _ in 0..n_calls {
        let t = Instant::now();
        p.call_manifest().await?;
        calls.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (m, lo, hi) = stats(calls);
    println!(
        "instantiate + manifest call              median {m:8.1} µs   p10 {lo:.1}  p90 {hi:.1}   n={n_calls}"
    );

    // Emit throughput: the probe guest builds small records (serde_json in the guest) and
    // emits them in batches of 1000. Sinks: a counter (the boundary alone), then staging
    // (each record parsed, checked, typed into Arrow columns, written as Parquet row groups).
    let probe = rt
        .load_file(&plugin("probe"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let n: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let stage_dir = tempfile::tempdir()?;
    for sink_name in ["counter", "staging"] {
        let mut rates = vec![];
        for _ in 0..5 {
            let (count, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let sink: Box<dyn RecordSink> = match sink_name {
                "counter" => Box::new(Count(count.clone(), bytes.clone())),
                _ => Box::new(Stage {
                    stage: RunStage::begin(
                        &StagingConfig::new(stage_dir.path()),
                        &format!("bench-{}", rates.len()),
                        "2024-01-01T00:00:00Z",
                        &[items_stream()],
                    )?,
                    count: count.clone(),
                }),
            };
            let req = SyncRequest {
                config: serde_json::json!({"count": n, "batch": 1000}),
                streams: vec!["items".into()],
                state: vec![],
                started_at: "2024-01-01T00:00:00Z".into(),
                run_id: "test-run".into(),
            };
            let opts = CallOptions {
                deadline: Duration::from_secs(600),
                ..Default::default()
            };
            let t = Instant::now();
            probe.sync(req, sink, opts).await?;
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(count.load(Ordering::Relaxed), n);
            rates.push(n as f64 / secs / 1e6);
        }
        let all = rates
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ");
        let (m, _, _) = stats(rates);
        println!(
            "emit across the boundary into {sink_name:8} median {m:5.2} M records/s   rounds: {all}   ({n} records, batches of 1000)"
        );
    }
    Ok(())
}
