//! The configuration report: `sluice config check` and the same checks when `sluice serve`
//! starts (every resolved setting, secrets masked; contradictory settings refused by name).

use std::process::{Command, Output};

use sluice_tests::{Service, plugin, sluice_bin};

const TOKEN: &str = "config-test-token-0123456789abcdef";

/// `sluice config check` with only `env` (and PATH) in its environment, plus `args`.
fn check(env: &[(&str, &str)], args: &[&str]) -> (Output, String, String) {
    let mut cmd = Command::new(sluice_bin());
    cmd.args(["config", "check"]).args(args).env_clear();
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out, stdout, stderr)
}

/// A cgroup `memory.max` file holding `content`.
fn memory_max(dir: &std::path::Path, content: &str) -> String {
    let path = dir.join(format!("memory.max-{}", content.trim()));
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

#[test]
fn check_prints_every_setting_with_secrets_masked() {
    let secrets = [
        ("CONNECT_SERVICE_TOKEN", TOKEN),
        ("SC_SECRET_PURCHASE_ORDERS", "po-shared-secret-abcdef0123"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-key-9876543210"),
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0000"),
        (
            "DATABASE_URL",
            "postgres://sluice:db-pa55word-xyz@db.internal:5432/sluice",
        ),
        // Required with DATABASE_URL (issue 14): the key of the queued runs' credentials.
        (
            "SLUICE_RUN_SECRETS_KEY",
            "00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef",
        ),
    ];
    let mut env = secrets.to_vec();
    env.extend([
        ("S3_ENDPOINT", "http://minio:9000"),
        ("SLUICE_MAX_CONCURRENT_RUNS", "3"),
        ("METRICS_PUBLIC", "true"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let limit = memory_max(dir.path(), "max\n");
    let (out, stdout, stderr) = check(&env, &["--cgroup-memory-max", &limit]);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "HOST=127.0.0.1",
        "PORT=8000",
        "STORAGE_BACKEND=s3",
        "S3_ENDPOINT=http://minio:9000",
        "SLUICE_MAX_CONCURRENT_RUNS=3",
        "SLUICE_PLUGIN_MEMORY_BUDGET_MIB=192",
        "METRICS_PUBLIC=true",
        &format!("CONNECT_SERVICE_TOKEN=<set, {} characters>", TOKEN.len()),
        "SC_SECRET_PURCHASE_ORDERS=<set, 27 characters>",
        "AWS_SECRET_ACCESS_KEY=<set, 25 characters>",
        "DATABASE_URL=postgres://sluice:***@db.internal:5432/sluice",
        "container memory limit=none found",
        "worst-case memory of these settings=256 MiB",
        "ok: serve would start with these settings",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing line {line:?} in:\n{stdout}"
        );
    }
    for (name, secret) in secrets {
        let shown = if name == "DATABASE_URL" {
            "db-pa55word-xyz"
        } else {
            secret
        };
        assert!(
            !stdout.contains(shown) && !stderr.contains(shown),
            "{name}'s secret shown:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn check_refuses_contradictory_settings_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let none = memory_max(dir.path(), "max\n");
    // (extra environment, the memory.max file, the expected refusal)
    type Case<'a> = (&'a [(&'a str, &'a str)], String, &'a str);
    let cases: [Case; 7] = [
        (
            &[("DATABASE_URL", "postgres://sluice:pw@127.0.0.1:5432/sluice")],
            none.clone(),
            "SLUICE_RUN_SECRETS_KEY must be set",
        ),
        // Found from outside: a newline in the replica id broke the report's VARIABLE=value lines.
        (
            &[
                ("DATABASE_URL", "postgres://sluice:pw@127.0.0.1:5432/sluice"),
                (
                    "SLUICE_RUN_SECRETS_KEY",
                    "00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef",
                ),
                ("SLUICE_REPLICA_ID", "pod-1\nSLUICE_LEASE_SECS=1"),
            ],
            none.clone(),
            "SLUICE_REPLICA_ID must be 1-128 characters without control characters",
        ),
        (
            &[("S3_ENDPOINT", "minio:9000")],
            none.clone(),
            "S3_ENDPOINT must be an http:// or https:// URL with a host, got \"minio:9000\"",
        ),
        (
            &[("S3_ENDPOINT", "not a url")],
            none.clone(),
            "S3_ENDPOINT must be an http:// or https:// URL",
        ),
        // 240 MiB: the defaults need 40 + 192 + 2 × 4 × 2 = 248.
        (
            &[],
            memory_max(dir.path(), "251658240\n"),
            "SLUICE_PLUGIN_MEMORY_BUDGET_MIB (192) + 2 × SLUICE_STAGING_BUFFER_MIB (4) × SLUICE_MAX_CONCURRENT_RUNS (2) + ~40 MiB for the service = 248 MiB: more than the container's memory limit of 240 MiB",
        ),
        (
            &[("SLUICE_MAX_CONCURRENT_RUNS", "40")],
            memory_max(dir.path(), "536870912\n"),
            "SLUICE_MAX_CONCURRENT_RUNS (40) + ~40 MiB for the service = 552 MiB: more than the container's memory limit of 512 MiB",
        ),
        (
            &[("SLUICE_ALLOW_PRIVATE_ADDRESSES", "everything")],
            none.clone(),
            "SLUICE_ALLOW_PRIVATE_ADDRESSES",
        ),
    ];
    for (extra, limit, want) in cases {
        let mut env = vec![("CONNECT_SERVICE_TOKEN", TOKEN)];
        env.extend_from_slice(extra);
        let (out, stdout, stderr) = check(&env, &["--cgroup-memory-max", &limit]);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stdout}\n{stderr}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("error: ") && l.contains(want)),
            "{extra:?}: expected {want:?} in:\n{stderr}"
        );
        assert!(
            stdout.contains("HOST=127.0.0.1"),
            "the report is printed before the refusal: {stdout}"
        );
        assert!(!stdout.contains("ok: serve"), "{stdout}");
    }
    // The same settings fit a 512 MiB limit; every problem is listed, not only the first.
    let fits = memory_max(dir.path(), "536870912\n");
    let (out, stdout, _) = check(
        &[("CONNECT_SERVICE_TOKEN", TOKEN)],
        &["--cgroup-memory-max", &fits],
    );
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("container memory limit=512 MiB"),
        "{stdout}"
    );
    let (out, _, stderr) = check(
        &[
            ("S3_ENDPOINT", "ftp://x"),
            ("SLUICE_MAX_CONCURRENT_RUNS", "0"),
        ],
        &["--cgroup-memory-max", &none],
    );
    assert_eq!(out.status.code(), Some(1));
    for want in [
        "CONNECT_SERVICE_TOKEN must be set",
        "S3_ENDPOINT must be",
        "SLUICE_MAX_CONCURRENT_RUNS must be at least 1",
    ] {
        assert!(stderr.contains(want), "{want:?} in {stderr}");
    }
}

#[test]
fn check_warns_loudly_about_a_loopback_bind_inside_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let none = memory_max(dir.path(), "max\n");
    let env = [
        ("CONNECT_SERVICE_TOKEN", TOKEN),
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
    ];
    let (out, stdout, _) = check(&env, &["--cgroup-memory-max", &none]);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with(
            "WARNING: HOST=127.0.0.1 inside Kubernetes (KUBERNETES_SERVICE_HOST is set)"
        ) && l.ends_with("set HOST=0.0.0.0")),
        "{stdout}"
    );
    let (_, stdout, _) = check(
        &[
            ("CONNECT_SERVICE_TOKEN", TOKEN),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("HOST", "0.0.0.0"),
        ],
        &["--cgroup-memory-max", &none],
    );
    assert!(!stdout.contains("WARNING"), "{stdout}");
}

