//! WIT versions side by side: the host serves `sluice:connector@0.2.1` (the current world; its
//! 0.2.0 components link to it by semver) and `@0.1.0` at once, choosing by what each component
//! exports.
//!
//! - `tests/fixtures/github-0.1.0.wasm` is the GitHub connector exactly as the tree built it
//!   before 0.2.0 existed (sha256 `5fe542b4…`, built against 0.1.0 by the SDK of that day): it
//!   must load and sync against the fake GitHub unchanged, incremental runs included.
//! - `tests/fixtures/github-0.2.0.wasm`, the same connector built against 0.2.0 before 0.2.1
//!   existed (sha256 `258c7bfb…`; it emits JSON text): the same, and its Parquet is
//!   value-equal to today's build's, which emits field by field (`records.emit-fields`).
//! - `probe-v01` is built today against the frozen copy `wit/versions/0.1.0` with wit-bindgen
//!   alone; it uses every 0.1.0 import, so every conversion of the host is exercised.
//! - `probe` (SDK, 0.2.1) sees `started-at`, `run-id` and `clock.now`.
//! - Versions no host serves are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use serde_json::{Value, json};
use sluice_runtime::policy::{AddressGrant, OperatorPolicy};
use sluice_runtime::{
    CallError, CallOptions, ErrorCode, LoadError, RecordSink, Runtime, RuntimeConfig, Secrets,
    SinkError, SyncRequest,
};
use sluice_tests::fakes::github::{FakeGithub, GithubConfig};
use sluice_tests::{Service, plugin, run_id_of, serve, sluice_bin};

/// The GitHub connector built against 0.1.0, before the host served anything else.
fn github_0_1_0() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/github-0.1.0.wasm")
}

/// The GitHub connector built against 0.2.0, before 0.2.1 (it emits JSON text).
fn github_0_2_0() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/github-0.2.0.wasm")
}

fn runtime(cache: &Path) -> Runtime {
    let mut cfg = RuntimeConfig::new(cache);
    cfg.max_memory_mib = 32;
    cfg.default_memory_mib = 32;
    cfg.policy = OperatorPolicy {
        addresses: AddressGrant {
            loopback: true,
            private: false,
        },
        ..Default::default()
    };
    Runtime::new(cfg).unwrap()
}

