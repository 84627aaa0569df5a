//! Storage against a real S3 server (Garage, started by scripts/dev.sh test) and the local backend.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_storage::Store;
use sluice_tests::s3::{AK, BUCKET, NOPERM_AK, NOPERM_SK, SK, bucket, endpoint, unique_prefix};
use sluice_tests::{Service, plugin, run_id_of};

fn plugins(root: &Path) -> std::path::PathBuf {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(plugin("synthetic"), dir.join("synthetic.wasm")).unwrap();
    dir
}

fn run_body(prefix: &str, records: u64, bytes: u64, ak: &str, sk: &str) -> Value {
    json!({
        "connection_id": "conn-1", "connector": "synthetic",
        "config": {"records_per_stream": records, "record_bytes": bytes},
        "storage": {"bucket": BUCKET, "prefix": prefix, "access_key_id": ak, "secret_access_key": sk}
    })
}

/// Downloads every file the catalog names and answers `sql` over them (`files` is the list).
async fn query_catalog_stream(
    store: &dyn Store,
    stream: &Value,
    dir: &Path,
    sql: &str,
) -> (i64, i64, i64) {
    let mut local = vec![];
    for (i, url) in stream["files"].as_array().unwrap().iter().enumerate() {
        let url = url.as_str().unwrap();
        let key = url.strip_prefix(&format!("s3://{BUCKET}/")).unwrap_or(url);
        let bytes = match store.get_bytes(key).await.unwrap() {
            Some(b) => b,
            None => std::fs::read(url).unwrap(),
        };
        let p = dir.join(format!("{}-{i}.parquet", stream["name"].as_str().unwrap()));
        std::fs::write(&p, bytes).unwrap();
        local.push(format!("'{}'", p.display()));
    }
    let db = duckdb::Connection::open_in_memory().unwrap();
    let sql = sql.replace("{files}", &format!("[{}]", local.join(", ")));
    db.query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trip_matches_what_the_plugin_emitted_and_the_local_backend() {
    let root = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("roundtrip");
    let s3 = Service::start(
        &root.path().join("s3"),
        &plugins(root.path()),
        &[("S3_ENDPOINT", &endpoint())],
    )
    .await;
    let r = s3.run_to_end(&run_body(&prefix, 3000, 300, AK, SK)).await;
    assert_eq!(r["status"], "succeeded", "{r}\n{}", s3.logs());
    let store = bucket();
    let catalog: Value = s3
        .post("/internal/mirror-connections/schema-sync")
        .json(&json!({"connection_id": "conn-1", "connector": "synthetic", "storage": {"bucket": BUCKET, "prefix": prefix, "access_key_id": AK, "secret_access_key": SK}}))
        .send().await.unwrap().json().await.unwrap();
    assert!(
        store
            .get_bytes(&format!("{prefix}/conn-1/_schema.json"))
            .await
            .unwrap()
            .is_some()
    );
    let dl = tempfile::tempdir().unwrap();
    for stream in catalog["streams"].as_array().unwrap() {
        assert_eq!(stream["row_count"], 3000);
        let (n, sum, min_len) = query_catalog_stream(
            &store,
            stream,
            dl.path(),
            "SELECT count(*), sum(id), min(length(payload)) FROM read_parquet({files})",
        )
        .await;
        assert_eq!((n, sum), (3000, 3000 * 3001 / 2), "{}", stream["name"]);
        assert!(min_len > 100, "payload kept: {min_len}");
    }

    // The local backend writes the same layout and manifest.
    let local = Service::start(&root.path().join("local"), &plugins(root.path()), &[]).await;
    let r2 = local
        .run_to_end(&run_body(&prefix, 3000, 300, AK, SK))
        .await;
    assert_eq!(r2["status"], "succeeded", "{r2}");
    let norm = |keys: Vec<String>, run: &str| -> Vec<String> {
        let mut k: Vec<String> = keys.into_iter().map(|k| k.replace(run, "RUN")).collect();
        k.sort();
        k
    };
    let s3_keys = norm(
        store
            .list(&format!("{prefix}/conn-1/"))
            .await
            .unwrap()
            .into_iter()
            // Schema-sync's catalog and docs: only the S3 side ran it.
            .filter(|k| !k.ends_with("_schema.json") && !k.ends_with("_README.md"))
            .collect(),
        r["run_id"].as_str().unwrap(),
    );
    let local_store =
        sluice_storage::LocalStore::new(root.path().join("local/storage").join(BUCKET));
    let local_keys = norm(
        local_store
            .list(&format!("{prefix}/conn-1/"))
            .await
            .unwrap(),
        r2["run_id"].as_str().unwrap(),
    );
    assert_eq!(s3_keys, local_keys);
    let manifest = |bytes: Vec<u8>| -> Value {
        let mut m: Value = serde_json::from_slice(&bytes).unwrap();
        for s in m["streams"].as_object_mut().unwrap().values_mut() {
            for f in s["files"].as_array_mut().unwrap() {
                f.as_object_mut().unwrap().retain(|k, _| k == "rows");
            }
        }
        for k in ["run_id", "started_at", "finished_at"] {
            m.as_object_mut().unwrap().remove(k);
        }
        m
    };
    let a = manifest(
        store
            .get_bytes(&format!(
                "{prefix}/conn-1/_runs/{}.json",
                r["run_id"].as_str().unwrap()
            ))
            .await
            .unwrap()
            .unwrap(),
    );
    let b = manifest(
        local_store
            .get_bytes(&format!(
                "{prefix}/conn-1/_runs/{}.json",
                r2["run_id"].as_str().unwrap()
            ))
            .await
            .unwrap()
            .unwrap(),
    );
    assert_eq!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_the_run_and_commit_nothing() {
    let root = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("wrongcreds");
    let svc = Service::start(
        &root.path().join("d"),
        &plugins(root.path()),
        &[("S3_ENDPOINT", &endpoint())],
    )
    .await;
    for (ak, sk) in [
        (NOPERM_AK, NOPERM_SK),
        (AK, "wrong-secret-wrong-secret-wrong-secret"),
    ] {
        let r = svc.run_to_end(&run_body(&prefix, 100, 100, ak, sk)).await;
        assert_eq!(r["status"], "failed", "{r}");
        assert_eq!(r["error"]["code"], "storage_error", "{r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("AccessDenied")
                || msg.contains("403")
                || msg.contains("SignatureDoesNotMatch")
                || msg.contains("Forbidden"),
            "{msg}"
        );
        assert!(
            !msg.contains(sk) && !svc.logs().contains(sk),
            "the secret key never appears"
        );
        // The sources' own words, not the SDK's Debug dump of its internals.
        assert!(
            !msg.contains("ServiceError {") && !msg.contains("raw: Response"),
            "{msg}"
        );
        // S3's code and message as such, not the SDK's metadata form and wrappers
        // (`service error: unhandled error (AccessDenied): Error { code: "AccessDenied", … }`).
        assert!(
            msg.contains("_state.json: AccessDenied: Forbidden")
                && !msg.contains("Error {")
                && !msg.contains("unhandled error"),
            "{msg}"
        );
        eprintln!("wrong credentials: {msg}");
    }
    assert!(
        bucket()
            .list(&format!("{prefix}/"))
            .await
            .unwrap()
            .is_empty(),
        "nothing half-committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_run_keeps_committed_data_and_the_next_run_completes_exactly_once() {
    let root = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("sigkill");
    let data = root.path().join("d");
    let plugins = plugins(root.path());
    let env = [("S3_ENDPOINT", endpoint())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let store = bucket();
    let state_key = format!("{prefix}/conn-1/_state.json");

    let mut svc = Service::start(&data, &plugins, &env).await;
    assert_eq!(
        svc.run_to_end(&run_body(&prefix, 1000, 200, AK, SK)).await["status"],
        "succeeded"
    );
    let committed = store.get_bytes(&state_key).await.unwrap().unwrap();

    // A big run, killed while it stages or uploads.
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&run_body(&prefix, 60_000, 1500, AK, SK))
        .send()
        .await
        .unwrap();
    let run_id = run_id_of(r).await;
    loop {
        let r: Value = svc.run_status(&run_id).await;
        if r["status"] != "queued" && r["streams"]["gamma"]["records"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    svc.signal("KILL");
    let after = store.get_bytes(&state_key).await.unwrap().unwrap();
    let state: Value = serde_json::from_slice(&after).unwrap();
    if after != committed {
        assert_eq!(
            state["runs"].as_array().unwrap().last().unwrap(),
            run_id.as_str(),
            "only a complete commit changes the state"
        );
    }
    for run in state["runs"].as_array().unwrap() {
        let m: Value = serde_json::from_slice(
            &store
                .get_bytes(&format!(
                    "{prefix}/conn-1/_runs/{}.json",
                    run.as_str().unwrap()
                ))
                .await
                .unwrap()
                .expect("committed runs have manifests"),
        )
        .unwrap();
        for s in m["streams"].as_object().unwrap().values() {
            for f in s["files"].as_array().unwrap() {
                assert!(
                    store
                        .get_bytes(f["key"].as_str().unwrap())
                        .await
                        .unwrap()
                        .is_some(),
                    "every file a manifest names exists"
                );
            }
        }
    }

    let svc = Service::start(&data, &plugins, &env).await;
    let killed: Value = svc.run_status(&run_id).await;
    assert!(
        killed["status"] == "failed" || killed["status"] == "succeeded",
        "{killed}"
    );
    let next = svc.run_to_end(&run_body(&prefix, 5000, 200, AK, SK)).await;
    assert_eq!(next["status"], "succeeded", "{next}");
    let catalog: Value = svc
        .post("/internal/mirror-connections/schema-sync")
        .json(&json!({"connection_id": "conn-1", "connector": "synthetic", "storage": {"bucket": BUCKET, "prefix": prefix, "access_key_id": AK, "secret_access_key": SK}}))
        .send().await.unwrap().json().await.unwrap();
    let dl = tempfile::tempdir().unwrap();
    for stream in catalog["streams"].as_array().unwrap() {
        let (distinct, max_id, dup) = query_catalog_stream(&store, stream, dl.path(), "SELECT count(DISTINCT id), max(id), count(*) - count(DISTINCT id) FROM read_parquet({files})").await;
        assert_eq!(
            distinct, max_id,
            "{}: every id from 1 to the last one is present",
            stream["name"]
        );
        assert!(
            max_id == 6000 || max_id == 66_000,
            "{}: {max_id}",
            stream["name"]
        );
        assert_eq!(
            dup, 0,
            "no record twice (incremental state resumed where the commit left it)"
        );
    }
}