/// `serve` logs the same report and refuses the same settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_the_report_and_refuses_what_check_refuses() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(sluice_bin())
        .arg("serve")
        .env_clear()
        .env("CONNECT_SERVICE_TOKEN", TOKEN)
        .env("S3_ENDPOINT", "minio:9000")
        .env("SLUICE_DATA_DIR", root.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("S3_ENDPOINT must be an http:// or https:// URL"),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"SLUICE_MAX_CONCURRENT_RUNS\":\"2\""#),
        "the settings are logged before the refusal: {stderr}"
    );
    assert!(!stderr.contains(TOKEN), "{stderr}");

    let plugins = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin("probe"), plugins.join("probe.wasm")).unwrap();
    let svc = Service::start(
        &root.path().join("data"),
        &plugins,
        &[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("SC_SECRET_X", "shared-secret-0123456789"),
        ],
    )
    .await;
    let logs = svc.logs();
    let loud = logs
        .lines()
        .find(|l| l.contains("HOST=127.0.0.1 inside Kubernetes"))
        .unwrap_or_else(|| panic!("no warning in {logs}"));
    assert!(loud.contains("\"level\":\"ERROR\""), "{loud}");
    let settings = logs
        .lines()
        .find(|l| l.contains("starting"))
        .unwrap_or_else(|| panic!("no settings in {logs}"));
    assert!(
        settings.contains("\\\"SC_SECRET_X\\\":\\\"<set, 24 characters>\\\"")
            || settings.contains("\"SC_SECRET_X\":\"<set, 24 characters>\""),
        "{settings}"
    );
    assert!(!logs.contains(&svc.token) && !logs.contains("shared-secret-0123456789"));
}

