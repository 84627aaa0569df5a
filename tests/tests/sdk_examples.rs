//! The SDK examples end to end (issue 13): `rust-issues` (Rust SDK, a crate outside the plugins
//! workspace), `python-issues` (Python SDK, componentize-py) and `js-issues` (JavaScript SDK,
//! componentize-js), built by `scripts/build-sdk-examples.sh`, each against the same fake GitHub,
//! through the built binary's HTTP API into the real S3 server. What each sync committed is read
//! back from its Parquet files with DuckDB and compared with the fake's data; a second run must
//! bring only what changed; a bad token must come back from `validate` as `invalid_credentials`
//! (the `ConnectorError` path of each SDK, which must not trap).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::LazyLock;

use serde_json::{Value, json};
use sluice_tests::fakes::github::{FakeGithub, GithubConfig, GithubHandle, Issue};
use sluice_tests::fakes::iso;
use sluice_tests::mirror::{Prefix, read_parquet, validate};
use sluice_tests::s3::endpoint;
use sluice_tests::{Service, plugin, run_id_of};

static PREFIX: LazyLock<Prefix> = LazyLock::new(|| Prefix::new("sdk-examples"));

/// One issue as every example writes it: (repository, number, title, state, user_login,
/// comments, is_pull_request, created_at, updated_at, closed_at), times in epoch seconds.
type Row = (
    String,
    i64,
    String,
    String,
    Option<String>,
    i64,
    bool,
    i64,
    i64,
    Option<i64>,
);

fn expected_row(i: &Issue) -> Row {
    (
        i.repo.clone(),
        i.number as i64,
        i.title.clone(),
        i.state.to_string(),
        Some(i.user.to_string()),
        i.comments as i64,
        i.is_pull_request(),
        i.created_at,
        i.updated_at,
        i.closed_at,
    )
}

