//! Signed plugins (issue 13, item 5): `sluice plugin keygen|sign|verify`, and `serve` with
//! `SLUICE_TRUSTED_KEYS` loading only files signed by a trusted key — trusted, unsigned, wrong
//! key, tampered — while a refused new version leaves the previous one serving.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::{Service, plugin, sluice_bin};

/// Runs `sluice plugin ARGS…`; its success and stdout+stderr.
fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(sluice_bin())
        .arg("plugin")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A new key pair under `dir/name`; the public key line.
fn keygen(dir: &Path, name: &str) -> String {
    let prefix = dir.join(name);
    let (ok, out) = cli(&["keygen", prefix.to_str().unwrap()], &[]);
    assert!(ok, "{out}");
    let line = out
        .split("SLUICE_TRUSTED_KEYS=")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("the key line")
        .to_string();
    assert!(line.starts_with("RW"), "{out}");
    line
}

fn sign(file: &Path, key: &Path) {
    let (ok, out) = cli(
        &[
            "sign",
            file.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{out}");
}

async fn connectors(svc: &Service) -> Value {
    svc.get("/internal/connectors")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn failure_of<'a>(list: &'a Value, file: &str) -> Option<&'a str> {
    list["failures"]
        .as_array()?
        .iter()
        .find(|f| f["file"].as_str().is_some_and(|p| p.ends_with(file)))
        .and_then(|f| f["error"].as_str())
}

fn version_of(list: &Value, id: &str) -> Option<String> {
    list["connectors"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == id)
        .and_then(|c| c["version"].as_str())
        .map(str::to_string)
}

async fn wait_until(svc: &Service, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = connectors(svc).await;
        if pred(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "{what}: {list}\n{}", svc.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_files_signed_by_a_trusted_key_load() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let trusted = keygen(&keys, "release");
    let _other = keygen(&keys, "stranger");
    // keygen never overwrites a key.
    let (ok, out) = cli(&["keygen", keys.join("release").to_str().unwrap()], &[]);
    assert!(!ok && out.contains("not overwritten"), "{out}");

    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let copy = |id: &str, name: &str| {
        let to = plugins.join(name);
        std::fs::copy(plugin(id), &to).unwrap();
        to
    };
    // Trusted: signed with the release key.
    let probe = copy("probe", "probe.wasm");
    sign(&probe, &keys.join("release.key"));
    // Unsigned.
    copy("http-json", "http-json.wasm");
    // Signed by a key nobody trusts.
    let github = copy("github", "github.wasm");
    sign(&github, &keys.join("stranger.key"));
    // Signed, then changed.
    let slack = copy("slack", "slack.wasm");
    sign(&slack, &keys.join("release.key"));
    let mut bytes = std::fs::read(&slack).unwrap();
    bytes.extend_from_slice(b"\0");
    std::fs::write(&slack, bytes).unwrap();

    // The CLI says the same as the service will.
    let env = [("SLUICE_TRUSTED_KEYS", trusted.as_str())];
    let (ok, out) = cli(&["verify", probe.to_str().unwrap()], &env);
    assert!(ok && out.contains("ok:"), "{out}");
    for (file, reason) in [
        ("http-json.wasm", "unsigned"),
        ("github.wasm", "not among SLUICE_TRUSTED_KEYS"),
        ("slack.wasm", "does not match the file"),
    ] {
        let (ok, out) = cli(&["verify", plugins.join(file).to_str().unwrap()], &env);
        assert!(!ok && out.contains(reason), "{file}: {out}");
    }

    // A signature that is a FIFO or endless is refused, never read whole or waited on.
    let fifo_target = copy("synthetic", "synthetic.wasm");
    let fifo = sluice_runtime::signing::signature_path(&fifo_target);
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let zero = copy("hubspot", "hubspot.wasm");
    std::os::unix::fs::symlink("/dev/zero", sluice_runtime::signing::signature_path(&zero))
        .unwrap();
    for (file, reason) in [
        ("synthetic.wasm", "not a regular file"),
        ("hubspot.wasm", "not a regular file"),
    ] {
        let (ok, out) = cli(&["verify", plugins.join(file).to_str().unwrap()], &env);
        assert!(!ok && out.contains(reason), "{file}: {out}");
    }
    // sign replaces a symlink at the signature's name; it never writes through it.
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let linked = copy("linear", "linear.wasm");
    std::os::unix::fs::symlink(&victim, sluice_runtime::signing::signature_path(&linked)).unwrap();
    sign(&linked, &keys.join("release.key"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    // A secret key given as a trusted key is refused by name, and never echoed.
    let secret_line = std::fs::read_to_string(keys.join("release.key"))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let out = Command::new(sluice_bin())
        .args(["config", "check"])
        .env("CONNECT_SERVICE_TOKEN", "a-token-of-sixteen-chars")
        .env("SLUICE_TRUSTED_KEYS", &secret_line)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("SLUICE_TRUSTED_KEYS") && text.contains("secret key"),
        "{text}"
    );
    assert!(
        !text.contains(&secret_line[..24]),
        "the secret key was echoed: {text}"
    );

    let svc = Service::start(&dir.path().join("data"), &plugins, &env).await;
    let list = wait_until(&svc, "first scan", |l| {
        l["failures"].as_array().is_some_and(|f| f.len() == 5)
    })
    .await;
    assert!(
        failure_of(&list, "synthetic.wasm")
            .unwrap()
            .contains("not a regular file"),
        "{list}"
    );
    assert!(
        failure_of(&list, "hubspot.wasm")
            .unwrap()
            .contains("not a regular file"),
        "{list}"
    );
    let ids: Vec<&str> = list["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, ["linear", "probe"], "{list}");
    assert!(
        failure_of(&list, "http-json.wasm")
            .unwrap()
            .contains("unsigned: no http-json.wasm.minisig"),
        "{list}"
    );
    assert!(
        failure_of(&list, "github.wasm")
            .unwrap()
            .contains("not among SLUICE_TRUSTED_KEYS"),
        "{list}"
    );
    assert!(
        failure_of(&list, "slack.wasm")
            .unwrap()
            .contains("does not match"),
        "{list}"
    );

    // A new version without a fresh signature is refused; the previous one keeps serving.
    let tmp = plugins.join(".probe.tmp");
    std::fs::copy(plugin("probe-v2"), &tmp).unwrap();
    std::fs::rename(&tmp, &probe).unwrap();
    let list = wait_until(&svc, "v2 refused", |l| {
        failure_of(l, "probe.wasm").is_some_and(|e| e.contains("does not match"))
    })
    .await;
    assert_eq!(
        version_of(&list, "probe").as_deref(),
        Some("1.0.0"),
        "{list}"
    );
    // Its signature arrives: v2 loads.
    sign(&probe, &keys.join("release.key"));
    wait_until(&svc, "v2 signed", |l| {
        version_of(l, "probe").as_deref() == Some("2.0.0")
    })
    .await;
    // Signing the unsigned one brings it in too.
    sign(&plugins.join("http-json.wasm"), &keys.join("release.key"));
    wait_until(&svc, "http-json signed", |l| {
        version_of(l, "http-json").is_some()
    })
    .await;
}
