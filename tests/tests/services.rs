//! Internal services, black-box: the built `sluice` binary on a loopback port, the reference
//! internal service (`sluice_tests::fakes::internal_service`) on others, Garage for the sync.
//!
//! Connect → the key works on the service's data API and `http-json` syncs it into S3;
//! disconnect → the key is refused; upstream failures map to their statuses; health states;
//! registry hot reload; `sluice service check` on the reference and on broken variants; the
//! shared secret and the keys appear in no log line or answer but the connect answer.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_storage::Store;
use sluice_tests::fakes::internal_service::{BadAnswer, Faults, ReferenceService};
use sluice_tests::s3::{AK, BUCKET, SK, endpoint, unique_prefix};
use sluice_tests::{Service, free_port, plugin, run_id_of, sluice_bin};

static PREFIX: LazyLock<String> = LazyLock::new(|| unique_prefix("services"));

/// A shared secret no other test uses (its presence in a log is then this test's leak).
fn secret(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sc-{tag}-secret-{nanos:x}")
}

/// One registry entry of a purchase-order service at `url`. Its variables are `PO_API_KEY` and
/// `PO_API_URL` for `purchase-orders`, else named after the id (two services may not export
/// the same variable).
fn entry(id: &str, url: &str) -> Value {
    let var = match id {
        "purchase-orders" => "PO".to_string(),
        other => other.to_uppercase().replace('-', "_"),
    };
    json!({
        "id": id,
        "name": format!("Purchase orders ({id})"),
        "description": "Orders from the PO system",
        "base_url": url,
        "connector": {
            "kind": "http-json",
            "validate_path": "/api/me",
            "streams": [{"name": "purchase_orders", "path": "/api/purchase-orders", "records_pointer": "/data"}]
        },
        "env": [format!("{var}_API_KEY")],
        "url_env": format!("{var}_API_URL"),
        "ttl_days": 30,
        "docs": "# Purchase orders\nGET /api/purchase-orders",
    })
}

