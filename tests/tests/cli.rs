//! `sluice plugin validate|inspect`, `sluice run`, and the startup contract of `sluice serve`.

use std::process::Command;

use sluice_tests::{plugin, sluice_bin};

fn validate(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(sluice_bin())
        .args(["plugin", "validate"])
        .arg(path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text.trim().to_string())
}

#[test]
fn validate_accepts_good_plugins_and_names_what_is_wrong_with_bad_ones() {
    let (ok, line) = validate(&plugin("probe"));
    assert!(ok, "{line}");
    assert!(line.starts_with("loads: probe 1.0.0"), "{line}");
    assert!(line.ends_with("ok"), "{line}");
    // The shipped connectors have nothing to report.
    for id in ["github", "slack", "linear", "hubspot", "http-json"] {
        let (ok, text) = validate(&plugin(id));
        assert!(ok, "{id}: {text}");
        assert_eq!(
            text.lines().count(),
            2,
            "{id}: no findings expected: {text}"
        );
    }
    // A plugin asking more memory than the operator grants is an error, named.
    let out = Command::new(sluice_bin())
        .args(["plugin", "validate", "--max-memory-mib", "32"])
        .arg(plugin("github"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("error: memory-mib 64 is over the operator's limit of 32 MiB"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"hello, not wasm").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let cases = [
        (junk, "not a WebAssembly component"),
        (core, "core wasm module"),
        (plugin("wrong-world"), "sluice:connector@9.0.0"),
        (
            plugin("extra-import"),
            "undeclared import \"evil:backdoor/shell@0.1.0\"",
        ),
        // Every problem of a manifest, not only the first.
        (
            plugin("bad-manifest"),
            "invalid manifest: id \"Not A Valid Id!\"",
        ),
        (plugin("bad-manifest"), "; config-schema is not JSON"),
    ];
    for (path, reason) in cases {
        let (ok, line) = validate(&path);
        assert!(!ok, "{} should be refused", path.display());
        assert_eq!(line.lines().count(), 1, "one line: {line}");
        assert!(
            line.contains(reason),
            "{}: expected {reason:?} in {line:?}",
            path.display()
        );
    }
}

/// A truncated component is refused with the parse error, also when the compile runs in a
/// child process (`sluice run`) and RUST_BACKTRACE=1 is set: the child's backtrace once
/// replaced the message (`compiler process (...): 33: _start`).
#[test]
fn a_corrupt_plugin_is_refused_with_the_parse_error_under_rust_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(plugin("probe")).unwrap();
    let corrupt = dir.path().join("corrupt.wasm");
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    let inspect = Command::new(sluice_bin())
        .env("RUST_BACKTRACE", "1")
        .args(["plugin", "inspect"])
        .arg(&corrupt)
        .output()
        .unwrap();
    let run = Command::new(sluice_bin())
        .env("RUST_BACKTRACE", "1")
        .arg("run")
        .arg(&corrupt)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    for (what, out) in [("inspect", inspect), ("run", run)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains("failed to parse WebAssembly module"),
            "{what}: the parse error first: {stderr}"
        );
        assert!(!first.contains("_start"), "{what}: {first}");
    }
}

