//! The HubSpot connector end to end: the built binary's HTTP API, the built `hubspot.wasm`, the
//! fake HubSpot of `sluice_tests::fakes::hubspot` (which checks every request against HubSpot's
//! OpenAPI descriptions) and the real S3 server. What a sync committed is read back from the
//! Parquet files with DuckDB and compared with the fake's data set.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::fakes::hubspot::{FakeHubspot, HubspotConfig, HubspotHandle, iso_ms, now_ms};
use sluice_tests::mirror::{
    Prefix, assert_invalid, count, read_parquet, records, strings, validate,
};
use sluice_tests::s3::endpoint;
use sluice_tests::{Service, plugin, run_id_of};

static PREFIX: LazyLock<Prefix> = LazyLock::new(|| Prefix::new("hubspot"));

async fn start(root: &Path, env: &[(&str, &str)]) -> Service {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(plugin("hubspot"), dir.join("hubspot.wasm")).unwrap();
    let endpoint = endpoint();
    let mut env = env.to_vec();
    env.push(("S3_ENDPOINT", &endpoint));
    Service::start(&root.join("data"), &dir, &env).await
}

/// Runs a sync of `streams` (all with `None`) to the end: [`Prefix::sync_request`].
async fn sync(
    svc: &Service,
    connection: &str,
    config: &Value,
    token: &str,
    streams: Option<&[&str]>,
) -> Value {
    let mut body = json!({"connection_id": connection, "connector": "hubspot", "config": config, "credentials": {"token": token}});
    if let Some(streams) = streams {
        body["streams"] = json!(streams);
    }
    PREFIX.sync_request(svc, body).await
}

/// `read_parquet(...)` of the Parquet files one run committed for a stream (at least one).
fn run_files(svc: &Service, connection: &str, run_id: &str, stream: &str) -> String {
    let files = PREFIX.run_files(svc, connection, run_id, stream);
    assert!(!files.is_empty(), "no files of {stream} in run {run_id}");
    read_parquet(&files)
}

fn config(hs: &HubspotHandle) -> Value {
    json!({"api_url": hs.url})
}

