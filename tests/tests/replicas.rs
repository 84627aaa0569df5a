//! Issue 14: `sluice serve` replicas sharing runs through PostgreSQL (`DATABASE_URL`), with
//! leases and fencing. Each test starts its own PostgreSQL cluster (`sluice_tests::postgres`,
//! Debian's server as a non-root user on loopback), its own fake GitHub and two or three
//! replicas (each with its own `SLUICE_DATA_DIR`) writing to the real S3 server (Garage, started
//! by scripts/dev.sh test). What is committed is read from the bucket: `_state.json` names the
//! committed commit ids (`{run_id}` for attempt 1, `{run_id}.a{n}` after), their manifests name
//! the Parquet files, DuckDB reads the rows.
//!
//! The tests run one at a time (a lock below): each starts several services, and leases of two
//! or three seconds must not expire because other tests starve the two cores.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_storage::Store;
use sluice_tests::fakes::github::{FakeGithub, GithubConfig, GithubHandle};
use sluice_tests::postgres::PgServer;
use sluice_tests::s3::{AK, BUCKET, SK, bucket, endpoint, unique_prefix};
use sluice_tests::{Service, plugin, run_id_of};

/// `SLUICE_RUN_SECRETS_KEY`: 32 bytes in hex, the same on every replica.
const SECRETS_KEY: &str = "00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef";
const RUNS: &str = "/internal/mirror-connections/runs";