/// A short CONNECT_SERVICE_TOKEN is warned about by `config check` (a 1-character one passed
/// with a quiet line and `ok`): loudly under 16 characters, quietly under 32, with the reason and
/// the fix; `serve` would still start (existing deployments keep working), and `--strict` makes
/// the check fail on it.
#[test]
fn check_warns_about_a_short_token_and_strict_fails_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let none = memory_max(dir.path(), "max\n");
    let limit = ["--cgroup-memory-max", none.as_str()];
    let (out, stdout, _) = check(&[("CONNECT_SERVICE_TOKEN", "x")], &limit);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("WARNING: CONNECT_SERVICE_TOKEN is 1 character: a short shared secret can be guessed; use at least 32 random characters")
            && stdout.contains("ok: serve would start"),
        "{stdout}"
    );
    let (out, stdout, stderr) = check(
        &[("CONNECT_SERVICE_TOKEN", "x")],
        &["--strict", limit[0], limit[1]],
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stderr.contains("--strict: 1 warning(s)") && !stdout.contains("ok:"),
        "{stderr}"
    );
    let (out, stdout, _) = check(&[("CONNECT_SERVICE_TOKEN", "twenty-characters-20")], &limit);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: CONNECT_SERVICE_TOKEN is 20 characters"),
        "{stdout}"
    );
    let (out, stdout, _) = check(
        &[("CONNECT_SERVICE_TOKEN", TOKEN)],
        &["--strict", limit[0], limit[1]],
    );
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("CONNECT_SERVICE_TOKEN is"), "{stdout}");
}

