//! The HTTP API, black-box: the built binary on a loopback port, the built plugins.
//!
//! Every answer the tests get through [`Checked::checked`] is also checked against the service's
//! own `/openapi.json`: its status is documented for the operation, documented headers are there,
//! and the JSON body validates against the operation's response schema.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};
use sluice_tests::{Service, plugin, run_id_of, serve};

/// The API document, fetched once from the first service a test talks to (they all run the same
/// binary).
static API_DOC: OnceLock<Value> = OnceLock::new();

async fn api_doc(origin: &str) -> &'static Value {
    if let Some(doc) = API_DOC.get() {
        return doc;
    }
    let doc: Value = reqwest::get(format!("{origin}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    API_DOC.get_or_init(|| doc)
}

/// The operation of `doc` a request reaches: its path template and the operation object.
fn operation<'d>(doc: &'d Value, method: &str, path: &str) -> Option<(&'d str, &'d Value)> {
    let segments: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()?
        .iter()
        .find_map(|(template, item)| {
            let parts: Vec<&str> = template.split('/').collect();
            let fits = parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(p, s)| {
                    p == s || (p.starts_with('{') && p.ends_with('}') && !s.is_empty())
                });
            let op = item.get(method).filter(|_| fits)?;
            Some((template.as_str(), op))
        })
}

/// Checks an answer against the document; `Err` says how it departs from it.
fn check_response(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let (what, response) = match operation(doc, method, path) {
        Some((template, op)) => {
            let responses = &op["responses"];
            let status_class = format!("{}XX", status / 100);
            let response = [status.to_string().as_str(), &status_class, "default"]
                .into_iter()
                .find_map(|k| responses.get(k))
                .ok_or_else(|| {
                    format!("status {status} is not documented for {method} {template}")
                })?;
            (format!("{method} {template} → {status}"), response.clone())
        }
        // No operation: the token check (401) or the router's fallback (404) answered.
        None => {
            let schema = match status {
                401 => "AuthErrorBody",
                404 => "ErrorBody",
                _ => return Err(format!("{status} from a path the document does not have")),
            };
            let response = json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
            (
                format!("{method} {path} (no operation) → {status}"),
                response,
            )
        }
    };
    for name in response["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(n, _)| n)
    {
        if !headers.contains_key(name.as_str()) {
            return Err(format!("{what}: documented header {name} is missing"));
        }
    }
    let Some(content) = response["content"].as_object() else {
        return if body.is_empty() {
            Ok(())
        } else {
            Err(format!("{what}: a body where the document has none"))
        };
    };
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let Some(declared) = content.get(media) else {
        return Err(format!(
            "{what}: content type {content_type:?}, the document has {:?}",
            content.keys().collect::<Vec<_>>()
        ));
    };
    if !media.ends_with("json") {
        // Text answers (the connector docs' Markdown): the declared media type is what counts.
        return std::str::from_utf8(body)
            .map(|_| ())
            .map_err(|e| format!("{what}: the text is not UTF-8: {e}"));
    }
    let instance: Value =
        serde_json::from_slice(body).map_err(|e| format!("{what}: the body is not JSON: {e}"))?;
    let Some(schema) = declared.get("schema") else {
        return Ok(());
    };
    // OpenAPI 3.1 schemas are JSON Schema 2020-12; their `#/components/schemas/...` references
    // resolve against a root that carries the document's components.
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .map_err(|e| format!("{what}: the document's schema does not compile: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: {}", errors.join("; ")))
    }
}

/// `send` that also checks the answer against the API document (panics if it departs from it).
trait Checked {
    async fn checked(self) -> reqwest::Response;
}