fn opts() -> CallOptions {
    CallOptions {
        deadline: Duration::from_secs(10),
        secrets: Secrets::new([("token".to_string(), "v01-secret-token".to_string())]),
        ..Default::default()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Milliseconds since the epoch of an RFC 3339 date-time.
fn rfc3339_ms(text: &str) -> u64 {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as u64
}

/// What a sync emitted: the records, and each checkpoint as (stream, state).
type Collected = (Vec<String>, Vec<(String, Value)>);

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Collected>>);

impl RecordSink for Collect {
    fn emit(&mut self, _stream: &str, records: Vec<String>) -> Result<(), SinkError> {
        self.0.lock().unwrap().0.extend(records);
        Ok(())
    }
    fn checkpoint(&mut self, stream: &str, state: Value) -> anyhow::Result<()> {
        self.0.lock().unwrap().1.push((stream.to_string(), state));
        Ok(())
    }
}

fn request(config: Value, state: Vec<(String, Value)>) -> SyncRequest {
    SyncRequest {
        config,
        streams: vec!["items".into()],
        state,
        started_at: "2026-12-01T13:00:00.25Z".into(),
        run_id: "run-for-the-test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_against_the_frozen_0_1_0_wit_runs_on_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let p = rt.load_file(&plugin("probe-v01")).await.unwrap();
    assert_eq!(p.info().wit_version, "0.1.0");
    assert!(
        p.info()
            .imports
            .iter()
            .all(|i| i.starts_with("sluice:connector/") && i.ends_with("@0.1.0")),
        "{:?}",
        p.info().imports
    );
    // The manifest crossed the conversion whole.
    let m = p.manifest();
    assert_eq!((m.id.as_str(), m.memory_mib), ("probe-v01", Some(16)));
    assert_eq!(m.secrets[0].name, "token");
    assert_eq!(m.streams[0].cursor_field.as_deref(), Some("id"));

    assert_eq!(
        p.validate(&json!({}), opts()).await.unwrap(),
        json!({"wit": "0.1.0"})
    );
    // http.fetch, with a secret header injected by the host.
    let seen = Arc::new(Mutex::new(None::<String>));
    let app = Router::new().route(
        "/hello",
        get({
            let seen = seen.clone();
            move |headers: HeaderMap| async move {
                *seen.lock().unwrap() = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                ([("x-upstream", "yes")], "hi from upstream")
            }
        }),
    );
    let url = format!("http://{}/hello", serve(app).await);
    let answer = p
        .validate(
            &json!({"action": "fetch", "url": url, "inject": true}),
            opts(),
        )
        .await
        .unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "hi from upstream");
    assert_eq!(
        seen.lock().unwrap().as_deref(),
        Some("Bearer v01-secret-token")
    );
    // An http-error comes back as the 0.1.0 variant: a destination the plugin did not declare.
    let e = p
        .validate(&json!({"action": "fetch", "url": "not a url"}), opts())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Connector { code: ErrorCode::Unreachable, message } if message.contains("InvalidRequest(\"bad URL")),
        "{e:?}"
    );
    // secrets.get, and its error variant.
    let answer = p.validate(&json!({"action": "secret"}), opts()).await;
    assert_eq!(answer.unwrap(), json!({"length": 16}));
    let e = p
        .validate(&json!({"action": "secret", "name": "other"}), opts())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Connector { code: ErrorCode::InvalidConfig, message } if message.contains("Undeclared(\"other\")")),
        "{e:?}"
    );
    // log.log.
    assert_eq!(
        p.validate(&json!({"action": "log", "message": "hello"}), opts())
            .await
            .unwrap(),
        json!({})
    );
    // A connector-error of the old world keeps its code and message.
    let e = p
        .validate(&json!({"action": "nope"}), opts())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Connector { code: ErrorCode::InvalidConfig, message } if message.contains("unknown action")),
        "{e:?}"
    );
    let streams = p.discover(&json!({}), opts()).await.unwrap();
    assert_eq!(streams[0].name, "items");
    assert_eq!(streams[0].primary_key, vec!["id".to_string()]);

    // records.emit and records.checkpoint, and a state handed back.
    let sink = Collect::default();
    p.sync(
        request(json!({"count": 25, "batch": 10}), vec![]),
        Box::new(sink.clone()),
        opts(),
    )
    .await
    .unwrap();
    let (records, states) = sink.0.lock().unwrap().clone();
    assert_eq!(records.len(), 25);
    assert_eq!(
        states,
        [10, 20, 25]
            .iter()
            .map(|c| ("items".to_string(), json!({"cursor": c})))
            .collect::<Vec<_>>()
    );
    let sink = Collect::default();
    p.sync(
        request(
            json!({"count": 3}),
            vec![("items".into(), json!({"cursor": 25}))],
        ),
        Box::new(sink.clone()),
        opts(),
    )
    .await
    .unwrap();
    let ids: Vec<u64> = sink
        .0
        .lock()
        .unwrap()
        .0
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(r).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, [26, 27, 28]);
    // An emit-error comes back as the 0.1.0 variant.
    let e = p
        .sync(
            request(json!({"stream": "elsewhere"}), vec![]),
            Box::new(Collect::default()),
            opts(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Connector { message, .. } if message.contains("UnknownStream(\"elsewhere\")")),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_2_0_component_gets_started_at_run_id_and_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let p = rt.load_file(&plugin("probe")).await.unwrap();
    assert_eq!(p.info().wit_version, "0.2.1");
    assert!(
        p.info()
            .imports
            .iter()
            .any(|i| i == "sluice:connector/clock@0.2.1"),
        "{:?}",
        p.info().imports
    );
    let before = now_ms();
    let answer = p
        .validate(&json!({"action": "clock"}), opts())
        .await
        .unwrap();
    let after = now_ms();
    let guest = answer["now_ms"].as_u64().unwrap();
    assert!(
        (before..=after).contains(&guest),
        "{before} <= {guest} <= {after}"
    );

    let sink = Collect::default();
    p.sync(
        request(json!({"count": 3, "stamp": true}), vec![]),
        Box::new(sink.clone()),
        opts(),
    )
    .await
    .unwrap();
    let (_, states) = sink.0.lock().unwrap().clone();
    let (_, state) = states.last().unwrap();
    assert_eq!(state["started_at"], "2026-12-01T13:00:00.25Z");
    assert_eq!(state["run_id"], "run-for-the-test");
    assert!(state["now_ms"].as_u64().unwrap() >= after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_the_host_does_not_serve_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let e = rt
        .load_file(&plugin("wrong-world"))
        .await
        .err()
        .expect("9.0.0 is refused");
    assert!(matches!(e, LoadError::IncompatibleWorld(_)), "{e:?}");
    let text = e.to_string();
    for needle in [
        "sluice:connector@9.0.0",
        "sluice:connector@0.2.1",
        "sluice:connector@0.1.0",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text:?}");
    }
}