/// `id → row` of the Parquet files one run committed for `issues`, read with DuckDB from a local
/// copy of the bucket.
fn committed_rows(svc: &Service, connection: &str, run_id: &str) -> BTreeMap<i64, Row> {
    let files = PREFIX.run_files(svc, connection, run_id, "issues");
    assert!(!files.is_empty(), "run {run_id} committed no issues file");
    let db = duckdb::Connection::open_in_memory().unwrap();
    let sql = format!(
        "SELECT id, repository, number, title, state, user_login, comments, is_pull_request, \
         epoch(created_at)::BIGINT, epoch(updated_at)::BIGINT, epoch(closed_at)::BIGINT, \
         _sluice_errors FROM {}",
        read_parquet(&files)
    );
    let mut stmt = db.prepare(&sql).unwrap();
    let rows = stmt
        .query_map([], |r| {
            let errors: Option<String> = r.get(11)?;
            assert!(
                errors.is_none(),
                "a value did not fit its column: {errors:?}"
            );
            Ok((
                r.get::<_, i64>(0)?,
                (
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    let n = rows.len();
    let by_id: BTreeMap<i64, Row> = rows.into_iter().collect();
    assert_eq!(by_id.len(), n, "an id was committed twice in one run");
    by_id
}

/// A service on the real S3 server with the built components `names` as its plugins (the
/// directory lives as long as the returned guard).
async fn service_with(names: &[&str]) -> (tempfile::TempDir, Service) {
    let root = tempfile::tempdir().unwrap();
    let plugins: PathBuf = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in names {
        std::fs::copy(plugin(name), plugins.join(format!("{name}.wasm"))).unwrap();
    }
    let s3 = endpoint();
    let svc = Service::start(&root.path().join("data"), &plugins, &[("S3_ENDPOINT", &s3)]).await;
    (root, svc)
}

/// The newest `updated_at` per repository: the cursor a complete sync checkpoints.
fn newest(gh: &GithubHandle) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for i in gh.data().issues {
        let e = out.entry(i.repo.clone()).or_insert(i.updated_at);
        *e = (*e).max(i.updated_at);
    }
    out
}

/// Validate (good and bad token), a full sync checked row by row, an incremental sync that
/// brings only the edited issues (and the cursor's own boundary issues, `since` being
/// inclusive), for the example connector `name`.
async fn example_end_to_end(name: &str) {
    let gh = FakeGithub::start(GithubConfig {
        repos: 2,
        empty_repo: false,
        issues: 240,
        pr_every: 4,
        comments: 0,
        commits: 0,
        ..Default::default()
    })
    .await;
    let (_root, svc) = service_with(&[name]).await;
    // Two repositories of 120 issues, 50 a page: three pages each, followed by `Link`.
    let config =
        json!({"api_url": gh.url, "repositories": ["acme/repo-0", "acme/repo-1"], "page_size": 50});

    let ok = validate(&svc, name, &config, gh.token()).await;
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(
        ok["account"],
        json!({"login": "sluice-bot", "repositories": 2})
    );
    let bad = validate(&svc, name, &config, "ghp_not_a_real_token").await;
    assert_eq!(bad["valid"], false, "{bad}");
    assert_eq!(bad["error"]["code"], "invalid_credentials", "{bad}");
    let message = bad["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("401"), "{message}");
    assert!(!bad.to_string().contains("ghp_not_a_real_token"), "{bad}");

    let connection = format!("{name}-conn");

    // Full sync: every issue, every value.
    let first = PREFIX
        .sync(&svc, &connection, name, &config, gh.token())
        .await;
    assert_eq!(first["streams"]["issues"]["records"], 240, "{first}");
    let run_id = first["run_id"].as_str().unwrap();
    let got = committed_rows(&svc, &connection, run_id);
    let want: BTreeMap<i64, Row> = gh
        .data()
        .issues
        .iter()
        .map(|i| (i.id as i64, expected_row(i)))
        .collect();
    assert_eq!(got.len(), 240);
    assert_eq!(got, want, "the committed issues differ from the fake's");
    let before = newest(&gh);
    let state: Value = serde_json::from_slice(
        &std::fs::read(PREFIX.connection_dir(&svc, &connection).join("_state.json")).unwrap(),
    )
    .unwrap();
    let cursor: BTreeMap<String, i64> = before.clone();
    assert_eq!(
        state["streams"]["issues"],
        json!({"since": cursor.iter().map(|(r, t)| (r.clone(), json!(iso(*t)))).collect::<serde_json::Map<_, _>>()}),
        "{state}"
    );

    // Incremental: the edited issues, plus those sitting exactly on the cursor (`since` is
    // inclusive: at-least-once, deduplicated on the primary key), nothing else.
    let edited = gh.touch(5);
    let second = PREFIX
        .sync(&svc, &connection, name, &config, gh.token())
        .await;
    let got = committed_rows(&svc, &connection, second["run_id"].as_str().unwrap());
    let data = gh.data();
    let mut want_ids: BTreeSet<i64> = edited.iter().map(|i| i.id as i64).collect();
    want_ids.extend(
        data.issues
            .iter()
            .filter(|i| before.get(&i.repo) == Some(&i.updated_at))
            .map(|i| i.id as i64),
    );
    assert_eq!(
        got.keys().copied().collect::<BTreeSet<_>>(),
        want_ids,
        "{second}"
    );
    assert!(got.len() < 240 && got.len() >= 5);
    for i in &edited {
        let row = &got[&(i.id as i64)];
        assert_eq!(row, &expected_row(i));
        assert!(row.2.ends_with(" (edited)"), "{row:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_example_syncs_incrementally() {
    example_end_to_end("rust-issues").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_example_syncs_incrementally() {
    example_end_to_end("python-issues").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_sdk_example_syncs_incrementally() {
    example_end_to_end("js-issues").await;
}

/// A connector that pushes records into a `Batcher` and returns from `sync` without `flush`
/// (`tests/fixtures/sdk-unflushed`): the SDK emits them when `sync` returns. Before, Python and
/// JavaScript dropped them and the run succeeded with 0 rows. 2,500 records cross two of the
/// batcher's 1,000-record batches and leave 500 pending.
async fn unflushed_records_are_committed(name: &str) {
    let (_root, svc) = service_with(&[name]).await;
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(
            &json!({"connection_id": name, "connector": name, "config": {"count": 2500},
                      "credentials": {}, "storage": PREFIX.storage()}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    let run = svc.wait_run(&run_id_of(r).await).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", svc.logs());
    assert_eq!(run["streams"]["items"]["records"], 2500, "{run}");
    assert_eq!(run["streams"]["items"]["committed_rows"], 2500, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_emits_records_a_connector_never_flushed() {
    unflushed_records_are_committed("python-unflushed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_sdk_emits_records_a_connector_never_flushed() {
    unflushed_records_are_committed("js-unflushed").await;
}

/// A loopback upstream: `/redirect/…` answers 302 to the cloud metadata address, `/link/…` an
/// empty page whose `Link` next target is that address, anything else 200 with 40 MiB announced
/// (past the host's 32 MiB cap; nothing of it is sent).
async fn misbehaving_upstream() -> String {
    sluice_tests::raw_upstream(|path| {
        let answer = if path.starts_with("/redirect/") {
            "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/latest/meta-data/?x=1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        } else if path.starts_with("/link/") {
            "HTTP/1.1 200 OK\r\nlink: <http://169.254.169.254/latest/meta-data/?page=2>; rel=\"next\"\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]"
        } else {
            "HTTP/1.1 200 OK\r\ncontent-length: 41943040\r\nconnection: close\r\n\r\n{}"
        };
        answer.as_bytes().to_vec()
    })
    .await
}

/// Each SDK's `fetch` error as a connector error: a redirect the upstream sent to a destination
/// the plugin does not declare is `internal` (an unexpected answer), not `invalid_config` (the
/// user's config named no such place), and says so, as is a `Link` next target there (a sync
/// fails with it); a body past the cap says which request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_reports_an_upstreams_redirect_link_and_oversized_body_as_such() {
    let names = ["rust-issues", "python-issues", "js-issues"];
    let (_root, svc) = service_with(&names).await;
    let up = misbehaving_upstream().await;
    for name in names {
        let config = |root: &str| json!({"api_url": format!("{up}/{root}"), "repositories": ["acme/repo-0"]});
        let v = validate(&svc, name, &config("redirect"), "ghp_token").await;
        assert_eq!(v["error"]["code"], "internal", "{name}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "the upstream redirected GET {up}/redirect/user to \
                 http://169.254.169.254/latest/meta-data/?…, which was not followed: \
                 http://169.254.169.254:80 is not declared by the plugin"
            )),
            "{name}: {v}"
        );
        let v = validate(&svc, name, &config("big"), "ghp_token").await;
        assert_eq!(v["error"]["code"], "internal", "{name}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "(the response of GET {up}/big/user exceeded the 32 MiB response cap)"
            )),
            "{name}: {v}"
        );
        let r = svc
            .post("/internal/mirror-connections/runs")
            .json(
                &json!({"connection_id": format!("{name}-link"), "connector": name,
                          "config": config("link"), "credentials": {"token": "ghp_token"},
                          "storage": PREFIX.storage()}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
        let run = svc.wait_run(&run_id_of(r).await).await;
        assert_eq!(run["status"], "failed", "{name}: {run}");
        assert_eq!(run["error"]["code"], "internal", "{name}: {run}");
        let message = run["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(
                "the upstream named http://169.254.169.254/latest/meta-data/?… as the next page \
                 (Link header), which was not followed: http://169.254.169.254:80 is not \
                 declared by the plugin"
            ),
            "{name}: {run}"
        );
    }
}