impl Checked for reqwest::RequestBuilder {
    async fn checked(self) -> reqwest::Response {
        let (client, request) = self.build_split();
        let request = request.unwrap();
        let method = request.method().as_str().to_ascii_lowercase();
        let url = request.url().clone();
        let r = client.execute(request).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap();
        let doc = api_doc(&url.origin().ascii_serialization()).await;
        if let Err(e) = check_response(doc, &method, url.path(), status.as_u16(), &headers, &body) {
            panic!(
                "answer outside the API document: {e}\nbody: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let mut rebuilt = axum::http::Response::builder().status(status);
        if let Some(h) = rebuilt.headers_mut() {
            *h = headers;
        }
        reqwest::Response::from(rebuilt.body(body).unwrap())
    }
}

/// A run's record, checked against the document.
async fn run_record(svc: &Service, run_id: &str) -> Value {
    svc.get(&format!("/internal/mirror-connections/runs/{run_id}"))
        .checked()
        .await
        .json()
        .await
        .unwrap()
}

/// Waits for a run to end; its final record, checked against the document.
async fn wait_run(svc: &Service, run_id: &str) -> Value {
    svc.wait_run(run_id).await;
    run_record(svc, run_id).await
}

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

    let r = c.get(format!("{}/health", svc.base)).checked().await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    assert_eq!(
        c.get(format!("{}/ready", svc.base))
            .checked()
            .await
            .status(),
        200
    );

    for token in [None, Some("wrong"), Some("")] {
        let mut req = c.post(format!("{}/internal/mirror-connections/ping", svc.base));
        if let Some(t) = token {
            req = req.header("x-connect-service-token", t);
        }
        let r = req.checked().await;
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"detail": "Invalid connect service token"})
        );
    }
    let r = c
        .get(format!("{}/internal/connectors", svc.base))
        .checked()
        .await;
    assert_eq!(r.status(), 401, "every /internal route is protected");
    let r = c
        .get(format!("{}/internal/no-such-route", svc.base))
        .checked()
        .await;
    assert_eq!(
        r.status(),
        401,
        "even unknown /internal routes do not leak without the token"
    );

    let r = svc
        .post("/internal/mirror-connections/ping")
        .checked()
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    let list: Value = svc
        .get("/internal/connectors")
        .checked()
        .await
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
        .checked()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["secrets"][0]["name"], "api_token");
    assert_eq!(one["sha256"].as_str().unwrap().len(), 64);
    let r = svc.get("/internal/connectors/nope").checked().await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    // No route discovery without the token: unknown /internal paths answer 401 too.
    for path in [
        "/internal/no-such-route",
        "/internal/a/b/c",
        "/internal",
        "/internal/",
    ] {
        let r = c.get(format!("{}{path}", svc.base)).checked().await;
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(
            r.text().await.unwrap(),
            r#"{"detail":"Invalid connect service token"}"#,
            "{path}"
        );
        let r = svc.get(path).checked().await;
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
        let r = svc.get(path).checked().await;
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["detail"].is_string() && body["code"].is_string(),
            "{path}: {body}"
        );
    }
    // A method a route does not serve: JSON too.
    for r in [
        svc.post("/internal/connectors").send().await.unwrap(),
        svc.get("/internal/mirror-connections/validate")
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), 405);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed", "{body}");
    }

    let doc: Value = c
        .get(format!("{}/openapi.json", svc.base))
        .checked()
        .await
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
            .checked()
    };
    let ok: Value = validate("good-token").await.json().await.unwrap();
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(ok["account"]["name"], "purchasing-bot");
    let bad: Value = validate("bad-token").await.json().await.unwrap();
    assert_eq!(bad["valid"], false);
    assert_eq!(bad["error"]["code"], "invalid_credentials");
    assert!(
        !bad.to_string().contains("bad-token"),
        "credentials are never echoed"
    );
    let scope: Value = validate("limited-token").await.json().await.unwrap();
    assert_eq!(scope["error"]["code"], "insufficient_scope");

    let unreachable: Value = svc
        .post("/internal/mirror-connections/validate")
        .json(&json!({"connector": "http-json", "config": {"base_url": format!("http://127.0.0.1:{}", sluice_tests::free_port())}, "credentials": {"api_token": "x"}}))
        .checked().await.json().await.unwrap();
    assert_eq!(unreachable["error"]["code"], "unreachable", "{unreachable}");

    let r = svc
        .post("/internal/mirror-connections/validate")
        .json(&json!({"connector": "nope", "config": {}}))
        .checked()
        .await;
    assert_eq!(r.status(), 404);
    let r = svc
        .post("/internal/mirror-connections/validate")
        .json(&json!({"connector": "http-json", "config": {"base_url": base}}))
        .checked()
        .await;
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
        .checked().await.json().await.unwrap();
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
        .checked()
        .await;
    assert_eq!(r.status(), 400);
    let r = svc
        .post("/internal/mirror-connections/validate")
        .json(&json!({"config": {}}))
        .checked()
        .await;
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
        .body(vec![b' '; 200 << 10])
        .checked()
        .await;
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
        .checked()
        .await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(accepted["status"], "queued");
    let run = wait_run(&svc, accepted["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["connector"], "probe");
    assert_eq!(run["connector_version"], "1.0.0");
    // `streams` left out: every stream, spelled null as in the request (`[]` is refused).
    assert!(run["requested_streams"].is_null(), "{run}");
    assert_eq!(run["streams"]["items"]["records"], 3000);
    assert_eq!(run["streams"]["items"]["committed_rows"], 3000);
    assert!(run["started_at"].is_string() && run["finished_at"].is_string());
    assert!(!run.to_string().contains("t0ken-value"));

    // An incremental second run continues from the committed state.
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "conn-a", "connector": "probe", "config": {"count": 500}, "credentials": {"token": "t"}, "storage": storage()})).checked().await;
    let run2 = wait_run(
        &svc,
        r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(run2["status"], "succeeded", "{run2}");

    let list: Value = svc
        .get("/internal/mirror-connections/runs?connection_id=conn-a")
        .checked()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["runs"].as_array().unwrap().len(), 2);
    let other: Value = svc
        .get("/internal/mirror-connections/runs?connection_id=conn-b")
        .checked()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(other["runs"].as_array().unwrap().len(), 0);

    let r = svc
        .post("/internal/mirror-connections/schema-sync")
        .json(&json!({"connection_id": "conn-a", "connector": "probe", "storage": storage()}))
        .checked()
        .await;
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
    // The analysts' docs are written beside it, with the committed columns and the view.
    let readme = std::fs::read_to_string(
        root.path()
            .join("data/storage/sluice-local/mirror/conn-a/_README.md"),
    )
    .unwrap();
    for want in [
        "### `items`",
        "Primary key: `id`.",
        "Committed: 3500 rows",
        "| `_sluice_run_id` | VARCHAR | no |",
        "```sql\nCREATE",
        "## Querying with DuckDB",
    ] {
        assert!(
            readme.contains(want),
            "missing {want:?} in _README.md:\n{readme}"
        );
    }
    assert!(!readme.contains("t0ken-value"));

    // The same page for the connector alone, from its manifest, over the API.
    let r = svc.get("/internal/connectors/probe/docs").checked().await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    let page = r.text().await.unwrap();
    assert!(
        page.starts_with("# ")
            && page.contains("### `items`")
            && page.contains("## Authentication"),
        "{page}"
    );
    let r = svc.get("/internal/connectors/nope/docs").checked().await;
    assert_eq!(r.status(), 404);

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
        .checked()
        .await;
    assert_eq!(r.status(), 202);
    let first = run_id_of(r).await;
    let again = svc
        .post("/internal/mirror-connections/runs")
        .header("idempotency-key", "k-1")
        .json(&looping("c1"))
        .checked()
        .await;
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
        .checked()
        .await;
    assert_eq!(reused.status(), 422);
    let body: Value = reused.json().await.unwrap();
    assert_eq!(body["code"], "idempotency_key_reused", "{body}");
    assert!(body["detail"].as_str().unwrap().contains(&first), "{body}");
    // A config over 64 KiB of JSON is refused (a 1 MiB one, parsed and held by every waiting
    // request, took the service past 900 MiB when 20 came at once); a body over 128 KiB is 413.
    let mut huge = looping("c-huge");
    for (padding, status) in [(70_000, 422), (200_000, 413)] {
        huge["config"]["padding"] = json!("x".repeat(padding));
        let r = svc
            .post("/internal/mirror-connections/runs")
            .json(&huge)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{padding} bytes of padding");
        let body: Value = r.json().await.unwrap();
        if status == 422 {
            assert!(
                body["detail"].as_str().unwrap().contains("at most 65536"),
                "{body}"
            );
        }
    }
    // An empty required credential, and a storage prefix no key could hold, are refused at once.
    let mut empty = looping("c-empty");
    empty["credentials"]["token"] = json!("");
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&empty)
        .checked()
        .await;
    assert_eq!(r.status(), 422);
    let mut long = looping("c-long");
    long["storage"]["prefix"] = json!("p/".repeat(300));
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&long)
        .checked()
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("storage.prefix"),
        "{body}"
    );
    // Two token headers, one of them right, are refused.
    let r = reqwest::Client::new()
        .get(format!("{}/internal/connectors", svc.base))
        .header("x-connect-service-token", &svc.token)
        .header("x-connect-service-token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // An unknown stream is refused at submit, naming the streams there are.
    let mut typo = looping("c-typo");
    typo["streams"] = json!(["itemz"]);
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&typo)
        .checked()
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("\"itemz\"")
            && body["detail"].as_str().unwrap().contains("items"),
        "{body}"
    );

    // `streams: []` would read as "sync nothing" (it synced everything), and a stream named
    // twice was echoed in the run: both are refused, saying what to do (the field left out, or
    // null, syncs all).
    for (streams, says) in [
        (json!([]), "leave `streams` out to sync all"),
        (
            json!(["items", "items"]),
            "stream \"items\" is named more than once",
        ),
    ] {
        let mut bad = looping("c-streams");
        bad["streams"] = streams.clone();
        let r = svc
            .post("/internal/mirror-connections/runs")
            .json(&bad)
            .checked()
            .await;
        assert_eq!(r.status(), 422, "{streams}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["detail"].as_str().unwrap().contains(says) && body["code"] == "invalid_request",
            "{streams}: {body}"
        );
    }

    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&looping("c1"))
        .checked()
        .await;
    assert_eq!(r.status(), 409, "one active run per connection");
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "run_active");

    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&looping("c2"))
        .checked()
        .await;
    assert_eq!(r.status(), 202, "queued behind c1");
    let queued = run_id_of(r).await;
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&looping("c3"))
        .checked()
        .await;
    assert_eq!(r.status(), 503, "queue full");
    assert!(r.headers().get("retry-after").is_some());

    // Before the cancel nothing is requested; the answer says the cancel was accepted (it
    // answered the run as `running` and nothing else), and so does the run until it ends.
    assert_eq!(run_record(&svc, &first).await["cancel_requested"], false);
    let r = svc
        .post(&format!("/internal/mirror-connections/runs/{first}/cancel"))
        .checked()
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["cancel_requested"], true, "{answer}");
    assert!(
        ["running", "cancelled"].contains(&answer["status"].as_str().unwrap()),
        "{answer}"
    );
    let done = wait_run(&svc, &first).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["cancel_requested"], true, "{done}");
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
    .checked()
    .await;
    assert_eq!(wait_run(&svc, &queued).await["status"], "cancelled");

    assert_eq!(
        svc.post("/internal/mirror-connections/runs/nope/cancel")
            .checked()
            .await
            .status(),
        404
    );
    assert_eq!(
        svc.get("/internal/mirror-connections/runs/nope")
            .checked()
            .await
            .status(),
        404
    );

    let mut missing = looping("c4");
    missing["credentials"] = json!({});
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&missing)
        .checked()
        .await;
    assert_eq!(r.status(), 422);
    assert!(
        r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("credentials.token")
    );
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "c5", "connector": "http-json", "config": {"base_url": "http://x", "streams": "not-a-list"}, "credentials": {"api_token": "t"}, "storage": storage()})).checked().await;
    assert_eq!(r.status(), 422);
    assert!(
        r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("config.streams"),
        "names the failing path"
    );
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "../etc", "connector": "probe", "credentials": {"token": "t"}, "storage": storage()})).checked().await;
    assert_eq!(r.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_flight_when_the_service_dies_is_reported_failed() {
    let root = tempfile::tempdir().unwrap();
    let mut svc = start(root.path(), &[]).await;
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "c1", "connector": "probe", "config": {"action": "loop"}, "credentials": {"token": "t"}, "storage": storage()})).checked().await;
    let run_id = run_id_of(r).await;
    for _ in 0..100 {
        let r: Value = run_record(&svc, &run_id).await;
        if r["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // "running" is reported before the run's staging is made (discover comes first): wait for it.
    let staging = root.path().join("data/staging");
    for _ in 0..200 {
        if staging.join(&run_id).is_dir() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        staging.join(&run_id).is_dir(),
        "the running run stages under {}",
        staging.display()
    );
    svc.signal("KILL");
    let svc = Service::start(&root.path().join("data"), &root.path().join("plugins"), &[]).await;
    let r: Value = run_record(&svc, &run_id).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["error"]["code"], "interrupted");
    // Whether it committed is told by _state.json, not claimed (a kill after _state.json was
    // written left a committed run that said it "committed nothing").
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("_state.json names it"), "{message}");
    assert!(!message.contains("committed nothing"), "{message}");
    // What the killed process staged is removed at start (it would hold disk outside quotas).
    assert!(!staging.join(&run_id).exists(), "stale staging left behind");
    // The connection is free again.
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "c1", "connector": "probe", "config": {"count": 5}, "credentials": {"token": "t"}, "storage": storage()})).checked().await;
    assert_eq!(r.status(), 202);
}

