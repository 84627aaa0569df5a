//! The `http-json` connector against a company's internal JSON service (pages like
//! `{data: [...], next: "/api/x?page=2"}`), end to end through the built binary: each test keeps
//! one input a newcomer found mishandled (typed columns, a paging loop, an unknown stream at
//! admission, errors that blame the wrong party, a base URL with a query, a field named like a
//! host column).

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use sluice_tests::{Service, plugin, serve};

async fn start(root: &Path, env: &[(&str, &str)]) -> Service {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(plugin("http-json"), dir.join("http-json.wasm")).unwrap();
    Service::start(&root.join("data"), &dir, env).await
}

fn storage() -> Value {
    json!({"bucket": "sluice-local", "prefix": "mirror"})
}

fn page(records: Value, next: Option<&str>) -> axum::Json<Value> {
    axum::Json(json!({"data": records, "next": next}))
}

/// The internal service: every route a test needs.
async fn upstream() -> String {
    let app = Router::new()
        .route(
            "/orders",
            get(|| async {
                page(
                    json!([
                        {"id": 1, "amount": 2.5, "paid": true, "updated_at": "2024-01-02T03:04:05Z", "due": "2024-02-01", "customer": "acme", "lines": [{"sku": "a"}]},
                        {"id": 2, "amount": 10, "paid": false, "updated_at": "2024-01-03T03:04:05Z", "due": "2024-02-02", "customer": "umbrella", "lines": []}
                    ]),
                    Some("/orders-2?page=2"),
                )
            }),
        )
        // The second page brings a field the first did not have (schema drift).
        .route(
            "/orders-2",
            get(|| async {
                page(
                    json!([{"id": 3, "amount": 1, "paid": true, "updated_at": "2024-01-04T00:00:00Z", "due": "2024-02-03", "customer": "x", "lines": [], "coupon": "NEW"}]),
                    None,
                )
            }),
        )
        .route(
            "/loop",
            get(|| async { page(json!([{"id": 1}]), Some("/loop?page=1")) }),
        )
        .route(
            "/html",
            get(|| async {
                (
                    [("content-type", "text/html; charset=utf-8")],
                    "<html><body>Sign in</body></html>",
                )
            }),
        )
        .route(
            "/metadata",
            get(|| async {
                page(
                    json!([{"id": 1}]),
                    Some("http://169.254.169.254/latest/meta-data"),
                )
            }),
        )
        .route(
            "/gone",
            get(|| async { page(json!([{"id": 1}]), Some("/gone-2")) }),
        )
        .route(
            "/gone-2",
            get(|| async { axum::Json(json!({"error": "maintenance"})) }),
        )
        .route(
            "/scalars",
            get(|| async { page(json!([{"id": 1}, 7]), None) }),
        )
        .route(
            "/reserved",
            get(|| async {
                page(
                    json!([{"id": 1, "_sluice_seq": 99, "_sluice_extra": {"a": 1}}]),
                    None,
                )
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                axum::Json(json!({}))
            }),
        );
    format!("http://{}", serve(app).await)
}

fn config(base: &str, streams: Value) -> Value {
    json!({"base_url": base, "validate_path": "/orders", "streams": streams})
}

fn stream(name: &str, path: &str) -> Value {
    json!({"name": name, "path": path, "records_pointer": "/data"})
}

/// Submits a run of `streams` (all when empty) and waits for its end.
async fn run(svc: &Service, connection: &str, config: &Value, streams: &[&str]) -> Value {
    let mut body = json!({"connection_id": connection, "connector": "http-json", "config": config, "credentials": {"api_token": "t"}, "storage": storage()});
    if !streams.is_empty() {
        body["streams"] = json!(streams);
    }
    svc.run_to_end(&body).await
}

