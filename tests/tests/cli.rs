//! `sluice plugin validate|inspect` and the startup contract of `sluice serve`.

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
    assert!(line.starts_with("ok: probe 1.0.0"), "{line}");

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"hello, not wasm").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let cases = [
        (junk, "not a WebAssembly component"),
        (core, "core wasm module"),
        (plugin("wrong-world"), "sluice:connector@0.2.0"),
        (
            plugin("extra-import"),
            "undeclared import \"evil:backdoor/shell@0.1.0\"",
        ),
        (plugin("bad-manifest"), "invalid manifest"),
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
    assert_eq!(v["wit_version"], "0.1.0");
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