/// A process killed after its commit reached `_state.json` but before the run's record was
/// saved left a committed run recorded as running; at the next start it is looked up in
/// `_state.json` (local storage needs no request credentials) and recorded `succeeded` with
/// its manifest's counts (it said "interrupted … committed nothing": an outside attack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_after_its_commit_is_found_committed_at_the_next_start() {
    let root = tempfile::tempdir().unwrap();
    let mut svc = start(root.path(), &[]).await;
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "c1", "connector": "probe", "config": {"count": 7}, "credentials": {"token": "t"}, "storage": storage()})).checked().await;
    let run_id = run_id_of(r).await;
    let done = wait_run(&svc, &run_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    svc.signal("KILL");
    // The record as the killed process left it: still running, no counts.
    let path = root.path().join(format!("data/runs/{run_id}.json"));
    let mut record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    record["status"] = json!("running");
    record["finished_at"] = Value::Null;
    record["streams"] = json!({});
    // As records written before the selection became optional spelled "every stream".
    record["requested_streams"] = json!([]);
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    // A second record, of a run that never committed, stays interrupted.
    let mut other = record.clone();
    other["run_id"] = json!("run-never-committed");
    std::fs::write(
        root.path().join("data/runs/run-never-committed.json"),
        serde_json::to_vec(&other).unwrap(),
    )
    .unwrap();
    let svc = Service::start(&root.path().join("data"), &root.path().join("plugins"), &[]).await;
    let r = run_record(&svc, &run_id).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(r["error"].is_null(), "{r}");
    assert!(
        r["requested_streams"].is_null(),
        "an old `[]` reads as every stream: {r}"
    );
    let committed_rows = |run: &Value| -> u64 {
        run["streams"]
            .as_object()
            .unwrap()
            .values()
            .map(|s| s["committed_rows"].as_u64().unwrap())
            .sum()
    };
    let (rows, before) = (committed_rows(&r), committed_rows(&done));
    assert_eq!(rows, before, "{r}");
    assert!(rows > 0, "{done}");
    let o = run_record(&svc, "run-never-committed").await;
    assert_eq!(o["status"], "failed", "{o}");
    assert_eq!(o["error"]["code"], "interrupted", "{o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_runs_past_the_grace_period_and_exits() {
    let root = tempfile::tempdir().unwrap();
    let mut svc = start(root.path(), &[("SLUICE_SHUTDOWN_GRACE_SECS", "1")]).await;
    let r = svc.post("/internal/mirror-connections/runs").json(&json!({"connection_id": "c1", "connector": "probe", "config": {"action": "loop"}, "credentials": {"token": "t"}, "storage": storage()})).checked().await;
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
    // Nobody asked for this cancel: the record says the shutdown stopped the run.
    assert_eq!(record["cancel_requested"], false, "{record}");
    let message = record["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("the service shut down"), "{message}");
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
    // Columns not inferred: the fields stay undeclared (what this test is about).
    let config = json!({"base_url": base, "streams": [{"name": "orders", "path": "/orders", "records_pointer": "/items", "infer_schema": false}]});
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&json!({"connection_id": "nums", "connector": "http-json", "config": config, "credentials": {"api_token": "t"}, "storage": storage()}))
        .checked().await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let run = wait_run(&svc, &run_id_of(r).await).await;
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

/// A client that sees a run finish and at once submits the connection's next run is never
/// refused 409: the record turns terminal and the connection is released together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_run_of_a_connection_is_accepted_as_soon_as_the_last_one_ended() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let body = json!({"connection_id": "conn-next", "connector": "probe", "config": {"count": 10}, "credentials": {"token": "t"}, "storage": storage()});
    let client = reqwest::Client::new();
    for round in 0..20 {
        let r = svc
            .post("/internal/mirror-connections/runs")
            .json(&body)
            .checked()
            .await;
        assert_eq!(
            r.status(),
            202,
            "round {round}: {}",
            r.text().await.unwrap()
        );
        let run_id = run_id_of(r).await;
        // Poll without pause, and submit the moment the run reads terminal.
        loop {
            let v: Value = client
                .get(format!(
                    "{}/internal/mirror-connections/runs/{run_id}",
                    svc.base
                ))
                .header("x-connect-service-token", &svc.token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match v["status"].as_str() {
                Some("queued" | "running") => continue,
                Some("succeeded") => break,
                _ => panic!("round {round}: {v}"),
            }
        }
    }
}

/// A misnamed credential or config field is named as unknown, with the field it probably meant
/// (the user heard only that the real one was missing): at `POST runs` and at `validate`, at the
/// top of the config and inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misnamed_credential_or_config_field_is_named_as_unknown() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let run = |connector: &str, config: Value, credentials: Value| {
        json!({"connection_id": "c-misnamed", "connector": connector, "config": config,
               "credentials": credentials, "storage": storage()})
    };
    let cases = [
        (
            run(
                "probe",
                json!({"action": "ok"}),
                json!({"api_token": "t0123456789"}),
            ),
            r#"credentials.api_token: unknown credential "api_token": connector probe declares no such secret; did you mean "token"? (it declares: token)"#,
        ),
        (
            run(
                "http-json",
                json!({"baseurl": "https://orders.example"}),
                json!({"api_token": "t0123456789"}),
            ),
            r#"config: unknown field "baseurl"; did you mean "base_url"? (the connector's schema declares: base_url, next_pointer, streams, validate_path)"#,
        ),
        (
            run(
                "http-json",
                json!({"base_url": "https://orders.example", "streams": [{"name": "orders", "paht": "/orders"}]}),
                json!({"api_token": "t0123456789"}),
            ),
            r#"config.streams.0: unknown field "paht"; did you mean "path"?"#,
        ),
    ];
    for (body, says) in &cases {
        let r = svc
            .post("/internal/mirror-connections/runs")
            .json(body)
            .checked()
            .await;
        assert_eq!(r.status(), 422, "{body}");
        let answer: Value = r.json().await.unwrap();
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.starts_with(says), "{body}: {detail}");
    }
    // validate answers the config's mistake the same way (invalid_config).
    let r = svc
        .post("/internal/mirror-connections/validate")
        .json(
            &json!({"connector": "http-json", "config": {"baseurl": "https://orders.example"},
                      "credentials": {"api_token": "t0123456789"}}),
        )
        .checked()
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "invalid_config", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains(r#"unknown field "baseurl"; did you mean "base_url"?"#),
        "{answer}"
    );
}

