//! Upstreams whose paging goes round in circles, and upstream clocks in the future (found by
//! an outside attack, session 10). Each of the four built-in connectors runs against a tiny
//! loopback API that answers the documented shape with a hostile twist, through the built
//! binary's HTTP API:
//! - paging that never ends: GitHub `Link: rel="next"` to a new page number with the same
//!   issues, Slack `next_cursor` new on every page with the same members, Linear the same
//!   `endCursor` with `hasNextPage: true`, HubSpot `paging.next.after` alternating A, B, A…
//!   Before, each read until the run's deadline (6 h by default) re-emitting the same records
//!   and holding a run slot. Now the run fails at once (`internal`, "goes round in circles").
//! - a record or `Date` in the year 2999: the committed cursor must stay at or before now,
//!   else every later incremental run skips what is written until then (the four connectors
//!   and the three SDK examples).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice_tests::{Service, plugin, run_id_of};

const TOKEN: &str = "upstream-loops-token-0123456789";
const FUTURE_ISO: &str = "2999-01-01T00:00:00Z";
const FUTURE_DATE: &str = "Fri, 01 Jan 2999 00:00:00 GMT";

#[derive(Default)]
struct Upstream {
    base: std::sync::OnceLock<String>,
    counter: AtomicU64,
}

fn json_answer(body: Value, headers: &[(&str, String)]) -> Response {
    let mut r = axum::Json(body).into_response();
    for (k, v) in headers {
        r.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    r
}

fn gh_issue(id: u64, updated: &str) -> Value {
    json!({"id": id, "number": id, "title": format!("issue {id}"), "state": "open",
           "user": {"login": "u"}, "created_at": "2024-01-01T00:00:00Z", "updated_at": updated,
           "body": "b"})
}

fn team(id: u64, updated: &str) -> Value {
    json!({"id": format!("t{id}"), "key": format!("K{id}"), "name": format!("team {id}"),
           "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": updated, "archivedAt": null})
}

/// The API of every mode: `/{mode}/...` as the connector's `api_url` is `{base}/{mode}`.
async fn answer(
    State(up): State<Arc<Upstream>>,
    uri: Uri,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let (mode, rest) = path[1..].split_once('/').unwrap_or((&path[1..], ""));
    let base = format!("{}/{mode}", up.base.get().unwrap());
    let n = up.counter.fetch_add(1, Ordering::Relaxed);
    match (mode, rest) {
        // GitHub: one repository, its issues listing is the hostile part.
        (_, "repos/o/r") => json_answer(
            json!({"id": 1, "full_name": "o/r", "name": "r", "private": false,
                   "visibility": "public", "owner": {"login": "o"}}),
            &[],
        ),
        ("gh-spin", "repos/o/r/issues") => {
            let page: u64 = param("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let next = format!("{base}/repos/o/r/issues?page={}&per_page=100", page + 1);
            json_answer(
                json!([
                    gh_issue(1, "2024-01-02T00:00:00Z"),
                    gh_issue(2, "2024-01-02T00:00:00Z")
                ]),
                &[("link", format!("<{next}>; rel=\"next\""))],
            )
        }
        ("gh-future", "repos/o/r/issues") => json_answer(
            json!([gh_issue(1, FUTURE_ISO), gh_issue(2, "2024-01-02T00:00:00Z")]),
            &[],
        ),
        // Slack: users.list answers new cursors to the same members.
        ("slack-spin", "auth.test") => json_answer(
            json!({"ok": true, "user_id": "U1", "team_id": "T1", "team": "t", "user": "u",
                   "url": "https://t.slack.com/"}),
            &[],
        ),
        ("slack-spin", "users.list") => json_answer(
            json!({"ok": true,
                   "members": [{"id": "U1", "name": "a", "updated": 1}, {"id": "U2", "name": "b", "updated": 1}],
                   "response_metadata": {"next_cursor": format!("c{n}")}}),
            &[],
        ),
        ("slack-null", "auth.test") => json_answer(
            json!({"ok": true, "user_id": "U1", "team_id": "T1", "team": "t", "user": "u",
                   "url": "https://t.slack.com/"}),
            &[],
        ),
        // `ok` without the items array: Slack always answers it (empty or not).
        ("slack-null", "users.list") => json_answer(
            json!({"ok": true, "members": null, "response_metadata": {"next_cursor": ""}}),
            &[],
        ),
        // Linear: GraphQL; teams is the hostile listing, every other root is empty.
        ("linear-spin" | "linear-future", _) => {
            let doc = String::from_utf8_lossy(&body);
            if doc.contains(" teams(") {
                let (nodes, has_next, end) = if mode == "linear-spin" {
                    (
                        vec![
                            team(1, "2024-01-02T00:00:00.000Z"),
                            team(2, "2024-01-02T00:00:00.000Z"),
                        ],
                        true,
                        json!("same-cursor"),
                    )
                } else {
                    (
                        vec![
                            team(1, "2999-01-01T00:00:00.000Z"),
                            team(2, "2024-01-02T00:00:00.000Z"),
                        ],
                        false,
                        Value::Null,
                    )
                };
                return json_answer(
                    json!({"data": {"teams": {"nodes": nodes,
                           "pageInfo": {"hasNextPage": has_next, "endCursor": end}}}}),
                    &[],
                );
            }
            json_answer(json!({"data": {}}), &[])
        }
        // HubSpot: the owners listing's cursor alternates A, B, A, B...
        ("hubspot-cycle", _) => {
            let next = if param("after").as_deref() == Some("A") {
                "B"
            } else {
                "A"
            };
            json_answer(
                json!({"results": [{"id": "1", "email": "a@x", "updatedAt": "2024-01-02T00:00:00Z"},
                                   {"id": "2", "email": "b@x", "updatedAt": "2024-01-02T00:00:00Z"}],
                       "paging": {"next": {"after": next}}}),
                &[],
            )
        }
        // HubSpot with HubSpot's clock in 2999: the window ends (and the next starts) there.
        ("hubspot-future", "crm/v3/properties/contacts") => json_answer(
            json!({"results": [
                {"name": "email", "type": "string", "fieldType": "text"},
                {"name": "lastmodifieddate", "type": "datetime", "fieldType": "date"}]}),
            &[("date", FUTURE_DATE.to_string())],
        ),
        ("hubspot-future", "crm/v3/objects/contacts")
            if param("archived").as_deref() != Some("true") =>
        {
            json_answer(
                json!({"results": [{"id": "1", "archived": false,
                    "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-02T00:00:00Z",
                    "properties": {"email": "a@x", "lastmodifieddate": "2024-01-02T00:00:00Z",
                                   "hs_object_id": "1"}}]}),
                &[("date", FUTURE_DATE.to_string())],
            )
        }
        ("hubspot-future", _) => {
            json_answer(json!({"results": []}), &[("date", FUTURE_DATE.to_string())])
        }
        _ => json_answer(json!([]), &[]),
    }
}

async fn upstream() -> String {
    let up = Arc::new(Upstream::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    up.base.set(base.clone()).unwrap();
    let app = Router::new().fallback(answer).with_state(up);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

async fn service(root: &Path) -> Service {
    let plugins = root.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in [
        "github",
        "slack",
        "linear",
        "hubspot",
        "rust-issues",
        "python-issues",
        "js-issues",
    ] {
        std::fs::copy(plugin(name), plugins.join(format!("{name}.wasm"))).unwrap();
    }
    let storage = root.join("storage");
    let svc = Service::start(
        &root.join("data"),
        &plugins,
        &[
            ("LOCAL_STORAGE_DIR", storage.to_str().unwrap()),
            ("SLUICE_ALLOW_PRIVATE_ADDRESSES", "loopback"),
            // A loop that is not caught ends here (deadline_exceeded), not in 6 hours.
            ("SLUICE_RUN_TIMEOUT_SECS", "120"),
        ],
    )
    .await;
    // The Python and JavaScript components take a while to compile: wait until all are loaded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let list = svc.get_json("/internal/connectors").await;
        let loaded = list["connectors"].as_array().map_or(0, Vec::len);
        if loaded >= 7 {
            return svc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connectors not loaded: {list}\n{}",
            svc.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn run(
    svc: &Service,
    connection: &str,
    connector: &str,
    config: Value,
    stream: &str,
) -> Value {
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(
            &json!({"connection_id": connection, "connector": connector, "config": config,
                      "streams": [stream], "credentials": {"token": TOKEN},
                      "storage": {"bucket": "local", "prefix": "loops"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    svc.wait_run(&run_id_of(r).await).await
}

/// The committed state of `connection` (`_state.json` in the local bucket).
fn committed_state(root: &Path, connection: &str) -> Value {
    let path = root.join(format!("storage/local/loops/{connection}/_state.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_that_goes_round_in_circles_fails_the_run_at_once() {
    let root = tempfile::tempdir().unwrap();
    let up = upstream().await;
    let svc = service(root.path()).await;
    for (connector, mode, stream, extra) in [
        (
            "github",
            "gh-spin",
            "issues",
            json!({"repositories": ["o/r"]}),
        ),
        ("slack", "slack-spin", "users", json!({})),
        ("linear", "linear-spin", "teams", json!({})),
        ("hubspot", "hubspot-cycle", "owners", json!({})),
        // The SDK examples (their SDK's `LoopGuard`), against the same endless GitHub listing.
        (
            "rust-issues",
            "gh-spin",
            "issues",
            json!({"repositories": ["o/r"]}),
        ),
        (
            "python-issues",
            "gh-spin",
            "issues",
            json!({"repositories": ["o/r"]}),
        ),
        (
            "js-issues",
            "gh-spin",
            "issues",
            json!({"repositories": ["o/r"]}),
        ),
    ] {
        let mut config = extra;
        config["api_url"] = json!(format!("{up}/{mode}"));
        let done = run(&svc, mode, connector, config, stream).await;
        assert_eq!(done["status"], "failed", "{connector}: {done}");
        assert_eq!(done["error"]["code"], "internal", "{connector}: {done}");
        let message = done["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("goes round in circles"),
            "{connector}: {message}"
        );
        assert!(
            !root
                .path()
                .join(format!("storage/local/loops/{mode}/_state.json"))
                .exists(),
            "{connector}: a failed run committed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_date_from_the_upstream_never_becomes_the_cursor() {
    let root = tempfile::tempdir().unwrap();
    let up = upstream().await;
    let svc = service(root.path()).await;
    let year = |s: &str| s.get(..4).and_then(|y| y.parse::<u32>().ok()).unwrap_or(0);

    let config = json!({"api_url": format!("{up}/gh-future"), "repositories": ["o/r"]});
    let done = run(&svc, "gh", "github", config, "issues").await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["streams"]["issues"]["committed_rows"], 2, "{done}");
    let state = committed_state(root.path(), "gh");
    let cursor = state["streams"]["issues"]["repos"]["o/r"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(year(&cursor) < 2999 && year(&cursor) >= 2024, "{state}");

    // The SDK examples hold their `since` the same way (their SDK's clamp_to_now).
    for example in ["rust-issues", "python-issues", "js-issues"] {
        let config = json!({"api_url": format!("{up}/gh-future"), "repositories": ["o/r"]});
        let done = run(&svc, example, example, config, "issues").await;
        assert_eq!(done["status"], "succeeded", "{example}: {done}");
        let state = committed_state(root.path(), example);
        let cursor = state["streams"]["issues"]["since"]["o/r"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            year(&cursor) < 2999 && year(&cursor) >= 2024,
            "{example}: {state}"
        );
    }

    let config = json!({"api_url": format!("{up}/linear-future")});
    let done = run(&svc, "li", "linear", config, "teams").await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["streams"]["teams"]["committed_rows"], 2, "{done}");
    let state = committed_state(root.path(), "li");
    assert!(!state.to_string().contains("2999"), "{state}");

    let config = json!({"api_url": format!("{up}/hubspot-future"), "streams": ["contacts"]});
    let done = run(&svc, "hs", "hubspot", config, "contacts").await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let state = committed_state(root.path(), "hs");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let synced_to = state["streams"]["contacts"]["synced_to"]
        .as_i64()
        .unwrap_or(0);
    assert!(synced_to <= now_ms + 60_000, "{state}");
}

/// An `ok` Slack answer without its items array (`members: null`) was read as an empty
/// listing: the run succeeded with 0 rows. It is an unexpected response: the run fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ok_answer_without_its_items_fails_the_run() {
    let root = tempfile::tempdir().unwrap();
    let up = upstream().await;
    let svc = service(root.path()).await;
    let config = json!({"api_url": format!("{up}/slack-null")});
    let done = run(&svc, "sl", "slack", config, "users").await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "internal", "{done}");
    let message = done["error"]["message"].as_str().unwrap();
    assert!(message.contains("without a `members` array"), "{message}");
}
