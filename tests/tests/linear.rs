//! The Linear connector end to end: the built binary's HTTP API, the built `linear.wasm`, the
//! fake Linear of `sluice_tests::fakes::linear` (every document it receives is validated
//! against Linear's published schema) and the real S3 server. What a sync committed is read
//! back from the Parquet files with DuckDB and compared with the fake's data set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::LazyLock;
use std::sync::atomic::Ordering::SeqCst;

use serde_json::{Value, json};
use sluice_tests::fakes::linear::{FakeLinear, Item, LinearConfig, LinearHandle, ROOTS, parse_ms};
use sluice_tests::mirror::{
    Prefix, assert_invalid, count, read_parquet, records, strings, validate,
};
use sluice_tests::s3::endpoint;
use sluice_tests::{Service, plugin};

/// This test binary's prefix in the bucket; every test uses its own connection ids under it.
static PREFIX: LazyLock<Prefix> = LazyLock::new(|| Prefix::new("linear"));

/// `(stream, root field of the fake)`, in the connector's order.
const STREAMS: [(&str, &str); 8] = [
    ("teams", "teams"),
    ("users", "users"),
    ("workflow_states", "workflowStates"),
    ("labels", "issueLabels"),
    ("projects", "projects"),
    ("cycles", "cycles"),
    ("issues", "issues"),
    ("comments", "comments"),
];

/// The service with only `linear.wasm`, writing to the real S3 server.
async fn start(root: &Path, env: &[(&str, &str)]) -> Service {
    let plugins = root.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin("linear"), plugins.join("linear.wasm")).unwrap();
    let endpoint = endpoint();
    let mut env = env.to_vec();
    env.push(("S3_ENDPOINT", &endpoint));
    Service::start(&root.join("data"), &plugins, &env).await
}

fn config(fake: &LinearHandle) -> Value {
    json!({"api_url": fake.url, "page_size": 100})
}

/// The ids one run committed for a stream, read from its Parquet files.
fn run_ids(svc: &Service, connection: &str, run: &Value, stream: &str) -> BTreeSet<String> {
    let run_id = run["run_id"].as_str().unwrap();
    let files = PREFIX.run_files(svc, connection, run_id, stream);
    if files.is_empty() {
        return BTreeSet::new();
    }
    let db = duckdb::Connection::open_in_memory().unwrap();
    strings(&db, &format!("SELECT id FROM {}", read_parquet(&files)))
        .into_iter()
        .collect()
}

