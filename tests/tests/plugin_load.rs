//! Plugin loading: a first load serves on baseline (Winch) code at once, the optimizing compile
//! runs in the background and is swapped in; the compile cache stays under its cap and never
//! loses an artifact in use. No timing is asserted here (speed goals live in
//! scripts/bench-plugin-load.sh).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_runtime::{Runtime, RuntimeConfig, Tier};
use sluice_tests::{Service, plugin, run_id_of};

/// A service over an empty plugin directory under a new temporary root (kept alive by the
/// returned guard), with `env`; plugins are dropped in by the test.
async fn service_without_plugins(env: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, Service) {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let svc = Service::start(&root.path().join("data"), &plugins, env).await;
    (root, plugins, svc)
}

fn copy_atomic(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp-copy");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// The pid of a child of `parent` whose command line has all of `words`.
fn child_with(parent: u32, words: &[&str]) -> Option<u32> {
    children_with(parent, words).first().copied()
}

/// The pids of the children of `parent` whose command lines have all of `words`.
fn children_with(parent: u32, words: &[&str]) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if words.iter().all(|w| args.contains(&w.as_bytes())) {
            found.push(pid);
        }
    }
    found
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// The connector's entry in `GET /internal/connectors`, if listed.
async fn listed(svc: &Service, id: &str) -> Option<Value> {
    let list = svc.get_json("/internal/connectors").await;
    list["connectors"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
}

/// Waits until `id` is listed on optimized code (a background compile: minutes on a loaded
/// machine, not a speed check).
async fn listed_optimized(svc: &Service, id: &str, what: &str) -> Value {
    eventually(what, Duration::from_secs(600), || async {
        listed(svc, id).await.filter(|c| c["tier"] == "optimized")
    })
    .await
}

/// The error `GET /internal/connectors` lists for the plugin file whose name ends with `file`.
async fn failure_of(svc: &Service, file: &str) -> Option<String> {
    let list = svc.get_json("/internal/connectors").await;
    list["failures"]
        .as_array()?
        .iter()
        .find(|f| f["file"].as_str().is_some_and(|p| p.ends_with(file)))
        .map(|f| f["error"].as_str().unwrap_or_default().to_string())
}

/// Polls `f` every 20 ms until it gives a value; fails after `limit` (a generous bound for a
/// shared machine: not a speed check).
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let t = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Syncs `count` words from python-hello into local storage; returns the finished run.
async fn sync_words(svc: &Service, connection: &str, count: u64) -> Value {
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(
            &json!({"connection_id": connection, "connector": "python-hello",
            "config": {"count": count}, "credentials": {},
            "storage": {"bucket": "sluice-local", "prefix": "mirror"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    let id = run_id_of(r).await;
    svc.wait_run(&id).await
}

fn artifacts(dir: &Path, sha256: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(sha256) && n.ends_with(".cwasm"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_load_serves_on_baseline_code_then_optimized_code_is_swapped_in() {
    let (root, plugins, svc) = service_without_plugins(&[]).await;

    // Dropped in as an operator's copy does (write beside, rename in).
    copy_atomic(&plugin("python-hello"), &plugins.join("python-hello.wasm"));
    // Its optimizing compile (a child process, after the baseline load) is held as soon as it
    // starts, so that the first sync surely runs on baseline code.
    let pid = svc.child.id();
    let compiler = eventually(
        "the optimizing compile starts",
        Duration::from_secs(300),
        || async { child_with(pid, &["compile", "--tier", "optimized"]) },
    )
    .await;
    signal(compiler, "STOP");
    let entry = eventually("python-hello listed", Duration::from_secs(60), || {
        listed(&svc, "python-hello")
    })
    .await;
    assert_eq!(entry["tier"], "baseline", "{entry}");
    let logs = svc.logs();
    assert!(
        logs.contains("plugin loaded") && logs.contains(r#""tier":"baseline""#),
        "{logs}"
    );
    let run = sync_words(&svc, "words-a", 40).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["streams"]["words"]["records"], 40, "{run}");
    assert_eq!(run["streams"]["words"]["committed_rows"], 40, "{run}");

    // Let the optimizing compile finish: new calls run the optimized code.
    signal(compiler, "CONT");
    listed_optimized(&svc, "python-hello", "optimized code swapped in").await;
    // The swap is published before its log line is written: wait for the line too.
    eventually("the swap logged", Duration::from_secs(10), || async {
        svc.logs()
            .contains("plugin optimized code swapped in")
            .then_some(())
    })
    .await;
    let run = sync_words(&svc, "words-b", 60).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["streams"]["words"]["records"], 60, "{run}");
    assert_eq!(run["streams"]["words"]["committed_rows"], 60, "{run}");

    // The baseline artifact, no longer in use, is collected (by the registry's next rescan);
    // the optimized one stays.
    let sha = entry["sha256"].as_str().unwrap().to_string();
    let cache = root.path().join("data/cache");
    let left = eventually(
        "baseline artifact collected",
        Duration::from_secs(60),
        || {
            let names = artifacts(&cache, &sha);
            async move { (names.len() == 1).then_some(names) }
        },
    )
    .await;
    assert!(left[0].contains("-optimized-"), "{left:?}");

    // A restart loads the cached optimized artifact directly: no baseline code, no compile.
    drop(svc);
    let svc = Service::start(&root.path().join("data"), &plugins, &[]).await;
    let entry = listed(&svc, "python-hello").await.unwrap();
    assert_eq!(entry["tier"], "optimized", "{entry}");
    assert_eq!(child_with(svc.child.id(), &["compile"]), None);
    let run = sync_words(&svc, "words-c", 5).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", svc.logs());
    assert_eq!(run["streams"]["words"]["records"], 5, "{run}");
}

fn tiered_runtime(cache: &Path, cap_bytes: u64) -> Runtime {
    let mut cfg = RuntimeConfig::new(cache);
    cfg.max_memory_mib = 32;
    cfg.default_memory_mib = 32;
    cfg.tiered = true;
    cfg.cache_max_bytes = cap_bytes;
    Runtime::new(cfg).unwrap()
}

async fn optimized(p: &sluice_runtime::Plugin) {
    eventually(
        "optimized code swapped in",
        Duration::from_secs(300),
        || async { (p.tier() == Tier::Optimized).then_some(()) },
    )
    .await;
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

const VERSIONS: [&str; 6] = [
    "probe-v2",
    "http-json",
    "github",
    "slack",
    "linear",
    "hubspot",
];

/// Loads a version, runs it on both tiers, drops it and collects the cache; its sha256.
async fn load_run_drop(rt: &Runtime, name: &str) -> String {
    let p = rt.load_file(&plugin(name)).await.unwrap();
    assert_eq!(
        p.tier(),
        Tier::Baseline,
        "{name}: a first load serves on baseline code"
    );
    p.call_manifest().await.unwrap();
    optimized(&p).await;
    p.call_manifest().await.unwrap();
    let sha = p.info().sha256.clone();
    drop(p);
    rt.collect_cache(None);
    sha
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_under_its_cap_with_several_versions() {
    let cache = tempfile::tempdir().unwrap();
    // Room for about two versions' artifacts of these small components.
    let cap = 6 << 20;
    let rt = tiered_runtime(cache.path(), cap);
    let mut shas = vec![];
    for name in VERSIONS {
        shas.push(load_run_drop(&rt, name).await);
        let bytes = dir_bytes(cache.path());
        assert!(
            bytes <= cap,
            "{bytes} bytes in the cache after {name}, cap {cap}"
        );
    }
    // The versions' artifacts together are over the cap: the least recently used went first,
    // the newest stayed.
    let left = cache_files(cache.path());
    assert!(artifacts(cache.path(), &shas[0]).is_empty(), "{left:?}");
    let newest = rt.load_file(&plugin("hubspot")).await.unwrap();
    assert!(newest.info().compiled_from_cache);
    assert_eq!(newest.tier(), Tier::Optimized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_in_use_is_never_collected() {
    let cache = tempfile::tempdir().unwrap();
    // A cap of nothing: every artifact not in use goes at each collection.
    let rt = tiered_runtime(cache.path(), 0);
    let kept = rt.load_file(&plugin("probe")).await.unwrap();
    optimized(&kept).await;
    let sha = kept.info().sha256.clone();
    for name in &VERSIONS[..3] {
        load_run_drop(&rt, name).await;
        let left = cache_files(cache.path());
        assert!(
            !left.is_empty()
                && left
                    .iter()
                    .all(|p| p.file_name().unwrap().to_string_lossy().starts_with(&sha)),
            "after {name}: {left:?}"
        );
        assert!(
            artifacts(cache.path(), &sha)
                .iter()
                .any(|n| n.contains("-optimized-"))
        );
    }
    let account = kept
        .validate(&json!({"action": "ok"}), Default::default())
        .await
        .unwrap();
    assert_eq!(account["version"], "1.0.0");
    // No longer in use: collected.
    drop(kept);
    rt.collect_cache(None);
    assert_eq!(cache_files(cache.path()), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_optimized_artifact_is_used_directly() {
    let cache = tempfile::tempdir().unwrap();
    let first = tiered_runtime(cache.path(), u64::MAX)
        .load_file(&plugin("http-json"))
        .await
        .unwrap();
    optimized(&first).await;
    let second = tiered_runtime(cache.path(), u64::MAX)
        .load_file(&plugin("http-json"))
        .await
        .unwrap();
    assert_eq!(second.tier(), Tier::Optimized);
    assert!(second.info().compiled_from_cache);
    second.call_manifest().await.unwrap();
}

/// Children of `parent` that are compiling a plugin (`sluice plugin compile`).
fn compile_children(parent: u32) -> usize {
    children_with(parent, &["plugin", "compile"]).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_interpreter_components_compile_one_child_at_a_time() {
    let (_root, plugins, svc) = service_without_plugins(&[]).await;
    copy_atomic(&plugin("python-hello"), &plugins.join("python-hello.wasm"));
    copy_atomic(&plugin("js-issues"), &plugins.join("js-issues.wasm"));
    // Both on optimized code: their four compiles (baseline, then optimized) are done.
    let pid = svc.child.id();
    let (mut most, mut seen) = (0, 0);
    let t = Instant::now();
    loop {
        let n = compile_children(pid);
        most = most.max(n);
        seen += usize::from(n > 0);
        let mut done = 0;
        for id in ["python-hello", "js-issues"] {
            if listed(&svc, id)
                .await
                .is_some_and(|c| c["tier"] == "optimized")
            {
                done += 1;
            }
        }
        if done == 2 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "not both optimized: {}",
            svc.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen > 0, "no compile child was ever seen");
    assert_eq!(most, 1, "compile children at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_over_its_memory_limit_is_refused_naming_the_setting() {
    let (_root, plugins, svc) =
        service_without_plugins(&[("SLUICE_COMPILE_MEMORY_MIB", "64")]).await;
    copy_atomic(&plugin("python-hello"), &plugins.join("python-hello.wasm"));
    let error = eventually("the load fails", Duration::from_secs(300), || {
        failure_of(&svc, "python-hello.wasm")
    })
    .await;
    assert!(
        error.contains("needed more than 64 MiB") && error.contains("SLUICE_COMPILE_MEMORY_MIB"),
        "{error}"
    );
    assert!(listed(&svc, "python-hello").await.is_none());
    // The service itself is unharmed.
    assert_eq!(svc.get_json("/health").await["status"], "ok");
}

/// A file whose id another file already provides, then overwritten with bytes that do not
/// load: its failure names the load error, not only the duplicate id (an outside storm left
/// "already provided" shown for a file that held garbage by then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_that_stops_loading_reports_its_load_error() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    copy_atomic(&plugin("probe"), &plugins.join("a-probe.wasm"));
    copy_atomic(&plugin("probe"), &plugins.join("b-probe.wasm"));
    let svc = Service::start(&root.path().join("data"), &plugins, &[]).await;
    let failure_of = |file: &'static str| {
        let svc = &svc;
        move || async move {
            let list = svc.get_json("/internal/connectors").await;
            list["failures"]
                .as_array()?
                .iter()
                .find(|f| f["file"].as_str().is_some_and(|p| p.ends_with(file)))
                .map(|f| f["error"].as_str().unwrap_or_default().to_string())
        }
    };
    let first = eventually(
        "the duplicate is reported",
        Duration::from_secs(120),
        failure_of("b-probe.wasm"),
    )
    .await;
    assert!(first.contains("already provided by"), "{first}");
    std::fs::write(plugins.join("b-probe.wasm.tmp-copy"), b"not a component").unwrap();
    std::fs::rename(
        plugins.join("b-probe.wasm.tmp-copy"),
        plugins.join("b-probe.wasm"),
    )
    .unwrap();
    let error = eventually(
        "the load error is reported",
        Duration::from_secs(120),
        || async {
            failure_of("b-probe.wasm")()
                .await
                .filter(|e| !e.starts_with("connector id"))
        },
    )
    .await;
    assert!(error.contains("component"), "{error}");
    assert!(error.contains("already provided by"), "{error}");
    assert!(
        listed(&svc, "probe").await.is_some(),
        "a-probe.wasm still serves"
    );
}

/// A compile child killed from outside (SIGKILL: in a pod, the kernel's out-of-memory killer,
/// which the child volunteers for with `oom_score_adj` 1000) is not the file's fault: the
/// load is listed as interrupted and tried again without the file changing, and an
/// interrupted optimizing compile is tried again while the plugin serves on baseline code.
/// Before, the plugin stayed failed until its file changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_killed_from_outside_is_tried_again() {
    let (_root, plugins, svc) = service_without_plugins(&[]).await;
    let pid = svc.child.id();
    copy_atomic(&plugin("python-hello"), &plugins.join("python-hello.wasm"));

    let baseline = eventually(
        "the baseline compile starts",
        Duration::from_secs(120),
        || async { child_with(pid, &["compile", "--tier", "baseline"]) },
    )
    .await;
    let adj = std::fs::read_to_string(format!("/proc/{baseline}/oom_score_adj")).unwrap();
    assert_eq!(
        adj.trim(),
        "1000",
        "the compiler is the OOM killer's first choice"
    );
    signal(baseline, "KILL");
    let error = eventually(
        "the interrupted load is listed",
        Duration::from_secs(60),
        || failure_of(&svc, "python-hello.wasm"),
    )
    .await;
    assert!(
        error.contains("compile interrupted")
            && error.contains("SIGKILL")
            && error.contains("out-of-memory killer")
            && error.contains("try 1; trying again in 15 s"),
        "{error}"
    );
    // The same bytes load on the retry (the file is untouched).
    eventually("loaded on the retry", Duration::from_secs(300), || {
        listed(&svc, "python-hello")
    })
    .await;

    let optimized = eventually(
        "the optimizing compile starts",
        Duration::from_secs(300),
        || async { child_with(pid, &["compile", "--tier", "optimized"]) },
    )
    .await;
    signal(optimized, "KILL");
    eventually(
        "the interruption is logged",
        Duration::from_secs(60),
        || async {
            svc.logs()
                .contains(
                    "optimizing compile interrupted; the plugin serves on baseline code meanwhile",
                )
                .then_some(())
        },
    )
    .await;
    let entry = listed(&svc, "python-hello").await.unwrap();
    assert_eq!(entry["tier"], "baseline", "{entry}");
    listed_optimized(&svc, "python-hello", "optimized on the retry").await;
    let failures = svc.get_json("/internal/connectors").await["failures"].clone();
    assert_eq!(failures, json!([]), "{}", svc.logs());
}