fn columns(catalog: &Value, stream: &str) -> Vec<(String, String)> {
    catalog["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stream)
        .unwrap_or_else(|| panic!("no {stream} in {catalog}"))["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Finding 1: the catalog of an internal service had only `id` (JSON) and the host's columns.
/// Now `discover` infers typed columns from the first page, a `schema` in the config declares
/// them, and a field that appears later (drift) is kept in `_sluice_extra`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_streams_get_typed_columns_inferred_or_declared() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let base = upstream().await;
    let mut declared = stream("declared", "/orders");
    declared["schema"] = json!({"properties": {"id": {"type": "integer"}, "amount": {"type": "number"}, "customer": {"type": "string"}}});
    declared["cursor_field"] = json!("id");
    let config = config(&base, json!([stream("orders", "/orders"), declared]));
    let done = run(&svc, "typed", &config, &[]).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["streams"]["orders"]["committed_rows"], 3, "{done}");
    assert_eq!(done["streams"]["orders"]["invalid_rows"], 0, "{done}");
    let r = svc
        .post("/internal/mirror-connections/schema-sync")
        .json(&json!({"connection_id": "typed", "connector": "http-json", "config": config, "credentials": {"api_token": "t"}, "storage": storage()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let catalog: Value = r.json().await.unwrap();
    let inferred = columns(&catalog, "orders");
    for (name, ty) in [
        ("id", "BIGINT"),
        ("amount", "DOUBLE"),
        ("paid", "BOOLEAN"),
        ("updated_at", "TIMESTAMPTZ"),
        ("due", "DATE"),
        ("customer", "VARCHAR"),
        ("lines", "JSON"),
    ] {
        assert!(
            inferred.contains(&(name.to_string(), ty.to_string())),
            "{name} {ty} not in {inferred:?}"
        );
    }
    let declared = columns(&catalog, "declared");
    assert!(
        declared.contains(&("id".into(), "BIGINT".into())),
        "{declared:?}"
    );
    assert!(
        declared.contains(&("amount".into(), "DOUBLE".into())),
        "{declared:?}"
    );
    assert!(!declared.iter().any(|(n, _)| n == "paid"), "{declared:?}");
    // The drifted field of page 2 and the undeclared ones are kept in `_sluice_extra`.
    let dir = svc.data_dir.join("storage/sluice-local/mirror/typed");
    let db = duckdb::Connection::open_in_memory().unwrap();
    let extra = |stream: &str| -> String {
        db.query_row(
            &format!(
                "SELECT CAST(_sluice_extra AS VARCHAR) FROM read_parquet('{}/{stream}/*.parquet') WHERE id = 3",
                dir.display()
            ),
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let orders_extra = extra("orders");
    assert!(
        orders_extra.contains("coupon") && orders_extra.contains("NEW"),
        "{orders_extra}"
    );
    let declared_extra = extra("declared");
    assert!(
        declared_extra.contains("paid") && declared_extra.contains("coupon"),
        "{declared_extra}"
    );
}

/// Finding 2: a `next` link back to a page already read ended the run `succeeded` with one
/// record and a warning; it fails, naming the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_fails_a_paging_loop_naming_the_url() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let base = upstream().await;
    let mut looping = stream("looping", "/loop?page=1");
    looping["infer_schema"] = json!(false);
    let done = run(&svc, "loop", &config(&base, json!([looping])), &[]).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "internal", "{done}");
    let message = done["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("goes round in circles") && message.contains(&format!("{base}/loop")),
        "{message}"
    );
}

/// Finding 3: an unknown stream of a config-defined connector was accepted (202) and failed
/// later; it is a 422 at admission, as for connectors whose streams are in their manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_unknown_stream_is_refused_at_admission() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let base = upstream().await;
    let config = config(&base, json!([stream("orders", "/orders")]));
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&json!({"connection_id": "nope", "connector": "http-json", "config": config, "credentials": {"api_token": "t"}, "streams": ["nope"], "storage": storage()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"nope\"") && detail.contains("orders"),
        "{detail}"
    );
    // A configured one is admitted and syncs.
    let done = run(&svc, "nope", &config, &["orders"]).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

/// Finding 4: faults of the upstream's answers came back as `internal` without saying so, or
/// as `invalid_config`; each now says the upstream answered it, with the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_upstream_faults_name_the_upstream_and_the_url() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[("SLUICE_CALL_TIMEOUT_SECS", "2")]).await;
    let base = upstream().await;
    let cases = [
        ("html", "/html", "internal", "content-type text/html"),
        ("metadata", "/metadata", "internal", "169.254.169.254"),
        (
            "gone",
            "/gone",
            "internal",
            "the upstream's stream gone: page 2",
        ),
        (
            "scalars",
            "/scalars",
            "internal",
            "not a JSON object (record 1: a number)",
        ),
    ];
    for (name, path, code, words) in cases {
        let mut s = stream(name, path);
        s["infer_schema"] = json!(false);
        let done = run(&svc, name, &config(&base, json!([s])), &[]).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["error"]["code"], code, "{name}: {done}");
        let message = done["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(words) && message.contains("upstream") && message.contains(&base),
            "{name}: {message}"
        );
    }
    // The first page without the array is the config's `records_pointer`.
    let mut s = stream("pointer", "/gone-2");
    s["infer_schema"] = json!(false);
    let done = run(&svc, "pointer", &config(&base, json!([s])), &[]).await;
    assert_eq!(done["error"]["code"], "invalid_config", "{done}");
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keys error"),
        "{done}"
    );
    // A slow upstream: the host's deadline names its setting, rounded, and the request.
    let r = svc
        .post("/internal/mirror-connections/validate")
        .json(&json!({"connector": "http-json", "config": {"base_url": base, "validate_path": "/slow"}, "credentials": {"api_token": "t"}}))
        .send()
        .await
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["valid"], false, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!(
            "plugin call exceeded its deadline of 2 s (SLUICE_CALL_TIMEOUT_SECS); it was waiting \
             for the upstream's answer to GET {base}/slow"
        )
    );
}

/// Finding 5: a `base_url` with a query or fragment built wrong URLs silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_refuses_a_base_url_with_a_query_or_fragment() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    for base in [
        "http://127.0.0.1:9711/?apikey=k3y",
        "http://127.0.0.1:9711/x#frag",
    ] {
        let r = svc
            .post("/internal/mirror-connections/validate")
            .json(&json!({"connector": "http-json", "config": {"base_url": base}, "credentials": {"api_token": "t"}}))
            .send()
            .await
            .unwrap();
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "invalid_config", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("base_url: must not have a"),
            "{message}"
        );
        assert!(!message.contains("k3y"), "{message}");
    }
}

/// Finding 6: one record with a field named `_sluice_…` failed the whole run; such a field is
/// renamed `upstream_sluice_…` and the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_renames_fields_the_host_reserves() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let base = upstream().await;
    let done = run(
        &svc,
        "reserved",
        &config(&base, json!([stream("reserved", "/reserved")])),
        &[],
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["streams"]["reserved"]["committed_rows"], 1, "{done}");
    let dir = svc
        .data_dir
        .join("storage/sluice-local/mirror/reserved/reserved");
    let db = duckdb::Connection::open_in_memory().unwrap();
    let (seq, extra): (i64, String) = db
        .query_row(
            &format!(
                "SELECT upstream_sluice_seq, CAST(upstream_sluice_extra AS VARCHAR) FROM read_parquet('{}/*.parquet')",
                dir.display()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((seq, extra.as_str()), (99, r#"{"a":1}"#));
}
