//! The GitHub and Slack connectors end to end: the built binary's HTTP API, the built
//! `github.wasm` and `slack.wasm`, and the fake upstreams of `sluice_tests::fakes`. What a sync
//! committed is read back from the Parquet files with DuckDB and compared with the fake's
//! data set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::fakes::github::{FakeGithub, GithubConfig, GithubHandle, Grant};
use sluice_tests::fakes::slack::{ALL_SCOPES, FakeSlack, SlackConfig};
use sluice_tests::mirror::{Prefix, assert_invalid, count, read_parquet, records, validate};
use sluice_tests::s3::endpoint;
use sluice_tests::{Service, plugin, run_id_of};

/// This test binary's prefix in the bucket; every test uses its own connection ids under it.
static PREFIX: LazyLock<Prefix> = LazyLock::new(|| Prefix::new("connectors"));

fn plugins_dir(root: &Path) -> PathBuf {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["github", "slack"] {
        std::fs::copy(plugin(name), dir.join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

/// The service, writing to the real S3 server.
async fn start(root: &Path, env: &[(&str, &str)]) -> Service {
    let endpoint = endpoint();
    let mut env = env.to_vec();
    env.push(("S3_ENDPOINT", &endpoint));
    Service::start(&root.join("data"), &plugins_dir(root), &env).await
}

/// Submits a run request and returns the run's id.
async fn submit(svc: &Service, request: &Value) -> String {
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    run_id_of(r).await
}

/// Rows of `sql` whose `{files}` is replaced by the run's files of `stream`.
fn in_run<T>(
    db: &duckdb::Connection,
    files: &[PathBuf],
    sql: &str,
    row: impl FnMut(&duckdb::Row<'_>) -> duckdb::Result<T>,
) -> Vec<T> {
    if files.is_empty() {
        return vec![];
    }
    let sql = sql.replace("{files}", &read_parquet(files));
    let mut stmt = db.prepare(&sql).unwrap();
    stmt.query_map([], row)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn rows<T>(
    db: &duckdb::Connection,
    sql: &str,
    row: impl FnMut(&duckdb::Row<'_>) -> duckdb::Result<T>,
) -> Vec<T> {
    let mut stmt = db.prepare(sql).unwrap();
    stmt.query_map([], row)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn github_config(gh: &GithubHandle) -> Value {
    json!({"api_url": gh.url, "organization": "acme"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_validate_maps_tokens_scopes_and_outages() {
    let gh = FakeGithub::start(GithubConfig {
        issues: 10,
        comments: 0,
        commits: 0,
        ..Default::default()
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[("SLUICE_MAX_RATE_LIMIT_WAIT_SECS", "1")]).await;
    let repos = json!({"api_url": gh.url, "repositories": ["acme/repo-0", "acme/repo-1"]});

    let ok = validate(&svc, "github", &repos, gh.token()).await;
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(
        ok["account"],
        json!({"login": "sluice-bot", "id": 4242, "token_type": "classic", "scopes": ["repo", "read:org"], "unreadable_streams": []})
    );
    assert_eq!(
        validate(&svc, "github", &github_config(&gh), gh.token()).await["valid"],
        true
    );

    let bad = validate(&svc, "github", &repos, "ghp_not_a_real_token").await;
    assert_invalid(&bad, "invalid_credentials", &["Bad credentials"]);
    let limited = validate(&svc, "github", &repos, gh.limited_token()).await;
    assert_invalid(&limited, "insufficient_scope", &["repository acme/repo-0"]);
    let org = validate(&svc, "github", &github_config(&gh), gh.limited_token()).await;
    assert_invalid(&org, "insufficient_scope", &["organization acme"]);
    let missing = validate(
        &svc,
        "github",
        &json!({"api_url": gh.url, "repositories": ["acme/nope"]}),
        gh.token(),
    )
    .await;
    assert_invalid(&missing, "insufficient_scope", &["acme/nope"]);
    let bad_config = validate(
        &svc,
        "github",
        &json!({"api_url": gh.url, "repositories": ["not-a-repo"]}),
        gh.token(),
    )
    .await;
    assert_eq!(
        bad_config["error"]["code"], "invalid_config",
        "{bad_config}"
    );

    let down = json!({"api_url": format!("http://127.0.0.1:{}", sluice_tests::free_port()), "repositories": ["acme/repo-0"]});
    assert_invalid(
        &validate(&svc, "github", &down, gh.token()).await,
        "unreachable",
        &[""],
    );

    // The quota is spent for an hour: longer than the host may wait, so it hands the 403 back.
    gh.knobs.set_exhausted(true);
    let limited = validate(&svc, "github", &repos, gh.token()).await;
    assert_invalid(&limited, "rate_limited", &["rate limit"]);
    gh.knobs.set_exhausted(false);
    assert!(
        gh.counters
            .unauthorized
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_validate_maps_tokens_scopes_and_outages() {
    let sl = FakeSlack::start(SlackConfig {
        messages: 10,
        ..Default::default()
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[("SLUICE_MAX_RATE_LIMIT_WAIT_SECS", "1")]).await;
    let config = json!({"api_url": sl.url});

    let ok = validate(&svc, "slack", &config, sl.token()).await;
    assert_eq!(ok["valid"], true, "{ok}");
    let all: BTreeSet<&str> = ALL_SCOPES.split(',').collect();
    assert_eq!(
        ok["account"],
        json!({"team": "Acme", "team_id": "T00000001", "user": "sluice-bot", "user_id": "U0BOT0001", "bot_id": "B00000001", "scopes": all, "unreadable_streams": []})
    );
    assert_invalid(
        &validate(&svc, "slack", &config, "xoxb-unknown").await,
        "invalid_credentials",
        &["invalid_auth"],
    );
    assert_invalid(
        &validate(&svc, "slack", &config, sl.revoked_token()).await,
        "invalid_credentials",
        &["token_revoked"],
    );
    assert_invalid(
        &validate(&svc, "slack", &config, sl.scopeless_token()).await,
        "insufficient_scope",
        &["channels:read"],
    );
    let bad_config = validate(
        &svc,
        "slack",
        &json!({"api_url": sl.url, "channel_types": "dms"}),
        sl.token(),
    )
    .await;
    assert_eq!(
        bad_config["error"]["code"], "invalid_config",
        "{bad_config}"
    );

    sl.knobs.set_exhausted(true);
    assert_invalid(
        &validate(&svc, "slack", &config, sl.token()).await,
        "rate_limited",
        &["429"],
    );
    sl.knobs.set_exhausted(false);
}

/// Per repository, the newest cursor value of a listing: what the next run starts from.
fn newest_per_repo<'a>(items: impl Iterator<Item = (&'a str, i64)>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (repo, at) in items {
        let e = out.entry(repo.to_string()).or_insert(at);
        *e = (*e).max(at);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_full_sync_matches_the_fake_and_an_incremental_brings_only_changes() {
    let gh = FakeGithub::start(GithubConfig {
        repos: 4,
        issues: 50_000,
        pr_every: 4,
        comments: 4_000,
        commits: 2_000,
        ..Default::default()
    })
    .await;
    let before = gh.data();
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let config = github_config(&gh);

    let t = Instant::now();
    let run = PREFIX.sync(&svc, "gh", "github", &config, gh.token()).await;
    eprintln!(
        "full sync of {} issues: {:?}, {} requests",
        before.issues.len(),
        t.elapsed(),
        gh.counters.total()
    );
    let plain = before.plain_issues();
    let pulls = before.pulls();
    assert_eq!(
        records(&run, "repositories"),
        5,
        "4 repositories and the empty one"
    );
    assert_eq!(
        records(&run, "issues"),
        plain.len() as u64,
        "pull requests are not issues"
    );
    assert_eq!(records(&run, "pull_requests"), pulls.len() as u64);
    assert_eq!(records(&run, "commits"), before.commits.len() as u64);
    assert_eq!(
        records(&run, "issue_comments"),
        before.comments.len() as u64
    );

    let db = PREFIX.views(&svc, "gh", "github").await;
    type IssueRow = (i64, String, String, String, String, i64, bool);
    let got: BTreeMap<i64, IssueRow> = rows(&db, "SELECT id, number, repository, title, state, user_login, epoch(updated_at)::BIGINT, closed_at IS NULL FROM issues", |r| {
        Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)))
    })
    .into_iter()
    .collect();
    let want: BTreeMap<i64, IssueRow> = plain
        .iter()
        .map(|i| {
            (
                i.id as i64,
                (
                    i.number as i64,
                    i.repo.clone(),
                    i.title.clone(),
                    i.state.to_string(),
                    i.user.to_string(),
                    i.updated_at,
                    i.closed_at.is_none(),
                ),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "the issues table differs from the fake's issues"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM issues WHERE labels IS NULL OR \"user\" IS NULL"
        ),
        0,
        "nested values stay JSON"
    );

    let got: BTreeMap<i64, (i64, String, Option<i64>, String)> = rows(
        &db,
        "SELECT id, number, repository, epoch(merged_at)::BIGINT, head_ref FROM pull_requests",
        |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))),
    )
    .into_iter()
    .collect();
    let want: BTreeMap<i64, (i64, String, Option<i64>, String)> = pulls
        .iter()
        .map(|i| {
            (
                i.pr_id.unwrap() as i64,
                (
                    i.number as i64,
                    i.repo.clone(),
                    i.merged_at,
                    format!("feature-{}", i.number),
                ),
            )
        })
        .collect();
    assert!(
        got == want,
        "the pull_requests table differs from the fake's pull requests"
    );

    let got: BTreeSet<(String, String, i64, Option<String>)> = rows(
        &db,
        "SELECT sha, repository, epoch(committed_at)::BIGINT, author_login FROM commits",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .into_iter()
    .collect();
    let want: BTreeSet<(String, String, i64, Option<String>)> = before
        .commits
        .iter()
        .map(|c| {
            (
                c.sha.clone(),
                c.repo.clone(),
                c.committed_at,
                c.author_login.map(str::to_string),
            )
        })
        .collect();
    assert!(
        got == want,
        "the commits table differs from the fake's commits"
    );

    let got: BTreeSet<(i64, i64, String, i64)> = rows(
        &db,
        "SELECT id, issue_number, repository, epoch(updated_at)::BIGINT FROM issue_comments",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .into_iter()
    .collect();
    let want: BTreeSet<(i64, i64, String, i64)> = before
        .comments
        .iter()
        .map(|c| {
            (
                c.id as i64,
                c.issue_number as i64,
                c.repo.clone(),
                c.updated_at,
            )
        })
        .collect();
    assert!(
        got == want,
        "the issue_comments table differs from the fake's comments"
    );
    let names: BTreeSet<String> = rows(&db, "SELECT repository FROM repositories", |r| r.get(0))
        .into_iter()
        .collect();
    assert_eq!(names, gh.repositories().into_iter().collect());
    drop(db);

    let state: Value = serde_json::from_slice(
        &std::fs::read(PREFIX.connection_dir(&svc, "gh").join("_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        state["streams"]["issues"]["repos"]
            .as_object()
            .unwrap()
            .len(),
        4,
        "one cursor per repository with issues: {state}"
    );

    // Edit some issues and pull requests; the next run brings exactly what changed since each
    // repository's cursor (`since` is inclusive: the newest item of the last run comes again).
    let touched = gh.touch(40);
    let after = gh.data();
    let issues_cursor = newest_per_repo(
        before
            .issues
            .iter()
            .map(|i| (i.repo.as_str(), i.updated_at)),
    );
    let pulls_cursor = newest_per_repo(pulls.iter().map(|i| (i.repo.as_str(), i.updated_at)));
    let want_issues: BTreeSet<i64> = after
        .plain_issues()
        .iter()
        .filter(|i| i.updated_at >= issues_cursor[&i.repo])
        .map(|i| i.id as i64)
        .collect();
    let want_pulls: BTreeSet<i64> = after
        .pulls()
        .iter()
        .filter(|i| i.updated_at >= pulls_cursor[&i.repo])
        .map(|i| i.pr_id.unwrap() as i64)
        .collect();
    let touched_plain: BTreeSet<i64> = touched
        .iter()
        .filter(|i| !i.is_pull_request())
        .map(|i| i.id as i64)
        .collect();
    assert!(touched_plain.is_subset(&want_issues) && !touched_plain.is_empty());
    assert!(
        want_issues.len() <= touched_plain.len() + 4,
        "at most one boundary re-read per repository"
    );

    let (issue_pages, pull_pages) = (gh.counters.on("issues"), gh.counters.on("pulls"));
    let run2 = PREFIX.sync(&svc, "gh", "github", &config, gh.token()).await;
    let run2_id = run2["run_id"].as_str().unwrap();
    assert!(
        gh.counters.on("issues") - issue_pages <= 5,
        "an incremental run reads one page per repository"
    );
    assert!(
        gh.counters.on("pulls") - pull_pages <= 5,
        "the pulls listing stops at the first pull request older than the cursor"
    );
    let db = duckdb::Connection::open_in_memory().unwrap();
    let got: BTreeSet<i64> = in_run(
        &db,
        &PREFIX.run_files(&svc, "gh", run2_id, "issues"),
        "SELECT id FROM {files}",
        |r| r.get(0),
    )
    .into_iter()
    .collect();
    assert_eq!(got, want_issues, "the second run brings the edited issues");
    let got: BTreeSet<i64> = in_run(
        &db,
        &PREFIX.run_files(&svc, "gh", run2_id, "pull_requests"),
        "SELECT id FROM {files}",
        |r| r.get(0),
    )
    .into_iter()
    .collect();
    assert_eq!(
        got, want_pulls,
        "the second run brings the edited pull requests"
    );
    assert_eq!(records(&run2, "issues"), want_issues.len() as u64);

    let db = PREFIX.views(&svc, "gh", "github").await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM issues"),
        plain.len() as i64,
        "no duplicates after two runs"
    );
    let edited = count(
        &db,
        "SELECT count(*) FROM issues WHERE title LIKE '% (edited)'",
    );
    assert_eq!(
        edited,
        touched_plain.len() as i64,
        "the view shows the edited titles"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_sync_survives_a_storm_of_429s_403s_and_502s() {
    let gh = FakeGithub::start(GithubConfig {
        repos: 3,
        issues: 3_000,
        comments: 600,
        commits: 450,
        ..Default::default()
    })
    .await;
    gh.knobs.set_fail_every(3);
    gh.knobs.set_rate_limit_every(7);
    gh.knobs.set_retry_after_secs(0);
    let data = gh.data();
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;

    let run = PREFIX
        .sync(&svc, "storm", "github", &github_config(&gh), gh.token())
        .await;
    use std::sync::atomic::Ordering::SeqCst;
    let (bad_gateways, limited) = (
        gh.counters.bad_gateways.load(SeqCst),
        gh.counters.rate_limited.load(SeqCst),
    );
    assert!(
        bad_gateways >= 10 && limited >= 5,
        "the storm happened: {bad_gateways} 502s, {limited} rate limits"
    );

    let db = PREFIX.views(&svc, "storm", "github").await;
    for (stream, key, want) in [
        ("issues", "id", data.plain_issues().len()),
        ("pull_requests", "id", data.pulls().len()),
        ("commits", "sha", data.commits.len()),
        ("issue_comments", "id", data.comments.len()),
    ] {
        assert_eq!(
            records(&run, stream),
            want as u64,
            "{stream}: every record emitted once"
        );
        let files = PREFIX.run_files(&svc, "storm", run["run_id"].as_str().unwrap(), stream);
        let (n, distinct): (i64, i64) = in_run(
            &db,
            &files,
            &format!("SELECT count(*), count(DISTINCT {key}) FROM {{files}}"),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )[0];
        assert_eq!(
            (n, distinct),
            (want as i64, want as i64),
            "{stream}: nothing lost or duplicated"
        );
    }
    let ids: BTreeSet<i64> = rows(&db, "SELECT id FROM issues", |r| r.get(0))
        .into_iter()
        .collect();
    assert_eq!(
        ids,
        data.plain_issues().iter().map(|i| i.id as i64).collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_start_date_bounds_the_first_sync() {
    let gh = FakeGithub::start(GithubConfig {
        repos: 2,
        issues: 1_000,
        comments: 300,
        commits: 300,
        ..Default::default()
    })
    .await;
    let data = gh.data();
    let mut updated: Vec<i64> = data.issues.iter().map(|i| i.updated_at).collect();
    updated.sort_unstable();
    let since = updated[updated.len() / 2];
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let config = json!({"api_url": gh.url, "repositories": ["acme/repo-0", "acme/repo-1"], "start_date": sluice_tests::fakes::iso(since)});

    let run = PREFIX
        .sync(&svc, "since", "github", &config, gh.token())
        .await;
    let plain = data
        .plain_issues()
        .into_iter()
        .filter(|i| i.updated_at >= since)
        .count();
    let pulls = data
        .pulls()
        .into_iter()
        .filter(|i| i.updated_at >= since)
        .count();
    assert!(plain > 100 && plain < data.plain_issues().len());
    assert_eq!(records(&run, "issues"), plain as u64);
    assert_eq!(
        records(&run, "pull_requests"),
        pulls as u64,
        "the pulls listing stops at start_date"
    );
    let commits = data
        .commits
        .iter()
        .filter(|c| c.committed_at >= since)
        .count();
    assert_eq!(records(&run, "commits"), commits as u64);
    let comments = data
        .comments
        .iter()
        .filter(|c| c.updated_at >= since)
        .count();
    assert_eq!(records(&run, "issue_comments"), comments as u64);
    assert_eq!(records(&run, "repositories"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_github_run_commits_nothing() {
    let gh = FakeGithub::start(GithubConfig {
        repos: 2,
        issues: 3_000,
        ..Default::default()
    })
    .await;
    gh.knobs.set_latency_ms(200);
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let config = github_config(&gh);

    let run_id = submit(
        &svc,
        &PREFIX.run_request("cancel-me", "github", &config, gh.token()),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while gh.counters.on("issues") < 3 {
        assert!(
            Instant::now() < deadline,
            "the run never started reading issues\n{}",
            svc.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = svc
        .post(&format!(
            "/internal/mirror-connections/runs/{run_id}/cancel"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let run = svc.wait_run(&run_id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    PREFIX.pull(&svc, "cancel-me").await;
    let dir = PREFIX.connection_dir(&svc, "cancel-me");
    assert!(!dir.join("_state.json").exists(), "no state committed");
    assert!(!dir.join("_runs").exists(), "no run manifest committed");

    // The connection is free again, and a full run starts from scratch.
    gh.knobs.set_latency_ms(0);
    let run = PREFIX
        .sync(&svc, "cancel-me", "github", &config, gh.token())
        .await;
    assert_eq!(
        records(&run, "issues"),
        gh.data().plain_issues().len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_full_sync_matches_the_fake_and_an_incremental_brings_only_new_messages() {
    // Pages of at most 15 (as Slack forces on some apps), some shorter while more remains,
    // and a 429 or a 502 now and then.
    let sl = FakeSlack::start(SlackConfig {
        channels: 8,
        users: 45,
        messages: 1_500,
        max_limit: 15,
        ..Default::default()
    })
    .await;
    sl.knobs.set_rate_limit_every(11);
    sl.knobs.set_fail_every(13);
    sl.knobs.set_retry_after_secs(0);
    let data = sl.data();
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let config = json!({"api_url": sl.url});

    let run = PREFIX.sync(&svc, "sl", "slack", &config, sl.token()).await;
    let messages = data.readable_messages();
    let replies = data.readable_replies();
    assert!(replies.len() > 100 && messages.len() < data.messages.len());
    assert_eq!(records(&run, "channels"), data.channels.len() as u64);
    assert_eq!(records(&run, "users"), data.users.len() as u64);
    assert_eq!(
        records(&run, "messages"),
        messages.len() as u64,
        "every message of the member channels, once"
    );
    assert_eq!(
        records(&run, "threads"),
        replies.len() as u64,
        "every reply, once"
    );
    assert!(
        sl.counters
            .rate_limited
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );

    let db = PREFIX.views(&svc, "sl", "slack").await;
    let got: BTreeSet<(String, String, String, String)> = rows(
        &db,
        "SELECT channel_id, ts, \"user\", text FROM messages",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .into_iter()
    .collect();
    let want: BTreeSet<(String, String, String, String)> = messages
        .iter()
        .map(|m| {
            (
                m.channel.clone(),
                m.ts.clone(),
                m.user.clone(),
                m.text.clone(),
            )
        })
        .collect();
    assert!(
        got == want,
        "the messages table differs from the fake's messages"
    );
    let got: BTreeSet<(String, String, String)> =
        rows(&db, "SELECT channel_id, ts, thread_ts FROM threads", |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .into_iter()
        .collect();
    let want: BTreeSet<(String, String, String)> = replies
        .iter()
        .map(|m| {
            (
                m.channel.clone(),
                m.ts.clone(),
                m.thread_ts.clone().unwrap(),
            )
        })
        .collect();
    assert!(
        got == want,
        "the threads table differs from the fake's replies"
    );
    let got: BTreeSet<(String, String, bool)> =
        rows(&db, "SELECT id, name, is_private FROM channels", |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .into_iter()
        .collect();
    let want: BTreeSet<(String, String, bool)> = data
        .channels
        .iter()
        .map(|c| (c.id.clone(), c.name.clone(), c.is_private))
        .collect();
    assert_eq!(got, want);
    let got: BTreeSet<(String, Option<String>)> = rows(&db, "SELECT id, email FROM users", |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .into_iter()
    .collect();
    let want: BTreeSet<(String, Option<String>)> = data
        .users
        .iter()
        .map(|u| (u.id.clone(), u.email.clone()))
        .collect();
    assert_eq!(got, want);
    drop(db);

    // New messages and late replies: the next run brings exactly the new messages and the
    // parents that got a reply (their reply_count moved), and the threads that got one.
    let posted = sl.post(5);
    let late = sl.reply(3);
    let after = sl.data();
    let run2 = PREFIX.sync(&svc, "sl", "slack", &config, sl.token()).await;
    let run2_id = run2["run_id"].as_str().unwrap();
    let db = duckdb::Connection::open_in_memory().unwrap();
    let got: BTreeSet<(String, String)> = in_run(
        &db,
        &PREFIX.run_files(&svc, "sl", run2_id, "messages"),
        "SELECT channel_id, ts FROM {files}",
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .into_iter()
    .collect();
    let parents: BTreeSet<&str> = late.iter().filter_map(|r| r.thread_ts.as_deref()).collect();
    let want: BTreeSet<(String, String)> = posted
        .iter()
        .chain(
            after
                .messages
                .iter()
                .filter(|m| parents.contains(m.ts.as_str())),
        )
        .map(|m| (m.channel.clone(), m.ts.clone()))
        .collect();
    assert_eq!(want.len(), posted.len() + 3);
    assert_eq!(got, want);
    let want: BTreeSet<(String, String)> = after
        .replies
        .iter()
        .filter(|r| parents.contains(r.thread_ts.as_deref().unwrap_or_default()))
        .map(|r| (r.channel.clone(), r.ts.clone()))
        .collect();
    let got: BTreeSet<(String, String)> = in_run(
        &db,
        &PREFIX.run_files(&svc, "sl", run2_id, "threads"),
        "SELECT channel_id, ts FROM {files}",
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .into_iter()
    .collect();
    assert_eq!(got, want, "the threads with a new reply, whole");
    let db = PREFIX.views(&svc, "sl", "slack").await;
    let counts: BTreeMap<String, i64> = rows(
        &db,
        "SELECT ts, reply_count FROM messages WHERE reply_count IS NOT NULL",
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .into_iter()
    .collect();
    for parent in after
        .messages
        .iter()
        .filter(|m| parents.contains(m.ts.as_str()))
    {
        assert_eq!(
            counts[&parent.ts], parent.reply_count as i64,
            "the view has the new reply_count"
        );
    }
    assert_eq!(
        records(&run2, "users"),
        data.users.len() as u64,
        "users are a full refresh"
    );
}

/// The run's error `{code, message}` once it failed.
async fn failed_run(svc: &Service, request: &Value) -> Value {
    let run = svc.run_to_end(request).await;
    assert_eq!(run["status"], "failed", "{run}");
    run["error"].clone()
}

/// The value of `header` in an answer of the fake to `GET url` with `token`.
async fn fake_header(url: &str, token: &str, header: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    r.headers()
        .get(header)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_validate_names_what_each_stream_lacks_and_the_sync_reads_the_rest() {
    let sl = FakeSlack::start(SlackConfig {
        channels: 6,
        not_member_every: 0,
        messages: 120,
        ..Default::default()
    })
    .await;
    let (no_history, public_only) = ("xoxb-no-history-0123456789", "xoxb-public-only-0123456789");
    sl.grant(no_history, "channels:read,groups:read,users:read");
    sl.grant(
        public_only,
        "channels:read,groups:read,users:read,channels:history",
    );
    // Slack's header, as Slack writes it: comma-separated, no spaces.
    assert_eq!(
        fake_header(
            &format!("{}/auth.test", sl.url),
            no_history,
            "x-oauth-scopes"
        )
        .await
        .as_deref(),
        Some("channels:read,groups:read,users:read")
    );
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let config = json!({"api_url": sl.url});

    let answer = validate(&svc, "slack", &config, no_history).await;
    assert_eq!(
        answer["valid"], true,
        "channels and users are readable: {answer}"
    );
    assert_eq!(
        answer["account"]["unreadable_streams"],
        json!([
            {"stream": "messages", "missing_scope": "channels:history,groups:history", "partial": false},
            {"stream": "threads", "missing_scope": "channels:history,groups:history", "partial": false}
        ])
    );
    let answer = validate(&svc, "slack", &config, public_only).await;
    assert_eq!(answer["valid"], true, "{answer}");
    assert_eq!(
        answer["account"]["unreadable_streams"][0],
        json!({"stream": "messages", "missing_scope": "groups:history", "partial": true})
    );
    let required = json!({"api_url": sl.url, "required_streams": ["messages"]});
    assert_invalid(
        &validate(&svc, "slack", &required, no_history).await,
        "insufficient_scope",
        &[
            "required stream messages cannot be read: the token lacks channels:history,groups:history",
        ],
    );
    assert_invalid(
        &validate(&svc, "slack", &required, public_only).await,
        "insufficient_scope",
        &["groups:history"],
    );
    assert_eq!(
        validate(&svc, "slack", &required, sl.token()).await["valid"],
        true
    );
    // Only users:read: not a stream left with all it needs but users.
    sl.grant("xoxb-users-only-0123456789", "users:read");
    let users_only = validate(&svc, "slack", &config, "xoxb-users-only-0123456789").await;
    assert_eq!(users_only["valid"], true, "{users_only}");
    assert_eq!(
        users_only["account"]["unreadable_streams"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // `valid: true` holds for the sync: it reads what the scopes allow and skips the rest.
    let data = sl.data();
    let run = PREFIX
        .sync(&svc, "sl-no-history", "slack", &config, no_history)
        .await;
    assert_eq!(records(&run, "channels"), data.channels.len() as u64);
    assert_eq!(records(&run, "users"), data.users.len() as u64);
    assert_eq!(records(&run, "messages"), 0);
    let private: BTreeSet<&str> = data
        .channels
        .iter()
        .filter(|c| c.is_private)
        .map(|c| c.id.as_str())
        .collect();
    assert!(!private.is_empty());
    let run = PREFIX
        .sync(&svc, "sl-public", "slack", &config, public_only)
        .await;
    let public_messages = data
        .messages
        .iter()
        .filter(|m| !private.contains(m.channel.as_str()))
        .count();
    assert_eq!(
        records(&run, "messages"),
        public_messages as u64,
        "public channels only"
    );
    // Once granted, the next sync reads the private channels from their start (their cursors
    // never moved) and nothing again of the public ones.
    sl.grant(public_only, ALL_SCOPES);
    let run = PREFIX
        .sync(&svc, "sl-public", "slack", &config, public_only)
        .await;
    assert_eq!(
        records(&run, "messages"),
        (data.messages.len() - public_messages) as u64
    );
    // A required stream the token cannot read fails the run instead.
    let error = failed_run(
        &svc,
        &PREFIX.run_request("sl-required", "slack", &required, no_history),
    )
    .await;
    assert_eq!(error["code"], "insufficient_scope", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_validate_checks_classic_scopes_and_fine_grained_permissions() {
    let gh = FakeGithub::start(GithubConfig {
        repos: 3,
        issues: 60,
        comments: 20,
        commits: 60,
        ..Default::default()
    })
    .await;
    let data = gh.data();
    assert!(
        data.repos
            .iter()
            .any(|r| r.full_name == "acme/repo-1" && r.private)
    );
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let both = json!({"api_url": gh.url, "repositories": ["acme/repo-0", "acme/repo-1"]});
    let public = json!({"api_url": gh.url, "repositories": ["acme/repo-0"]});

    // A classic token without `repo`: GitHub hides the private repository (404).
    let classic = "ghp_classic_public0123456789";
    gh.grant(
        classic,
        Grant::Classic {
            scopes: "read:org, gist".into(),
        },
    );
    assert_eq!(
        fake_header(&format!("{}/user", gh.url), gh.token(), "x-oauth-scopes")
            .await
            .as_deref(),
        Some("repo, read:org"),
        "GitHub's header: comma and space"
    );
    let answer = validate(&svc, "github", &both, classic).await;
    assert_invalid(&answer, "insufficient_scope", &["repository acme/repo-1"]);
    assert_invalid(
        &answer,
        "insufficient_scope",
        &["lacks the scope repo (its scopes: read:org, gist)"],
    );
    let answer = validate(&svc, "github", &public, classic).await;
    assert_eq!(answer["valid"], true, "{answer}");
    assert_eq!(answer["account"]["scopes"], json!(["read:org", "gist"]));
    let org = validate(&svc, "github", &github_config(&gh), classic).await;
    assert_eq!(org["valid"], true, "{org}");
    assert!(
        org["account"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("only the public repositories"),
        "{org}"
    );

    // A fine-grained token (no x-oauth-scopes) not granted repo-1 cannot read it at all.
    let one_repo = "github_pat_one_repo0123456789";
    gh.grant(
        one_repo,
        Grant::FineGrained {
            repos: vec![],
            permissions: vec![
                "issues=read".into(),
                "pull_requests=read".into(),
                "contents=read".into(),
            ],
        },
    );
    assert_eq!(
        fake_header(&format!("{}/user", gh.url), one_repo, "x-oauth-scopes").await,
        None
    );
    assert_invalid(
        &validate(&svc, "github", &both, one_repo).await,
        "insufficient_scope",
        &["repository acme/repo-1"],
    );
    let answer = validate(&svc, "github", &public, one_repo).await;
    assert_eq!(answer["valid"], true, "{answer}");
    assert_eq!(answer["account"]["token_type"], "fine-grained");
    assert_eq!(answer["account"]["scopes"], Value::Null);
    assert_eq!(answer["account"]["unreadable_streams"], json!([]));

    // Granted repo-1 but not contents: its commits cannot be read; the rest can.
    let no_contents = "github_pat_no_contents0123456789";
    gh.grant(
        no_contents,
        Grant::FineGrained {
            repos: vec!["acme/repo-1".into()],
            permissions: vec!["issues=read".into(), "pull_requests=read".into()],
        },
    );
    let unreadable = json!([{"stream": "commits", "repository": "acme/repo-1", "missing_scope": "contents=read"}]);
    let answer = validate(&svc, "github", &both, no_contents).await;
    assert_eq!(answer["valid"], true, "{answer}");
    assert_eq!(answer["account"]["unreadable_streams"], unreadable);
    let answer = validate(&svc, "github", &github_config(&gh), no_contents).await;
    assert_eq!(
        answer["account"]["unreadable_streams"], unreadable,
        "one private repository of the organization is probed"
    );
    let required = json!({"api_url": gh.url, "repositories": ["acme/repo-0", "acme/repo-1"], "required_streams": ["commits"]});
    assert_invalid(
        &validate(&svc, "github", &required, no_contents).await,
        "insufficient_scope",
        &[
            "required stream commits cannot be read in repository acme/repo-1 (HTTP 403): the token lacks the permission contents=read",
        ],
    );

    // The sync reads everything but repo-1's commits, whose cursor stays unset.
    let run = PREFIX
        .sync(&svc, "gh-no-contents", "github", &both, no_contents)
        .await;
    let commits = |repo: &str| data.commits.iter().filter(|c| c.repo == repo).count() as u64;
    assert_eq!(records(&run, "commits"), commits("acme/repo-0"));
    let issues = data
        .plain_issues()
        .iter()
        .filter(|i| i.repo == "acme/repo-0" || i.repo == "acme/repo-1")
        .count();
    assert_eq!(records(&run, "issues"), issues as u64);
    let state: Value = serde_json::from_slice(
        &std::fs::read(
            PREFIX
                .connection_dir(&svc, "gh-no-contents")
                .join("_state.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let heads = &state["streams"]["commits"]["heads"];
    assert!(
        heads.get("acme/repo-0").is_some() && heads.get("acme/repo-1").is_none(),
        "{state}"
    );
    let error = failed_run(
        &svc,
        &PREFIX.run_request("gh-required", "github", &required, no_contents),
    )
    .await;
    assert_eq!(error["code"], "insufficient_scope", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("contents=read"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_commits_of_a_branch_merged_after_the_last_sync_are_read() {
    let gh = FakeGithub::start(GithubConfig {
        repos: 2,
        issues: 20,
        comments: 0,
        commits: 400,
        ..Default::default()
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let config = json!({"api_url": gh.url, "repositories": ["acme/repo-0", "acme/repo-1"]});

    let run = PREFIX
        .sync(&svc, "gh-merge", "github", &config, gh.token())
        .await;
    assert_eq!(records(&run, "commits"), 400);
    let synced_until = gh
        .data()
        .commits
        .iter()
        .map(|c| c.committed_at)
        .max()
        .unwrap();

    // repo-0: a branch started 30 commits below the head, merged now; repo-1: a fast-forward.
    let merged = gh.merge_branch("acme/repo-0", 3, 30);
    let pushed = gh.push("acme/repo-1", 2);
    assert_eq!(merged.len(), 4);
    assert!(
        merged[..3].iter().all(|c| c.committed_at < synced_until),
        "the branch's commits are dated before what the first sync read: a date cursor misses them"
    );
    let before = gh.counters.on("commits");
    let run = PREFIX
        .sync(&svc, "gh-merge", "github", &config, gh.token())
        .await;
    let want: BTreeSet<String> = merged
        .iter()
        .chain(&pushed)
        .map(|c| c.sha.clone())
        .collect();
    let db = duckdb::Connection::open_in_memory().unwrap();
    let got: BTreeSet<String> = in_run(
        &db,
        &PREFIX.run_files(&svc, "gh-merge", run["run_id"].as_str().unwrap(), "commits"),
        "SELECT sha FROM {files}",
        |r| r.get(0),
    )
    .into_iter()
    .collect();
    assert_eq!(
        got, want,
        "exactly the merged branch, its merge commit and the pushed commits"
    );
    assert_eq!(
        gh.counters.on("commits") - before,
        2,
        "one page per repository: the walk stops where the branch joins known history"
    );

    // Nothing new: nothing read again.
    let run = PREFIX
        .sync(&svc, "gh-merge", "github", &config, gh.token())
        .await;
    assert_eq!(records(&run, "commits"), 0);
    let db = PREFIX.views(&svc, "gh-merge", "github").await;
    assert_eq!(count(&db, "SELECT count(*) FROM commits"), 406);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_messages_edited_after_a_sync_are_read_again() {
    let sl = FakeSlack::start(SlackConfig {
        channels: 4,
        not_member_every: 0,
        messages: 200,
        thread_every: 0,
        ..Default::default()
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let config = json!({"api_url": sl.url});

    let run = PREFIX
        .sync(&svc, "sl-edits", "slack", &config, sl.token())
        .await;
    assert_eq!(records(&run, "messages"), 200);
    // Edited after the sync: their `ts` is before every channel's cursor, their `edited.ts` after.
    let edited = sl.edit(5);
    // Slack's `Date` has second resolution: a change made in the second a sync starts comes
    // again in the next one. Start this one in a later second, so the next brings nothing.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let run = PREFIX
        .sync(&svc, "sl-edits", "slack", &config, sl.token())
        .await;
    let db = duckdb::Connection::open_in_memory().unwrap();
    let got: BTreeSet<(String, String)> = in_run(
        &db,
        &PREFIX.run_files(
            &svc,
            "sl-edits",
            run["run_id"].as_str().unwrap(),
            "messages",
        ),
        "SELECT channel_id, ts FROM {files}",
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .into_iter()
    .collect();
    let want: BTreeSet<(String, String)> = edited
        .iter()
        .map(|m| (m.channel.clone(), m.ts.clone()))
        .collect();
    assert_eq!(got, want, "exactly the edited messages");
    let db = PREFIX.views(&svc, "sl-edits", "slack").await;
    assert_eq!(count(&db, "SELECT count(*) FROM messages"), 200);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM messages WHERE text LIKE '% (edited)' AND edited IS NOT NULL"
        ),
        5,
        "the view shows the edits"
    );
    // Nothing changed since: nothing comes again.
    let run = PREFIX
        .sync(&svc, "sl-edits", "slack", &config, sl.token())
        .await;
    assert_eq!(records(&run, "messages"), 0);
}
