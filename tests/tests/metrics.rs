//! `GET /metrics`, black-box: the built binary writing to the real S3 server (Garage), scraped
//! after real syncs; the counters must equal what the runs report.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use sluice_storage::Store;
use sluice_tests::s3::{AK, BUCKET, SK, endpoint, unique_prefix};
use sluice_tests::{Service, plugin, run_id_of, serve};

async fn start(root: &Path, env: &[(&str, &str)]) -> Service {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["probe", "http-json", "bad-manifest"] {
        std::fs::copy(plugin(name), dir.join(format!("{name}.wasm"))).unwrap();
    }
    let endpoint = endpoint();
    let mut env = env.to_vec();
    env.push(("S3_ENDPOINT", &endpoint));
    Service::start(&root.join("data"), &dir, &env).await
}

/// The samples of a scrape: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

async fn scrape(svc: &Service) -> BTreeMap<String, f64> {
    let r = svc.get("/metrics").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    samples(&r.text().await.unwrap())
}

fn sample(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {m:#?}"))
}

/// An upstream path that answers `first` (status, headers) once, then `body`.
fn flaky(
    first: (StatusCode, Vec<(&'static str, &'static str)>),
    body: Value,
    hits: Arc<AtomicUsize>,
) -> axum::routing::MethodRouter {
    get(move || {
        let (first, body, hits) = (first.clone(), body.clone(), hits.clone());
        async move {
            if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                let mut headers = axum::http::HeaderMap::new();
                for (k, v) in first.1 {
                    headers.insert(k, v.parse().unwrap());
                }
                (first.0, headers, "try again").into_response()
            } else {
                axum::Json(body).into_response()
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_equal_the_runs_figures_and_the_route_needs_the_token() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let prefix = unique_prefix("metrics");
    let storage =
        json!({"bucket": BUCKET, "prefix": prefix, "access_key_id": AK, "secret_access_key": SK});

    // Without the token: 401, like /internal.
    let r = reqwest::get(format!("{}/metrics", svc.base)).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .get(format!("{}/metrics", svc.base))
        .header("x-connect-service-token", "wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The OpenAPI document declares the route and its text answer.
    let doc: Value = reqwest::get(format!("{}/openapi.json", svc.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let op = &doc["paths"]["/metrics"]["get"];
    assert_eq!(op["operationId"], "getMetrics", "{op}");
    assert!(
        op["responses"]["200"]["content"]["text/plain"].is_object(),
        "{op}"
    );
    assert!(op["responses"]["401"].is_object(), "{op}");

    let before = scrape(&svc).await;
    assert_eq!(
        sample(&before, "sluice_plugin_load_failures_total"),
        1.0,
        "bad-manifest"
    );
    assert!(sample(&before, "process_resident_memory_bytes") > 1e6);
    assert_eq!(sample(&before, "sluice_running_runs"), 0.0);
    assert_eq!(sample(&before, "sluice_queued_runs"), 0.0);

    // A probe sync: 3000 records in one stream.
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&json!({"connection_id": "m-probe", "connector": "probe", "config": {"count": 3000, "batch": 500}, "credentials": {"token": "t0ken-value"}, "storage": storage}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let probe_run = svc.wait_run(&run_id_of(r).await).await;
    assert_eq!(probe_run["status"], "succeeded", "{probe_run}");

    // An http-json sync against an upstream that answers 503 once on one path (a retry) and
    // 429 with Retry-After once on the other (a rate-limit wait).
    let (orders_hits, customers_hits) = (Arc::default(), Arc::default());
    let app = Router::new()
        .route(
            "/orders",
            flaky(
                (StatusCode::SERVICE_UNAVAILABLE, vec![]),
                json!({"items": [{"id": 1}, {"id": 2}, {"id": 3}]}),
                Arc::clone(&orders_hits),
            ),
        )
        .route(
            "/customers",
            flaky(
                (StatusCode::TOO_MANY_REQUESTS, vec![("retry-after", "1")]),
                json!({"items": [{"id": "a"}, {"id": "b"}]}),
                Arc::clone(&customers_hits),
            ),
        );
    let addr = serve(app).await;
    // Columns not inferred: `discover` would GET each path too, and the counts below are the sync's.
    let config = json!({"base_url": format!("http://{addr}"), "streams": [
        {"name": "orders", "path": "/orders", "records_pointer": "/items", "infer_schema": false},
        {"name": "customers", "path": "/customers", "records_pointer": "/items", "infer_schema": false},
    ]});
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&json!({"connection_id": "m-http", "connector": "http-json", "config": config, "credentials": {"api_token": "t"}, "storage": storage}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let http_run = svc.wait_run(&run_id_of(r).await).await;
    assert_eq!(http_run["status"], "succeeded", "{http_run}");
    assert_eq!(orders_hits.load(Ordering::SeqCst), 2);
    assert_eq!(customers_hits.load(Ordering::SeqCst), 2);

    // A run that fails: its outcome is counted as such.
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&json!({"connection_id": "m-fail", "connector": "http-json", "config": {"base_url": format!("http://127.0.0.1:{}", sluice_tests::free_port()), "streams": [{"name": "x", "path": "/x", "records_pointer": "/items"}]}, "credentials": {"api_token": "t"}, "storage": storage}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let failed = svc.wait_run(&run_id_of(r).await).await;
    assert_eq!(failed["status"], "failed", "{failed}");

    let m = scrape(&svc).await;
    let store = sluice_tests::s3::bucket();
    for (run, connector, conn) in [
        (&probe_run, "probe", "m-probe"),
        (&http_run, "http-json", "m-http"),
    ] {
        let run_id = run["run_id"].as_str().unwrap();
        // What the run committed, as its manifest in the bucket says.
        let manifest: Value = serde_json::from_slice(
            &store
                .get_bytes(&format!("{prefix}/{conn}/_runs/{run_id}.json"))
                .await
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        let streams = run["streams"].as_object().unwrap();
        assert!(!streams.is_empty(), "{run}");
        for (stream, stats) in streams {
            let labels = format!(r#"{{connector="{connector}",stream="{stream}"}}"#);
            let rows = stats["committed_rows"].as_f64().unwrap();
            assert!(rows > 0.0, "{run}");
            assert_eq!(
                sample(&m, &format!("sluice_committed_records_total{labels}")),
                rows
            );
            assert_eq!(
                sample(&m, &format!("sluice_committed_files_total{labels}")),
                stats["files"].as_f64().unwrap()
            );
            let bytes: f64 = manifest["streams"][stream]["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["bytes"].as_f64().unwrap())
                .sum();
            assert!(bytes > 0.0);
            assert_eq!(
                sample(&m, &format!("sluice_committed_bytes_total{labels}")),
                bytes
            );
        }
        assert_eq!(
            sample(
                &m,
                &format!(r#"sluice_runs_total{{connector="{connector}",outcome="succeeded"}}"#)
            ),
            1.0
        );
        assert_eq!(
            sample(
                &m,
                &format!(r#"sluice_run_duration_seconds_count{{connector="{connector}"}}"#)
            ),
            // Every run that ended: http-json's failed one too.
            if connector == "probe" { 1.0 } else { 2.0 },
        );
        assert_eq!(
            sample(
                &m,
                &format!(
                    r#"sluice_plugin_call_duration_seconds_count{{plugin="{connector}",export="sync"}}"#
                )
            ),
            if connector == "probe" { 1.0 } else { 2.0 },
        );
    }
    assert_eq!(
        sample(
            &m,
            r#"sluice_committed_records_total{connector="probe",stream="items"}"#
        ),
        3000.0
    );
    assert_eq!(
        sample(
            &m,
            r#"sluice_runs_total{connector="http-json",outcome="failed"}"#
        ),
        1.0
    );
    // Upstream attempts: two per path (the refused one and the good one).
    let http = |status: &str| {
        format!(
            r#"sluice_outbound_requests_total{{plugin="http-json",host="127.0.0.1",status="{status}"}}"#
        )
    };
    assert_eq!(sample(&m, &http("200")), 2.0);
    assert_eq!(sample(&m, &http("503")), 1.0);
    assert_eq!(sample(&m, &http("429")), 1.0);
    assert!(
        sample(&m, &http("connection_error")) >= 1.0,
        "the failed run's attempts"
    );
    assert!(sample(&m, r#"sluice_outbound_retries_total{plugin="http-json"}"#) >= 2.0);
    assert_eq!(
        sample(
            &m,
            r#"sluice_outbound_rate_limit_waits_total{plugin="http-json"}"#
        ),
        1.0
    );
    let waited = sample(
        &m,
        r#"sluice_outbound_rate_limit_wait_seconds_total{plugin="http-json"}"#,
    );
    assert!((0.9..10.0).contains(&waited), "Retry-After: 1 → {waited}");
    assert_eq!(sample(&m, "sluice_running_runs"), 0.0);
    assert_eq!(
        sample(&m, "sluice_staging_bytes"),
        0.0,
        "staging is removed after runs"
    );
    assert!(!m.keys().any(|k| k.contains("t0ken-value")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_public_opens_only_the_metrics() {
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[("METRICS_PUBLIC", "true")]).await;
    let r = reqwest::get(format!("{}/metrics", svc.base)).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\nsluice_plugin_load_failures_total 1\n"),
        "{text}"
    );
    let r = reqwest::get(format!("{}/internal/connectors", svc.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the API itself still needs the token");
}