/// A relation's id in the fake's item (`team` → `{"id": ...}`).
fn rel(item: &Item, field: &str) -> Option<String> {
    item.fields
        .get(field)
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// One issue row as the test compares it.
type IssueRow = (
    String,         // identifier
    String,         // title
    i64,            // updated_at, epoch ms
    Option<i64>,    // archived_at, epoch ms
    String,         // team_id
    String,         // state_id
    Option<String>, // assignee_id
    Option<String>, // parent_id
    String,         // label_ids: the JSON text, byte for byte
    Option<f64>,    // estimate
);

fn issue_rows_of_fake(items: &[Item]) -> BTreeMap<String, IssueRow> {
    items
        .iter()
        .map(|i| {
            let row = (
                i.fields["identifier"].as_str().unwrap().to_string(),
                i.fields["title"].as_str().unwrap().to_string(),
                i.updated_at,
                i.archived_at,
                rel(i, "team").unwrap(),
                rel(i, "state").unwrap(),
                rel(i, "assignee"),
                rel(i, "parent"),
                i.fields["labelIds"].to_string(),
                i.fields["estimate"].as_f64(),
            );
            (i.id.clone(), row)
        })
        .collect()
}

fn issue_rows_of_parquet(db: &duckdb::Connection) -> BTreeMap<String, IssueRow> {
    let sql = "SELECT id, identifier, title, epoch_ms(updated_at)::BIGINT, epoch_ms(archived_at)::BIGINT, team_id, state_id, \
               assignee_id, parent_id, label_ids::VARCHAR, estimate FROM issues";
    let mut stmt = db.prepare(sql).unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            (
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get::<_, Option<String>>(9)?.unwrap_or_default(),
                r.get(10)?,
            ),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_validate_maps_keys_tokens_access_and_outages() {
    let fake = FakeLinear::start(LinearConfig {
        issues: 5,
        comments: 0,
        ..Default::default()
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[("SLUICE_MAX_RATE_LIMIT_WAIT_SECS", "1")]).await;
    let c = fake.config().clone();
    let viewer = fake.data().viewer.clone();

    // A personal API key, sent as `Authorization: <key>`.
    let ok = validate(&svc, "linear", &json!({"api_url": fake.url}), &c.api_key).await;
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(
        ok["account"],
        json!({"user": {"id": viewer, "name": "User 0", "email": "user0@acme.example"},
               "organization": {"id": "000000f0-0000-4000-8000-000000000000", "name": "Acme", "url_key": "acme"},
               "token_type": "api_key"})
    );
    // An OAuth token, sent as `Bearer <token>`.
    let oauth = json!({"api_url": fake.url, "token_type": "oauth"});
    let ok = validate(&svc, "linear", &oauth, &c.oauth_token).await;
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(ok["account"]["token_type"], "oauth");
    // The wrong kind: an OAuth token sent as a key, a key sent as Bearer.
    let wrong = validate(
        &svc,
        "linear",
        &json!({"api_url": fake.url}),
        &c.oauth_token,
    )
    .await;
    assert_invalid(&wrong, "invalid_credentials", &["You need to authenticate"]);
    let wrong = validate(&svc, "linear", &oauth, &c.api_key).await;
    assert_invalid(&wrong, "invalid_credentials", &["HTTP 400"]);
    // A bad key: HTTP 400 AUTHENTICATION_ERROR.
    let bad = validate(
        &svc,
        "linear",
        &json!({"api_url": fake.url}),
        "lin_api_not_a_real_key",
    )
    .await;
    assert_invalid(
        &bad,
        "invalid_credentials",
        &["Linear rejected the credentials"],
    );
    // A key without access: FORBIDDEN on HTTP 200.
    let forbidden = validate(
        &svc,
        "linear",
        &json!({"api_url": fake.url}),
        &c.forbidden_key,
    )
    .await;
    assert_invalid(&forbidden, "insufficient_scope", &["may not read"]);
    // A bad config.
    let bad_config = validate(
        &svc,
        "linear",
        &json!({"api_url": fake.url, "token_type": "jwt"}),
        &c.api_key,
    )
    .await;
    assert_eq!(
        bad_config["error"]["code"], "invalid_config",
        "{bad_config}"
    );
    // The rate limit spent for an hour: the host waits at most 1 s, then the plugin says so.
    fake.knobs.set_exhausted(true);
    let limited = validate(&svc, "linear", &json!({"api_url": fake.url}), &c.api_key).await;
    assert_invalid(&limited, "rate_limited", &["rate limit"]);
    fake.knobs.set_exhausted(false);
    // Nothing listening.
    let down = json!({"api_url": format!("http://127.0.0.1:{}", sluice_tests::free_port())});
    assert_eq!(
        validate(&svc, "linear", &down, &c.api_key).await["error"]["code"],
        "unreachable"
    );
    assert_eq!(
        fake.invalid_documents(),
        0,
        "every document fits Linear's schema"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_full_sync_matches_the_fake_and_an_incremental_brings_exactly_the_changes() {
    let fake = FakeLinear::start(LinearConfig::default()).await;
    // Three issues share the newest instant: the cursor lands on a tie.
    let tie = fake.tick();
    let before = fake.data();
    let tied: Vec<String> = before.of("issues")[..3]
        .iter()
        .map(|i| i.id.clone())
        .collect();
    for id in &tied {
        assert!(fake.edit("issues", id, tie, |_| {}));
    }
    let before = fake.data();
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let cfg = config(&fake);
    let token = fake.config().api_key.clone();

    let run = PREFIX.sync(&svc, "lin", "linear", &cfg, &token).await;
    for (stream, root) in STREAMS {
        assert_eq!(
            records(&run, stream),
            before.of(root).len() as u64,
            "{stream}: every item once, archived and deactivated ones included"
        );
    }
    assert!(
        before.of("issues").iter().any(|i| i.archived_at.is_some())
            && before
                .of("users")
                .iter()
                .any(|u| u.fields["active"] == false),
        "the data set has archived issues and a deactivated user"
    );
    let db = PREFIX.views(&svc, "lin", "linear").await;
    let got = issue_rows_of_parquet(&db);
    let want = issue_rows_of_fake(before.of("issues"));
    assert_eq!(got.len(), want.len());
    for (id, row) in &want {
        assert_eq!(got.get(id), Some(row), "issue {id}");
    }
    for (stream, root) in STREAMS {
        let got: BTreeSet<String> = strings(&db, &format!("SELECT id FROM {stream}"))
            .into_iter()
            .collect();
        let want: BTreeSet<String> = before.of(root).iter().map(|i| i.id.clone()).collect();
        assert_eq!(got, want, "{stream}: the ids of the fake");
        let times: BTreeSet<(String, i64)> = strings(
            &db,
            &format!("SELECT id || ' ' || epoch_ms(updated_at)::BIGINT FROM {stream}"),
        )
        .into_iter()
        .map(|s| {
            let (id, ms) = s.split_once(' ').unwrap();
            (id.to_string(), ms.parse().unwrap())
        })
        .collect();
        let want: BTreeSet<(String, i64)> = before
            .of(root)
            .iter()
            .map(|i| (i.id.clone(), i.updated_at))
            .collect();
        assert_eq!(times, want, "{stream}: updated_at to the millisecond");
    }
    // Relations became ids; values kept.
    let comment = &before.of("comments")[7];
    let row = strings(
        &db,
        &format!(
            "SELECT concat_ws('|', body, coalesce(issue_id, '-'), user_id, coalesce(parent_id, '-')) FROM comments WHERE id = '{}'",
            comment.id
        ),
    );
    assert_eq!(
        row,
        [format!(
            "{}|{}|{}|{}",
            comment.fields["body"].as_str().unwrap(),
            rel(comment, "issue").unwrap_or("-".into()),
            rel(comment, "user").unwrap(),
            rel(comment, "parent").unwrap_or("-".into())
        )]
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM workflow_states WHERE team_id IS NULL"
        ),
        0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM labels WHERE team_id IS NULL"),
        3,
        "workspace labels have no team"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM users WHERE NOT active"), 1);
    drop(db);
    assert!(
        fake.counters.on("issues") >= 6,
        "600 issues in pages of 100: {}",
        fake.counters.on("issues")
    );

    // Change, add and archive; one new issue at the very instant of the cursor's tie.
    let issues = before.of("issues");
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for item in issues.iter().skip(10).step_by(97) {
        let at = fake.tick();
        assert!(fake.edit("issues", &item.id, at, |i| {
            i.fields.insert(
                "title".into(),
                json!(format!("{} (edited)", i.fields["title"].as_str().unwrap())),
            );
        }));
        changed.insert(item.id.clone());
    }
    for item in issues.iter().skip(20).step_by(151).take(2) {
        assert!(fake.archive("issues", &item.id));
        changed.insert(item.id.clone());
    }
    let at = fake.tick();
    changed.insert(fake.add_like("issues", &issues[5], at, "A new issue"));
    changed.insert(fake.add_like("issues", &issues[6], tie, "Same instant as the cursor"));
    let comment_id = before.of("comments")[3].id.clone();
    let at = fake.tick();
    assert!(fake.edit("comments", &comment_id, at, |c| {
        c.fields.insert("body".into(), json!("edited body"));
    }));
    let after = fake.data();

    let run2 = PREFIX.sync(&svc, "lin", "linear", &cfg, &token).await;
    assert_eq!(
        run_ids(&svc, "lin", &run2, "issues"),
        changed,
        "the second run brings exactly the changed, archived and new issues"
    );
    assert_eq!(records(&run2, "issues"), changed.len() as u64);
    assert_eq!(
        run_ids(&svc, "lin", &run2, "comments"),
        BTreeSet::from([comment_id.clone()])
    );
    for (stream, _) in STREAMS {
        if stream != "issues" && stream != "comments" {
            assert_eq!(records(&run2, stream), 0, "{stream}: nothing changed");
        }
    }
    let db = PREFIX.views(&svc, "lin", "linear").await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM issues"),
        after.of("issues").len() as i64,
        "no duplicates after two runs"
    );
    let got = issue_rows_of_parquet(&db);
    let want = issue_rows_of_fake(after.of("issues"));
    for (id, row) in &want {
        assert_eq!(got.get(id), Some(row), "issue {id} after the second run");
    }
    assert_eq!(
        strings(
            &db,
            &format!("SELECT body FROM comments WHERE id = '{comment_id}'")
        ),
        ["edited body"]
    );
    assert_eq!(fake.invalid_documents(), 0);

    // A third run with nothing changed brings nothing.
    let run3 = PREFIX.sync(&svc, "lin", "linear", &cfg, &token).await;
    for (stream, _) in STREAMS {
        assert_eq!(records(&run3, stream), 0, "{stream}: {run3}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_query_too_complex_halves_the_page_instead_of_failing() {
    // A limit far below Linear's: a page of 250 issues (2,603 points) is refused, and so are
    // 125 (1,302) and 62 (648); 31 (325) passes.
    let fake = FakeLinear::start(LinearConfig {
        issues: 200,
        comments: 50,
        max_complexity: 600.0,
        ..Default::default()
    })
    .await;
    let data = fake.data();
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let cfg = json!({"api_url": fake.url});
    let run = PREFIX
        .sync(&svc, "complex", "linear", &cfg, &fake.config().api_key)
        .await;
    for (stream, root) in STREAMS {
        assert_eq!(
            records(&run, stream),
            data.of(root).len() as u64,
            "{stream}"
        );
    }
    let firsts = fake.firsts("issues");
    assert_eq!(&firsts[..4], [250, 125, 62, 31], "{firsts:?}");
    assert!(
        firsts[4..].iter().all(|f| *f == 31),
        "the smaller page is kept: {firsts:?}"
    );
    assert!(fake.too_complex() >= 3 * 2, "issues and comments shrank");
    let db = PREFIX.views(&svc, "complex", "linear").await;
    assert_eq!(
        count(&db, "SELECT count(DISTINCT id) FROM issues"),
        data.of("issues").len() as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_sync_survives_a_rate_limit_storm_waiting_no_longer_than_asked() {
    let fake = FakeLinear::start(LinearConfig {
        issues: 900,
        comments: 300,
        ..Default::default()
    })
    .await;
    fake.knobs.set_rate_limit_every(4);
    fake.knobs.set_fail_every(7);
    fake.knobs.set_retry_after_secs(1);
    let data = fake.data();
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;

    let run = PREFIX
        .sync(
            &svc,
            "storm",
            "linear",
            &config(&fake),
            &fake.config().api_key,
        )
        .await;
    let (limited, bad_gateways) = (
        fake.counters.rate_limited.load(SeqCst),
        fake.counters.bad_gateways.load(SeqCst),
    );
    assert!(
        limited >= 5 && bad_gateways >= 3,
        "the storm happened: {limited} RATELIMITED, {bad_gateways} 502s"
    );
    for wait in fake.waits() {
        let next = wait
            .next_at
            .expect("a request followed every rate-limit answer");
        assert!(
            next >= wait.reset_at - 20,
            "retried {} ms before the reset it was given",
            wait.reset_at - next
        );
        assert!(
            next - wait.reset_at <= 1_500,
            "waited {} ms past the reset it was given",
            next - wait.reset_at
        );
    }
    let db = PREFIX.views(&svc, "storm", "linear").await;
    for (stream, root) in STREAMS {
        let want = data.of(root).len();
        assert_eq!(
            records(&run, stream),
            want as u64,
            "{stream}: every record once"
        );
        assert_eq!(
            count(&db, &format!("SELECT count(DISTINCT id) FROM {stream}")),
            want as i64,
            "{stream}: nothing lost"
        );
    }
    let updated: BTreeMap<String, i64> = data
        .of("issues")
        .iter()
        .map(|i| (i.id.clone(), i.updated_at))
        .collect();
    let newest = updated.values().max().copied().unwrap();
    let state: Value = serde_json::from_slice(
        &std::fs::read(PREFIX.connection_dir(&svc, "storm").join("_state.json")).unwrap(),
    )
    .unwrap();
    let cursor = state["streams"]["issues"]["cursor"].as_str().unwrap();
    assert_eq!(parse_ms(cursor), Some(newest), "{state}");
    assert!(
        ROOTS
            .iter()
            .all(|(r, _)| STREAMS.iter().any(|(_, s)| s == r))
    );
}
