//! The HTTP API, black-box: the built binary on a loopback port, the built plugins.

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};
use sluice_tests::{Service, plugin, run_id_of, serve};

fn plugins_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["probe", "http-json", "bad-manifest"] {
        std::fs::copy(plugin(name), dir.join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

async fn start(root: &Path, env: &[(&str, &str)]) -> Service {
    Service::start(&root.join("data"), &plugins_dir(root), env).await
}

/// A company's internal service: `/me` and `/orders`, Bearer auth.
async fn internal_service() -> String {
    let auth = |h: &HeaderMap| {
        h.get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let app = Router::new().route(
        "/me",
        get(move |h: HeaderMap| async move {
            match auth(&h).as_deref() {
                Some("Bearer good-token") => (
                    StatusCode::OK,
                    axum::Json(json!({"id": 7, "name": "purchasing-bot"})),
                ),
                Some("Bearer limited-token") => (
                    StatusCode::FORBIDDEN,
                    axum::Json(json!({"error": "missing scope orders:read"})),
                ),
                _ => (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": "bad token"})),
                ),
            }
        }),
    );
    format!("http://{}", serve(app).await)
}

fn storage() -> Value {
    json!({"bucket": "sluice-local", "prefix": "mirror"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_health_ping_and_connectors() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let c = reqwest::Client::new();

    let r = c.get(format!("{}/health", svc.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    assert_eq!(
        c.get(format!("{}/ready", svc.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    for token in [None, Some("wrong"), Some("")] {
        let mut req = c.post(format!("{}/internal/mirror-connections/ping", svc.base));
        if let Some(t) = token {
            req = req.header("x-connect-service-token", t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"detail": "Invalid connect service token"})
        );
    }
    let r = c
        .get(format!("{}/internal/connectors", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "every /internal route is protected");
    let r = c
        .get(format!("{}/internal/no-such-route", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "even unknown /internal routes do not leak without the token"
    );

    let r = svc
        .post("/internal/mirror-connections/ping")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    let list: Value = svc
        .get("/internal/connectors")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["http-json", "probe"]);
    let failures = list["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("bad-manifest.wasm")
    );
    assert!(
        failures[0]["error"]
            .as_str()
            .unwrap()
            .contains("invalid manifest")
    );

    let one: Value = svc
        .get("/internal/connectors/http-json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["secrets"][0]["name"], "api_token");
    assert_eq!(one["sha256"].as_str().unwrap().len(), 64);
    let r = svc.get("/internal/connectors/nope").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    // No route discovery without the token: unknown /internal paths answer 401 too.
    for path in [
        "/internal/no-such-route",
        "/internal/a/b/c",
        "/internal",
        "/internal/",
    ] {
        let r = c.get(format!("{}{path}", svc.base)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(
            r.text().await.unwrap(),
            r#"{"detail":"Invalid connect service token"}"#,
            "{path}"
        );
        let r = svc.get(path).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} with the token");
        assert_eq!(
            r.json::<Value>().await.unwrap()["code"],
            "not_found",
            "{path}"
        );
    }
    // Every error body is the documented JSON, whichever layer refused the request.
    for (path, status) in [
        ("/internal/connectors/%FF", 400),
        (
            "/internal/mirror-connections/runs?connection_id=a&connection_id=b",
            400,
        ),
        ("/internal/mirror-connections/runs/%FF%FE", 400),
    ] {
        let r = svc.get(path).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["detail"].is_string() && body["code"].is_string(),
            "{path}: {body}"
        );
    }

    let doc: Value = c
        .get(format!("{}/openapi.json", svc.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/health",
        "/ready",
        "/internal/mirror-connections/ping",
        "/internal/mirror-connections/validate",
        "/internal/mirror-connections/runs",
        "/internal/mirror-connections/runs/{run_id}",
        "/internal/mirror-connections/runs/{run_id}/cancel",
        "/internal/mirror-connections/schema-sync",
        "/internal/connectors",
        "/internal/connectors/{id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_maps_upstream_answers_to_codes() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let base = internal_service().await;
    let validate = |token: &str| {
        svc.post("/internal/mirror-connections/validate")
            .json(&json!({"connector": "http-json", "config": {"base_url": base}, "credentials": {"api_token": token}}))
            .send()
    };
    let ok: Value = validate("good-token").await.unwrap().json().await.unwrap();
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(ok["account"]["name"], "purchasing-bot");
    let bad: Value = validate("bad-token").await.unwrap().json().await.unwrap();
    assert_eq!(bad["valid"], false);
    assert_eq!(bad["error"]["code"], "invalid_credentials");
    assert!(
        !bad.to_string().contains("bad-token"),
        "credentials are never echoed"
    );
    let scope: Value = validate("limited-token")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scope["error"]["code"], "insufficient_scope");

    let unreachable: Value = svc
        .post("/internal/mirror-connections/validate")
        .json(&json!({"connector": "http-json", "config": {"base_url": format!("http://127.0.0.1:{}", sluice_tests::free_port())}, "credentials": {"api_token": "x"}}))
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(unreachable["error"]["code"], "unreachable", "{unreachable}");

    let r = svc
        .post("/internal/mirror-connections/validate")
        .json(&json!({"connector": "nope", "config": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = svc
        .post("/internal/mirror-connections/validate")
        .json(&json!({"connector": "http-json", "config": {"base_url": base}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(
        r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("api_token")
    );
    let bad_config: Value = svc
        .post("/internal/mirror-connections/validate")
        .json(&json!({"connector": "http-json", "config": {"base_url": 42}, "credentials": {"api_token": "x"}}))
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(
        bad_config["error"]["code"], "invalid_config",
        "{bad_config}"
    );
    assert!(
        bad_config["error"]["message"]
            .as_str()
            .unwrap()
            .contains("base_url"),
        "{bad_config}"
    );

    let r = svc
        .post("/internal/mirror-connections/validate")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = svc
        .post("/internal/mirror-connections/validate")
        .json(&json!({"config": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(
        r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("connector"),
        "names the missing field"
    );
    let r = svc
        .post("/internal/mirror-connections/validate")
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.json::<Value>().await.is_ok(), "413 is JSON too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_commit_and_schema_sync_describes_them() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let body = json!({"connection_id": "conn-a", "connector": "probe", "config": {"count": 3000, "batch": 500, "extra": true}, "credentials": {"token": "t0ken-value"}, "storage": storage()});
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(accepted["status"], "queued");
    let run = svc.wait_run(accepted["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["connector"], "probe");
    assert_eq!(run["connector_version"], "1.0.0");
    assert_eq!(run["streams"]["items"]["records"], 3000);
    assert_eq!(run["streams"]["items"]["committed_rows"], 3000);
    assert!(run["started_at"].is_string() && run["finished_at"].is_string());
    assert!(!run.to_string().contains("t0ken-value"));

    // An incremental second run continues from the committed state.
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "conn-a", "connector": "probe", "config": {"count": 500}, "credentials": {"token": "t"}, "storage": storage()})).send().await.unwrap();
    let run2 = svc
        .wait_run(r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap())
        .await;
    assert_eq!(run2["status"], "succeeded", "{run2}");

    let list: Value = svc
        .get("/internal/mirror-connections/runs?connection_id=conn-a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["runs"].as_array().unwrap().len(), 2);
    let other: Value = svc
        .get("/internal/mirror-connections/runs?connection_id=conn-b")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["runs"].as_array().unwrap().len(), 0);

    let r = svc
        .post("/internal/mirror-connections/schema-sync")
        .json(&json!({"connection_id": "conn-a", "connector": "probe", "storage": storage()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let catalog: Value = r.json().await.unwrap();
    let items = &catalog["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "items")
        .unwrap()
        .clone();
    assert_eq!(items["row_count"], 3500);
    assert_eq!(items["primary_key"], json!(["id"]));
    let cols: Vec<&str> = items["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        cols.contains(&"id") && cols.contains(&"_sluice_extra") && cols.contains(&"_sluice_run_id"),
        "{cols:?}"
    );
    let schema_file = root
        .path()
        .join("data/storage/sluice-local/mirror/conn-a/_schema.json");
    let stored: Value = serde_json::from_slice(&std::fs::read(&schema_file).unwrap()).unwrap();
    assert_eq!(
        stored["streams"], catalog["streams"],
        "the catalog is stored next to the data"
    );

    // The view SQL works in DuckDB and deduplicates on the primary key.
    let db = duckdb::Connection::open_in_memory().unwrap();
    db.execute_batch(items["view_sql"].as_str().unwrap())
        .unwrap();
    let (n, distinct, extra): (i64, i64, i64) = db
        .query_row(
            "SELECT count(*), count(DISTINCT id), count(_sluice_extra) FROM items",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((n, distinct), (3500, 3500));
    assert_eq!(extra, 3000, "undeclared fields were kept in _sluice_extra");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_conflicts_idempotency_cancel_and_queue() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(
        root.path(),
        &[
            ("SLUICE_MAX_CONCURRENT_RUNS", "1"),
            ("SLUICE_MAX_QUEUED_RUNS", "1"),
        ],
    )
    .await;
    let looping = |conn: &str| json!({"connection_id": conn, "connector": "probe", "config": {"action": "loop"}, "credentials": {"token": "t"}, "storage": storage()});

    let r = svc
        .post("/internal/mirror-connections/runs")
        .header("idempotency-key", "k-1")
        .json(&looping("c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let first = run_id_of(r).await;
    let again = svc
        .post("/internal/mirror-connections/runs")
        .header("idempotency-key", "k-1")
        .json(&looping("c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(
        again.json::<Value>().await.unwrap()["run_id"],
        first.as_str(),
        "same key, same run"
    );
    // The key is bound to the request that created the run: another body is refused.
    let reused = svc
        .post("/internal/mirror-connections/runs")
        .header("idempotency-key", "k-1")
        .json(&looping("c-other"))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 422);
    let body: Value = reused.json().await.unwrap();
    assert_eq!(body["code"], "idempotency_key_reused", "{body}");
    assert!(body["detail"].as_str().unwrap().contains(&first), "{body}");
    // An unknown stream is refused at submit, naming the streams there are.
    let mut typo = looping("c-typo");
    typo["streams"] = json!(["itemz"]);
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&typo)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("\"itemz\"")
            && body["detail"].as_str().unwrap().contains("items"),
        "{body}"
    );

    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&looping("c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "one active run per connection");
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "run_active");

    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&looping("c2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "queued behind c1");
    let queued = run_id_of(r).await;
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&looping("c3"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "queue full");
    assert!(r.headers().get("retry-after").is_some());

    let r = svc
        .post(&format!("/internal/mirror-connections/runs/{first}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let done = svc.wait_run(&first).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(
        !root
            .path()
            .join("data/storage/sluice-local/mirror/c1/_state.json")
            .exists(),
        "a cancelled run commits nothing"
    );
    svc.post(&format!(
        "/internal/mirror-connections/runs/{queued}/cancel"
    ))
    .send()
    .await
    .unwrap();
    assert_eq!(svc.wait_run(&queued).await["status"], "cancelled");

    assert_eq!(
        svc.post("/internal/mirror-connections/runs/nope/cancel")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        svc.get("/internal/mirror-connections/runs/nope")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let mut missing = looping("c4");
    missing["credentials"] = json!({});
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&missing)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(
        r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("credentials.token")
    );
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "c5", "connector": "http-json", "config": {"base_url": "http://x", "streams": "not-a-list"}, "credentials": {"api_token": "t"}, "storage": storage()})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(
        r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("config.streams"),
        "names the failing path"
    );
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "../etc", "connector": "probe", "credentials": {"token": "t"}, "storage": storage()})).send().await.unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_flight_when_the_service_dies_is_reported_failed() {
    let root = tempfile::tempdir().unwrap();
    let mut svc = start(root.path(), &[]).await;
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "c1", "connector": "probe", "config": {"action": "loop"}, "credentials": {"token": "t"}, "storage": storage()})).send().await.unwrap();
    let run_id = run_id_of(r).await;
    for _ in 0..100 {
        let r: Value = svc.run_status(&run_id).await;
        if r["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    svc.signal("KILL");
    let svc = Service::start(&root.path().join("data"), &root.path().join("plugins"), &[]).await;
    let r: Value = svc.run_status(&run_id).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["error"]["code"], "interrupted");
    // The connection is free again.
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "c1", "connector": "probe", "config": {"count": 5}, "credentials": {"token": "t"}, "storage": storage()})).send().await.unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_runs_past_the_grace_period_and_exits() {
    let root = tempfile::tempdir().unwrap();
    let mut svc = start(root.path(), &[("SLUICE_SHUTDOWN_GRACE_SECS", "1")]).await;
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "c1", "connector": "probe", "config": {"action": "loop"}, "credentials": {"token": "t"}, "storage": storage()})).send().await.unwrap();
    let run_id = run_id_of(r).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    let status = svc.signal("TERM");
    assert!(status.success(), "clean exit: {status:?}\n{}", svc.logs());
    assert!(t.elapsed() < Duration::from_secs(15));
    let record: Value = serde_json::from_slice(
        &std::fs::read(root.path().join(format!("data/runs/{run_id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(record["status"], "cancelled", "{record}");
}

/// Issue 15.2: numbers pass through a connector byte for byte — no round trip through f64 —
/// in undeclared fields and in http-json's key column (declared string-or-integer, so JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_keeps_every_number_exactly() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    // The body is raw text: a JSON library in the fake would round the numbers itself.
    const ORDERS: &str = r#"{"items":[
        {"id":1,"big":18446744073709551616,"neg":-9223372036854775809,"tiny":0.1000000000000000055511151231257827,"exp":1e400},
        {"id":18446744073709551616,"big":2}
    ]}"#;
    let app = Router::new().route(
        "/orders",
        get(|| async { ([("content-type", "application/json")], ORDERS) }),
    );
    let base = format!("http://{}", serve(app).await);
    let config = json!({"base_url": base, "streams": [{"name": "orders", "path": "/orders", "records_pointer": "/items"}]});
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&json!({"connection_id": "nums", "connector": "http-json", "config": config, "credentials": {"api_token": "t"}, "storage": storage()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let run = svc.wait_run(&run_id_of(r).await).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["streams"]["orders"]["committed_rows"], 2, "{run}");
    assert_eq!(run["streams"]["orders"]["invalid_rows"], 0, "{run}");
    let dir = svc.data_dir.join("storage/sluice-local/mirror/nums/orders");
    let db = duckdb::Connection::open_in_memory().unwrap();
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = db
        .prepare(&format!(
            "SELECT CAST(id AS VARCHAR), CAST(_sluice_extra AS VARCHAR), CAST(_sluice_errors AS VARCHAR) \
             FROM read_parquet('{}/*.parquet') ORDER BY _sluice_seq",
            dir.display()
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let extra = rows[0].1.clone().unwrap();
    // serde_json (arbitrary_precision) in the plugin keeps every digit; it spells an exponent
    // with its sign (`1e400` → `1e+400`, the same number).
    for literal in [
        "18446744073709551616",
        "-9223372036854775809",
        "0.1000000000000000055511151231257827",
        "1e+400",
    ] {
        assert!(extra.contains(literal), "{literal} not kept: {extra}");
    }
    assert_eq!(rows[1].0.as_deref(), Some("18446744073709551616"));
    assert_eq!(rows[1].2, None);
}