/// The quick start's example token passes the check it would be checked by: README's
/// `CONNECT_SERVICE_TOKEN=…` of `scripts/dev.sh serve` draws no short-token warning.
#[test]
fn the_readme_example_token_passes_its_own_check() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let token = readme
        .lines()
        .find_map(|l| {
            l.strip_prefix("CONNECT_SERVICE_TOKEN=")
                .filter(|rest| rest.contains("scripts/dev.sh serve"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the quick start's serve line")
        .to_string();
    assert!(
        readme.contains(&format!("x-connect-service-token: {token}")),
        "the quick start's curl sends the same token"
    );
    let dir = tempfile::tempdir().unwrap();
    let none = memory_max(dir.path(), "max\n");
    let (out, stdout, stderr) = check(
        &[("CONNECT_SERVICE_TOKEN", &token)],
        &["--cgroup-memory-max", &none],
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("CONNECT_SERVICE_TOKEN is"), "{stdout}");
}

/// `config check` loads `SERVICES_FILE` as `serve` does (the registry's own load): a file no
/// version of which loads — missing, not YAML, an entry `serve` refuses — is an error (exit 1:
/// `serve` would start but answer /ready 503 `services_registry_not_loaded`), and a service whose
/// `SC_SECRET_<ID>` is unset or too short (`serve` answers its connect 503
/// `shared_secret_missing`) a warning, which `--strict` fails on. It said "ok: serve would start"
/// for all of them.
#[test]
fn check_loads_the_services_file_as_serve_does() {
    let dir = tempfile::tempdir().unwrap();
    let none = memory_max(dir.path(), "max\n");
    let limit = ["--cgroup-memory-max", none.as_str()];
    let strict = ["--strict", limit[0], limit[1]];
    let good = dir.path().join("services.yaml");
    std::fs::write(
        &good,
        "services: [{id: po, name: PO, base_url: 'http://po.corp.example', connector: {kind: wasm, id: po}, env: [PO_API_KEY]}]\n",
    )
    .unwrap();
    let good = good.display().to_string();
    let unparsable = dir.path().join("broken.yaml");
    std::fs::write(&unparsable, "services: [{").unwrap();
    let unparsable = unparsable.display().to_string();
    let refused = dir.path().join("refused.yaml");
    std::fs::write(
        &refused,
        "services: [{id: po, name: PO, base_url: 'ftp://po.corp.example', connector: {kind: wasm, id: po}, env: [PO_API_KEY]}]\n",
    )
    .unwrap();
    let refused = refused.display().to_string();
    let secret = "po-shared-secret-0123456789abcdef";

    for (file, says) in [
        (
            "/nonexistent/services.yaml",
            "cannot read /nonexistent/services.yaml",
        ),
        (unparsable.as_str(), "not a valid registry document"),
        (refused.as_str(), "services[0] (po): base_url"),
    ] {
        for args in [&limit[..], &strict[..]] {
            let (out, stdout, stderr) = check(
                &[
                    ("CONNECT_SERVICE_TOKEN", TOKEN),
                    ("SERVICES_FILE", file),
                    ("SC_SECRET_PO", secret),
                ],
                args,
            );
            assert_eq!(out.status.code(), Some(1), "{file}: {stdout}{stderr}");
            assert!(
                stderr.contains(&format!("error: SERVICES_FILE={file}: "))
                    && stderr.contains(says)
                    && stderr.contains("/ready 503 services_registry_not_loaded"),
                "{file}: {stderr}"
            );
            assert!(!stdout.contains("ok: serve would start"), "{stdout}");
        }
    }
    // A refused setting and the file are both reported.
    let (out, _, stderr) = check(
        &[
            ("CONNECT_SERVICE_TOKEN", TOKEN),
            ("SERVICES_FILE", "/nonexistent/services.yaml"),
            ("SLUICE_MAX_CONCURRENT_RUNS", "0"),
        ],
        &limit,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("SLUICE_MAX_CONCURRENT_RUNS") && stderr.contains("SERVICES_FILE="),
        "{stderr}"
    );

    // The secrets: too short, then unset, are warnings (serve loads the file and warns).
    for (env, says) in [
        (
            Some("short"),
            "warning: service po (SERVICES_FILE): no usable shared secret: SC_SECRET_PO is shorter than 16 characters",
        ),
        (
            None,
            "warning: service po (SERVICES_FILE): no usable shared secret: SC_SECRET_PO is not set",
        ),
    ] {
        let mut vars = vec![("CONNECT_SERVICE_TOKEN", TOKEN), ("SERVICES_FILE", &good)];
        vars.extend(env.map(|v| ("SC_SECRET_PO", v)));
        let (out, stdout, stderr) = check(&vars, &limit);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(
            stdout.contains(says) && stdout.contains("ok: serve would start"),
            "{stdout}"
        );
        let (out, stdout, stderr) = check(&vars, &strict);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(stderr.contains("--strict: 1 warning(s)"), "{stderr}");
    }
    // A good file and secret: nothing to say, and the secret is not shown.
    let (out, stdout, stderr) = check(
        &[
            ("CONNECT_SERVICE_TOKEN", TOKEN),
            ("SERVICES_FILE", &good),
            ("SC_SECRET_PO", secret),
        ],
        &strict,
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("service po"), "{stdout}");
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
}