/// A `sluice serve` with these plugin files (name → path), storing locally.
async fn start(root: &Path, plugins: &[(&str, PathBuf)]) -> Service {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, path) in plugins {
        std::fs::copy(path, dir.join(format!("{name}.wasm"))).unwrap();
    }
    Service::start(&root.join("data"), &dir, &[]).await
}

fn storage() -> Value {
    json!({"bucket": "sluice-local", "prefix": "mirror"})
}

async fn run(
    svc: &Service,
    connection: &str,
    connector: &str,
    config: Value,
    token: &str,
) -> Value {
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&json!({"connection_id": connection, "connector": connector, "config": config, "credentials": {"token": token}, "storage": storage()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    let id = run_id_of(r).await;
    let done = svc.wait_run(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", svc.logs());
    done
}

fn connection_dir(svc: &Service, connection: &str) -> PathBuf {
    svc.data_dir
        .join("storage/sluice-local/mirror")
        .join(connection)
}

fn committed_state(svc: &Service, connection: &str) -> Value {
    let path = connection_dir(svc, connection).join("_state.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn records(run: &Value, stream: &str) -> u64 {
    run["streams"][stream]["records"].as_u64().unwrap_or(0)
}

async fn wit_version(svc: &Service, connector: &str) -> Value {
    let r = svc
        .get(&format!("/internal/connectors/{connector}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["wit_version"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_versions_sync_end_to_end_in_one_service() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(
        root.path(),
        &[
            ("probe-v01", plugin("probe-v01")),
            ("probe", plugin("probe")),
        ],
    )
    .await;
    assert_eq!(wit_version(&svc, "probe-v01").await, "0.1.0");
    assert_eq!(wit_version(&svc, "probe").await, "0.2.1");

    // 0.1.0: records committed, state committed and handed back to the next run.
    let first = run(
        &svc,
        "old",
        "probe-v01",
        json!({"count": 250, "batch": 100}),
        "t",
    )
    .await;
    assert_eq!(records(&first, "items"), 250);
    assert_eq!(
        committed_state(&svc, "old")["streams"]["items"],
        json!({"cursor": 250})
    );
    let second = run(&svc, "old", "probe-v01", json!({"count": 7}), "t").await;
    assert_eq!(records(&second, "items"), 7);
    assert_eq!(
        committed_state(&svc, "old")["streams"]["items"],
        json!({"cursor": 257})
    );
    let files = connection_dir(&svc, "old").join("items/*.parquet");
    let db = duckdb::Connection::open_in_memory().unwrap();
    let (n, distinct, lo, hi, named): (i64, i64, i64, i64, i64) = db
        .query_row(
            &format!(
                "SELECT count(*), count(DISTINCT id), min(id), max(id), count(*) FILTER (WHERE name = 'item-' || id) FROM read_parquet('{}')",
                files.display()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!((n, distinct, lo, hi, named), (257, 257, 1, 257, 257));

    // 0.2.0: started-at is the start the run's committed manifest records, run-id the run's
    // id, and the clock reads within the run.
    let done = run(
        &svc,
        "new",
        "probe",
        json!({"count": 5, "stamp": true}),
        "t",
    )
    .await;
    let run_id = done["run_id"].as_str().unwrap();
    let state = &committed_state(&svc, "new")["streams"]["items"];
    assert_eq!(state["cursor"], 5);
    assert_eq!(state["run_id"], run_id, "{state}\n{done}");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(connection_dir(&svc, "new").join(format!("_runs/{run_id}.json"))).unwrap(),
    )
    .unwrap();
    let started = state["started_at"].as_str().unwrap();
    assert_eq!(started, manifest["started_at"], "{manifest}");
    assert!(started.ends_with('Z'), "UTC: {started}");
    let (queued_to_running, started, finished) = (
        rfc3339_ms(done["started_at"].as_str().unwrap()),
        rfc3339_ms(started),
        rfc3339_ms(manifest["finished_at"].as_str().unwrap()),
    );
    let guest = state["now_ms"].as_u64().unwrap();
    assert!(
        queued_to_running <= started && started <= guest && guest <= finished,
        "{queued_to_running} <= {started} <= {guest} <= {finished}"
    );
}

/// Newest `updated_at` per repository.
fn newest_per_repo<'a>(items: impl Iterator<Item = (&'a str, i64)>) -> BTreeMap<String, i64> {
    let mut newest = BTreeMap::new();
    for (repo, t) in items {
        let e = newest.entry(repo.to_string()).or_insert(t);
        *e = (*e).max(t);
    }
    newest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_github_plugin_built_before_0_2_0_still_loads_and_syncs() {
    an_old_github_build_loads_and_syncs(github_0_1_0(), "0.1.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_github_plugin_built_before_0_2_1_still_loads_and_syncs() {
    an_old_github_build_loads_and_syncs(github_0_2_0(), "0.2.0").await;
}

/// The records of today's GitHub connector, which emits issues field by field, are the 0.2.0
/// build's, which emitted their JSON text: every column of every issue, by DuckDB (`EXCEPT
/// ALL` both ways, the run's own columns aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_emitted_field_by_field_are_the_issues_emitted_as_text() {
    let gh = FakeGithub::start(GithubConfig {
        repos: 2,
        issues: 700,
        pr_every: 5,
        ..Default::default()
    })
    .await;
    // Two services: both builds are the connector `github`.
    let config = json!({"api_url": gh.url, "organization": "acme"});
    let (mut counts, mut dirs, mut roots) = (Vec::new(), Vec::new(), Vec::new());
    for (wasm, version) in [(github_0_2_0(), "0.2.0"), (plugin("github"), "0.2.1")] {
        let root = tempfile::tempdir().unwrap();
        let svc = start(root.path(), &[("github", wasm)]).await;
        assert_eq!(wit_version(&svc, "github").await, version);
        let body = json!({"connection_id": "gh", "connector": "github", "config": config,
            "streams": ["issues"], "credentials": {"token": gh.token()}, "storage": storage()});
        let done = svc.run_to_end(&body).await;
        assert_eq!(done["status"], "succeeded", "{done}\n{}", svc.logs());
        counts.push(done["streams"]["issues"].clone());
        dirs.push(connection_dir(&svc, "gh").join("issues/*.parquet"));
        roots.push((root, svc));
    }
    assert_eq!(counts[0], counts[1], "records, bytes and invalid rows");
    let plain = gh.data().plain_issues().len() as i64;
    let db = duckdb::Connection::open_in_memory().unwrap();
    let table = |files: &PathBuf| {
        format!(
            "(SELECT * EXCLUDE (_sluice_run_id, _sluice_extracted_at) FROM read_parquet('{}'))",
            files.display()
        )
    };
    let (old, new) = (table(&dirs[0]), table(&dirs[1]));
    let (n, only_old, only_new): (i64, i64, i64) = db
        .query_row(
            &format!(
                "SELECT (SELECT count(*) FROM {new}), \
                 (SELECT count(*) FROM ({old} EXCEPT ALL {new})), \
                 (SELECT count(*) FROM ({new} EXCEPT ALL {old}))"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((n, only_old, only_new), (plain, 0, 0));
}

/// An earlier build of the GitHub connector (`wasm`, built against `version`) loads, validates
/// and syncs every stream, and its next run is incremental.
async fn an_old_github_build_loads_and_syncs(wasm: PathBuf, version: &str) {
    let out = std::process::Command::new(sluice_bin())
        .args(["plugin", "inspect"])
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["wit_version"], version);
    assert_eq!(v["manifest"]["id"], "github");
    let imports = v["imports"].as_array().unwrap();
    assert!(!imports.is_empty());
    assert!(
        imports
            .iter()
            .all(|i| i.as_str().unwrap().ends_with(&format!("@{version}"))),
        "{v}"
    );

    let gh = FakeGithub::start(GithubConfig {
        repos: 3,
        issues: 600,
        pr_every: 4,
        comments: 200,
        commits: 150,
        ..Default::default()
    })
    .await;
    let before = gh.data();
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[("github", wasm)]).await;
    assert_eq!(wit_version(&svc, "github").await, version);
    let config = json!({"api_url": gh.url, "organization": "acme"});

    let r = svc
        .post("/internal/mirror-connections/validate")
        .json(
            &json!({"connector": "github", "config": config, "credentials": {"token": gh.token()}}),
        )
        .send()
        .await
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["valid"], true, "{answer}");

    let first = run(&svc, "gh", "github", config.clone(), gh.token()).await;
    let plain = before.plain_issues();
    let pulls = before.pulls();
    assert_eq!(records(&first, "repositories"), 4, "3 and the empty one");
    assert_eq!(records(&first, "issues"), plain.len() as u64);
    assert_eq!(records(&first, "pull_requests"), pulls.len() as u64);
    assert_eq!(records(&first, "commits"), before.commits.len() as u64);
    assert_eq!(
        records(&first, "issue_comments"),
        before.comments.len() as u64
    );
    let state = committed_state(&svc, "gh");
    assert_eq!(
        state["streams"]["issues"]["repos"]
            .as_object()
            .map(|o| o.len()),
        Some(3),
        "{state}"
    );

    // The committed state goes back in: the second run brings what changed since the cursors.
    let cursor = newest_per_repo(
        before
            .issues
            .iter()
            .map(|i| (i.repo.as_str(), i.updated_at)),
    );
    let touched = gh.touch(12);
    let after = gh.data();
    let want: BTreeSet<u64> = after
        .plain_issues()
        .iter()
        .filter(|i| i.updated_at >= cursor[&i.repo])
        .map(|i| i.id)
        .collect();
    let touched_plain: BTreeSet<u64> = touched
        .iter()
        .filter(|i| !i.is_pull_request())
        .map(|i| i.id)
        .collect();
    assert!(!touched_plain.is_empty() && touched_plain.is_subset(&want));
    let second = run(&svc, "gh", "github", config, gh.token()).await;
    assert_eq!(records(&second, "issues"), want.len() as u64, "{second}");
    assert!(
        records(&second, "issues") < plain.len() as u64,
        "an incremental run, not a full one"
    );
}