/// The docs page of the bundled connectors, as an analyst reads it: GitHub's `repositories`
/// and `organization` each say the schema wants one of them (`anyOf`; both read "required:
/// no"), and a description's `code` is a code span, not escaped backticks (Linear's `auth`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_docs_show_any_of_requirements_and_code_spans() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in ["github", "linear"] {
        std::fs::copy(plugin(name), plugins.join(format!("{name}.wasm"))).unwrap();
    }
    let svc = Service::start(&root.path().join("data"), &plugins, &[]).await;
    // Both components listed (each is published as it loads).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let listed = svc.get_json("/internal/connectors").await;
        let ids: Vec<&str> = listed["connectors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str())
            .collect();
        if ids.contains(&"github") && ids.contains(&"linear") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = |id: &str| {
        let svc = &svc;
        let id = id.to_string();
        async move {
            let r = svc
                .get(&format!("/internal/connectors/{id}/docs"))
                .checked()
                .await;
            let status = r.status();
            let body = r.text().await.unwrap();
            assert_eq!(status, 200, "{id}: {body}");
            body
        }
    };
    let github = page("github").await;
    for field in ["repositories", "organization"] {
        let row = format!(
            "| `{field}` | {} | at least one of `repositories`, `organization` |",
            if field == "repositories" {
                "array"
            } else {
                "string"
            }
        );
        assert!(github.contains(&row), "missing {row:?} in:\n{github}");
    }
    let linear = page("linear").await;
    assert!(
        linear.contains("(a personal API key, `Authorization: <key>`)"),
        "{linear}"
    );
    assert!(!linear.contains("\\`"), "escaped backticks:\n{linear}");
}