/// One test of this file at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Replicas sharing one PostgreSQL and one bucket prefix.
struct Cluster {
    replicas: Vec<Service>,
    pg: PgServer,
    prefix: String,
    root: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` replicas `r0` … at once (their migrations race, as in a rollout) and waits
    /// until each is ready.
    async fn start(name: &str, n: usize, env: &[(&str, &str)]) -> Self {
        Self::start_on(name, vec![endpoint(); n], env).await
    }

    /// As [`Cluster::start`], replica `i` reaching S3 at `s3[i]`.
    async fn start_on(name: &str, s3: Vec<String>, env: &[(&str, &str)]) -> Self {
        let pg = PgServer::start();
        let root = tempfile::tempdir().unwrap();
        let plugins = root.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::copy(plugin("github"), plugins.join("github.wasm")).unwrap();
        let url = pg.url();
        let replicas: Vec<Service> = (0..s3.len())
            .map(|i| {
                let id = format!("r{i}");
                let mut all: Vec<(&str, &str)> = vec![
                    ("DATABASE_URL", url.as_str()),
                    ("SLUICE_RUN_SECRETS_KEY", SECRETS_KEY),
                    ("SLUICE_REPLICA_ID", id.as_str()),
                    ("S3_ENDPOINT", s3[i].as_str()),
                    ("SLUICE_MAX_QUEUED_RUNS", "64"),
                ];
                all.extend_from_slice(env);
                Service::spawn(&root.path().join(&id), &plugins, &all)
            })
            .collect();
        for r in &replicas {
            r.wait_ready().await;
        }
        Self {
            replicas,
            pg,
            prefix: unique_prefix(name),
            root,
        }
    }

    fn index_of(&self, replica_id: &str) -> usize {
        replica_id
            .strip_prefix('r')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&i| i < self.replicas.len())
            .unwrap_or_else(|| panic!("unknown replica id {replica_id:?}"))
    }

    fn storage(&self) -> Value {
        json!({"bucket": BUCKET, "prefix": self.prefix, "access_key_id": AK, "secret_access_key": SK})
    }

    /// A sync of the `issues` stream of every repository of `gh` into `connection`.
    fn body(&self, gh: &GithubHandle, connection: &str) -> Value {
        json!({
            "connection_id": connection, "connector": "github", "streams": ["issues"],
            "config": {"api_url": gh.url, "repositories": gh.repositories()},
            "credentials": {"token": gh.token()},
            "storage": self.storage(),
        })
    }

    /// Every replica's log, for assertion messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, r) in self.replicas.iter().enumerate() {
            let log = r.logs();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            out.push_str(&format!("--- r{i} (last lines)\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    fn staging(&self, i: usize) -> PathBuf {
        self.replicas[i].data_dir.join("staging")
    }

    fn key(&self, connection: &str, rest: &str) -> String {
        format!("{}/{connection}/{rest}", self.prefix)
    }

    /// The connection's `_state.json`, if anything was committed.
    async fn state(&self, connection: &str) -> Option<Value> {
        let bytes = bucket()
            .get_bytes(&self.key(connection, "_state.json"))
            .await
            .unwrap()?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    /// The entries of `_state.json`'s `runs` that are commits of `run_id`.
    async fn commits_of(&self, connection: &str, run_id: &str) -> Vec<String> {
        let Some(state) = self.state(connection).await else {
            return vec![];
        };
        commits_in(&state, run_id)
    }

    /// The `id` of every row of `stream` that the committed manifests of `connection` name
    /// (duplicates kept), read from the Parquet files with DuckDB.
    async fn committed_ids(&self, connection: &str, stream: &str) -> Vec<i64> {
        let Some(state) = self.state(connection).await else {
            return vec![];
        };
        let store = bucket();
        let dir = self.root.path().join("download").join(connection);
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = vec![];
        for commit in state["runs"].as_array().unwrap() {
            let commit = commit.as_str().unwrap();
            let key = self.key(connection, &format!("_runs/{commit}.json"));
            let manifest: Value = serde_json::from_slice(
                &store
                    .get_bytes(&key)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{key}: named by _state.json but missing")),
            )
            .unwrap();
            for f in manifest["streams"][stream]["files"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let key = f["key"].as_str().unwrap();
                let bytes = store
                    .get_bytes(key)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{key}: named by a manifest but missing"));
                let path = dir.join(format!("{}.parquet", files.len()));
                std::fs::write(&path, bytes).unwrap();
                files.push(path);
            }
        }
        if files.is_empty() {
            return vec![];
        }
        let list = files
            .iter()
            .map(|p| format!("'{}'", p.display()))
            .collect::<Vec<_>>()
            .join(", ");
        let db = duckdb::Connection::open_in_memory().unwrap();
        let mut stmt = db
            .prepare(&format!(
                "SELECT id FROM read_parquet([{list}], union_by_name = true)"
            ))
            .unwrap();
        stmt.query_map([], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Asserts that `connection` holds every issue of `gh` exactly once after primary-key
    /// dedup, and nothing else.
    async fn assert_issues_complete(&self, gh: &GithubHandle, connection: &str) {
        let ids = self.committed_ids(connection, "issues").await;
        let got: BTreeSet<i64> = ids.iter().copied().collect();
        let want: BTreeSet<i64> = gh
            .data()
            .plain_issues()
            .iter()
            .map(|i| i.id as i64)
            .collect();
        assert!(!want.is_empty());
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&want).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{connection}: {} distinct ids committed, {} expected; missing e.g. {missing:?}, unknown e.g. {extra:?}",
            got.len(),
            want.len()
        );
    }
}

/// The entries of a `_state.json` `runs` array that are commits of `run_id` (`{run_id}` or
/// `{run_id}.a{n}`).
fn commits_in(state: &Value, run_id: &str) -> Vec<String> {
    state["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|c| *c == run_id || c.starts_with(&format!("{run_id}.a")))
        .map(str::to_string)
        .collect()
}

/// A fake GitHub with `issues` plain issues over two repositories, each listing page answered
/// after `page_delay_ms`. A full sync reads [`issue_pages`] pages one after the other.
async fn github(issues: usize, page_delay_ms: u64) -> GithubHandle {
    FakeGithub::start(GithubConfig {
        repos: 2,
        empty_repo: false,
        issues,
        pr_every: 0,
        comments: 0,
        commits: 0,
        page_delay: Duration::from_millis(page_delay_ms),
        ..Default::default()
    })
    .await
}

/// Pages of 100 one full sync of the issues stream reads.
fn issue_pages(gh: &GithubHandle) -> u64 {
    let data = gh.data();
    let mut per_repo: BTreeMap<String, u64> = BTreeMap::new();
    for r in &data.repos {
        per_repo.insert(r.full_name.clone(), 0);
    }
    for i in data.plain_issues() {
        *per_repo.entry(i.repo.clone()).or_default() += 1;
    }
    per_repo.values().map(|n| n.div_ceil(100).max(1)).sum()
}

async fn submit(svc: &Service, body: &Value) -> String {
    let r = svc.post(RUNS).json(body).send().await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    run_id_of(r).await
}

/// A run's record as `svc` answers it; `None` when it does not answer 200 (e.g. while
/// PostgreSQL restarts).
async fn record(svc: &Service, run_id: &str) -> Option<Value> {
    let r = svc
        .get(&format!("{RUNS}/{run_id}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

fn is_terminal(r: &Value) -> bool {
    matches!(
        r["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// Polls the run's record on `svc` until `done` holds, for at most `limit`.
async fn wait_until(
    cx: &Cluster,
    svc: &Service,
    run_id: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        if let Some(r) = record(svc, run_id).await {
            if done(&r) {
                return r;
            }
            last = Some(r);
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id}: not {what} within {limit:?}; last record {last:?}\n{}",
            cx.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_terminal(cx: &Cluster, svc: &Service, run_id: &str) -> Value {
    wait_until(
        cx,
        svc,
        run_id,
        Duration::from_secs(300),
        "ended",
        is_terminal,
    )
    .await
}

/// Waits until the run executes and returns the index of the replica executing it.
async fn executing_replica(cx: &Cluster, svc: &Service, run_id: &str) -> usize {
    let r = wait_until(
        cx,
        svc,
        run_id,
        Duration::from_secs(60),
        "running on a replica",
        |r| r["status"] == "running" && r["replica"].is_string(),
    )
    .await;
    cx.index_of(r["replica"].as_str().unwrap())
}

/// Waits until the fake answered at least `n` issue pages in all.
async fn wait_pages(cx: &Cluster, gh: &GithubHandle, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while gh.counters.on("issues") < n {
        assert!(
            Instant::now() < deadline,
            "only {} issue pages read, waiting for {n}\n{}",
            gh.counters.on("issues"),
            cx.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until replica `i` holds no staging for `run_id` (under any attempt's name): the
/// attempt it executed has ended there, whatever became of it.
async fn wait_staging_gone(cx: &Cluster, i: usize, run_id: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<String> = std::fs::read_dir(cx.staging(i))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(run_id))
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "r{i} still stages {left:?} {limit:?} later\n{}",
            cx.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn committed_rows(run: &Value) -> u64 {
    run["streams"]["issues"]["committed_rows"]
        .as_u64()
        .unwrap_or(0)
}

/// Every replica reports the run `succeeded` by its second attempt, on replica `r{y}`; the records.
async fn succeeded_on_second_attempt(cx: &Cluster, run_id: &str, y: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for r in &cx.replicas {
        let rec = record(r, run_id).await.unwrap();
        assert_eq!(
            (&rec["status"], &rec["attempts"], &rec["replica"]),
            (&json!("succeeded"), &json!(2), &json!(format!("r{y}"))),
            "{rec}"
        );
        out.push(rec);
    }
    out
}

/// Waits (at most `limit`) for a service process to exit; its exit status.
async fn exit_of(svc: &mut Service, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = svc.child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still running after {limit:?}:\n{}",
            svc.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_runs_round_robin_on_three_replicas_each_commit_exactly_once() {
    let _serial = SERIAL.lock().await;
    let gh = github(400, 200).await;
    let cx = Cluster::start("replicas-thirty", 3, &[]).await;
    let body = |i: usize| cx.body(&gh, &format!("conn-{i}"));

    let mut ids = vec![];
    for i in 0..30 {
        ids.push(submit(&cx.replicas[i % 3], &body(i)).await);
    }
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        30,
        "30 distinct runs"
    );
    let mut ran_on: BTreeMap<String, usize> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        // Read through another replica than the one that took the request.
        let run = wait_terminal(&cx, &cx.replicas[(i + 1) % 3], id).await;
        assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
        assert_eq!(run["attempts"], 1, "{run}");
        assert_eq!(run["connection_id"], format!("conn-{i}"));
        // The selection as the request spelled it, through PostgreSQL's jsonb.
        assert_eq!(run["requested_streams"], json!(["issues"]), "{run}");
        assert_eq!(committed_rows(&run), 400, "{run}");
        let replica = run["replica"].as_str().unwrap_or_else(|| panic!("{run}"));
        cx.index_of(replica);
        *ran_on.entry(replica.to_string()).or_default() += 1;
        // Every replica answers the same record.
        for r in &cx.replicas {
            let seen = record(r, id).await.unwrap();
            assert_eq!(
                (&seen["status"], &seen["replica"], &seen["attempts"]),
                (&run["status"], &run["replica"], &run["attempts"])
            );
        }
    }
    assert_eq!(
        ran_on.len(),
        3,
        "every replica executed runs (each has 2 slots; a run reads 4 pages of 200 ms): {ran_on:?}"
    );

    let store = bucket();
    for (i, id) in ids.iter().enumerate() {
        let conn = format!("conn-{i}");
        let state = cx
            .state(&conn)
            .await
            .unwrap_or_else(|| panic!("{conn}: nothing committed"));
        assert_eq!(
            state["runs"],
            json!([id]),
            "{conn}: committed exactly once, as attempt 1"
        );
        let manifests = store.list(&cx.key(&conn, "_runs/")).await.unwrap();
        assert_eq!(
            manifests,
            vec![cx.key(&conn, &format!("_runs/{id}.json"))],
            "{conn}: one manifest, no stray attempt"
        );
        let rows = cx.committed_ids(&conn, "issues").await;
        assert_eq!(rows.len(), 400, "{conn}: every row once");
        cx.assert_issues_complete(&gh, &conn).await;
    }

    // Schema-sync answers through any replica, from what the others committed.
    let r = cx.replicas[2]
        .post("/internal/mirror-connections/schema-sync")
        .json(&json!({"connection_id": "conn-0", "connector": "github", "storage": cx.storage()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let catalog: Value = r.json().await.unwrap();
    let issues = catalog["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "issues")
        .cloned()
        .unwrap_or_else(|| panic!("{catalog}"));
    assert_eq!(issues["row_count"], 400, "{issues}");

    // Every replica lists the same 30 runs.
    let want: BTreeSet<String> = ids.iter().cloned().collect();
    for (i, r) in cx.replicas.iter().enumerate() {
        let resp = r.get(RUNS).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        let got: BTreeSet<String> = v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["run_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "r{i} lists every run of the cluster");
        let one: Value = r
            .get(&format!("{RUNS}?connection_id=conn-7"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(one["runs"].as_array().unwrap().len(), 1, "r{i}: {one}");
        assert_eq!(one["runs"][0]["run_id"], json!(ids[7]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_a_killed_replica_finishes_on_another_with_every_record_once() {
    let _serial = SERIAL.lock().await;
    let gh = github(2000, 250).await;
    let pages = issue_pages(&gh);
    let mut cx = Cluster::start("replicas-kill", 3, &[("SLUICE_LEASE_SECS", "3")]).await;
    let run_id = submit(&cx.replicas[0], &cx.body(&gh, "killed")).await;
    let x = executing_replica(&cx, &cx.replicas[0], &run_id).await;
    // Mid-sync: a few pages read, most still ahead.
    wait_pages(&cx, &gh, 3).await;
    assert!(gh.counters.on("issues") < pages, "the run is still reading");
    cx.replicas[x].signal("KILL");
    let killed_at = Instant::now();

    let other = (x + 1) % 3;
    let run = wait_terminal(&cx, &cx.replicas[other], &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
    assert_eq!(run["attempts"], 2, "{run}");
    let replica = run["replica"].as_str().unwrap();
    assert_ne!(cx.index_of(replica), x, "{run}");
    eprintln!(
        "taken over and finished {:?} after the kill",
        killed_at.elapsed()
    );
    assert_eq!(
        cx.commits_of("killed", &run_id).await,
        vec![format!("{run_id}.a2")],
        "committed exactly once, as attempt 2"
    );
    assert!(
        gh.counters.on("issues") >= pages + 3,
        "attempt 2 read the issues again"
    );
    cx.assert_issues_complete(&gh, "killed").await;
    assert_eq!(
        committed_rows(&run) as usize,
        gh.data().plain_issues().len()
    );

    // The survivors keep serving the connection.
    let next = submit(&cx.replicas[other], &cx.body(&gh, "killed")).await;
    let run = wait_terminal(&cx, &cx.replicas[(x + 2) % 3], &next).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
    assert_eq!(cx.commits_of("killed", &next).await, vec![next.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_past_its_lease_commits_nothing_over_the_takeover() {
    let _serial = SERIAL.lock().await;
    let gh = github(2000, 250).await;
    let pages = issue_pages(&gh);
    let cx = Cluster::start("replicas-stop", 2, &[("SLUICE_LEASE_SECS", "2")]).await;
    let conn = "stalled";
    let run_id = submit(&cx.replicas[0], &cx.body(&gh, conn)).await;
    let x = executing_replica(&cx, &cx.replicas[0], &run_id).await;
    let y = 1 - x;
    // Stop it late in its sync: once it wakes up it has little left to read before it tries
    // to commit.
    wait_pages(&cx, &gh, pages * 2 / 3).await;
    cx.replicas[x].send_signal("STOP");
    let stopped_at = Instant::now();

    let run = wait_terminal(&cx, &cx.replicas[y], &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
    assert_eq!(run["attempts"], 2, "{run}");
    assert_eq!(run["replica"], format!("r{y}"), "{run}");
    eprintln!(
        "taken over and finished {:?} after the stop",
        stopped_at.elapsed()
    );
    let state = cx.state(conn).await.unwrap();
    assert_eq!(commits_in(&state, &run_id), vec![format!("{run_id}.a2")]);

    // The stale replica wakes up with its attempt 1 half done.
    cx.replicas[x].send_signal("CONT");
    wait_staging_gone(&cx, x, &run_id, Duration::from_secs(120)).await;
    // It has ended its attempt there: whatever it tried, nothing changed.
    let after = cx.state(conn).await.unwrap();
    assert_eq!(after, state, "the stale attempt changed _state.json");
    for rec in succeeded_on_second_attempt(&cx, &run_id, y).await {
        assert_eq!(committed_rows(&rec), committed_rows(&run), "{rec}");
    }
    let ids = cx.committed_ids(conn, "issues").await;
    assert_eq!(ids.len(), gh.data().plain_issues().len(), "every row once");
    cx.assert_issues_complete(&gh, conn).await;

    // The woken replica is a working member again: it takes the connection's next run.
    let next = submit(&cx.replicas[x], &cx.body(&gh, conn)).await;
    let done = wait_terminal(&cx, &cx.replicas[y], &next).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", cx.logs());
    let last = cx.state(conn).await.unwrap();
    assert_eq!(commits_in(&last, &run_id), vec![format!("{run_id}.a2")]);
    assert_eq!(commits_in(&last, &next), vec![next.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_complete_when_postgres_restarts_mid_run() {
    let _serial = SERIAL.lock().await;
    let gh = github(1500, 250).await;
    let mut cx = Cluster::start("replicas-pg-restart", 2, &[("SLUICE_LEASE_SECS", "3")]).await;
    let mut ids = vec![];
    for i in 0..4 {
        let conn = format!("pg-{i}");
        ids.push((
            conn.clone(),
            submit(&cx.replicas[i % 2], &cx.body(&gh, &conn)).await,
        ));
    }
    for (_, id) in &ids {
        executing_replica(&cx, &cx.replicas[0], id).await;
    }
    wait_pages(&cx, &gh, 4).await;
    tokio::task::block_in_place(|| cx.pg.restart());
    let restarted = Instant::now();

    for (i, (conn, id)) in ids.iter().enumerate() {
        let run = wait_terminal(&cx, &cx.replicas[(i + 1) % 2], id).await;
        assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
        assert_eq!(
            cx.commits_of(conn, id).await.len(),
            1,
            "{conn}: committed exactly once: {:?}",
            cx.state(conn).await
        );
        cx.assert_issues_complete(&gh, conn).await;
    }
    eprintln!("runs done {:?} after the restart", restarted.elapsed());

    // Both replicas work against the restarted server: submissions, claims, records.
    for i in 0..2 {
        let conn = format!("pg-after-{i}");
        let id = submit(&cx.replicas[i], &cx.body(&gh, &conn)).await;
        let run = wait_terminal(&cx, &cx.replicas[1 - i], &id).await;
        assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
        assert_eq!(cx.commits_of(&conn, &id).await, vec![id.clone()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_one_replica_stops_the_run_on_another() {
    let _serial = SERIAL.lock().await;
    let gh = github(2000, 250).await;
    let cx = Cluster::start("replicas-cancel", 2, &[]).await;
    let conn = "cancel-me";
    for round in 0..2 {
        let run_id = submit(&cx.replicas[round], &cx.body(&gh, conn)).await;
        let x = executing_replica(&cx, &cx.replicas[round], &run_id).await;
        let before = gh.counters.on("issues");
        wait_pages(&cx, &gh, before + 2).await;
        let y = 1 - x;
        let sent = Instant::now();
        let r = cx.replicas[y]
            .post(&format!("{RUNS}/{run_id}/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // The answer says the cancel was accepted, though another replica runs it.
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["cancel_requested"], true, "{answer}");
        let run = wait_until(
            &cx,
            &cx.replicas[y],
            &run_id,
            Duration::from_secs(5),
            "cancelled",
            is_terminal,
        )
        .await;
        assert_eq!(run["status"], "cancelled", "{run}");
        // The executing replica stopped its attempt (its staging is gone) promptly.
        wait_staging_gone(&cx, x, &run_id, Duration::from_secs(5)).await;
        eprintln!(
            "round {round}: cancelled on r{x} via r{y} in {:?}",
            sent.elapsed()
        );
        assert!(
            gh.counters.on("issues") < before + issue_pages(&gh),
            "the run was stopped before it read everything"
        );
        assert!(cx.state(conn).await.is_none(), "nothing committed");
        for r in &cx.replicas {
            let rec = record(r, &run_id).await.unwrap();
            assert_eq!(rec["status"], "cancelled", "{rec}");
            assert_eq!(rec["cancel_requested"], true, "{rec}");
        }
    }
    // The connection is free again.
    let run_id = submit(&cx.replicas[1], &cx.body(&gh, conn)).await;
    let run = wait_terminal(&cx, &cx.replicas[0], &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
    assert_eq!(cx.commits_of(conn, &run_id).await, vec![run_id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_hold_across_replicas() {
    let _serial = SERIAL.lock().await;
    let gh = github(200, 0).await;
    let cx = Cluster::start("replicas-idempotency", 2, &[]).await;
    let post = |i: usize, key: &str, body: &Value| {
        cx.replicas[i]
            .post(RUNS)
            .header("idempotency-key", key)
            .json(body)
            .send()
    };
    let body = cx.body(&gh, "idem-1");
    let first = post(0, "key-one", &body).await.unwrap();
    assert_eq!(first.status(), 202);
    let id = run_id_of(first).await;
    for i in [1, 0, 1] {
        let again = post(i, "key-one", &body).await.unwrap();
        assert_eq!(again.status(), 202, "r{i}");
        assert_eq!(run_id_of(again).await, id, "r{i} answers the same run");
    }
    for i in [1, 0] {
        let other = post(i, "key-one", &cx.body(&gh, "idem-2")).await.unwrap();
        assert_eq!(other.status(), 422, "r{i}");
        let v: Value = other.json().await.unwrap();
        assert_eq!(v["code"], "idempotency_key_reused", "r{i}: {v}");
    }

    // The same key at the same moment on both replicas: one run.
    let body2 = cx.body(&gh, "idem-3");
    let (a, b) = tokio::join!(post(0, "key-two", &body2), post(1, "key-two", &body2));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (202, 202));
    let (a, b) = (run_id_of(a).await, run_id_of(b).await);
    assert_eq!(a, b, "both replicas answer the same run");

    for (conn, id) in [("idem-1", &id), ("idem-3", &a)] {
        let run = wait_terminal(&cx, &cx.replicas[1], id).await;
        assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
        let state = cx.state(conn).await.unwrap();
        assert_eq!(
            state["runs"],
            json!([id]),
            "{conn}: one run, committed once"
        );
    }
    assert!(
        cx.state("idem-2").await.is_none(),
        "the refused body ran nothing"
    );
}

/// A row whose record no longer reads as a run (written by hand or by another version) is
/// absent to the API — 404 for it, a list without it — not a database failure (it was a 503),
/// and runs go on being claimed and committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_run_row_is_absent_not_a_database_failure() {
    let _serial = SERIAL.lock().await;
    let gh = github(200, 0).await;
    let cx = Cluster::start("replicas-unreadable", 1, &[]).await;
    let svc = &cx.replicas[0];
    let id = submit(svc, &cx.body(&gh, "bad-row")).await;
    let run = wait_terminal(&cx, svc, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    cx.pg.psql(&format!(
        "UPDATE sluice_runs SET record = '{{\"not\": \"a run\"}}' WHERE run_id = '{id}'"
    ));
    let one = svc.get(&format!("{RUNS}/{id}")).send().await.unwrap();
    assert_eq!(
        one.status(),
        404,
        "{}",
        one.text().await.unwrap_or_default()
    );
    let list = svc.get(RUNS).send().await.unwrap();
    assert_eq!(list.status(), 200);
    let list: Value = list.json().await.unwrap();
    assert!(!list.to_string().contains(&id), "{list}");
    let next = submit(svc, &cx.body(&gh, "good-row")).await;
    let run = wait_terminal(&cx, svc, &next).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_run_per_connection_across_replicas() {
    let _serial = SERIAL.lock().await;
    let gh = github(1000, 250).await;
    let cx = Cluster::start("replicas-conflict", 2, &[]).await;
    let first = submit(&cx.replicas[0], &cx.body(&gh, "busy")).await;
    let r = cx.replicas[1]
        .post(RUNS)
        .json(&cx.body(&gh, "busy"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "run_active");
    let rec = record(&cx.replicas[1], &first).await.unwrap();
    assert!(
        rec["status"] == "queued" || rec["status"] == "running",
        "the first run was still active: {rec}"
    );

    // Both replicas at once for a fresh connection: one is accepted, the other refused.
    let race = cx.body(&gh, "race");
    let (a, b) = tokio::join!(
        cx.replicas[0].post(RUNS).json(&race).send(),
        cx.replicas[1].post(RUNS).json(&race).send()
    );
    let mut codes = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    codes.sort();
    assert_eq!(codes, [202, 409]);

    let run = wait_terminal(&cx, &cx.replicas[1], &first).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
    // Released: the other replica takes the connection's next run.
    let next = submit(&cx.replicas[1], &cx.body(&gh, "busy")).await;
    let run = wait_terminal(&cx, &cx.replicas[0], &next).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
    let state = cx.state("busy").await.unwrap();
    assert_eq!(state["runs"], json!([first, next]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_needs_the_secrets_key_and_embedded_mode_has_no_replica() {
    let _serial = SERIAL.lock().await;
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin("github"), plugins.join("github.wasm")).unwrap();

    // DATABASE_URL without SLUICE_RUN_SECRETS_KEY: refused at start (no database needed to say so).
    let mut svc = Service::spawn(
        &root.path().join("nokey"),
        &plugins,
        &[(
            "DATABASE_URL",
            "postgres://sluice:sluice@127.0.0.1:1/sluice",
        )],
    );
    let status = exit_of(&mut svc, Duration::from_secs(30), "without a key").await;
    assert!(!status.success());
    assert!(
        svc.logs().contains("SLUICE_RUN_SECRETS_KEY must be set"),
        "{}",
        svc.logs()
    );

    // Embedded mode (no DATABASE_URL): the record has attempts 1 and no replica.
    let gh = github(200, 0).await;
    let s3 = endpoint();
    let svc = Service::start(
        &root.path().join("embedded"),
        &plugins,
        &[("S3_ENDPOINT", &s3)],
    )
    .await;
    let prefix = unique_prefix("replicas-embedded");
    let body = json!({
        "connection_id": "embedded", "connector": "github", "streams": ["issues"],
        "config": {"api_url": gh.url, "repositories": gh.repositories()},
        "credentials": {"token": gh.token()},
        "storage": {"bucket": BUCKET, "prefix": prefix, "access_key_id": AK, "secret_access_key": SK},
    });
    let id = submit(&svc, &body).await;
    let run = svc.wait_run(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempts"], 1, "{run}");
    assert!(run["replica"].is_null(), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_shut_down_hands_its_run_back_to_another() {
    let _serial = SERIAL.lock().await;
    let gh = github(2000, 250).await;
    let pages = issue_pages(&gh);
    // A lease far longer than the test's limits: only a hand-back lets the other replica in.
    let mut cx = Cluster::start(
        "replicas-shutdown",
        2,
        &[
            ("SLUICE_SHUTDOWN_GRACE_SECS", "1"),
            ("SLUICE_LEASE_SECS", "60"),
        ],
    )
    .await;
    let conn = "handed-back";
    let run_id = submit(&cx.replicas[0], &cx.body(&gh, conn)).await;
    let x = executing_replica(&cx, &cx.replicas[0], &run_id).await;
    let y = 1 - x;
    wait_pages(&cx, &gh, 3).await;
    cx.replicas[x].send_signal("TERM");
    let status = exit_of(
        &mut cx.replicas[x],
        Duration::from_secs(20),
        "after SIGTERM (grace 1 s)",
    )
    .await;
    assert!(status.success(), "r{x} exited {status}\n{}", cx.logs());
    assert!(
        gh.counters.on("issues") < pages,
        "the run was still reading when it was handed back"
    );
    // Claimed by the other replica at once (its 60 s lease never ran out).
    wait_until(
        &cx,
        &cx.replicas[y],
        &run_id,
        Duration::from_secs(10),
        "claimed by the remaining replica",
        |r| r["replica"] == format!("r{y}") || is_terminal(r),
    )
    .await;
    let run = wait_terminal(&cx, &cx.replicas[y], &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
    assert_eq!(run["replica"], format!("r{y}"), "{run}");
    eprintln!(
        "handed back and finished on r{y}: attempts {}, committed as {:?}",
        run["attempts"],
        cx.commits_of(conn, &run_id).await
    );
    assert_eq!(
        cx.commits_of(conn, &run_id).await.len(),
        1,
        "committed exactly once: {:?}",
        cx.state(conn).await
    );
    let ids = cx.committed_ids(conn, "issues").await;
    assert_eq!(ids.len(), gh.data().plain_issues().len(), "every row once");
    cx.assert_issues_complete(&gh, conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_attempts_run_out_fails_interrupted() {
    let _serial = SERIAL.lock().await;
    let gh = github(2000, 250).await;
    let mut cx = Cluster::start(
        "replicas-attempts",
        3,
        &[("SLUICE_LEASE_SECS", "2"), ("SLUICE_MAX_RUN_ATTEMPTS", "2")],
    )
    .await;
    let conn = "doomed";
    let run_id = submit(&cx.replicas[0], &cx.body(&gh, conn)).await;
    let first = executing_replica(&cx, &cx.replicas[0], &run_id).await;
    wait_pages(&cx, &gh, 3).await;
    cx.replicas[first].signal("KILL");
    let watcher = (first + 1) % 3;
    let again = wait_until(
        &cx,
        &cx.replicas[watcher],
        &run_id,
        Duration::from_secs(60),
        "running again elsewhere",
        |r| {
            r["status"] == "running"
                && r["attempts"] == 2
                && r["replica"].is_string()
                && r["replica"] != format!("r{first}")
        },
    )
    .await;
    let second = cx.index_of(again["replica"].as_str().unwrap());
    let read = gh.counters.on("issues");
    wait_pages(&cx, &gh, read + 2).await;
    cx.replicas[second].signal("KILL");
    let last = (0..3).find(|&i| i != first && i != second).unwrap();

    let run = wait_terminal(&cx, &cx.replicas[last], &run_id).await;
    assert_eq!(run["status"], "failed", "{run}\n{}", cx.logs());
    assert_eq!(run["error"]["code"], "interrupted", "{run}");
    assert_eq!(run["attempts"], 2, "{run}");
    assert!(cx.state(conn).await.is_none(), "nothing committed");
    // The connection is free for its next run.
    let next = submit(&cx.replicas[last], &cx.body(&gh, conn)).await;
    let done = wait_terminal(&cx, &cx.replicas[last], &next).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", cx.logs());
    assert_eq!(cx.commits_of(conn, &next).await, vec![next.clone()]);
    assert!(cx.commits_of(conn, &run_id).await.is_empty());
}

/// A pass-through proxy in front of the S3 server for one replica, to stall one write in
/// flight: every request is forwarded as it came (method, path and query, headers with the
/// `Host` that SigV4 signed, body), except that once [`S3Gate::arm`]ed, the next PUT of a
/// `_state.json` is parked until [`S3Gate::release`], then forwarded, and S3's status for it kept.
/// It plays a replica that stalls (GC pause, SIGSTOP, partition) inside its commit, after
/// every check the replica itself makes.
struct S3Gate {
    url: String,
    inner: std::sync::Arc<GateInner>,
}

struct GateInner {
    upstream: String,
    client: reqwest::Client,
    armed: std::sync::atomic::AtomicBool,
    parked: tokio::sync::watch::Sender<Option<String>>,
    release: tokio::sync::watch::Sender<bool>,
    outcome: tokio::sync::watch::Sender<Option<(u16, String)>>,
}

impl S3Gate {
    async fn start(upstream: String) -> Self {
        let inner = std::sync::Arc::new(GateInner {
            upstream,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
            armed: false.into(),
            parked: tokio::sync::watch::channel(None).0,
            release: tokio::sync::watch::channel(false).0,
            outcome: tokio::sync::watch::channel(None).0,
        });
        let router = axum::Router::new()
            .fallback(gate_forward)
            .with_state(inner.clone());
        let addr = sluice_tests::serve(router).await;
        Self {
            url: format!("http://{addr}"),
            inner,
        }
    }

    fn arm(&self) {
        self.inner
            .armed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits until a `_state.json` PUT is parked; returns its path.
    async fn wait_parked(&self, cx: &Cluster, limit: Duration) -> String {
        let mut rx = self.inner.parked.subscribe();
        match tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await {
            Ok(Ok(path)) => path.clone().unwrap(),
            _ => panic!(
                "no _state.json PUT came through the gate within {limit:?}\n{}",
                cx.logs()
            ),
        }
    }

    /// Forwards the parked PUT and returns S3's status and body for it.
    async fn release(&self) -> (u16, String) {
        self.inner.release.send_replace(true);
        let mut rx = self.inner.outcome.subscribe();
        let got = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(Option::is_some))
            .await
            .expect("the parked PUT was forwarded")
            .unwrap();
        got.clone().unwrap()
    }
}

async fn gate_forward(
    axum::extract::State(g): axum::extract::State<std::sync::Arc<GateInner>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let held = parts.method == axum::http::Method::PUT
        && parts.uri.path().ends_with("/_state.json")
        && g.armed.swap(false, std::sync::atomic::Ordering::SeqCst);
    if held {
        g.parked.send_replace(Some(parts.uri.path().to_string()));
        let mut rx = g.release.subscribe();
        let _ = rx.wait_for(|go| *go).await;
    }
    let mut headers = parts.headers.clone();
    for h in [
        "transfer-encoding",
        "connection",
        "content-length",
        "expect",
    ] {
        headers.remove(h);
    }
    let answer = g
        .client
        .request(
            parts.method.clone(),
            format!("{}{path_and_query}", g.upstream),
        )
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let mut out = axum::http::Response::builder().status(status);
    for (k, v) in answer.headers() {
        if k != "transfer-encoding" && k != "connection" {
            out = out.header(k, v);
        }
    }
    let bytes = answer.bytes().await.unwrap();
    if held {
        g.outcome.send_replace(Some((
            status.as_u16(),
            String::from_utf8_lossy(&bytes).into_owned(),
        )));
    }
    out.body(axum::body::Body::from(bytes)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_stalled_past_the_lease_is_refused_by_the_store() {
    let _serial = SERIAL.lock().await;
    let gh = github(1000, 100).await;
    let gates = [
        S3Gate::start(endpoint()).await,
        S3Gate::start(endpoint()).await,
    ];
    let cx = Cluster::start_on(
        "replicas-stalled-commit",
        gates.iter().map(|g| g.url.clone()).collect(),
        &[("SLUICE_LEASE_SECS", "2")],
    )
    .await;
    let conn = "stalled-commit";
    let run_id = submit(&cx.replicas[0], &cx.body(&gh, conn)).await;
    let x = executing_replica(&cx, &cx.replicas[0], &run_id).await;
    let y = 1 - x;
    // X's write of _state.json leaves X (after every check X makes) and stalls in flight; X
    // then stops past its lease.
    gates[x].arm();
    let path = gates[x].wait_parked(&cx, Duration::from_secs(120)).await;
    assert!(path.ends_with(&format!("{conn}/_state.json")), "{path}");
    cx.replicas[x].send_signal("STOP");

    let run = wait_terminal(&cx, &cx.replicas[y], &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", cx.logs());
    assert_eq!(run["attempts"], 2, "{run}");
    assert_eq!(run["replica"], format!("r{y}"), "{run}");
    let state = cx.state(conn).await.unwrap();
    assert_eq!(state["runs"], json!([format!("{run_id}.a2")]), "{state}");

    // The stalled write reaches the store now: refused (a condition on the state X read, or a
    // validity that ended with X's lease), and _state.json is Y's.
    let (status, answer) = gates[x].release().await;
    assert!(
        (400..500).contains(&status),
        "the stale _state.json write was accepted: HTTP {status} {answer}"
    );
    assert_eq!(cx.state(conn).await.unwrap(), state, "_state.json changed");

    // X wakes up, learns its write failed, and changes nothing either.
    cx.replicas[x].send_signal("CONT");
    wait_staging_gone(&cx, x, &run_id, Duration::from_secs(60)).await;
    assert_eq!(cx.state(conn).await.unwrap(), state, "_state.json changed");
    succeeded_on_second_attempt(&cx, &run_id, y).await;
    let ids = cx.committed_ids(conn, "issues").await;
    assert_eq!(ids.len(), gh.data().plain_issues().len(), "every row once");
    cx.assert_issues_complete(&gh, conn).await;
    eprintln!(
        "stale _state.json write refused: HTTP {status} {}",
        answer.chars().take(300).collect::<String>()
    );
}

/// The harness itself: a private cluster, its URL's role and database, a restart on the same
/// port that keeps the data, and nothing left listening once dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_harness_starts_restarts_and_stops() {
    let _serial = SERIAL.lock().await;
    let mut pg = PgServer::start();
    let url = pg.url();
    assert!(
        url.starts_with("postgres://sluice:sluice@127.0.0.1:"),
        "{url}"
    );
    assert_eq!(
        pg.psql("SELECT current_user || '@' || current_database()"),
        "sluice@sluice"
    );
    pg.psql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42);");
    let port = pg.port();
    pg.restart();
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("SELECT v FROM kept"), "42");
    assert_eq!(
        pg.psql_super("postgres", "SHOW listen_addresses"),
        "127.0.0.1"
    );
    pg.stop();
    assert!(!pg.is_running());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "stopped: nothing listens on {port}"
    );
    pg.start_again();
    assert_eq!(pg.psql("SELECT v FROM kept"), "42");
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "dropped: nothing listens on {port}"
    );
}

/// Found from outside: a replica that had not loaded the connector yet (a cold compile cache at a
/// rollout) or did not have it claimed queued runs and failed them for good. A replica claims only
/// runs of connectors it has loaded; the others' runs wait for a replica that has them. And a
/// replica whose secrets key or storage backend differs from the cluster's is refused at start
/// (it could not open the queued requests, or would write runs elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_claim_only_runs_they_can_execute_and_must_share_key_and_backend() {
    let _serial = SERIAL.lock().await;
    let gh = github(400, 50).await;
    let cx = Cluster::start("replicas-no-connector", 1, &[("SLUICE_LEASE_SECS", "3")]).await;
    let url = cx.pg.url();
    let empty = cx.root.path().join("no-plugins");
    std::fs::create_dir_all(&empty).unwrap();
    let s3 = endpoint();
    let bare = Service::start(
        &cx.root.path().join("bare"),
        &empty,
        &[
            ("DATABASE_URL", url.as_str()),
            ("SLUICE_RUN_SECRETS_KEY", SECRETS_KEY),
            ("SLUICE_REPLICA_ID", "bare"),
            ("S3_ENDPOINT", s3.as_str()),
            ("SLUICE_MAX_CONCURRENT_RUNS", "4"),
        ],
    )
    .await;
    // r0 has 2 slots: 6 runs keep the queue non-empty while `bare` has free slots all along.
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(submit(&cx.replicas[0], &cx.body(&gh, &format!("nc-{i}"))).await);
        }
        ids
    };
    for id in &ids {
        let run = wait_terminal(&cx, &cx.replicas[0], id).await;
        assert_eq!(run["status"], "succeeded", "{run}\n{}", bare.logs());
        assert_eq!(run["replica"], "r0", "{run}");
        assert_eq!(run["attempts"], 1, "{run}");
    }

    for (name, env) in [
        (
            "other-key",
            vec![
                (
                    "SLUICE_RUN_SECRETS_KEY",
                    "ffeeddccbbaa99887766554433221100fedcba9876543210fedcba9876543210",
                ),
                ("S3_ENDPOINT", s3.as_str()),
            ],
        ),
        (
            "other-backend",
            vec![("SLUICE_RUN_SECRETS_KEY", SECRETS_KEY)],
        ),
    ] {
        let mut all = vec![("DATABASE_URL", url.as_str()), ("SLUICE_REPLICA_ID", name)];
        all.extend(env);
        let mut svc = Service::spawn(&cx.root.path().join(name), &empty, &all);
        let status = exit_of(&mut svc, Duration::from_secs(30), name).await;
        assert!(!status.success(), "{name}");
        assert!(
            svc.logs().contains("every replica needs the same setting"),
            "{name}: {}",
            svc.logs()
        );
    }
}
