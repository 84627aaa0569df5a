//! OpenTelemetry traces and metrics, black-box: the built binary with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing
//! at an OTLP/HTTP receiver on loopback that decodes the protobuf with the official definitions
//! (`opentelemetry-proto`); a sync submitted with a W3C `traceparent` into Garage.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use sluice_tests::s3::{AK, BUCKET, SK, endpoint, unique_prefix};
use sluice_tests::{Service, plugin, run_id_of, serve};

/// Every span received, with its resource's attributes.
type Received = Arc<Mutex<Vec<(Vec<KeyValue>, Span)>>>;

/// Every sum data point received: metric name, its attributes as `k=v` sorted and joined by
/// `,`, value.
type Sums = Arc<Mutex<Vec<(String, String, f64)>>>;

async fn receiver() -> (String, Received, Sums) {
    let got: Received = Arc::default();
    let sink = got.clone();
    let sums: Sums = Arc::default();
    let sums_sink = sums.clone();
    let app = Router::new()
        .route(
            "/v1/metrics",
            post(move |body: Bytes| {
                let sink = sums_sink.clone();
                async move {
                    let req = ExportMetricsServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut sink = sink.lock().unwrap();
                    for rm in req.resource_metrics {
                        for sm in rm.scope_metrics {
                            for m in sm.metrics {
                                let Some(metric::Data::Sum(sum)) = m.data else {
                                    continue;
                                };
                                for p in sum.data_points {
                                    let mut labels: Vec<String> = p
                                        .attributes
                                        .iter()
                                        .map(|kv| {
                                            format!(
                                                "{}={}",
                                                kv.key,
                                                attr(std::slice::from_ref(kv), &kv.key)
                                                    .unwrap_or_default()
                                            )
                                        })
                                        .collect();
                                    labels.sort();
                                    let v = match p.value {
                                        Some(number_data_point::Value::AsInt(i)) => i as f64,
                                        Some(number_data_point::Value::AsDouble(d)) => d,
                                        None => continue,
                                    };
                                    sink.push((m.name.clone(), labels.join(","), v));
                                }
                            }
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        )
        .route(
            "/v1/traces",
            post(move |body: Bytes| {
                let sink = sink.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut sink = sink.lock().unwrap();
                    for rs in req.resource_spans {
                        let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
                        for ss in rs.scope_spans {
                            for span in ss.spans {
                                sink.push((resource.clone(), span));
                            }
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
    (format!("http://{}", serve(app).await), got, sums)
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match v {
        Any::StringValue(s) => s.clone(),
        Any::IntValue(i) => i.to_string(),
        Any::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_traced_under_the_callers_traceparent() {
    let (otlp, got, sums) = receiver().await;
    let upstream = Router::new().route(
        "/orders",
        get(|| async { axum::Json(json!({"items": [{"id": 1}, {"id": 2}]})) }),
    );
    let upstream = format!("http://{}", serve(upstream).await);

    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin("http-json"), plugins.join("http-json.wasm")).unwrap();
    let s3 = endpoint();
    let svc = Service::start(
        &root.path().join("data"),
        &plugins,
        &[
            ("S3_ENDPOINT", &s3),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_SERVICE_NAME", "sluice-otel-test"),
            ("OTEL_SERVICE_VERSION", "9.9.9-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
    )
    .await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let prefix = unique_prefix("otel");
    let r = svc
        .post("/internal/mirror-connections/runs")
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({
            "connection_id": "traced",
            "connector": "http-json",
            // Columns not inferred: the one upstream request below is the sync's.
            "config": {"base_url": upstream, "streams": [{"name": "orders", "path": "/orders", "records_pointer": "/items", "infer_schema": false}]},
            "credentials": {"api_token": "t0ken-secret-value"},
            "storage": {"bucket": BUCKET, "prefix": prefix, "access_key_id": AK, "secret_access_key": SK},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let run_id = run_id_of(r).await;
    let run = svc.wait_run(&run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    // The batch exporter sends within ~100 ms of a span's end; the run span ends last.
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = got.lock().unwrap().clone();
        if spans.iter().any(|(_, s)| s.name == "run") {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "no run span received; got {:?}\n{}",
            spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>(),
            svc.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ours: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    let one = |name: &str, pred: &dyn Fn(&Span) -> bool| -> &Span {
        let found: Vec<&&Span> = ours.iter().filter(|s| s.name == name && pred(s)).collect();
        assert_eq!(
            found.len(),
            1,
            "one {name} span in the caller's trace expected; spans: {:#?}",
            ours.iter()
                .map(|s| (&s.name, hex(&s.parent_span_id)))
                .collect::<Vec<_>>()
        );
        found[0]
    };
    let request = one("POST /internal/mirror-connections/runs", &|_| true);
    assert_eq!(
        hex(&request.parent_span_id),
        caller_span,
        "continues the traceparent"
    );
    assert_eq!(
        attr(&request.attributes, "http.response.status_code").as_deref(),
        Some("202")
    );

    let run_span = one("run", &|_| true);
    assert_eq!(run_span.parent_span_id, request.span_id);
    assert_eq!(
        attr(&run_span.attributes, "run_id").as_deref(),
        Some(run_id.as_str())
    );
    assert_eq!(
        attr(&run_span.attributes, "connection_id").as_deref(),
        Some("traced")
    );
    assert_eq!(
        attr(&run_span.attributes, "outcome").as_deref(),
        Some("succeeded")
    );

    let export_is =
        |e: &'static str| move |s: &Span| attr(&s.attributes, "export").as_deref() == Some(e);
    let discover = one("plugin_call", &export_is("discover"));
    let sync = one("plugin_call", &export_is("sync"));
    for call in [discover, sync] {
        assert_eq!(call.parent_span_id, run_span.span_id);
        assert_eq!(
            attr(&call.attributes, "run_id").as_deref(),
            Some(run_id.as_str())
        );
        assert_eq!(
            attr(&call.attributes, "connection_id").as_deref(),
            Some("traced")
        );
        assert_eq!(
            attr(&call.attributes, "plugin").as_deref(),
            Some("http-json")
        );
    }
    let upstream_req = one("upstream_request", &|_| true);
    assert_eq!(upstream_req.parent_span_id, sync.span_id);
    assert_eq!(
        attr(&upstream_req.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr(&upstream_req.attributes, "url.path").as_deref(),
        Some("/orders")
    );
    assert_eq!(upstream_req.kind, 3, "client span");

    let commit = one("commit", &|_| true);
    assert_eq!(commit.parent_span_id, run_span.span_id);
    assert_eq!(
        attr(&commit.attributes, "run_id").as_deref(),
        Some(run_id.as_str())
    );
    assert!(commit.end_time_unix_nano <= run_span.end_time_unix_nano);
    assert!(sync.end_time_unix_nano <= commit.start_time_unix_nano);

    let (resource, _) = spans.iter().find(|(_, s)| s.name == "run").unwrap();
    assert_eq!(
        attr(resource, "service.name").as_deref(),
        Some("sluice-otel-test")
    );
    assert_eq!(
        attr(resource, "service.version").as_deref(),
        Some("9.9.9-test")
    );
    let all = format!("{spans:?}");
    assert!(!all.contains("t0ken-secret-value"), "a secret in the spans");

    // The metrics over OTLP too (every OTEL_METRIC_EXPORT_INTERVAL = 200 ms), cumulative.
    let want = [
        ("sluice.runs", "connector=http-json,outcome=succeeded", 1.0),
        (
            "sluice.committed.records",
            "connector=http-json,stream=orders",
            2.0,
        ),
        (
            "sluice.committed.files",
            "connector=http-json,stream=orders",
            1.0,
        ),
        (
            "sluice.outbound.requests",
            "host=127.0.0.1,plugin=http-json,status=200",
            1.0,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sums = sums.lock().unwrap().clone();
        let latest = |name: &str, labels: &str| {
            sums.iter()
                .rev()
                .find(|(n, l, _)| n == name && l == labels)
                .map(|(_, _, v)| *v)
        };
        let missing: Vec<_> = want
            .iter()
            .filter(|(n, l, v)| latest(n, l) != Some(*v))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "OTLP metrics missing {missing:?}; got {:?}",
            &sums[sums.len().saturating_sub(30)..]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