#[test]
fn inspect_prints_the_manifest() {
    let out = Command::new(sluice_bin())
        .args(["plugin", "inspect"])
        .arg(plugin("http-json"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["manifest"]["id"], "http-json");
    assert_eq!(v["wit_version"], "0.2.1");
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert!(
        v["imports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i.as_str().unwrap().starts_with("sluice:connector/"))
    );
}

#[test]
fn serve_refuses_to_start_without_a_token() {
    for token in [None, Some(""), Some("   ")] {
        let mut cmd = Command::new(sluice_bin());
        cmd.arg("serve")
            .env_remove("CONNECT_SERVICE_TOKEN")
            .env("PORT", "1");
        if let Some(t) = token {
            cmd.env("CONNECT_SERVICE_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("CONNECT_SERVICE_TOKEN must be set"),
            "{token:?}"
        );
    }
}

/// A connector written in Python (componentize-py) runs through `sluice run`: the component
/// imports all of WASI p2, which the host links locked down, and what it prints to stdout
/// reaches the log as the plugin's.
#[test]
fn run_syncs_a_componentize_py_plugin_into_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"count": 5}"#).unwrap();
    let out_dir = dir.path().join("out");
    let out = Command::new(sluice_bin())
        .args(["run", "--log-format", "text", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out_dir)
        .arg(plugin("python-hello"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("syncing 5 words") && stderr.contains("stdio"),
        "the plugin's stdout is logged: {stderr}"
    );
    let runs: Vec<_> = std::fs::read_dir(out_dir.join("local/_runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&runs[0]).unwrap()).unwrap();
    let words = &manifest["streams"]["words"];
    assert_eq!(words["records"], 5, "{manifest}");
    assert_eq!(words["state"]["cursor"], 5, "{manifest}");
    let file = out_dir.join(words["files"][0]["key"].as_str().unwrap());
    let db = duckdb::Connection::open_in_memory().unwrap();
    let (n, last): (i64, String) = db
        .query_row(
            "SELECT count(*), max(word) FROM read_parquet(?)",
            [file.to_string_lossy()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, last.as_str()), (5, "word-4"));
}

/// `sluice run` holds a run to `SLUICE_STAGING_RUN_QUOTA_MIB` as the service does (it used the
/// built-in 4 GiB whatever the setting): a connector that emits without end fails on 2 MiB, with
/// the service's error code, and the staging directory is left empty.
#[test]
fn run_holds_a_connector_to_the_staging_quota() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"mode": "disk_fill"}"#).unwrap();
    let out_dir = dir.path().join("out");
    let out = Command::new(sluice_bin())
        .args(["run", "--secret", "token=t", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out_dir)
        .arg(plugin("hostile"))
        .env("SLUICE_STAGING_RUN_QUOTA_MIB", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("staging_quota_exceeded") && stderr.contains("allows 2 MiB"),
        "{stderr}"
    );
    let staged = std::fs::read_dir(out_dir.join(".sluice/staging"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(staged, 0, "staging left behind");
    assert!(
        !out_dir.join("local/_runs").exists(),
        "a failed run committed"
    );
}

/// `sluice run --stream` is held to the service's rule for `streams`, before the run starts: a
/// stream named twice is refused naming it, and an unknown stream is refused listing the
/// connector's streams (it was a failed run, `invalid_config`, after the run had started).
#[test]
fn run_refuses_a_repeated_or_unknown_stream_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"action": "ok"}"#).unwrap();
    for (streams, says) in [
        (
            &["items", "items"][..],
            r#"--stream: streams: stream "items" is named more than once"#,
        ),
        (
            &["itemz"][..],
            r#"--stream: streams: unknown stream "itemz"; connector probe has: items"#,
        ),
    ] {
        let out_dir = dir.path().join("out");
        let mut cmd = Command::new(sluice_bin());
        cmd.args(["run", "--secret", "token=t", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&out_dir)
            .arg(plugin("probe"));
        for s in streams {
            cmd.args(["--stream", s]);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{streams:?}: {stderr}");
        assert!(stderr.contains(says), "{streams:?}: {stderr}");
        assert!(
            !stderr.contains("run failed") && !stderr.contains("→"),
            "refused before the run started: {stderr}"
        );
    }
}

/// `sluice run` and `sluice plugin test` name a misnamed credential as unknown, with the one
/// the connector declares (they said only that `token` was missing, or ran the connector's
/// own validate on it), before anything runs.
#[test]
fn run_and_plugin_test_name_a_misnamed_credential() {
    let dir = tempfile::tempdir().unwrap();
    let says = r#"credentials.api_token: unknown credential "api_token": connector probe declares no such secret; did you mean "token"?"#;
    for args in [vec!["run", "--out"], vec!["plugin", "test", "--out"]] {
        let out = Command::new(sluice_bin())
            .args(&args)
            .arg(dir.path().join("out"))
            .args(["--secret", "api_token=t0123456789"])
            .arg(plugin("probe"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
        assert!(
            !text.contains("validate:"),
            "refused before validate: {text}"
        );
    }
}

/// A loopback destination refused in `sluice run` names the flag that allows it (the service's
/// variable meant nothing to a CLI user, and the refusal named neither).
#[test]
fn run_names_the_flag_that_allows_a_loopback_destination() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"base_url": "http://127.0.0.1:9", "streams": [{"name": "orders", "path": "/orders"}]}"#,
    )
    .unwrap();
    let out = Command::new(sluice_bin())
        .args(["run", "--secret", "api_token=t0123456789", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg(plugin("http-json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("resolves to a loopback address (127.0.0.1); run with --allow-private-addresses loopback to allow it"),
        "{stderr}"
    );
}

/// A user's mistake (a missing file, a bad flag value) is one line of error chain, also under
/// RUST_BACKTRACE=1: no backtrace, no `Caused by:` block (`main` returned the error, which
/// printed anyhow's debug form with the backtrace).
#[test]
fn user_errors_print_the_error_chain_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let missing = dir.path().join("missing.json");
    let probe = plugin("probe");
    let cases: [(Vec<&std::ffi::OsStr>, &str); 3] = [
        (
            vec![
                "run".as_ref(),
                "--config".as_ref(),
                missing.as_os_str(),
                "--out".as_ref(),
                out_dir.as_os_str(),
                probe.as_os_str(),
            ],
            "Error: reading ",
        ),
        (
            vec![
                "run".as_ref(),
                "--allow-private-addresses".as_ref(),
                "everything".as_ref(),
                "--out".as_ref(),
                out_dir.as_os_str(),
                probe.as_os_str(),
            ],
            "Error: unknown address class \"everything\"",
        ),
        (
            vec!["plugin".as_ref(), "inspect".as_ref(), missing.as_os_str()],
            "Error: ",
        ),
    ];
    for (args, says) in cases {
        let out = Command::new(sluice_bin())
            .env("RUST_BACKTRACE", "1")
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with(says), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: one line: {stderr}"
        );
        assert!(
            !stderr.contains("backtrace") && !stderr.contains("Caused by"),
            "{args:?}: {stderr}"
        );
    }
}

/// Runs `cmd` with its stdout a pipe whose reader is already gone (what `| head` leaves once
/// `head` exits): its exit status and stderr.
fn with_reader_gone(cmd: &mut Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cmd
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Every subcommand that prints ends quietly when its reader is gone (`sluice … | head`): exit
/// status 141 (as a tool SIGPIPE kills shows in a shell), no panic, no backtrace. `println!`
/// panicked on the EPIPE ("failed printing to stdout: Broken pipe") with a backtrace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_printing_command_ends_quietly_when_its_reader_is_gone() {
    use sluice_tests::fakes::internal_service::{Faults, ReferenceService};
    let dir = tempfile::tempdir().unwrap();
    let secret = "epipe-check-secret-0123456789abcdef";
    let reference = ReferenceService::start(secret, 1, Faults::default()).await;
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"count": 3}"#).unwrap();
    let bin = sluice_bin();
    let path = |p: &std::path::Path| p.display().to_string();
    let commands: Vec<(&str, Vec<String>)> = vec![
        ("config check", vec!["config".into(), "check".into()]),
        (
            "service check",
            vec![
                "service".into(),
                "check".into(),
                reference.url.clone(),
                "--secret-env".into(),
                "SC_EPIPE_SECRET".into(),
            ],
        ),
        (
            "plugin inspect",
            vec!["plugin".into(), "inspect".into(), path(&plugin("probe"))],
        ),
        (
            "plugin validate",
            vec!["plugin".into(), "validate".into(), path(&plugin("probe"))],
        ),
        (
            "plugin keygen",
            vec![
                "plugin".into(),
                "keygen".into(),
                path(&dir.path().join("k")),
            ],
        ),
        (
            "plugin new",
            vec![
                "plugin".into(),
                "new".into(),
                "epipe-demo".into(),
                "--lang".into(),
                "python".into(),
                "--dir".into(),
                path(&dir.path().join("new")),
            ],
        ),
        (
            "run",
            vec![
                "run".into(),
                "--secret".into(),
                "token=t".into(),
                "--config".into(),
                path(&config),
                "--out".into(),
                path(&dir.path().join("out")),
                path(&plugin("probe")),
            ],
        ),
    ];
    for (name, args) in commands {
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .env("CONNECT_SERVICE_TOKEN", "epipe-test-token-0123456789abcdef")
            .env("SC_EPIPE_SECRET", secret);
        let (code, stderr) = tokio::task::spawn_blocking(move || with_reader_gone(&mut cmd))
            .await
            .unwrap();
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{name}: {stderr}"
        );
        assert_eq!(code, Some(141), "{name}: {stderr}");
    }
    // Help and version (clap's own printing) end without a panic as well.
    for flag in ["--help", "--version"] {
        let (code, stderr) = with_reader_gone(Command::new(&bin).arg(flag));
        assert!(!stderr.contains("panicked"), "{flag}: {stderr}");
        assert_ne!(code, Some(101), "{flag}: {stderr}");
    }
}

/// The fakes' standalone binaries take their arguments through clap (`--help` works; a bad
/// value is named, exit 2), and `fake-hubspot` finds HubSpot's descriptions where it is told
/// (`--contracts` / `FAKE_HUBSPOT_CONTRACTS`), not only where it was built: a copy run elsewhere
/// panicked on the build machine's path, and `--help` said "invalid digit".
#[test]
fn the_fake_binaries_parse_their_arguments_and_find_their_contracts() {
    let fakes = [
        ("fake-github", env!("CARGO_BIN_EXE_fake-github")),
        ("fake-slack", env!("CARGO_BIN_EXE_fake-slack")),
        ("fake-linear", env!("CARGO_BIN_EXE_fake-linear")),
        ("fake-hubspot", env!("CARGO_BIN_EXE_fake-hubspot")),
    ];
    for (name, bin) in fakes {
        let out = Command::new(bin).arg("--help").output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("Usage:"),
            "{name} --help: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(bin).arg("many").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} many: {stderr}");
        assert!(
            stderr.contains("invalid value 'many'") && !stderr.contains("panicked"),
            "{name}: {stderr}"
        );
    }
    let hubspot_help = Command::new(env!("CARGO_BIN_EXE_fake-hubspot"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&hubspot_help.stdout).contains("--contracts <DIR>"),
        "{}",
        String::from_utf8_lossy(&hubspot_help.stdout)
    );

    // A copy of the binary elsewhere, told where a copy of the descriptions is.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("fake-hubspot");
    std::fs::copy(env!("CARGO_BIN_EXE_fake-hubspot"), &bin).unwrap();
    let contracts = dir.path().join("hubspot-contract");
    std::fs::create_dir(&contracts).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contract/hubspot");
    for entry in std::fs::read_dir(&source).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, contracts.join(p.file_name().unwrap())).unwrap();
    }
    // Missing: a clear error naming the directory and the way to pass another, no panic.
    let out = Command::new(&bin)
        .args(["10", "0", "--contracts"])
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nowhere")
            && stderr.contains("--contracts DIR")
            && stderr.contains("FAKE_HUBSPOT_CONTRACTS")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    // Found through the environment: it serves and says where.
    let mut child = Command::new(&bin)
        .args(["10", "0"])
        .env("FAKE_HUBSPOT_CONTRACTS", &contracts)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let read = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    );
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    read.unwrap();
    let hello: serde_json::Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("{e}: {line:?} {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        hello["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
        "{hello}"
    );
    assert_eq!(hello["contacts"], 10);
}