/// A stream read in full replaces its table: rows the upstream deleted leave the catalog's
/// files and `view_sql` (a newcomer's 130 invoices, then 1, still showed 130). Read in full:
/// a stream its connector never checkpoints (http-json without a cursor), or any stream of a
/// `full_refresh` run. And a connection's data belongs to the connector that committed it: a
/// schema-sync or a run of another connector on it is refused, the catalog left as it was (a
/// GitHub schema-sync used to overwrite an http-json connection's `_schema.json`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_read_replaces_the_table_and_a_connection_keeps_its_connector() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let svc = &svc;
    let live = Arc::new(AtomicUsize::new(130));
    let upstream = live.clone();
    let app = Router::new().route(
        "/invoices",
        get(move || {
            let n = upstream.load(Ordering::SeqCst);
            async move {
                let items: Vec<Value> =
                    (1..=n).map(|i| json!({"id": i, "total": i * 10})).collect();
                axum::Json(json!({ "items": items }))
            }
        }),
    );
    let base = format!("http://{}", serve(app).await);
    let config = json!({"base_url": base, "streams": [{"name": "invoices", "path": "/invoices", "records_pointer": "/items", "primary_key": ["id"]}]});
    let sync = |connector: &'static str, connection: &'static str, config: Value, full: bool| {
        let secret = if connector == "probe" {
            "token"
        } else {
            "api_token"
        };
        let body = json!({"connection_id": connection, "connector": connector, "config": config,
            "credentials": {secret: "t"}, "full_refresh": full, "storage": storage()});
        async move {
            let r = svc
                .post("/internal/mirror-connections/runs")
                .json(&body)
                .checked()
                .await;
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
            wait_run(svc, &run_id_of(r).await).await
        }
    };
    let catalog_of = |connector: &'static str, connection: &'static str| {
        let body =
            json!({"connection_id": connection, "connector": connector, "storage": storage()});
        async move {
            let r = svc
                .post("/internal/mirror-connections/schema-sync")
                .json(&body)
                .checked()
                .await;
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let view_count = |catalog: &Value, stream: &str| -> (i64, usize) {
        let s = catalog["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == stream)
            .unwrap();
        let db = duckdb::Connection::open_in_memory().unwrap();
        db.execute_batch(s["view_sql"].as_str().unwrap()).unwrap();
        let n: i64 = db
            .query_row(&format!("SELECT count(*) FROM {stream}"), [], |r| r.get(0))
            .unwrap();
        (n, s["files"].as_array().unwrap().len())
    };

    let run = sync("http-json", "inv", config.clone(), false).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    live.store(1, Ordering::SeqCst);
    let run = sync("http-json", "inv", config.clone(), false).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (status, catalog) = catalog_of("http-json", "inv").await;
    assert_eq!(status, 200, "{catalog}");
    assert_eq!(view_count(&catalog, "invoices"), (1, 1), "{catalog}");

    // Another connector on the same connection: refused, nothing overwritten.
    let (status, refused) = catalog_of("probe", "inv").await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(r#"committed by connector "http-json", not "probe""#),
        "{refused}"
    );
    let run = sync("probe", "inv", json!({"count": 5}), false).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "invalid_config", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains(r#"committed by connector "http-json""#),
        "{run}"
    );
    let (_, again) = catalog_of("http-json", "inv").await;
    assert_eq!(view_count(&again, "invoices"), (1, 1), "{again}");

    // An incremental stream keeps its rows across runs; a full_refresh run replaces them.
    let run = sync("probe", "nums", json!({"count": 300}), false).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let run = sync("probe", "nums", json!({"count": 20}), false).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (_, catalog) = catalog_of("probe", "nums").await;
    assert_eq!(view_count(&catalog, "items"), (320, 2), "{catalog}");
    let run = sync("probe", "nums", json!({"count": 50}), true).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (_, catalog) = catalog_of("probe", "nums").await;
    assert_eq!(view_count(&catalog, "items"), (50, 1), "{catalog}");
}