fn assert_clean(hs: &HubspotHandle) {
    assert_eq!(
        hs.violations(),
        Vec::<String>::new(),
        "requests outside HubSpot's OpenAPI descriptions"
    );
    assert_eq!(
        hs.cap_hits(),
        0,
        "no search paged into the 10,000-result cap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_validate_maps_tokens_and_scopes() {
    let hs = FakeHubspot::start(HubspotConfig {
        contacts: 5,
        companies: 3,
        deals: 3,
        tickets: 3,
        ..Default::default()
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let config = config(&hs);

    let ok = validate(&svc, "hubspot", &config, hs.token()).await;
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(ok["account"]["portal_id"], 12345678);
    assert_eq!(ok["account"]["time_zone"], "US/Eastern");
    assert_eq!(ok["account"]["currency"], "USD");

    assert_invalid(
        &validate(&svc, "hubspot", &config, "pat-na1-unknown-0123456789").await,
        "invalid_credentials",
        &["INVALID_AUTHENTICATION"],
    );
    assert_invalid(
        &validate(&svc, "hubspot", &config, hs.expired_token()).await,
        "invalid_credentials",
        &["EXPIRED_AUTHENTICATION"],
    );

    // A private app granted contacts and companies only.
    let partial = "pat-na1-partial-0123456789";
    hs.grant(
        partial,
        &["crm.objects.contacts.read", "crm.objects.companies.read"],
    );
    assert_invalid(
        &validate(&svc, "hubspot", &config, partial).await,
        "insufficient_scope",
        &[
            "deals needs crm.objects.deals.read",
            "tickets needs tickets",
            "owners needs crm.objects.owners.read",
            "associations needs crm.objects.deals.read",
        ],
    );
    // The same token validates for the streams it can read.
    let narrow = json!({"api_url": hs.url, "streams": ["contacts", "companies"]});
    assert_eq!(
        validate(&svc, "hubspot", &narrow, partial).await["valid"],
        true
    );
    // A sync of a stream it cannot read fails naming the scope.
    let body = json!({"connection_id": "hs-partial", "connector": "hubspot", "config": config, "credentials": {"token": partial}, "storage": PREFIX.storage(), "streams": ["deals"]});
    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let run = svc.wait_run(&run_id_of(r).await).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "insufficient_scope", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("crm.objects.deals.read"),
        "{run}"
    );
    assert_clean(&hs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_full_sync_matches_the_fake_and_incrementals_bring_exactly_the_changes() {
    let hs = FakeHubspot::start(HubspotConfig::default()).await;
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    let config = config(&hs);
    let data = hs.data();

    let run = sync(&svc, "hs", &config, hs.token(), None).await;
    for stream in ["contacts", "companies", "deals", "tickets"] {
        assert_eq!(
            records(&run, stream),
            data.objects[stream].len() as u64,
            "{stream}: live and archived, once each"
        );
    }
    assert_eq!(records(&run, "owners"), data.owners.len() as u64);
    assert_eq!(records(&run, "deal_pipelines"), 2);
    assert_eq!(records(&run, "ticket_pipelines"), 1);
    assert_eq!(
        records(&run, "associations"),
        data.live_pairs().len() as u64
    );
    assert_eq!(
        hs.secondly_429s(),
        0,
        "search requests are paced under 5/s, not hammered"
    );
    // A first sync reads everything through the list endpoint (not held to search's ~5/s).
    let first = hs.log();
    assert!(
        !first.iter().any(|s| s.path.ends_with("/search")),
        "no search on a first sync"
    );
    for path in ["contacts", "companies", "0-3", "tickets"] {
        let path = format!("/crm/v3/objects/{path}");
        assert!(
            first
                .iter()
                .any(|s| s.method == "GET" && s.path == path && s.status == 200),
            "{path} listed"
        );
    }

    let db = PREFIX.views(&svc, "hs", "hubspot").await;
    for stream in ["contacts", "companies", "deals", "tickets"] {
        let ids: BTreeSet<String> = strings(&db, &format!("SELECT id FROM {stream}"))
            .into_iter()
            .collect();
        let want: BTreeSet<String> = data.objects[stream]
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(ids, want, "{stream}");
        let archived: BTreeSet<String> =
            strings(&db, &format!("SELECT id FROM {stream} WHERE archived"))
                .into_iter()
                .collect();
        let want: BTreeSet<String> = data
            .archived(stream)
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(archived, want, "{stream}: the deletion markers");
        assert!(!want.is_empty());
    }
    // Values, typed from the property types: text, number, bool, date, datetime.
    let mut checked = 0;
    for r in &data.objects["contacts"] {
        let row: (Option<String>, Option<f64>, Option<bool>, Option<String>, String) = db
            .query_row(
                "SELECT email, num_notes, hs_is_unworked, CAST(date_of_birth AS VARCHAR), strftime(updatedAt AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ') FROM contacts WHERE id = ?",
                [r.id.to_string()],
                |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?, x.get(4)?)),
            )
            .unwrap();
        let p = |k: &str| r.props.get(k).cloned();
        assert_eq!(row.0, p("email"), "{}", r.id);
        // An archived record is a deletion marker with HubSpot's default properties only.
        if r.archived_at.is_none() {
            assert_eq!(
                row.1,
                p("num_notes").map(|v| v.parse::<f64>().unwrap()),
                "{}",
                r.id
            );
            assert_eq!(row.2, p("hs_is_unworked").map(|v| v == "true"), "{}", r.id);
            assert_eq!(row.3, p("date_of_birth"), "{}", r.id);
        }
        assert_eq!(row.4, iso_ms(r.updated), "{}", r.id);
        checked += 1;
    }
    assert_eq!(checked, data.objects["contacts"].len());
    let amounts = count(
        &db,
        "SELECT count(*) FROM deals WHERE amount IS NOT NULL AND NOT archived",
    );
    let want = data
        .live("deals")
        .iter()
        .filter(|r| r.props.contains_key("amount"))
        .count() as i64;
    assert_eq!(amounts, want);
    assert_eq!(count(&db, "SELECT count(*) FROM owners WHERE archived"), 1);
    assert_eq!(
        count(
            &db,
            "SELECT json_array_length(stages) FROM deal_pipelines WHERE id = 'default'"
        ),
        4
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM associations WHERE to_type = 'deals'"
        ),
        data.live_pairs().iter().filter(|p| p.2 == "deals").count() as i64
    );

    // Upstream changes: edits, a new property set on some contacts, new and archived records.
    let touched = hs.touch("contacts", 5);
    let colored = hs.add_property("contacts", "favorite_color", "string", "teal", 8);
    let added = hs.add("contacts", 3);
    let archived = hs.archive("contacts", 2);
    let deals = hs.touch("deals", 2);
    // HubSpot's `Date` has second resolution and search lags: changes made in the second a
    // sync starts come with the next one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run = sync(&svc, "hs", &config, hs.token(), None).await;
    let changed: BTreeSet<u64> = touched
        .iter()
        .chain(&colored)
        .chain(&added)
        .chain(&archived)
        .copied()
        .collect();
    assert_eq!(
        records(&run, "contacts"),
        changed.len() as u64,
        "exactly the changed contacts"
    );
    assert!(
        hs.log()[first.len()..]
            .iter()
            .any(|s| s.path == "/crm/v3/objects/contacts/search"),
        "an incremental sync searches"
    );
    assert_eq!(records(&run, "deals"), deals.len() as u64);
    assert_eq!(records(&run, "companies"), 0);
    assert_eq!(records(&run, "tickets"), 0);
    let run_id = run["run_id"]
        .as_str()
        .or(run["id"].as_str())
        .unwrap()
        .to_string();
    let files = run_files(&svc, "hs", &run_id, "contacts");
    let db = duckdb::Connection::open_in_memory().unwrap();
    let ids: BTreeSet<u64> = strings(&db, &format!("SELECT id FROM {files}"))
        .iter()
        .map(|i| i.parse().unwrap())
        .collect();
    assert_eq!(ids, changed);
    let db = PREFIX.views(&svc, "hs", "hubspot").await;
    for id in &touched {
        assert_eq!(
            strings(
                &db,
                &format!("SELECT firstname FROM contacts WHERE id = '{id}'")
            ),
            [format!("changed {id}")]
        );
    }
    // The property added upstream is a column now, with its values.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM contacts WHERE favorite_color = 'teal'"
        ),
        colored.len() as i64
    );
    for id in &archived {
        assert_eq!(
            count(
                &db,
                &format!(
                    "SELECT count(*) FROM contacts WHERE id = '{id}' AND archived AND archivedAt IS NOT NULL"
                )
            ),
            1
        );
    }
    assert_eq!(
        count(&db, "SELECT count(DISTINCT id) FROM contacts"),
        hs.data().objects["contacts"].len() as i64
    );

    // Search lag: a change still invisible to search when a sync runs comes with the next one,
    // through the look-back, though that sync's window started after it.
    hs.set_search_lag_ms(4000);
    let late = hs.touch("companies", 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run = sync(&svc, "hs", &config, hs.token(), Some(&["companies"])).await;
    assert_eq!(records(&run, "companies"), 0, "not indexed yet");
    hs.set_search_lag_ms(300);
    let run = sync(&svc, "hs", &config, hs.token(), Some(&["companies"])).await;
    assert_eq!(records(&run, "companies"), 1);
    let db = PREFIX.views(&svc, "hs", "hubspot").await;
    assert_eq!(
        strings(
            &db,
            &format!("SELECT name FROM companies WHERE id = '{}'", late[0])
        ),
        [format!("changed {}", late[0])]
    );
    assert_clean(&hs);
    assert_eq!(hs.secondly_429s(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_25k_contacts_modified_in_one_millisecond_cross_the_search_cap() {
    let hs = FakeHubspot::start(HubspotConfig {
        contacts: 25_000,
        companies: 2,
        deals: 2,
        tickets: 2,
        archived_every: 0,
        // The service below spaces searches 20 ms apart (the real limit needs 200).
        search_per_second: 50,
        ..Default::default()
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[("SLUICE_HUBSPOT_SEARCH_INTERVAL_MS", "20")]).await;
    let config = config(&hs);

    // The fake refuses to page past 10,000, as HubSpot does.
    let past = reqwest::Client::new()
        .post(format!("{}/crm/v3/objects/contacts/search", hs.url))
        .bearer_auth(hs.token())
        .json(&json!({"filterGroups": [], "sorts": [], "properties": [], "limit": 200, "after": "10000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 400);
    assert_eq!(hs.cap_hits(), 1);

    // A bulk update: all 25,000 at the same millisecond, before the first sync.
    let at = now_ms() - 60_000;
    assert_eq!(hs.touch_all_at("contacts", at), 25_000);
    let run = sync(&svc, "hs-25k", &config, hs.token(), Some(&["contacts"])).await;
    assert_eq!(records(&run, "contacts"), 25_000);
    let run_id = run["run_id"]
        .as_str()
        .or(run["id"].as_str())
        .unwrap()
        .to_string();
    let files = run_files(&svc, "hs-25k", &run_id, "contacts");
    let db = duckdb::Connection::open_in_memory().unwrap();
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM {files}")),
        25_000,
        "none duplicated"
    );
    assert_eq!(
        count(&db, &format!("SELECT count(DISTINCT id) FROM {files}")),
        25_000,
        "none lost"
    );

    // Again, incrementally: another bulk update of all of them in one millisecond.
    let at = now_ms();
    hs.touch_all_at("contacts", at);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run = sync(&svc, "hs-25k", &config, hs.token(), Some(&["contacts"])).await;
    assert_eq!(records(&run, "contacts"), 25_000);
    let run_id = run["run_id"]
        .as_str()
        .or(run["id"].as_str())
        .unwrap()
        .to_string();
    let files = run_files(&svc, "hs-25k", &run_id, "contacts");
    assert_eq!(
        count(&db, &format!("SELECT count(DISTINCT id) FROM {files}")),
        25_000
    );
    assert_eq!(count(&db, &format!("SELECT count(*) FROM {files}")), 25_000);
    let want = iso_ms(at);
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM {files} WHERE strftime(updatedAt AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ') = '{want}'"
            )
        ),
        25_000
    );
    assert_eq!(hs.cap_hits(), 1, "only the probe above hit the cap");
    assert_eq!(hs.violations(), Vec::<String>::new());
    assert_eq!(hs.secondly_429s(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_sync_survives_a_429_storm_waiting_what_hubspot_asks() {
    let hs = FakeHubspot::start(HubspotConfig {
        contacts: 40,
        companies: 10,
        deals: 10,
        tickets: 10,
        // HubSpot says 10,000; the host waits whatever the header says.
        rate_interval_ms: 400,
        ..Default::default()
    })
    .await;
    hs.knobs.set_rate_limit_every(3);
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[]).await;
    // A start date makes the first sync search (a read of everything would list instead), so
    // that the storm hits both kinds of request.
    let mut config = config(&hs);
    config["start_date"] = json!("2000-01-01T00:00:00Z");
    let run = sync(&svc, "hs-storm", &config, hs.token(), None).await;
    let data = hs.data();
    assert_eq!(
        records(&run, "contacts"),
        data.objects["contacts"].len() as u64
    );
    assert_eq!(
        records(&run, "associations"),
        data.live_pairs().len() as u64
    );
    let log = hs.log();
    let storms: Vec<usize> = (0..log.len()).filter(|&i| log[i].status == 429).collect();
    assert!(storms.len() >= 5, "{} 429s", storms.len());
    assert!(
        log.iter()
            .any(|s| s.status == 429 && s.path.ends_with("/search")),
        "search 429s (SECONDLY)"
    );
    assert!(
        log.iter()
            .any(|s| s.status == 429 && !s.path.ends_with("/search")),
        "TEN_SECONDLY_ROLLING 429s"
    );
    for &i in &storms {
        let Some(next) = log.get(i + 1) else { continue };
        let asked = log[i].asked_wait_ms.unwrap();
        let waited = next.at.duration_since(log[i].at).as_millis() as u64;
        assert_eq!(next.path, log[i].path, "the retry comes next");
        assert!(
            waited + 50 >= asked,
            "waited {waited} ms, HubSpot asked {asked}"
        );
        assert!(
            waited <= asked + 1500,
            "waited {waited} ms, HubSpot asked {asked}: no longer than asked"
        );
    }
    assert_clean(&hs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_first_sync_of_many_properties_searches_instead_of_a_414() {
    let hs = FakeHubspot::start(HubspotConfig {
        contacts: 250,
        companies: 2,
        deals: 2,
        tickets: 2,
        archived_every: 0,
        search_per_second: 50,
        ..Default::default()
    })
    .await;
    // 300 custom properties of 34 characters: over 10,000 characters of names, more than a
    // list request's URL can carry (the fake answers 414 past 8,000, as HubSpot's edge does).
    for i in 0..300 {
        hs.add_property(
            "contacts",
            &format!("custom_property_with_a_long_name_{i:03}"),
            "string",
            "v",
            1,
        );
    }
    // Each property was set on a contact just now: search finds a change only after its lag,
    // and a sync's window ends at HubSpot's `Date` (second resolution) when it starts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let root = tempfile::tempdir().unwrap();
    let svc = start(root.path(), &[("SLUICE_HUBSPOT_SEARCH_INTERVAL_MS", "20")]).await;
    let run = sync(
        &svc,
        "hs-wide",
        &config(&hs),
        hs.token(),
        Some(&["contacts"]),
    )
    .await;
    assert_eq!(records(&run, "contacts"), 250);
    let log = hs.log();
    assert!(
        !log.iter().any(|s| s.status == 414),
        "a URI too long was sent"
    );
    assert!(
        log.iter()
            .any(|s| s.path == "/crm/v3/objects/contacts/search"),
        "read through search"
    );
    let db = PREFIX.views(&svc, "hs-wide", "hubspot").await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM contacts WHERE custom_property_with_a_long_name_299 = 'v'"
        ),
        1,
        "every property requested"
    );
    assert_clean(&hs);

    // The fake's limit is real: the list request with all of them is refused.
    let names: Vec<String> = (0..300)
        .map(|i| format!("custom_property_with_a_long_name_{i:03}"))
        .collect();
    let r = reqwest::Client::new()
        .get(format!("{}/crm/v3/objects/contacts", hs.url))
        .query(&[("limit", "100"), ("properties", &names.join(","))])
        .bearer_auth(hs.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 414);
}
