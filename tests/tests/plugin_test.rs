//! `sluice plugin test`: validate, discover and sync of a real connector through the host's
//! pipeline; a cassette recorded against the fake GitHub replays offline with the same output,
//! and a request the cassette does not hold fails the test, naming it.

use std::path::Path;
use std::process::{Command, Output};

use sluice_tests::fakes::github::{FakeGithub, GithubConfig};
use sluice_tests::{plugin, sluice_bin};

fn plugin_test(config: &Path, token: &str, cassette: &Path, extra: &[&str]) -> Output {
    Command::new(sluice_bin())
        .args(["plugin", "test", "--log-format", "text"])
        .arg(plugin("github"))
        .arg("--config")
        .arg(config)
        .arg("--secret")
        .arg(format!("token={token}"))
        .arg("--cassette")
        .arg(cassette)
        .args(["--stream", "issues", "--show", "2"])
        .args(extra)
        .output()
        .expect("run sluice")
}

/// What a test printed about the data: every line but the run id and the cassette's own.
fn data_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("sync: committed run") && !l.starts_with("cassette:"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_cassette_replays_offline_and_refuses_other_requests() {
    let gh = FakeGithub::start(GithubConfig {
        repos: 2,
        issues: 500,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    let one_repo = serde_json::json!({"api_url": gh.url, "repositories": ["acme/repo-0"]});
    std::fs::write(&config, one_repo.to_string()).expect("write config");
    let cassette = dir.path().join("cassette");
    let token = gh.token().to_string();
    let expected_issues = gh
        .data()
        .plain_issues()
        .iter()
        .filter(|i| i.repo == "acme/repo-0")
        .count();
    assert!(
        expected_issues > 100,
        "more than one page: {expected_issues}"
    );

    let recorded = plugin_test(
        &config,
        &token,
        &cassette,
        &["--record", "--allow-private-addresses", "loopback"],
    );
    let stdout = String::from_utf8_lossy(&recorded.stdout);
    assert!(
        recorded.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&recorded.stderr)
    );
    assert!(stdout.contains("validate: ok"), "{stdout}");
    assert!(
        stdout.contains(&format!("issues: {expected_issues} records")),
        "{stdout}"
    );
    assert!(stdout.contains("cassette: recorded"), "{stdout}");
    let tape = std::fs::read_to_string(cassette.join("cassette.jsonl")).expect("cassette file");
    assert!(
        tape.lines().count() >= 3,
        "validate, discover and pages: {tape}"
    );
    assert!(!tape.contains(&token), "the token is never recorded");
    // The sync shows its first records.
    let shown = data_lines(&recorded)
        .iter()
        .filter(|l| l.starts_with("    {"))
        .count();
    assert_eq!(shown, 2, "{stdout}");

    // Offline: the fake is gone, another token value is passed.
    drop(gh);
    let replayed = plugin_test(&config, "ghp_some_other_value", &cassette, &[]);
    let stdout2 = String::from_utf8_lossy(&replayed.stdout);
    assert!(
        replayed.status.success(),
        "{stdout2}\n{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(data_lines(&replayed), data_lines(&recorded));
    assert!(stdout2.contains("0 unused"), "{stdout2}");

    // Found from outside: a failed recording replaced a good cassette. Now it is discarded.
    let before = std::fs::read(cassette.join("cassette.jsonl")).expect("cassette file");
    let failed = plugin_test(
        &config,
        "ghp_some_other_value",
        &cassette,
        &["--record", "--allow-private-addresses", "loopback"],
    );
    let out = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{out}");
    assert!(out.contains("recording discarded"), "{out}");
    assert_eq!(
        std::fs::read(cassette.join("cassette.jsonl")).expect("cassette file"),
        before
    );
    // A secret too short to be masked is refused before anything is recorded.
    let short = plugin_test(&config, "short77", &cassette, &["--record"]);
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("shorter than 8"),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );

    // A request the recording never made: refused, named, exit 1.
    let mut two_repos = one_repo.clone();
    two_repos["repositories"] = serde_json::json!(["acme/repo-0", "acme/repo-1"]);
    std::fs::write(&config, two_repos.to_string()).expect("write config");
    let missed = plugin_test(&config, "ghp_some_other_value", &cassette, &[]);
    let stdout3 = String::from_utf8_lossy(&missed.stdout);
    assert_eq!(missed.status.code(), Some(1), "{stdout3}");
    assert!(
        stdout3.contains("not in the cassette: GET") && stdout3.contains("acme/repo-1"),
        "{stdout3}"
    );
    // The connector's own word for the refusal (`invalid_config`) is not the headline: the
    // step says which request had no recording and how to record it.
    let failed_line = stdout3
        .lines()
        .find(|l| l.starts_with("validate: failed"))
        .unwrap_or_default();
    assert!(
        failed_line.starts_with("validate: failed: the cassette has no recorded answer for GET")
            && failed_line.contains("acme/repo-1")
            && failed_line.contains("record it with --record"),
        "{stdout3}"
    );
    assert!(stdout3.contains("run again with --record"), "{stdout3}");
}

#[test]
fn a_broken_or_missing_cassette_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"api_url":"https://api.github.com","repositories":["a/b"]}"#,
    )
    .expect("write config");
    let missing = plugin_test(&config, "ghp_whatever_value", &dir.path().join("none"), &[]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("cassette.jsonl"), "{stderr}");

    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).expect("mkdir");
    std::fs::write(broken.join("cassette.jsonl"), "{not json\n").expect("write");
    let out = plugin_test(&config, "ghp_whatever_value", &broken, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 1"), "{stderr}");
}