/// Writes the registry as YAML (entries given as JSON values).
fn write_registry(file: &Path, entries: &[Value]) {
    let yaml = as_yaml(&json!({"services": entries}));
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// JSON is YAML: the registry is written as JSON text under a `.yaml` name, with a YAML comment
/// on top so that a YAML-only parse path is exercised too.
fn as_yaml(v: &Value) -> String {
    format!(
        "# services for the tests\n{}\n",
        serde_json::to_string_pretty(v).unwrap()
    )
}

struct Setup {
    svc: Service,
    registry: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts the service with a registry of `entries`, the given `SC_SECRET_*` and extra env.
async fn start(
    entries: &[Value],
    secrets: &[(&str, &str)],
    env: &[(&str, &str)],
    with_http_json: bool,
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    if with_http_json {
        std::fs::copy(plugin("http-json"), plugins.join("http-json.wasm")).unwrap();
    }
    let registry = dir.path().join("services.yaml");
    write_registry(&registry, entries);
    let registry_s = registry.display().to_string();
    let mut all: Vec<(&str, &str)> = vec![("SERVICES_FILE", &registry_s)];
    all.extend_from_slice(secrets);
    all.extend_from_slice(env);
    let endpoint = endpoint();
    all.push(("S3_ENDPOINT", &endpoint));
    let svc = Service::start(&dir.path().join("data"), &plugins, &all).await;
    Setup {
        svc,
        registry,
        _dir: dir,
    }
}

/// Fails when any of `needles` is in `haystack`, naming where.
fn assert_absent(what: &str, haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(
            !haystack.contains(n),
            "{what} holds a secret value ({}…)",
            &n[..6.min(n.len())]
        );
    }
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// POSTs `body` as JSON to `path`; the status and the answer (JSON, or text).
async fn post_json(svc: &Service, path: &str, body: &Value) -> (u16, Value) {
    json_of(svc.post(path).json(body).send().await.unwrap()).await
}

/// Whether the log holds the forged event text of `upstream_failures_map_to_statuses`.
fn svc_logs_contain_forged(svc: &Service) -> bool {
    svc.logs().contains("forged")
}

/// The audit events of the service's log (JSON lines with target `sluice::audit`).
fn audit_events(svc: &Service) -> Vec<Value> {
    svc.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "sluice::audit")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_sync_disconnect_end_to_end() {
    let secret = secret("e2e");
    let reference = ReferenceService::start(&secret, 230, Faults::default()).await;
    let s = start(
        &[entry("purchase-orders", &reference.url)],
        &[("SC_SECRET_PURCHASE_ORDERS", &secret)],
        &[],
        true,
    )
    .await;
    let svc = &s.svc;

    // The registry.
    let (st, list) = json_of(svc.get("/internal/services").send().await.unwrap()).await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["error"], Value::Null);
    assert_eq!(list["services"].as_array().unwrap().len(), 1);
    let (st, po) = json_of(
        svc.get("/internal/services/purchase-orders")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{po}");
    assert_eq!(po["secret_env"], "SC_SECRET_PURCHASE_ORDERS");
    assert_eq!(po["secret_configured"], true);
    assert_eq!(po["connector"]["id"], "http-json");
    assert_eq!(
        po["connector"]["config"]["base_url"],
        format!("{}/", reference.url)
    );
    assert_eq!(po["last_health"], Value::Null);
    assert_eq!(po["connector_error"], Value::Null, "{po}");

    // Connect.
    let before = time::OffsetDateTime::now_utc();
    let r = svc
        .post("/internal/services/purchase-orders/connect")
        .json(&json!({"user_email": "john@corp.example", "ttl_days": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "the answer holds the key"
    );
    let (st, conn) = json_of(r).await;
    assert_eq!(st, 200, "{conn}");
    let key = conn["api_key"].as_str().unwrap().to_string();
    let token_id = conn["token_id"].as_str().unwrap().to_string();
    assert_eq!(conn["env"]["PO_API_KEY"], key.as_str());
    // The base URL as the operator wrote it: `$PO_API_URL/api/me` must not be `…//api/me`.
    assert_eq!(conn["env"]["PO_API_URL"], reference.url.as_str());
    let me = reqwest::Client::new()
        .get(format!(
            "{}/api/me",
            conn["env"]["PO_API_URL"].as_str().unwrap()
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.status(),
        200,
        "the exported URL joins as the analyst joins it"
    );
    let expires = time::OffsetDateTime::parse(
        conn["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let off = (expires - (before + time::Duration::days(7))).abs();
    assert!(off < time::Duration::minutes(1), "expires_at {expires}");
    let issued = reference.issued();
    assert_eq!(issued[&token_id].user_email, "john@corp.example");
    assert_eq!(issued[&token_id].api_key, key);

    // The key works on the service's data API…
    let me = reqwest::Client::new()
        .get(format!("{}/api/me", reference.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    // …and http-json syncs the service into S3 with it.
    let run = svc
        .post("/internal/mirror-connections/runs")
        .json(&json!({
            "connection_id": "po-john",
            "connector": po["connector"]["id"],
            "config": po["connector"]["config"],
            "credentials": {po["connector"]["secret"].as_str().unwrap(): key},
            "storage": {"bucket": BUCKET, "prefix": *PREFIX, "access_key_id": AK, "secret_access_key": SK},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 202);
    let run_id = run_id_of(run).await;
    let done = svc.wait_run(&run_id).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", svc.logs());
    assert_eq!(
        done["streams"]["purchase_orders"]["committed_rows"], 230,
        "{done}"
    );
    assert_absent("the run status", &done.to_string(), &[&key, &secret]);
    let state = sluice_tests::s3::bucket()
        .get_bytes(&format!("{}/po-john/_state.json", *PREFIX))
        .await
        .unwrap();
    assert!(state.is_some(), "the run committed to S3");

    // The service's page for analysts: the key's variables, the registry entry's docs, then the
    // connector's page with the stream the service's config declares.
    let r = svc
        .get("/internal/services/purchase-orders/docs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let docs_at = |page: &str, want: &str| {
        page.find(want)
            .unwrap_or_else(|| panic!("missing {want:?} in:\n{page}"))
    };
    let order = [
        docs_at(&page, "(service `purchase-orders`)"),
        docs_at(&page, "`PO_API_KEY`"),
        docs_at(&page, "# Purchase orders\nGET /api/purchase-orders"),
        docs_at(&page, "### `purchase_orders`"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{page}");
    // Schema-sync naming the service writes that page, with the committed columns, beside the data.
    let storage =
        json!({"bucket": BUCKET, "prefix": *PREFIX, "access_key_id": AK, "secret_access_key": SK});
    let r = svc
        .post("/internal/mirror-connections/schema-sync")
        .json(
            &json!({"connection_id": "po-john", "connector": "http-json",
            "service": "purchase-orders", "storage": storage}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let readme = sluice_tests::s3::bucket()
        .get_bytes(&format!("{}/po-john/_README.md", *PREFIX))
        .await
        .unwrap()
        .expect("_README.md beside the data");
    let readme = String::from_utf8(readme).unwrap();
    docs_at(&readme, "# Purchase orders\nGET /api/purchase-orders");
    docs_at(&readme, "| `_sluice_run_id` | VARCHAR |");
    // An unknown service, a service another connector syncs, a config not the service's.
    let other = json!({"base_url": "http://127.0.0.1:9/", "streams": []});
    for (service, connector, config, status, code) in [
        ("nope", "http-json", Value::Null, 404, "not_found"),
        (
            "purchase-orders",
            "github",
            Value::Null,
            422,
            "invalid_request",
        ),
        (
            "purchase-orders",
            "http-json",
            other,
            422,
            "invalid_request",
        ),
    ] {
        let (st, body) = json_of(
            svc.post("/internal/mirror-connections/schema-sync")
                .json(&json!({"connection_id": "po-john", "connector": connector,
                    "service": service, "storage": storage, "config": config}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((st, body["code"].as_str()), (status, Some(code)), "{body}");
    }

    // Disconnect, twice: both answer 200.
    for _ in 0..2 {
        let r = svc
            .post("/internal/services/purchase-orders/disconnect")
            .json(&json!({"token_id": token_id}))
            .send()
            .await
            .unwrap();
        let (st, body) = json_of(r).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["status"], "revoked");
        assert_eq!(body["token_id"], token_id.as_str());
    }
    assert!(reference.issued()[&token_id].revoked);

    // The key is refused now: by the service, and through Sluice's validate.
    let me = reqwest::Client::new()
        .get(format!("{}/api/me", reference.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
    let (st, v) = post_json(svc, "/internal/mirror-connections/validate", &json!({"connector": "http-json", "config": po["connector"]["config"], "credentials": {"api_token": key}})).await;
    assert_eq!(st, 200);
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["error"]["code"], "invalid_credentials", "{v}");

    // Audit: connect and disconnect, with service, user and token id.
    let events = audit_events(svc);
    let connect = events
        .iter()
        .find(|e| e["action"] == "connect")
        .expect("a connect event");
    assert_eq!(connect["service"], "purchase-orders");
    assert_eq!(connect["user_email"], "john@corp.example");
    assert_eq!(connect["token_id"], token_id.as_str());
    assert_eq!(connect["outcome"], "ok");
    let disconnects: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "disconnect")
        .collect();
    assert_eq!(disconnects.len(), 2, "{events:?}");
    assert_eq!(disconnects[0]["user_email"], "john@corp.example");
    assert_eq!(disconnects[0]["outcome"], "ok");

    // A typo in an http-json stream: the file loads (it is well-formed), and the service
    // reports that its connector would refuse the config.
    let mut typo = entry("purchase-orders", &reference.url);
    typo["connector"]["streams"][0]["cursor_feild"] = json!("updated_at");
    write_registry(&s.registry, &[typo]);
    wait_registry(svc, "typo reported", |l| {
        l["services"][0]["connector_error"]
            .as_str()
            .is_some_and(|e| e.contains("cursor_feild"))
    })
    .await;

    // The secret and the key are in no log line and no other answer.
    let (_, list) = json_of(svc.get("/internal/services").send().await.unwrap()).await;
    assert_absent(
        "GET /internal/services",
        &list.to_string(),
        &[&key, &secret],
    );
    assert_absent("the service log", &svc.logs(), &[&key, &secret]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_map_to_statuses() {
    let secret = secret("errors");
    let good = ReferenceService::start(
        &secret,
        1,
        Faults {
            refused_users: vec!["mallory@corp.example".into()],
            ..Faults::default()
        },
    )
    .await;
    let failing = ReferenceService::start(
        &secret,
        1,
        Faults {
            exchange_status: Some(500),
            ..Faults::default()
        },
    )
    .await;
    let slow = ReferenceService::start(
        &secret,
        1,
        Faults {
            exchange_delay: Some(Duration::from_secs(3)),
            ..Faults::default()
        },
    )
    .await;
    let malformed = ReferenceService::start(
        &secret,
        1,
        Faults {
            malformed_exchange: true,
            ..Faults::default()
        },
    )
    .await;
    let other_secret =
        ReferenceService::start("a-different-secret-0123456789", 1, Faults::default()).await;
    let accepted = ReferenceService::start(
        &secret,
        1,
        Faults {
            exchange_status: Some(202),
            ..Faults::default()
        },
    )
    .await;
    let sso = ReferenceService::start(
        &secret,
        1,
        Faults {
            exchange_answer: Some(BadAnswer::Html),
            ..Faults::default()
        },
    )
    .await;
    let down = format!("http://127.0.0.1:{}", free_port());
    let mut faults = Faults::default();
    faults
        .apply(&format!(
            "redirect-to={}/api/internal/token-exchange",
            good.url
        ))
        .unwrap();
    let moved = ReferenceService::start(&secret, 1, faults).await;
    let entries = [
        entry("moved", &moved.url),
        entry("good", &good.url),
        entry("failing", &failing.url),
        entry("slow", &slow.url),
        entry("malformed", &malformed.url),
        entry("wrong-secret", &other_secret.url),
        entry("down", &down),
        entry("no-secret", &good.url),
        entry("accepted", &accepted.url),
        entry("sso", &sso.url),
    ];
    let secrets = [
        ("SC_SECRET_MOVED", secret.as_str()),
        ("SC_SECRET_GOOD", secret.as_str()),
        ("SC_SECRET_FAILING", &secret),
        ("SC_SECRET_SLOW", &secret),
        ("SC_SECRET_MALFORMED", &secret),
        ("SC_SECRET_WRONG_SECRET", &secret),
        ("SC_SECRET_DOWN", &secret),
        ("SC_SECRET_ACCEPTED", &secret),
        ("SC_SECRET_SSO", &secret),
    ];
    let s = start(
        &entries,
        &secrets,
        &[("SLUICE_SERVICE_TIMEOUT_SECS", "1")],
        false,
    )
    .await;
    let svc = &s.svc;
    let connect = |id: &str, body: Value| {
        svc.post(&format!("/internal/services/{id}/connect"))
            .json(&body)
            .send()
    };
    let user = json!({"user_email": "john@corp.example"});
    for (id, body, status, code) in [
        ("nope", user.clone(), 404, "not_found"),
        (
            "good",
            json!({"user_email": "mallory@corp.example"}),
            403,
            "user_refused",
        ),
        (
            "good",
            json!({"user_email": "not-an-email"}),
            422,
            "invalid_request",
        ),
        (
            "good",
            json!({"user_email": "eve@corp.example\n{\"action\":\"forged\"}"}),
            422,
            "invalid_request",
        ),
        (
            "good",
            json!({"user_email": "john@corp.example", "ttl_days": 0}),
            422,
            "invalid_request",
        ),
        (
            "good",
            json!({"user_email": "john@corp.example", "ttl_days": 99999}),
            422,
            "invalid_request",
        ),
        (
            "good",
            json!({"user_email": "john@corp.example", "extra": 1}),
            422,
            "invalid_request",
        ),
        ("failing", user.clone(), 502, "service_error"),
        // A 2xx that is not 200/201 is not the protocol's success, whatever it holds.
        ("accepted", user.clone(), 502, "service_bad_answer"),
        // A 200 that is a login page (a proxy in front of the service) is no token.
        ("sso", user.clone(), 502, "service_bad_answer"),
        // A 307 is the service's answer, not followed: the exchange is sent once, to it only.
        ("moved", user.clone(), 502, "service_error"),
        ("slow", user.clone(), 504, "service_timeout"),
        ("malformed", user.clone(), 502, "service_bad_answer"),
        ("wrong-secret", user.clone(), 502, "service_secret_rejected"),
        ("down", user.clone(), 502, "service_unreachable"),
        ("no-secret", user.clone(), 503, "shared_secret_missing"),
    ] {
        let (st, body) = json_of(connect(id, body.clone()).await.unwrap()).await;
        assert_eq!(
            (st, body["code"].as_str().unwrap_or("")),
            (status, code),
            "{id} {body}"
        );
        assert!(body["detail"].is_string(), "{body}");
    }
    // The service's refusal reaches the backend as it said it: the user's email is not a secret
    // the service holds (it came from the backend), so it is not redacted ("user [redacted] is
    // disabled" told nobody which user).
    let (st, body) = json_of(
        connect("good", json!({"user_email": "mallory@corp.example"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.ends_with("user mallory@corp.example is disabled")),
        "{body}"
    );
    // The token exchange was sent once, not retried.
    assert_eq!(failing.exchanges(), 1);
    assert_eq!(slow.exchanges(), 1);
    assert_eq!(moved.exchanges(), 1, "sent once, the redirect not followed");
    assert_eq!(good.exchanges(), 2, "the refused user's two exchanges only");
    // A redirect says it was not followed, and where it pointed.
    let (st, body) = json_of(connect("moved", user.clone()).await.unwrap()).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (502, Some("service_error")),
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains(&format!(
            "HTTP 307, a redirect to {}/api/internal/token-exchange; redirects are not followed",
            good.url
        )),
        "{body}"
    );
    // The malformed answer named a token: it is revoked.
    let issued = malformed.issued();
    assert_eq!(issued.len(), 1);
    assert!(
        issued.values().all(|t| t.revoked),
        "the unusable token was revoked"
    );
    // Failed exchanges are audited.
    let failed: Vec<Value> = audit_events(svc)
        .into_iter()
        .filter(|e| e["action"] == "connect" && e["outcome"] == "failed")
        .collect();
    assert!(
        failed.iter().any(|e| e["service"] == "malformed"
            && e["code"] == "service_bad_answer"
            && e["token_id"].is_string()),
        "{failed:?}"
    );
    assert!(
        failed.iter().any(|e| e["service"] == "good"
            && e["code"] == "user_refused"
            && e["user_email"] == "mallory@corp.example"),
        "{failed:?}"
    );

    // A rejected email is not logged: it could forge lines in a text log.
    assert!(
        failed
            .iter()
            .all(|e| !e["user_email"].as_str().unwrap_or("").contains("forged")),
        "{failed:?}"
    );
    assert!(
        !svc_logs_contain_forged(svc),
        "a client's email reached the log"
    );

    // Disconnect: unknown service, bad token id, a service that is down.
    for (id, body, status, code) in [
        ("nope", json!({"token_id": "tok_1"}), 404, "not_found"),
        ("good", json!({"token_id": ""}), 422, "invalid_request"),
        (
            "good",
            json!({"token_id": "tok with spaces"}),
            422,
            "invalid_request",
        ),
        (
            "down",
            json!({"token_id": "tok_1"}),
            502,
            "service_unreachable",
        ),
    ] {
        let (st, body) =
            post_json(svc, &format!("/internal/services/{id}/disconnect"), &body).await;
        assert_eq!(
            (st, body["code"].as_str().unwrap_or("")),
            (status, code),
            "{id} {body}"
        );
    }
    // An unknown token is not an error (idempotent revoke).
    let (st, body) = post_json(
        svc,
        "/internal/services/good/disconnect",
        &json!({"token_id": "tok_never_issued"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");

    // No key any of the services issued, nor the secret, is in the log.
    let keys: Vec<String> = [&good, &failing, &slow, &malformed, &other_secret]
        .iter()
        .flat_map(|r| r.issued().into_values().map(|t| t.api_key))
        .collect();
    let mut needles: Vec<&str> = keys.iter().map(String::as_str).collect();
    needles.push(&secret);
    assert_absent("the service log", &svc.logs(), &needles);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_states() {
    let secret = secret("health");
    let up = ReferenceService::start(&secret, 1, Faults::default()).await;
    let slow = ReferenceService::start(
        &secret,
        1,
        Faults {
            health_delay: Some(Duration::from_secs(4)),
            ..Faults::default()
        },
    )
    .await;
    let other =
        ReferenceService::start("another-secret-0123456789abcdef", 1, Faults::default()).await;
    let down = format!("http://127.0.0.1:{}", free_port());
    let mut faults = Faults::default();
    faults.apply("health-not-json").unwrap();
    let plain = ReferenceService::start(&secret, 1, faults).await;
    let mut faults = Faults::default();
    faults.apply("health-answers=html").unwrap();
    let sso = ReferenceService::start(&secret, 1, faults).await;
    // A redirect is an answer, never followed (the target gets nothing, not even the secret).
    let mut faults = Faults::default();
    faults
        .apply(&format!("redirect-to={}/api/internal/health", up.url))
        .unwrap();
    let moved = ReferenceService::start(&secret, 1, faults).await;
    let s = start(
        &[
            entry("up", &up.url),
            entry("slow", &slow.url),
            entry("bad-secret", &other.url),
            entry("down", &down),
            entry("unset", &up.url),
            entry("plain", &plain.url),
            entry("moved", &moved.url),
            entry("sso", &sso.url),
        ],
        &[
            ("SC_SECRET_UP", &secret),
            ("SC_SECRET_SLOW", &secret),
            ("SC_SECRET_BAD_SECRET", &secret),
            ("SC_SECRET_DOWN", &secret),
            ("SC_SECRET_PLAIN", &secret),
            ("SC_SECRET_MOVED", &secret),
            ("SC_SECRET_SSO", &secret),
        ],
        &[("SLUICE_SERVICE_TIMEOUT_SECS", "1")],
        false,
    )
    .await;
    let svc = &s.svc;
    for (id, state, http) in [
        ("up", "up", json!(200)),
        ("slow", "timeout", Value::Null),
        ("bad-secret", "bad_secret", json!(401)),
        ("down", "unreachable", Value::Null),
        ("unset", "secret_missing", Value::Null),
        ("plain", "error", json!(200)),
        ("moved", "error", json!(307)),
        ("sso", "error", json!(200)),
    ] {
        let t = Instant::now();
        let (st, h) = json_of(
            svc.get(&format!("/internal/services/{id}/health"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(st, 200, "{h}");
        assert_eq!(h["state"], state, "{id}: {h}");
        assert_eq!(h["http_status"], http, "{id}: {h}");
        let detail = h["detail"].as_str().unwrap_or("");
        match id {
            "moved" => assert!(detail.contains("redirects are not followed"), "{h}"),
            "sso" => assert!(
                detail.contains("text/html") && detail.contains("login page"),
                "{h}"
            ),
            _ => {}
        }
        if state == "up" {
            assert!(h["latency_ms"].as_u64().unwrap() < 1000, "{h}");
        }
        if state == "timeout" {
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "the probe gave up at the timeout"
            );
        }
        // The probe is remembered in the registry's answer.
        let (_, one) = json_of(
            svc.get(&format!("/internal/services/{id}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(one["last_health"]["state"], state, "{one}");
    }
    let (st, body) = json_of(
        svc.get("/internal/services/nope/health")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, body["code"].clone()), (404, json!("not_found")));
    assert_absent("the service log", &svc.logs(), &[&secret]);
}

/// A revoke is done only when the service answers the protocol's 200 `{"status": "ok"}`: a 200
/// that is a single sign-on login page (a proxy in front of the service), `{"status":
/// "error"}`, `{}`, nothing or text is a 502 `service_bad_answer`, the token stays tracked and
/// the key still works; once the service answers properly, the same disconnect revokes it. A
/// redirect is a `service_error` that says it was not followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_is_done_only_when_the_service_answers_ok() {
    let secret = secret("revoke-ok");
    let po = ReferenceService::start(&secret, 1, Faults::default()).await;
    let s = start(
        &[entry("po", &po.url)],
        &[("SC_SECRET_PO", &secret)],
        &[],
        false,
    )
    .await;
    let svc = &s.svc;
    let (st, conn) = post_json(
        svc,
        "/internal/services/po/connect",
        &json!({"user_email": "john@corp.example"}),
    )
    .await;
    assert_eq!(st, 200, "{conn}");
    let token_id = conn["token_id"].as_str().unwrap().to_string();
    let key = conn["api_key"].as_str().unwrap().to_string();
    let active = || async {
        let (_, one) = json_of(svc.get("/internal/services/po").send().await.unwrap()).await;
        one["active_tokens"].as_u64().unwrap()
    };
    let key_works = || async {
        reqwest::Client::new()
            .get(format!("{}/api/me", po.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status()
            == 200
    };
    assert_eq!(active().await, 1);
    let revoke_body = json!({"token_id": token_id});
    let disconnect = || post_json(svc, "/internal/services/po/disconnect", &revoke_body);
    for (bad, says) in [
        (BadAnswer::Html, "text/html body"),
        (BadAnswer::StatusError, "JSON with \"status\": \"error\""),
        (BadAnswer::NoStatus, "JSON without `status`"),
        (BadAnswer::Empty, "an empty body"),
        (BadAnswer::Text, "text/plain body of 2 bytes, not JSON"),
    ] {
        po.set_faults(Faults {
            revoke_answer: Some(bad),
            ..Faults::default()
        });
        let (st, body) = disconnect().await;
        assert_eq!(
            (st, body["code"].as_str()),
            (502, Some("service_bad_answer")),
            "{bad:?}: {body}"
        );
        let detail = body["detail"].as_str().unwrap_or("");
        assert!(
            detail.contains("token-revoke answer is not the protocol's") && detail.contains(says),
            "{bad:?}: {body}"
        );
        if bad == BadAnswer::Html {
            assert!(detail.contains("a login page"), "{body}");
        }
        assert_eq!(active().await, 1, "{bad:?}: the token stays tracked");
        assert!(!po.issued()[&token_id].revoked);
        assert!(key_works().await, "{bad:?}: the key still works");
    }
    // A redirect: not followed, and said so.
    po.set_faults(Faults {
        redirect_to: Some(format!("{}/sso/login?next=/revoke", po.url)),
        ..Faults::default()
    });
    let (st, body) = disconnect().await;
    assert_eq!(
        (st, body["code"].as_str()),
        (502, Some("service_error")),
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains(&format!("HTTP 307, a redirect to {}/sso/login;", po.url))
            && detail.contains("redirects are not followed"),
        "the query is left out: {body}"
    );
    assert_eq!(active().await, 1);
    // Each failure is audited as one.
    let failed = audit_events(svc)
        .into_iter()
        .filter(|e| e["action"] == "disconnect" && e["outcome"] == "failed")
        .count();
    assert_eq!(failed, 6);

    // The service answers properly again: the retry revokes the token.
    po.set_faults(Faults::default());
    let (st, body) = disconnect().await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "revoked");
    assert_eq!(body["known_to_service"], true);
    assert!(po.issued()[&token_id].revoked);
    assert!(!key_works().await, "the key is refused once revoked");
    assert_eq!(active().await, 0);
    assert_absent("the service log", &svc.logs(), &[&secret, &key]);
}

/// Polls the registry answer until `pred` holds (hot reload is debounced and asynchronous).
async fn wait_registry(svc: &Service, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = json_of(svc.get("/internal/services").send().await.unwrap()).await;
        if pred(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "{what}: {list}\n{}", svc.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_hot_reload_keeps_the_last_good_file() {
    let secret = secret("reload");
    let reference = ReferenceService::start(&secret, 1, Faults::default()).await;
    let s = start(
        &[entry("alpha", &reference.url)],
        &[("SC_SECRET_ALPHA", &secret), ("SC_SECRET_BETA", &secret)],
        &[],
        false,
    )
    .await;
    let svc = &s.svc;
    // No http-json here: the service says its connector is missing.
    let (_, l) = json_of(svc.get("/internal/services").send().await.unwrap()).await;
    assert!(
        l["services"][0]["connector_error"]
            .as_str()
            .is_some_and(|e| e.contains("not loaded")),
        "{l}"
    );
    let ids = |l: &Value| -> Vec<String> {
        l["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let l = wait_registry(svc, "initial", |l| ids(l) == ["alpha"]).await;
    let first_sha = l["sha256"].clone();

    // A second service appears.
    write_registry(
        &s.registry,
        &[
            entry("alpha", &reference.url),
            entry("beta", &reference.url),
        ],
    );
    let l = wait_registry(svc, "beta added", |l| ids(l) == ["alpha", "beta"]).await;
    assert_ne!(l["sha256"], first_sha);
    assert_eq!(l["error"], Value::Null);
    let (st, _) = json_of(svc.get("/internal/services/beta").send().await.unwrap()).await;
    assert_eq!(st, 200);

    // A broken file: the previous registry keeps serving, the error is visible and logged.
    std::fs::write(&s.registry, "services: [{id: beta, name: B, base_url: 'ftp://x', connector: {kind: wasm, id: b}, env: [B]}]").unwrap();
    let l = wait_registry(svc, "error reported", |l| l["error"].is_object()).await;
    assert_eq!(ids(&l), ["alpha", "beta"]);
    assert!(
        l["error"]["message"].as_str().unwrap().contains("base_url"),
        "{l}"
    );
    let (st, _) = post_json(
        svc,
        "/internal/services/beta/connect",
        &json!({"user_email": "a@corp.example"}),
    )
    .await;
    assert_eq!(st, 200, "the previous version still serves");
    assert!(
        svc.logs().contains("service registry not reloaded"),
        "{}",
        svc.logs()
    );

    // An empty file (an editor truncating before it writes) is an error too, never "no services".
    std::fs::write(&s.registry, "").unwrap();
    wait_registry(svc, "empty file refused", |l| {
        l["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no `services` list"))
    })
    .await;
    let (st, _) = json_of(svc.get("/internal/services/alpha").send().await.unwrap()).await;
    assert_eq!(st, 200, "the previous version still serves");

    // Not YAML at all, then fixed.
    std::fs::write(&s.registry, "services: [{{{").unwrap();
    wait_registry(svc, "parse error", |l| {
        l["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a valid registry"))
    })
    .await;
    write_registry(&s.registry, &[entry("beta", &reference.url)]);
    wait_registry(svc, "fixed", |l| ids(l) == ["beta"] && l["error"].is_null()).await;
    let (st, _) = json_of(svc.get("/internal/services/alpha").send().await.unwrap()).await;
    assert_eq!(st, 404);
    assert_absent("the service log", &svc.logs(), &[&secret]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_leak_neither_the_secret_nor_a_key() {
    let secret = secret("hostile");
    let mut faults = Faults::default();
    faults.apply("token-id-is-key").unwrap();
    let keyed = ReferenceService::start(&secret, 1, faults).await;
    let mut faults = Faults::default();
    faults.apply("refusal-echoes-secret").unwrap();
    faults.apply("refuse-user=eve@corp.example").unwrap();
    let echo = ReferenceService::start(&secret, 1, faults).await;
    let s = start(
        &[entry("keyed", &keyed.url), entry("echo", &echo.url)],
        &[("SC_SECRET_KEYED", &secret), ("SC_SECRET_ECHO", &secret)],
        &[],
        false,
    )
    .await;
    let svc = &s.svc;
    // A token id that is the key: refused as a bad answer, revoked, and never shown.
    let (st, body) = post_json(
        svc,
        "/internal/services/keyed/connect",
        &json!({"user_email": "a@corp.example"}),
    )
    .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (502, Some("service_bad_answer")),
        "{body}"
    );
    let issued = keyed.issued();
    let (key, t) = issued.iter().next().expect("one key issued");
    assert!(t.revoked, "the key the answer named is revoked");
    // A refusal quoting the secret across the 200-character cut: 403, the secret in no part.
    let (st, body) = post_json(
        svc,
        "/internal/services/echo/connect",
        &json!({"user_email": "eve@corp.example"}),
    )
    .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (403, Some("user_refused")),
        "{body}"
    );
    let prefix = &secret[..12];
    assert_absent("the 403 answer", &body.to_string(), &[&secret, prefix, key]);
    assert_absent("the service log", &svc.logs(), &[&secret, prefix, key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_a_registry_loads() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let registry = dir.path().join("services.yaml");
    std::fs::write(&registry, "services: [{").unwrap();
    let file = registry.display().to_string();
    let svc = Service::spawn(
        &dir.path().join("data"),
        &plugins,
        &[("SERVICES_FILE", &file)],
    );
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        if let Ok(r) = client.get(format!("{}/ready", svc.base)).send().await {
            break (r.status().as_u16(), r.text().await.unwrap());
        }
        assert!(std::time::Instant::now() < deadline, "{}", svc.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("services_registry_not_loaded"), "{body}");
    // Liveness is separate: the process is up.
    let h = client
        .get(format!("{}/health", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    write_registry(&registry, &[]);
    svc.wait_ready().await;
}

/// Runs `sluice service check` against `url`; its exit success and stdout+stderr.
async fn check(url: &str, secret: &str) -> (bool, String) {
    let out = tokio::process::Command::new(sluice_bin())
        .args([
            "service",
            "check",
            url,
            "--secret-env",
            "SC_CHECK_SECRET",
            "--probe-path",
            "/api/me",
            "--timeout-secs",
            "5",
        ])
        .env("SC_CHECK_SECRET", secret)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_check_passes_the_reference_and_names_what_broke() {
    let secret = secret("check");
    let reference = ReferenceService::start(&secret, 1, Faults::default()).await;
    let (ok, out) = check(&reference.url, &secret).await;
    assert!(ok, "{out}");
    for name in [
        "health",
        "wrong_secret_rejected",
        "exchange",
        "ttl_honoured",
        "key_accepted",
        "revoke",
        "revoke_idempotent",
        "revoked_key_rejected",
    ] {
        assert!(out.contains(&format!("PASS {name}")), "{name}: {out}");
    }
    assert!(!out.contains(&secret));
    // Every key the check obtained was revoked.
    assert!(
        reference.issued().values().all(|t| t.revoked),
        "{:?}",
        reference.issued().len()
    );

    for (fault, failing) in [
        ("wrong-secret-status=403", "wrong_secret_rejected"),
        ("ignore-ttl", "ttl_honoured"),
        ("revoke-not-idempotent", "revoke_idempotent"),
        ("revoked-key-works", "revoked_key_rejected"),
        ("exchange-status=500", "exchange"),
        ("no-auth-accepted", "wrong_secret_rejected"),
        ("token-id-is-key", "exchange"),
        ("health-not-json", "health"),
        ("health-answers=html", "health"),
        // A revoke answered 200 without {"status": "ok"} is no revoke (Sluice answers it 502).
        ("revoke-answers=html", "revoke"),
        ("revoke-answers=status-error", "revoke"),
        ("revoke-answers=empty", "revoke_idempotent"),
    ] {
        let mut faults = Faults::default();
        faults.apply(fault).unwrap();
        let broken = ReferenceService::start(&secret, 1, faults).await;
        let (ok, out) = check(&broken.url, &secret).await;
        assert!(!ok, "{fault}: the check passed:\n{out}");
        assert!(out.contains(&format!("FAIL {failing}")), "{fault}: {out}");
        assert!(out.contains("conformance: FAILED"), "{fault}: {out}");
        assert!(
            out.contains(failing),
            "{fault}: the failure names the check: {out}"
        );
        // Even a key the check refused is revoked before it ends (a service whose revoke
        // does nothing is the exception: the check says so).
        if !fault.starts_with("revoke-answers") {
            assert!(
                broken.issued().values().all(|t| t.revoked),
                "{fault}: a test key left live"
            );
        }
    }

    // A wrong secret on the checker's side fails at once, naming the checks.
    let (ok, out) = check(&reference.url, "not-the-right-secret-0123").await;
    assert!(!ok);
    assert!(
        out.contains("FAIL health") && out.contains("FAIL exchange"),
        "{out}"
    );
    // Nothing listening.
    let (ok, out) = check(&format!("http://127.0.0.1:{}", free_port()), &secret).await;
    assert!(!ok);
    assert!(out.contains("FAIL health"), "{out}");
}
