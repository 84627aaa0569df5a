//! A fake HubSpot CRM v3: account info, properties, objects (list and search) of contacts,
//! companies, deals (`0-3`) and tickets, owners and pipelines.
//!
//! What it reproduces from HubSpot's documentation ("CRM API | Search", "Objects", "Owners",
//! "Pipelines", "Properties", "API usage guidelines", "Account information"):
//! - every request is checked against HubSpot's OpenAPI descriptions
//!   (`tests/contract/hubspot/`, [`super::openapi`]); a violation is answered 400
//!   `VALIDATION_ERROR` and recorded ([`HubspotHandle::violations`]);
//! - `Authorization: Bearer`; a bad token is 401 `INVALID_AUTHENTICATION`, an expired one 401
//!   `EXPIRED_AUTHENTICATION`; a token without the scope an endpoint needs is 403
//!   `MISSING_SCOPES` with `errors[].context.requiredGranularScopes`;
//! - lists page with `limit` (≤ 100) and an opaque `paging.next.after`; `archived=true` lists
//!   only archived records; `properties` and `associations` (repeated or comma-separated);
//! - a request URI longer than [`HubspotConfig::max_uri_bytes`] is 414 (HubSpot's edge refuses
//!   long property lists in a list request's query);
//! - search: `filterGroups` (ORed groups of ANDed filters, ≤ 5 groups of ≤ 6 filters), one sort
//!   given as `{propertyName, direction}` (a sort given as a string is ignored, as HubSpot does:
//!   the order is then the index's, newest change first), `limit` ≤ 200, `after` offsets and
//!   **the 10,000-result cap** (an `after` of 10,000 or more is 400), archived records never
//!   found, and **search lag**: a record changed less than `search_lag_ms` ago is not found;
//! - rate limits: search answers 429 `SECONDLY` past `search_per_second` requests in a second;
//!   injected 429 storms ([`super::Knobs::rate_limit_every`]) answer `TEN_SECONDLY_ROLLING`
//!   with `X-HubSpot-RateLimit-*` headers (no `Retry-After`; interval
//!   [`HubspotConfig::rate_interval_ms`]), or `SECONDLY` without headers on search, as HubSpot does;
//! - mutations between syncs: [`HubspotHandle::touch`], [`HubspotHandle::add`],
//!   [`HubspotHandle::archive`], [`HubspotHandle::add_property`], [`HubspotHandle::touch_all_at`]
//!   (a bulk update: every record of a type modified in the same millisecond).

// Handlers return early with an axum `Response` as the error of a `Result`.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::openapi::OpenApi;
use super::{Counters, Injected, Knobs, Rng, bind, get, iso, query, spawn};

/// The object types, by stream name: (stream, path segment, singular, modified property).
pub const OBJECT_TYPES: [(&str, &str, &str, &str); 4] = [
    ("contacts", "contacts", "contact", "lastmodifieddate"),
    ("companies", "companies", "company", "hs_lastmodifieddate"),
    ("deals", "0-3", "deal", "hs_lastmodifieddate"),
    ("tickets", "tickets", "ticket", "hs_lastmodifieddate"),
];

/// The scope each part of the API needs (HubSpot's scope list).
pub fn scope_of(stream: &str) -> &'static str {
    match stream {
        "contacts" => "crm.objects.contacts.read",
        "companies" => "crm.objects.companies.read",
        "deals" => "crm.objects.deals.read",
        "tickets" => "tickets",
        _ => "crm.objects.owners.read",
    }
}

/// Every scope the connector uses: what [`HubspotConfig::token`] is granted.
pub const ALL_SCOPES: [&str; 5] = [
    "crm.objects.contacts.read",
    "crm.objects.companies.read",
    "crm.objects.deals.read",
    "tickets",
    "crm.objects.owners.read",
];

/// The most results one search query reaches ("CRM API | Search", Limitations).
pub const SEARCH_CAP: usize = 10_000;

/// What to generate, and how to behave.
#[derive(Debug, Clone)]
pub struct HubspotConfig {
    pub seed: u64,
    pub contacts: usize,
    pub companies: usize,
    pub deals: usize,
    pub tickets: usize,
    pub owners: usize,
    /// Every `archived_every`-th record of each type is archived (0: none).
    pub archived_every: usize,
    /// Granted [`ALL_SCOPES`].
    pub token: String,
    /// 401 `EXPIRED_AUTHENTICATION`.
    pub expired_token: String,
    /// A change is invisible to search for this long.
    pub search_lag_ms: i64,
    /// Search requests allowed per token in any second (0: unlimited).
    pub search_per_second: usize,
    /// `X-HubSpot-RateLimit-Interval-Milliseconds` of injected 429s (HubSpot: 10,000).
    pub rate_interval_ms: u64,
    /// The data lies in the 30 days before this instant minus two hours (epoch ms).
    pub now_ms: i64,
    /// Longest request URI (path and query) answered; longer is 414 URI Too Long. HubSpot
    /// documents no figure; users report 414s from about 8,000 characters
    /// (dlt-hub/verified-sources#305) and successes up to about 16,000 (PostHog/posthog#31617):
    /// the lower one.
    pub max_uri_bytes: usize,
}

impl Default for HubspotConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            contacts: 300,
            companies: 60,
            deals: 120,
            tickets: 80,
            owners: 7,
            archived_every: 25,
            token: "pat-na1-good-0123456789".into(),
            expired_token: "pat-na1-expired-0123456789".into(),
            search_lag_ms: 300,
            search_per_second: 5,
            rate_interval_ms: 10_000,
            now_ms: now_ms(),
            max_uri_bytes: 8_000,
        }
    }
}

/// Epoch milliseconds, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for epoch milliseconds (HubSpot's format).
pub fn iso_ms(ms: i64) -> String {
    let s = iso(ms.div_euclid(1000));
    format!("{}.{:03}Z", &s[..s.len() - 1], ms.rem_euclid(1000))
}

/// A property definition (`GET /crm/v3/properties/{objectType}`).
#[derive(Debug, Clone, PartialEq)]
pub struct PropDef {
    pub name: String,
    pub label: String,
    /// HubSpot's `type`: `string`, `number`, `bool`, `date`, `datetime`, `enumeration`, ...
    pub kind: String,
    pub field_type: String,
}

/// A CRM record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: u64,
    pub created: i64,
    pub updated: i64,
    pub archived_at: Option<i64>,
    /// Property values as HubSpot sends them (strings), but the computed ones (`createdate`,
    /// the modified property, `hs_object_id`).
    pub props: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub user_id: u64,
    pub archived: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub id: String,
    pub label: String,
    pub stages: Vec<(String, String)>,
}

/// An association pair: (from stream, from id, to stream, to id, type).
pub type Pair = (String, u64, String, u64, String);

/// Everything the fake serves.
#[derive(Debug, Clone, Default)]
pub struct HubspotDataset {
    /// Records by stream name, in id order.
    pub objects: BTreeMap<String, Vec<Record>>,
    pub properties: BTreeMap<String, Vec<PropDef>>,
    pub owners: Vec<Owner>,
    pub deal_pipelines: Vec<Pipeline>,
    pub ticket_pipelines: Vec<Pipeline>,
    pub associations: Vec<Pair>,
}

fn prop(name: &str, label: &str, kind: &str, field_type: &str) -> PropDef {
    PropDef {
        name: name.into(),
        label: label.into(),
        kind: kind.into(),
        field_type: field_type.into(),
    }
}

/// Properties of each type: the computed ones, then a few of every kind.
fn properties_of(stream: &str, modified: &str) -> Vec<PropDef> {
    let mut p = vec![
        prop("createdate", "Create Date", "datetime", "date"),
        prop(modified, "Last Modified Date", "datetime", "date"),
        prop("hs_object_id", "Record ID", "number", "number"),
    ];
    let more: &[(&str, &str, &str, &str)] = match stream {
        "contacts" => &[
            ("email", "Email", "string", "text"),
            ("firstname", "First Name", "string", "text"),
            ("lastname", "Last Name", "string", "text"),
            ("phone", "Phone Number", "phone_number", "phonenumber"),
            ("lifecyclestage", "Lifecycle Stage", "enumeration", "radio"),
            (
                "num_notes",
                "Number of Sales Activities",
                "number",
                "number",
            ),
            (
                "hs_is_unworked",
                "Contact unworked",
                "bool",
                "booleancheckbox",
            ),
            ("date_of_birth", "Date of birth", "date", "date"),
        ],
        "companies" => &[
            ("name", "Company name", "string", "text"),
            ("domain", "Company Domain Name", "string", "text"),
            (
                "numberofemployees",
                "Number of Employees",
                "number",
                "number",
            ),
            ("is_public", "Is Public", "bool", "booleancheckbox"),
            ("industry", "Industry", "enumeration", "select"),
        ],
        "deals" => &[
            ("dealname", "Deal Name", "string", "text"),
            ("amount", "Amount", "number", "number"),
            ("dealstage", "Deal Stage", "enumeration", "radio"),
            ("pipeline", "Pipeline", "enumeration", "select"),
            ("closedate", "Close Date", "datetime", "date"),
            ("hs_is_closed", "Is Deal Closed?", "bool", "booleancheckbox"),
        ],
        _ => &[
            ("subject", "Ticket name", "string", "text"),
            ("content", "Ticket description", "string", "textarea"),
            ("hs_pipeline", "Pipeline", "enumeration", "select"),
            (
                "hs_pipeline_stage",
                "Ticket status",
                "enumeration",
                "select",
            ),
            ("hs_ticket_priority", "Priority", "enumeration", "select"),
        ],
    };
    p.extend(more.iter().map(|(n, l, k, f)| prop(n, l, k, f)));
    p
}

/// A generated value of a property of kind `kind`.
fn value_of(rng: &mut Rng, def: &PropDef, stream: &str, id: u64, base: i64) -> Option<String> {
    const WORDS: [&str; 8] = [
        "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell",
    ];
    if !matches!(def.name.as_str(), "email" | "name" | "dealname" | "subject") && rng.percent(15) {
        return None; // unset
    }
    Some(match (def.name.as_str(), def.kind.as_str()) {
        ("email", _) => format!("person{id}@{}.test", rng.pick(&WORDS)),
        ("name" | "dealname" | "subject", _) => format!("{} {stream} {id}", rng.pick(&WORDS)),
        ("amount", _) => format!("{}.{:02}", rng.below(100_000), rng.below(100)),
        ("dealstage", _) => rng
            .pick(&["appointmentscheduled", "qualifiedtobuy", "closedwon"])
            .to_string(),
        ("pipeline" | "hs_pipeline", _) => "default".into(),
        ("hs_pipeline_stage", _) => rng.pick(&["1", "2", "3", "4"]).to_string(),
        (_, "number") => rng.below(500).to_string(),
        (_, "bool") => rng.percent(50).to_string(),
        (_, "date") => iso(base - rng.below(20_000) as i64 * 86_400)[..10].to_string(),
        (_, "datetime") => iso_ms(base * 1000 + rng.below(86_400_000) as i64),
        (_, "enumeration") => rng.pick(&["lead", "customer", "other"]).to_string(),
        _ => format!("{} {}", rng.pick(&WORDS), rng.pick(&WORDS)),
    })
}

impl HubspotDataset {
    /// The data set of a config: the same config gives the same data.
    pub fn generate(c: &HubspotConfig) -> Self {
        let mut rng = Rng::new(c.seed);
        let mut data = HubspotDataset::default();
        let end = c.now_ms - 2 * 3_600_000;
        let counts = [c.contacts, c.companies, c.deals, c.tickets];
        for ((stream, _, _, modified), count) in OBJECT_TYPES.iter().zip(counts) {
            let defs = properties_of(stream, modified);
            let first_id = match *stream {
                "contacts" => 101,
                "companies" => 5_001,
                "deals" => 9_001,
                _ => 20_001,
            };
            let mut records = Vec::with_capacity(count);
            for k in 0..count {
                let id = first_id + k as u64 * 3 + rng.below(3);
                let created = end - 30 * 86_400_000 + rng.below(20 * 86_400_000) as i64;
                let updated = created + rng.below((end - created).max(1) as u64) as i64;
                let mut props = BTreeMap::new();
                for def in defs.iter().skip(3) {
                    if let Some(v) = value_of(&mut rng, def, stream, id, created / 1000) {
                        props.insert(def.name.clone(), v);
                    }
                }
                let archived_at = (c.archived_every > 0
                    && k % c.archived_every == c.archived_every - 1)
                    .then(|| updated + 1000);
                records.push(Record {
                    id,
                    created,
                    updated,
                    archived_at,
                    props,
                });
            }
            data.objects.insert(stream.to_string(), records);
            data.properties.insert(stream.to_string(), defs);
        }
        data.owners = (0..c.owners)
            .map(|k| Owner {
                id: (70_000 + k).to_string(),
                email: format!("owner{k}@acme.test"),
                first_name: format!("Owner{k}"),
                last_name: "Smith".into(),
                user_id: 900_000 + k as u64,
                archived: k == c.owners.saturating_sub(1) && c.owners > 1,
            })
            .collect();
        let stages = |names: &[&str]| {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| ((i + 1).to_string(), n.to_string()))
                .collect()
        };
        data.deal_pipelines = vec![
            Pipeline {
                id: "default".into(),
                label: "Sales Pipeline".into(),
                stages: stages(&["Appointment", "Qualified", "Won", "Lost"]),
            },
            Pipeline {
                id: "renewals".into(),
                label: "Renewals".into(),
                stages: stages(&["Open", "Renewed"]),
            },
        ];
        data.ticket_pipelines = vec![Pipeline {
            id: "0".into(),
            label: "Support Pipeline".into(),
            stages: stages(&["New", "Waiting on contact", "Waiting on us", "Closed"]),
        }];
        let ids = |s: &str| data.objects[s].iter().map(|r| r.id).collect::<Vec<_>>();
        let (contacts, companies, deals) = (ids("contacts"), ids("companies"), ids("deals"));
        let mut pairs = Vec::new();
        for (i, c) in contacts.iter().enumerate() {
            if !companies.is_empty() && i % 2 == 0 {
                pairs.push((
                    "contacts".into(),
                    *c,
                    "companies".into(),
                    companies[i % companies.len()],
                    "contact_to_company".into(),
                ));
            }
            if !deals.is_empty() && i % 5 == 0 {
                pairs.push((
                    "contacts".into(),
                    *c,
                    "deals".into(),
                    deals[i % deals.len()],
                    "contact_to_deal".into(),
                ));
            }
        }
        for (i, c) in companies.iter().enumerate() {
            if !deals.is_empty() {
                pairs.push((
                    "companies".into(),
                    *c,
                    "deals".into(),
                    deals[(i * 7) % deals.len()],
                    "company_to_deal".into(),
                ));
            }
        }
        data.associations = pairs;
        data
    }

    /// The modified property of a stream.
    pub fn modified_of(stream: &str) -> &'static str {
        OBJECT_TYPES
            .iter()
            .find(|t| t.0 == stream)
            .map_or("hs_lastmodifieddate", |t| t.3)
    }

    /// Every property value of a record as HubSpot sends it, computed ones included.
    pub fn values(stream: &str, r: &Record) -> BTreeMap<String, String> {
        let mut v = r.props.clone();
        v.insert("createdate".into(), iso_ms(r.created));
        v.insert(Self::modified_of(stream).into(), iso_ms(r.updated));
        v.insert("hs_object_id".into(), r.id.to_string());
        v
    }

    /// Live (not archived) records of a stream.
    pub fn live(&self, stream: &str) -> Vec<&Record> {
        self.objects
            .get(stream)
            .into_iter()
            .flatten()
            .filter(|r| r.archived_at.is_none())
            .collect()
    }

    /// Archived records of a stream.
    pub fn archived(&self, stream: &str) -> Vec<&Record> {
        self.objects
            .get(stream)
            .into_iter()
            .flatten()
            .filter(|r| r.archived_at.is_some())
            .collect()
    }

    /// Association pairs whose ends are both live.
    pub fn live_pairs(&self) -> Vec<&Pair> {
        let live = |s: &str, id: u64| {
            self.objects
                .get(s)
                .into_iter()
                .flatten()
                .any(|r| r.id == id && r.archived_at.is_none())
        };
        self.associations
            .iter()
            .filter(|(f, fi, t, ti, _)| live(f, *fi) && live(t, *ti))
            .collect()
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Served {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// For a 429: the wait it asked for, in ms (the interval header, or 1,000 for `SECONDLY`).
    pub asked_wait_ms: Option<u64>,
}

struct Shared {
    config: HubspotConfig,
    data: RwLock<HubspotDataset>,
    grants: RwLock<BTreeMap<String, Vec<String>>>,
    contract: OpenApi,
    violations: Mutex<Vec<String>>,
    log: Mutex<Vec<Served>>,
    searches: Mutex<BTreeMap<String, VecDeque<Instant>>>,
    knobs: Arc<Knobs>,
    counters: Arc<Counters>,
    cap_hits: AtomicU64,
    secondly: AtomicU64,
    next_id: AtomicU64,
    search_lag_ms: AtomicI64,
    /// Records rendered as JSON text, per (stream, properties asked, associations asked) and
    /// record id: a record is rendered once per shape and kept until the data changes
    /// (dropped under the data's write lock), so benchmark rounds after the first do not pay
    /// for it again.
    rendered: Mutex<HashMap<RenderKey, HashMap<u64, Arc<str>>>>,
}

/// What a rendering depends on besides the record: `(stream, properties, associations)`.
type RenderKey = (String, Vec<String>, Vec<String>);

/// The most record shapes kept rendered; past it the cache starts over.
const MAX_RENDER_SHAPES: usize = 8;

impl Shared {
    /// `records` of `stream` as a JSON array's members, each [`render`]ed once per shape.
    fn render_all(
        &self,
        data: &HubspotDataset,
        stream: &str,
        records: &[&Record],
        requested: &[String],
        associations: &[String],
    ) -> Vec<Arc<str>> {
        let key: RenderKey = (
            stream.to_string(),
            requested.to_vec(),
            associations.to_vec(),
        );
        let mut cache = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.contains_key(&key) && cache.len() >= MAX_RENDER_SHAPES {
            cache.clear();
        }
        let shape = cache.entry(key).or_default();
        let missing: Vec<&Record> = records
            .iter()
            .copied()
            .filter(|r| !shape.contains_key(&r.id))
            .collect();
        if !missing.is_empty() {
            let pairs = page_associations(data, stream, &missing, associations);
            let rendering = Rendering::new(data, stream, requested);
            for r in missing {
                let text = rendering.render(r, associations, &pairs).to_string();
                shape.insert(r.id, text.into());
            }
        }
        records
            .iter()
            .filter_map(|r| shape.get(&r.id).cloned())
            .collect()
    }

    /// Drops what was rendered from the data; called with the data write-locked.
    fn data_changed(&self) {
        self.rendered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// A JSON object written around members already rendered: `{"<array>":[members...]<rest>}`,
/// `rest` being the members after the array (`,"paging":{...}`) as JSON text.
fn json_with_array(before: &str, array: &str, members: &[Arc<str>], rest: &str) -> Response {
    let mut body = String::with_capacity(
        32 + before.len() + rest.len() + members.iter().map(|m| m.len() + 1).sum::<usize>(),
    );
    body.push('{');
    body.push_str(before);
    body.push('"');
    body.push_str(array);
    body.push_str("\":[");
    for (k, m) in members.iter().enumerate() {
        if k > 0 {
            body.push(',');
        }
        body.push_str(m);
    }
    body.push(']');
    body.push_str(rest);
    body.push('}');
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

/// Starts fake HubSpot servers.
pub struct FakeHubspot;

/// Where HubSpot's OpenAPI descriptions are by default: `tests/contract/hubspot` of the source
/// tree this crate was built from (a binary copied elsewhere is told another place:
/// `fake-hubspot --contracts DIR`).
pub const HUBSPOT_CONTRACT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contract/hubspot");

/// The descriptions in [`HUBSPOT_CONTRACT_DIR`] ([`hubspot_contract_in`]); panics when they are
/// missing (the tests run in the source tree).
pub fn hubspot_contract() -> OpenApi {
    hubspot_contract_in(std::path::Path::new(HUBSPOT_CONTRACT_DIR))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The descriptions in `dir` the fake checks requests against, with the documented overlay:
/// search `sorts` items may be `{propertyName, direction}` objects (the search guide's form).
pub fn hubspot_contract_in(dir: &std::path::Path) -> Result<OpenApi, String> {
    OpenApi::try_load(dir, |doc| {
        if let Some(sorts) =
            doc.pointer_mut("/components/schemas/PublicObjectSearchRequest/properties/sorts/items")
        {
            *sorts = json!({"anyOf": [
                {"type": "string"},
                {"type": "object", "required": ["propertyName"], "additionalProperties": false,
                 "properties": {"propertyName": {"type": "string"}, "direction": {"enum": ["ASCENDING", "DESCENDING"]}}}
            ]});
        }
    })
}

impl FakeHubspot {
    /// Generates the data set and serves it on 127.0.0.1 (an ephemeral port), checking requests
    /// against [`hubspot_contract`].
    pub async fn start(config: HubspotConfig) -> HubspotHandle {
        Self::start_with_contract(config, hubspot_contract()).await
    }

    /// [`FakeHubspot::start`] with the descriptions read elsewhere ([`hubspot_contract_in`]).
    pub async fn start_with_contract(config: HubspotConfig, contract: OpenApi) -> HubspotHandle {
        let knobs = Arc::new(Knobs::default());
        let counters = Arc::new(Counters::default());
        let data = HubspotDataset::generate(&config);
        let (listener, addr) = bind().await;
        let grants = BTreeMap::from([(
            config.token.clone(),
            ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
        )]);
        let shared = Arc::new(Shared {
            data: RwLock::new(data),
            grants: RwLock::new(grants),
            contract,
            violations: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            searches: Mutex::new(BTreeMap::new()),
            knobs: knobs.clone(),
            counters: counters.clone(),
            cap_hits: AtomicU64::new(0),
            secondly: AtomicU64::new(0),
            next_id: AtomicU64::new(1_000_000),
            search_lag_ms: AtomicI64::new(config.search_lag_ms),
            rendered: Mutex::new(HashMap::new()),
            config,
        });
        let task = spawn(
            listener,
            Router::new().fallback(handle).with_state(shared.clone()),
        );
        HubspotHandle {
            url: format!("http://{addr}"),
            knobs,
            counters,
            shared,
            task,
        }
    }
}

/// A running fake HubSpot; stops when dropped.
pub struct HubspotHandle {
    /// Base URL: the connector's `api_url`.
    pub url: String,
    pub knobs: Arc<Knobs>,
    pub counters: Arc<Counters>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl HubspotHandle {
    /// A copy of the data served now.
    pub fn data(&self) -> HubspotDataset {
        self.shared
            .data
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    pub fn token(&self) -> &str {
        &self.shared.config.token
    }

    pub fn expired_token(&self) -> &str {
        &self.shared.config.expired_token
    }

    /// Makes `token` valid with `scopes`.
    pub fn grant(&self, token: &str, scopes: &[&str]) {
        if let Ok(mut g) = self.shared.grants.write() {
            g.insert(token.into(), scopes.iter().map(|s| s.to_string()).collect());
        }
    }

    /// Requests that broke HubSpot's OpenAPI descriptions (each a one-line reason).
    pub fn violations(&self) -> Vec<String> {
        self.shared
            .violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Every request served, in order.
    pub fn log(&self) -> Vec<Served> {
        self.shared
            .log
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Changes how long a change stays invisible to search.
    pub fn set_search_lag_ms(&self, ms: i64) {
        self.shared.search_lag_ms.store(ms, Ordering::SeqCst);
    }

    /// Searches answered 400 for paging past the 10,000-result cap.
    pub fn cap_hits(&self) -> u64 {
        self.shared.cap_hits.load(Ordering::SeqCst)
    }

    /// Searches answered 429 `SECONDLY` because they came faster than `search_per_second`
    /// (injected ones not counted).
    pub fn secondly_429s(&self) -> u64 {
        self.shared.secondly.load(Ordering::SeqCst)
    }

    fn mutate<T>(&self, f: impl FnOnce(&mut HubspotDataset, i64) -> T) -> T {
        let mut data = self.shared.data.write().expect("data lock");
        self.shared.data_changed();
        f(&mut data, now_ms())
    }

    /// Changes a property of the first `n` live records of `stream` (modified now). Returns
    /// their ids.
    pub fn touch(&self, stream: &str, n: usize) -> Vec<u64> {
        self.mutate(|d, now| {
            let field = match stream {
                "contacts" => "firstname",
                "companies" => "name",
                "deals" => "dealname",
                _ => "subject",
            };
            d.objects
                .get_mut(stream)
                .into_iter()
                .flatten()
                .filter(|r| r.archived_at.is_none())
                .take(n)
                .map(|r| {
                    r.props.insert(field.into(), format!("changed {}", r.id));
                    r.updated = now;
                    r.id
                })
                .collect()
        })
    }

    /// Adds `n` records to `stream`, created now. Returns their ids.
    pub fn add(&self, stream: &str, n: usize) -> Vec<u64> {
        let ids: Vec<u64> = (0..n)
            .map(|_| self.shared.next_id.fetch_add(1, Ordering::SeqCst))
            .collect();
        self.mutate(|d, now| {
            let list = d.objects.entry(stream.into()).or_default();
            for id in &ids {
                let props = BTreeMap::from([
                    ("email".to_string(), format!("new{id}@acme.test")),
                    ("firstname".into(), "New".into()),
                    ("name".into(), format!("new {id}")),
                    ("dealname".into(), format!("new {id}")),
                    ("subject".into(), format!("new {id}")),
                ]);
                list.push(Record {
                    id: *id,
                    created: now,
                    updated: now,
                    archived_at: None,
                    props,
                });
            }
            ids.clone()
        })
    }

    /// Archives the last `n` live records of `stream` (archived now). Returns their ids.
    pub fn archive(&self, stream: &str, n: usize) -> Vec<u64> {
        self.mutate(|d, now| {
            d.objects
                .get_mut(stream)
                .into_iter()
                .flatten()
                .rev()
                .filter(|r| r.archived_at.is_none())
                .take(n)
                .map(|r| {
                    r.archived_at = Some(now);
                    r.updated = now;
                    r.id
                })
                .collect()
        })
    }

    /// Adds property `name` of HubSpot type `kind` to `stream` and sets it on the first `n`
    /// live records (which are modified now). Returns their ids.
    pub fn add_property(
        &self,
        stream: &str,
        name: &str,
        kind: &str,
        value: &str,
        n: usize,
    ) -> Vec<u64> {
        self.mutate(|d, now| {
            d.properties
                .entry(stream.into())
                .or_default()
                .push(prop(name, name, kind, "text"));
            d.objects
                .get_mut(stream)
                .into_iter()
                .flatten()
                .filter(|r| r.archived_at.is_none())
                .take(n)
                .map(|r| {
                    r.props.insert(name.into(), value.into());
                    r.updated = now;
                    r.id
                })
                .collect()
        })
    }

    /// A bulk update: every live record of `stream` modified at `at_ms` exactly.
    pub fn touch_all_at(&self, stream: &str, at_ms: i64) -> usize {
        self.mutate(|d, _| {
            let mut n = 0;
            for r in d
                .objects
                .get_mut(stream)
                .into_iter()
                .flatten()
                .filter(|r| r.archived_at.is_none())
            {
                r.updated = at_ms;
                n += 1;
            }
            n
        })
    }
}

impl Drop for HubspotHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn correlation() -> String {
    "aeb5f871-7f07-4993-9211-075dc63e7cbf".into()
}

/// HubSpot's error body.
fn error(status: StatusCode, category: &str, message: &str) -> Response {
    (status, axum::Json(json!({"status": "error", "message": message, "correlationId": correlation(), "category": category}))).into_response()
}

fn missing_scopes(scope: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({
            "status": "error",
            "message": "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
            "correlationId": correlation(),
            "errors": [{"message": "One or more of the following scopes are required.", "context": {"requiredGranularScopes": [scope]}}],
            "links": {"scopes": "https://developers.hubspot.com/scopes"},
            "category": "MISSING_SCOPES"
        })),
    )
        .into_response()
}

fn set(resp: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        resp.headers_mut().insert(name, v);
    }
}

/// HubSpot's 429 body for `policy` (no `Retry-After`).
fn rate_limited(policy: &str, interval_ms: Option<u64>) -> Response {
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"status": "error", "message": format!("You have reached your {} limit.", policy.to_lowercase()), "errorType": "RATE_LIMIT", "correlationId": correlation(), "policyName": policy, "groupName": "api-calls"})),
    )
        .into_response();
    if let Some(ms) = interval_ms {
        set(&mut r, "x-hubspot-ratelimit-interval-milliseconds", ms);
        set(&mut r, "x-hubspot-ratelimit-max", 100);
        set(&mut r, "x-hubspot-ratelimit-remaining", 0);
    }
    r
}

/// The stream a `{objectType}` path segment names: HubSpot takes an object type's id, its
/// name or its singular (`0-3`, `deals` and `deal` are all deals; Airbyte's connector asks
/// for `/crm/v3/objects/contact`).
fn stream_of(segment: &str) -> Option<&'static str> {
    match segment {
        "contacts" | "contact" | "0-1" => Some("contacts"),
        "companies" | "company" | "0-2" => Some("companies"),
        "deals" | "deal" | "0-3" => Some("deals"),
        "tickets" | "ticket" | "0-5" => Some("tickets"),
        _ => None,
    }
}

/// The scope of the custom-object schemas API (`GET /crm/v3/schemas`), which
/// [`HubspotConfig::token`] is not granted: the connector has no use for it.
pub const SCHEMAS_SCOPE: &str = "crm.schemas.custom.read";

/// How a request is checked before it is answered.
#[derive(Debug, PartialEq)]
enum Described {
    /// Against HubSpot's OpenAPI descriptions, as this path.
    As(String),
    /// A legacy v2 properties read (`GET /properties/v2/{objectType}/properties`), which no
    /// published description covers: no query parameter, no body.
    LegacyProperties,
}

/// The path HubSpot's descriptions give an operation that HubSpot also serves under another
/// one: `/crm/v3/objects/{singular}…` is the object type's described path (`contact` →
/// `contacts`, `deal` → `0-3`), `/crm/v3/schemas…` is `/crm-object-schemas/v3/schemas…` (the
/// custom-object schemas API under its older, still served path, which tap-hubspot and
/// Airbyte's connector call).
fn described(path: &str) -> Described {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["properties", "v2", _, "properties"] => Described::LegacyProperties,
        ["crm", "v3", "objects", kind, rest @ ..] => {
            let canonical = match *kind {
                "contact" => "contacts",
                "company" => "companies",
                "deal" => "0-3",
                "ticket" => "tickets",
                other => other,
            };
            let mut p = format!("/crm/v3/objects/{canonical}");
            for r in rest {
                p.push('/');
                p.push_str(r);
            }
            Described::As(p)
        }
        ["crm", "v3", "schemas", rest @ ..] => Described::As(
            std::iter::once("/crm-object-schemas/v3/schemas")
                .chain(rest.iter().copied())
                .collect::<Vec<_>>()
                .join("/"),
        ),
        _ => Described::As(path.to_string()),
    }
}

/// Values of a possibly repeated, possibly comma-separated parameter.
fn list_param(q: &[(String, String)], name: &str) -> Vec<String> {
    q.iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn default_properties(stream: &str) -> Vec<String> {
    let extra: &[&str] = match stream {
        "contacts" => &["email", "firstname", "lastname"],
        "companies" => &["name", "domain"],
        "deals" => &["dealname", "amount", "dealstage", "pipeline", "closedate"],
        _ => &["subject", "content", "hs_pipeline", "hs_pipeline_stage"],
    };
    let mut p = vec![
        "createdate".to_string(),
        HubspotDataset::modified_of(stream).to_string(),
        "hs_object_id".into(),
    ];
    p.extend(extra.iter().map(|s| s.to_string()));
    p
}

/// The live association pairs of the records of one page: from id → (to stream, to id, type),
/// for the `to` streams asked for. Both ends must be live (as [`HubspotDataset::live_pairs`]);
/// built once per answer, so a page costs one pass over the pairs, not one per record.
type PageAssociations = BTreeMap<u64, Vec<(String, u64, String)>>;

fn page_associations(
    data: &HubspotDataset,
    stream: &str,
    page: &[&Record],
    tos: &[String],
) -> PageAssociations {
    let mut out = PageAssociations::new();
    if tos.is_empty() {
        return out;
    }
    let from: BTreeSet<u64> = page
        .iter()
        .filter(|r| r.archived_at.is_none())
        .map(|r| r.id)
        .collect();
    let mut live: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for (f, fi, t, ti, kind) in &data.associations {
        if f != stream || !from.contains(fi) || !tos.contains(t) {
            continue;
        }
        let ids = live
            .entry(t.as_str())
            .or_insert_with(|| data.live(t).iter().map(|r| r.id).collect());
        if ids.contains(ti) {
            out.entry(*fi)
                .or_default()
                .push((t.clone(), *ti, kind.clone()));
        }
    }
    out
}

/// How the records of one answer are rendered: the properties asked for (HubSpot's defaults
/// when none) that the stream has, in the order asked.
struct Rendering<'a> {
    stream: &'a str,
    names: Vec<String>,
}

impl<'a> Rendering<'a> {
    fn new(data: &HubspotDataset, stream: &'a str, requested: &[String]) -> Self {
        let known: BTreeSet<&str> = data
            .properties
            .get(stream)
            .into_iter()
            .flatten()
            .map(|p| p.name.as_str())
            .collect();
        let names = if requested.is_empty() {
            default_properties(stream)
        } else {
            requested.to_vec()
        };
        let names = names
            .into_iter()
            .filter(|n| known.contains(n.as_str()))
            .collect();
        Self { stream, names }
    }

    /// A `SimplePublicObject` with the properties and the `associations` asked for (their
    /// pairs in `pairs`).
    fn render(&self, r: &Record, associations: &[String], pairs: &PageAssociations) -> Value {
        let modified = HubspotDataset::modified_of(self.stream);
        let mut props = Map::new();
        for name in &self.names {
            // What `HubspotDataset::values` holds, without copying every value of the record.
            let value = match name.as_str() {
                "createdate" => Some(iso_ms(r.created)),
                "hs_object_id" => Some(r.id.to_string()),
                n if n == modified => Some(iso_ms(r.updated)),
                n => r.props.get(n).cloned(),
            };
            props.insert(name.clone(), value.map_or(Value::Null, Value::String));
        }
        let mut o = json!({
            "id": r.id.to_string(),
            "properties": props,
            "createdAt": iso_ms(r.created),
            "updatedAt": iso_ms(r.updated),
            "archived": r.archived_at.is_some(),
        });
        if let Some(at) = r.archived_at {
            o["archivedAt"] = json!(iso_ms(at));
        }
        if !associations.is_empty() {
            let mut a = Map::new();
            for to in associations {
                let results: Vec<Value> = pairs
                    .get(&r.id)
                    .into_iter()
                    .flatten()
                    .filter(|(t, _, _)| t == to)
                    .map(|(_, ti, kind)| json!({"id": ti.to_string(), "type": kind}))
                    .collect();
                if !results.is_empty() {
                    a.insert(to.clone(), json!({"results": results}));
                }
            }
            if !a.is_empty() {
                o["associations"] = Value::Object(a);
            }
        }
        o
    }
}

/// A property value for filtering and sorting: datetimes as epoch ms, ids and numbers as
/// numbers, the rest as text.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key {
    Num(f64),
    Text(String),
}

fn key_of(text: &str) -> Key {
    if let Ok(n) = text.parse::<f64>() {
        return Key::Num(n);
    }
    if let Some(secs) = super::parse_iso(&format!(
        "{}Z",
        text.trim_end_matches('Z').split('.').next().unwrap_or(text)
    )) {
        let ms = text
            .split_once('.')
            .and_then(|(_, f)| f.trim_end_matches('Z').get(..3))
            .and_then(|f| f.parse::<i64>().ok())
            .unwrap_or(0);
        return Key::Num((secs * 1000 + ms) as f64);
    }
    Key::Text(text.to_string())
}

/// The filter and sort key of property `name` of record `r`: what [`key_of`] gives for its
/// value in [`HubspotDataset::values`], without building them all (a search looks at every
/// record of the type).
fn key_in(stream: &str, r: &Record, name: &str) -> Option<Key> {
    match name {
        "createdate" => Some(Key::Num(r.created as f64)),
        "hs_object_id" => Some(Key::Num(r.id as f64)),
        n if n == HubspotDataset::modified_of(stream) => Some(Key::Num(r.updated as f64)),
        n => r.props.get(n).map(|v| key_of(v)),
    }
}

/// Whether record values match one filter; an unknown operator is an error message.
#[cfg(test)]
fn matches(values: &BTreeMap<String, String>, filter: &Value) -> Result<bool, String> {
    matches_key(|name| values.get(name).map(|v| key_of(v)), filter)
}

/// Whether a record, whose property keys `have` gives, matches one filter.
#[cfg(test)]
fn matches_key(have: impl Fn(&str) -> Option<Key>, filter: &Value) -> Result<bool, String> {
    let (name, op, want) = parse_filter(filter);
    matches_parsed(have(name), op, want.as_ref())
}

/// One search filter as `(propertyName, operator, value as a key)`.
fn parse_filter(filter: &Value) -> (&str, &str, Option<Key>) {
    let name = filter
        .get("propertyName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let op = filter
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let want = filter.get("value").and_then(Value::as_str).map(key_of);
    (name, op, want)
}

/// Whether a record whose key for the filter's property is `have` matches the filter
/// `op want`; an unknown operator is an error message.
fn matches_parsed(have: Option<Key>, op: &str, want: Option<&Key>) -> Result<bool, String> {
    Ok(match op {
        "HAS_PROPERTY" => have.is_some(),
        "NOT_HAS_PROPERTY" => have.is_none(),
        "EQ" | "NEQ" | "GT" | "GTE" | "LT" | "LTE" => {
            let (Some(have), Some(want)) = (have, want) else {
                return Ok(op == "NEQ");
            };
            match op {
                "EQ" => have == *want,
                "NEQ" => have != *want,
                "GT" => have > *want,
                "GTE" => have >= *want,
                "LT" => have < *want,
                _ => have <= *want,
            }
        }
        other => return Err(format!("operator {other} is not supported by this fake")),
    })
}

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = s.counters.next();
    let path = uri.path().to_string();
    let q = query(uri.query().unwrap_or(""));
    let too_long = uri
        .path_and_query()
        .is_some_and(|pq| pq.as_str().len() > s.config.max_uri_bytes);
    let (resp, asked) = if too_long {
        let r = (StatusCode::URI_TOO_LONG, "URI Too Long").into_response();
        (r, None)
    } else {
        answer(&s, n, &method, &path, &q, &headers, &body).await
    };
    if let Ok(mut log) = s.log.lock() {
        log.push(Served {
            at: Instant::now(),
            method: method.to_string(),
            path,
            status: resp.status().as_u16(),
            asked_wait_ms: asked,
        });
    }
    resp
}

#[allow(clippy::too_many_arguments)]
async fn answer(
    s: &Shared,
    n: u64,
    method: &Method,
    path: &str,
    q: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, Option<u64>) {
    let checked = match described(path) {
        Described::As(p) => s.contract.check(method.as_str(), &p, q, body).map(|_| ()),
        Described::LegacyProperties if *method != Method::GET => Err(format!(
            "{method} {path}: the legacy properties API is read with GET"
        )),
        Described::LegacyProperties => match (q.first(), body.is_empty()) {
            (None, true) => Ok(()),
            (Some((k, _)), _) => Err(format!("GET {path}: unknown query parameter {k}")),
            (None, false) => Err(format!("GET {path}: a body on a GET")),
        },
    };
    if let Err(v) = checked {
        if let Ok(mut all) = s.violations.lock() {
            all.push(v.clone());
        }
        return (
            error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("contract violation: {v}"),
            ),
            None,
        );
    }
    let is_search = path.ends_with("/search");
    match s.knobs.decide(n).await {
        Injected::None => {}
        Injected::BadGateway => {
            s.counters.bad_gateways.fetch_add(1, Ordering::SeqCst);
            return (
                error(StatusCode::BAD_GATEWAY, "BAD_GATEWAY", "Bad Gateway"),
                None,
            );
        }
        Injected::RateLimited | Injected::Exhausted => {
            s.counters.rate_limited.fetch_add(1, Ordering::SeqCst);
            return if is_search {
                (rate_limited("SECONDLY", None), Some(1000))
            } else {
                let ms = s.config.rate_interval_ms;
                (rate_limited("TEN_SECONDLY_ROLLING", Some(ms)), Some(ms))
            };
        }
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    if token == s.config.expired_token {
        s.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
        return (
            error(
                StatusCode::UNAUTHORIZED,
                "EXPIRED_AUTHENTICATION",
                "The OAuth token used to make this call expired 2 day(s) ago.",
            ),
            None,
        );
    }
    let Some(scopes) = s.grants.read().ok().and_then(|g| g.get(&token).cloned()) else {
        s.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
        return (
            error(
                StatusCode::UNAUTHORIZED,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            ),
            None,
        );
    };
    if is_search && s.config.search_per_second > 0 {
        let now = Instant::now();
        let mut searches = s.searches.lock().expect("search window");
        let window = searches.entry(token.clone()).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t).as_millis() >= 1000)
        {
            window.pop_front();
        }
        if window.len() >= s.config.search_per_second {
            s.secondly.fetch_add(1, Ordering::SeqCst);
            s.counters.rate_limited.fetch_add(1, Ordering::SeqCst);
            return (rate_limited("SECONDLY", None), Some(1000));
        }
        window.push_back(now);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let require = |scope: &str| -> Result<(), Response> {
        if scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(missing_scopes(scope))
        }
    };
    let result = match (method.as_str(), segments.as_slice()) {
        ("GET", ["account-info", "v3", "details"]) => Ok(account()),
        ("GET", ["crm", "v3", "properties", kind]) => match stream_of(kind) {
            Some(stream) => require(scope_of(stream)).map(|_| properties(s, stream)),
            None => Err(error(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                "Unable to infer object type",
            )),
        },
        ("GET", ["crm", "v3", "objects", kind]) => match stream_of(kind) {
            Some(stream) => require(scope_of(stream)).and_then(|_| list(s, stream, kind, q)),
            None => Err(error(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                "Unable to infer object type",
            )),
        },
        ("POST", ["crm", "v3", "objects", kind, "search"]) => match stream_of(kind) {
            Some(stream) => require(scope_of(stream)).and_then(|_| search(s, stream, body)),
            None => Err(error(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                "Unable to infer object type",
            )),
        },
        ("GET", ["crm", "v3", "owners"]) => require(scope_of("owners")).and_then(|_| owners(s, q)),
        // The custom-object schemas: none in this portal (the token lacks the scope anyway).
        ("GET", ["crm", "v3", "schemas"]) => {
            require(SCHEMAS_SCOPE).map(|_| axum::Json(json!({"results": []})).into_response())
        }
        ("GET", ["properties", "v2", kind, "properties"]) => match stream_of(kind) {
            Some(stream) => require(scope_of(stream)).map(|_| legacy_properties(s, stream)),
            None => Err(error(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                "Unable to infer object type",
            )),
        },
        ("GET", ["crm", "v3", "pipelines", kind @ ("deals" | "tickets")]) => {
            require(scope_of(kind)).map(|_| pipelines(s, kind))
        }
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "resource not found",
        )),
    };
    s.counters.route(
        segments
            .iter()
            .take(4)
            .copied()
            .collect::<Vec<_>>()
            .join("/")
            .as_str(),
    );
    let mut resp = result.unwrap_or_else(|e| e);
    if !is_search && resp.status().is_success() {
        // Non-search answers carry the ten-second budget (HubSpot: 100 or 190 per 10 s).
        set(
            &mut resp,
            "x-hubspot-ratelimit-interval-milliseconds",
            10_000,
        );
        set(&mut resp, "x-hubspot-ratelimit-max", 190);
        set(&mut resp, "x-hubspot-ratelimit-remaining", 189);
    }
    (resp, None)
}

fn account() -> Response {
    axum::Json(json!({
        "portalId": 12345678, "timeZone": "US/Eastern", "companyCurrency": "USD",
        "additionalCurrencies": ["EUR"], "utcOffset": "-05:00", "utcOffsetMilliseconds": -18_000_000,
        "uiDomain": "app.hubspot.com", "dataHostingLocation": "na1", "accountType": "STANDARD"
    }))
    .into_response()
}

fn properties(s: &Shared, stream: &str) -> Response {
    let data = s.data.read().expect("data");
    let results: Vec<Value> = data.properties.get(stream).into_iter().flatten().enumerate().map(|(i, p)| json!({
        "name": p.name, "label": p.label, "type": p.kind, "fieldType": p.field_type,
        "description": "", "groupName": format!("{}information", stream.trim_end_matches('s')), "options": [],
        "displayOrder": i, "calculated": false, "externalOptions": false, "hasUniqueValue": p.name == "hs_object_id",
        "hidden": false, "hubspotDefined": true, "formField": true
    })).collect();
    axum::Json(json!({"results": results})).into_response()
}

/// The legacy (v2) properties read: a bare array of definitions, in the v1/v2 field set
/// ("Contact Properties API" and its companions; Airbyte's connector reads its schemas so).
fn legacy_properties(s: &Shared, stream: &str) -> Response {
    let data = s.data.read().expect("data");
    let group = format!("{}information", stream.trim_end_matches('s'));
    let list: Vec<Value> = data.properties.get(stream).into_iter().flatten().enumerate().map(|(i, p)| json!({
        "name": p.name, "label": p.label, "description": "", "groupName": group,
        "type": p.kind, "fieldType": p.field_type, "options": [], "displayOrder": i,
        "calculated": false, "externalOptions": false, "hasUniqueValue": p.name == "hs_object_id",
        "hidden": false, "hubspotDefined": true, "formField": true, "readOnlyValue": false,
        "readOnlyDefinition": true, "mutableDefinitionNotDeletable": true, "deleted": false,
        "createdUserId": null, "updatedUserId": null, "displayMode": "current_value",
        "showCurrencySymbol": false, "favorited": false, "favoritedOrder": -1
    })).collect();
    axum::Json(Value::Array(list)).into_response()
}

/// Offset paging (`after` is the offset, as text).
fn page<T>(
    items: &[T],
    q: &[(String, String)],
    max: usize,
    default: usize,
) -> Result<(usize, usize), Response> {
    let limit = get(q, "limit")
        .map_or(Ok(default), |l| l.parse::<usize>())
        .map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "limit is not a number",
            )
        })?;
    let limit = limit.clamp(1, max);
    let after = get(q, "after")
        .map_or(Ok(0), |a| a.parse::<usize>())
        .map_err(|_| error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "invalid after"))?;
    Ok((after.min(items.len()), limit))
}

fn paging(end: usize, total: usize) -> Option<Value> {
    (end < total)
        .then(|| json!({"next": {"after": end.to_string(), "link": format!("?after={end}")}}))
}

fn list(
    s: &Shared,
    stream: &str,
    _kind: &str,
    q: &[(String, String)],
) -> Result<Response, Response> {
    let data = s.data.read().expect("data");
    let archived = get(q, "archived") == Some("true");
    let records: Vec<&Record> = if archived {
        data.archived(stream)
    } else {
        data.live(stream)
    };
    let (from, limit) = page(&records, q, 100, 10)?;
    let end = (from + limit).min(records.len());
    let props = list_param(q, "properties");
    let assoc = list_param(q, "associations");
    let results = s.render_all(&data, stream, &records[from..end], &props, &assoc);
    let rest = paging(end, records.len()).map_or(String::new(), |p| format!(",\"paging\":{p}"));
    Ok(json_with_array("", "results", &results, &rest))
}

fn search(s: &Shared, stream: &str, body: &[u8]) -> Result<Response, Response> {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m);
    let req: Value = serde_json::from_slice(body).map_err(|_| bad("Invalid input JSON"))?;
    let limit = req.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    if limit > 200 {
        return Err(bad("limit must be at most 200"));
    }
    let after = req
        .get("after")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .parse::<usize>()
        .map_err(|_| bad("invalid after"))?;
    if after >= SEARCH_CAP {
        s.cap_hits.fetch_add(1, Ordering::SeqCst);
        return Err(bad(
            "The maximum number of results for a search query is 10000; paging past it is not allowed.",
        ));
    }
    let groups = req
        .get("filterGroups")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if groups.len() > 5
        || groups.iter().any(|g| {
            g.get("filters")
                .and_then(Value::as_array)
                .is_some_and(|f| f.len() > 6)
        })
    {
        return Err(bad("Too many filter groups or filters"));
    }
    let sorts = req
        .get("sorts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if sorts.len() > 1 {
        return Err(bad("Only one sort is supported"));
    }
    let data = s.data.read().expect("data");
    let visible_before = now_ms() - s.search_lag_ms.load(Ordering::SeqCst);
    let sort_by = match sorts.first() {
        Some(Value::Object(sort)) => Some((
            sort.get("propertyName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            sort.get("direction").and_then(Value::as_str) == Some("DESCENDING"),
        )),
        // No sort, or one given as a string (which HubSpot ignores): newest change first.
        _ => None,
    };
    // The filters read once: (property, operator, value as a key).
    let groups: Vec<Vec<(&str, &str, Option<Key>)>> = groups
        .iter()
        .map(|g| {
            g.get("filters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(parse_filter)
                .collect()
        })
        .collect();
    // Each hit with its sort key and its position (ties keep the data's order).
    let mut hits: Vec<(&Record, Option<Key>, usize)> = Vec::new();
    for r in data.live(stream) {
        if r.updated > visible_before {
            continue; // not indexed yet
        }
        let mut any = groups.is_empty();
        for g in &groups {
            let mut all = true;
            for (name, op, want) in g {
                all &= matches_parsed(key_in(stream, r, name), op, want.as_ref())
                    .map_err(|m| bad(&m))?;
            }
            any |= all;
        }
        if any {
            let key = sort_by
                .as_ref()
                .and_then(|(name, _)| key_in(stream, r, name));
            let at = hits.len();
            hits.push((r, key, at));
        }
    }
    let order = |a: &(&Record, Option<Key>, usize), b: &(&Record, Option<Key>, usize)| {
        match &sort_by {
            Some((_, desc)) => {
                let o = a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal);
                if *desc { o.reverse() } else { o }
            }
            None => b.0.updated.cmp(&a.0.updated).then(b.0.id.cmp(&a.0.id)),
        }
        .then(a.2.cmp(&b.2))
    };
    let total = hits.len();
    let from = after.min(total);
    let end = (from + limit).min(total);
    // Only the first `end` hits in order are needed: select them, then sort those.
    if end < total {
        hits.select_nth_unstable_by(end, order);
        hits.truncate(end);
    }
    hits.sort_unstable_by(order);
    let props: Vec<String> = req
        .get("properties")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let page: Vec<&Record> = hits[from..end].iter().map(|(r, _, _)| *r).collect();
    let results = s.render_all(&data, stream, &page, &props, &[]);
    let mut rest = String::new();
    if let Some(p) = paging(end, total) {
        rest = format!(",\"paging\":{p}");
    }
    Ok(json_with_array(
        &format!("\"total\":{total},"),
        "results",
        &results,
        &rest,
    ))
}

fn owners(s: &Shared, q: &[(String, String)]) -> Result<Response, Response> {
    let data = s.data.read().expect("data");
    let archived = get(q, "archived") == Some("true");
    let list: Vec<&Owner> = data
        .owners
        .iter()
        .filter(|o| o.archived == archived)
        .collect();
    let (from, limit) = page(&list, q, 500, 100)?;
    let end = (from + limit).min(list.len());
    let results: Vec<Value> = list[from..end].iter().map(|o| json!({
        "id": o.id, "email": o.email, "firstName": o.first_name, "lastName": o.last_name, "type": "PERSON",
        "userId": o.user_id, "userIdIncludingInactive": o.user_id,
        "createdAt": "2023-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z", "archived": o.archived,
        "teams": [{"id": "1", "name": "Sales", "primary": true}]
    })).collect();
    let mut body = json!({"results": results});
    if let Some(p) = paging(end, list.len()) {
        body["paging"] = p;
    }
    Ok(axum::Json(body).into_response())
}

fn pipelines(s: &Shared, kind: &str) -> Response {
    let data = s.data.read().expect("data");
    let list = if kind == "deals" {
        &data.deal_pipelines
    } else {
        &data.ticket_pipelines
    };
    let results: Vec<Value> = list.iter().enumerate().map(|(i, p)| json!({
        "id": p.id, "label": p.label, "displayOrder": i, "archived": false,
        "createdAt": "2023-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z",
        "stages": p.stages.iter().enumerate().map(|(k, (id, label))| json!({
            "id": id, "label": label, "displayOrder": k, "archived": false, "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
            "metadata": {"isClosed": (k + 1 == p.stages.len()).to_string()},
            "createdAt": "2023-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"
        })).collect::<Vec<_>>()
    })).collect();
    axum::Json(json!({"results": results})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_catches_what_hubspot_does_not_have() {
        let c = hubspot_contract();
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert!(
            c.check(
                "GET",
                "/crm/v3/objects/contacts",
                &q(&[
                    ("limit", "100"),
                    ("archived", "true"),
                    ("associations", "companies"),
                    ("associations", "deals")
                ]),
                b""
            )
            .is_ok()
        );
        assert!(
            c.check("GET", "/crm/v3/objects/0-3", &q(&[("limit", "1")]), b"")
                .is_ok()
        );
        assert!(
            c.check("GET", "/crm/v3/objects/deals", &[], b"").is_err(),
            "the deals description has only 0-3"
        );
        assert!(
            c.check(
                "GET",
                "/crm/v3/objects/contacts",
                &q(&[("per_page", "100")]),
                b""
            )
            .unwrap_err()
            .contains("per_page")
        );
        assert!(
            c.check(
                "GET",
                "/crm/v3/objects/contacts",
                &q(&[("limit", "many")]),
                b""
            )
            .is_err()
        );
        assert!(
            c.check(
                "GET",
                "/crm/v3/objects/contacts",
                &q(&[("archived", "yes")]),
                b""
            )
            .is_err()
        );
        assert!(
            c.check(
                "GET",
                "/crm/v3/owners",
                &q(&[("limit", "100"), ("archived", "false")]),
                b""
            )
            .is_ok()
        );
        assert!(c.check("GET", "/crm/v3/pipelines/deals", &[], b"").is_ok());
        assert!(c.check("GET", "/account-info/v3/details", &[], b"").is_ok());
        let good = json!({"filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "GT", "value": "5"}]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}], "properties": ["email"], "limit": 200, "after": "0"});
        let body = |v: &Value| serde_json::to_vec(v).unwrap();
        assert_eq!(
            c.check("POST", "/crm/v3/objects/contacts/search", &[], &body(&good))
                .unwrap(),
            "post-/crm/v3/objects/contacts/search_doSearch"
        );
        for (pointer, bad) in [
            ("/limit", json!("200")),
            ("/filterGroups/0/filters/0/operator", json!("AFTER")),
            ("/filterGroups/0/filters/0/value", json!(5)),
            ("/sorts/0/direction", json!("UP")),
            ("/after", json!(0)),
        ] {
            let mut b = good.clone();
            *b.pointer_mut(pointer).unwrap() = bad;
            assert!(
                c.check("POST", "/crm/v3/objects/contacts/search", &[], &body(&b))
                    .is_err(),
                "{pointer}"
            );
        }
        let mut extra = good.clone();
        extra["filterGroups"][0]["filters"][0]["propertyNmae"] = json!("x");
        assert!(
            c.check(
                "POST",
                "/crm/v3/objects/contacts/search",
                &[],
                &body(&extra)
            )
            .is_err(),
            "closed objects"
        );
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("after");
        assert!(
            c.check(
                "POST",
                "/crm/v3/objects/contacts/search",
                &[],
                &body(&missing)
            )
            .is_err(),
            "after is required"
        );
        assert!(
            c.check("POST", "/crm/v3/objects/contacts/search", &[], b"")
                .is_err()
        );
    }

    #[test]
    fn other_paths_of_described_operations_are_checked_as_the_described_ones() {
        let d = |p: &str| described(p);
        let as_ = |p: &str| Described::As(p.to_string());
        assert_eq!(
            d("/crm/v3/objects/contact"),
            as_("/crm/v3/objects/contacts")
        );
        assert_eq!(
            d("/crm/v3/objects/deal/search"),
            as_("/crm/v3/objects/0-3/search")
        );
        assert_eq!(
            d("/crm/v3/objects/contacts"),
            as_("/crm/v3/objects/contacts")
        );
        assert_eq!(d("/crm/v3/schemas"), as_("/crm-object-schemas/v3/schemas"));
        assert_eq!(
            d("/properties/v2/contact/properties"),
            Described::LegacyProperties
        );
        let c = hubspot_contract();
        let q = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(
            c.check(
                "GET",
                "/crm-object-schemas/v3/schemas",
                &q("archived", "false"),
                b""
            )
            .is_ok()
        );
        assert!(
            c.check(
                "GET",
                "/crm-object-schemas/v3/schemas",
                &q("limit", "10"),
                b""
            )
            .is_err()
        );
        assert_eq!(stream_of("contact"), Some("contacts"));
    }

    #[test]
    fn filters_compare_times_ids_and_text() {
        let v = BTreeMap::from([
            (
                "lastmodifieddate".to_string(),
                "2024-01-01T00:00:00.500Z".to_string(),
            ),
            ("hs_object_id".into(), "10".into()),
        ]);
        let f = |p: &str, op: &str, val: &str| {
            matches(
                &v,
                &json!({"propertyName": p, "operator": op, "value": val}),
            )
            .unwrap()
        };
        let ms =
            (super::super::parse_iso("2024-01-01T00:00:00Z").unwrap() * 1000 + 500).to_string();
        assert!(f("lastmodifieddate", "GTE", &ms));
        assert!(!f("lastmodifieddate", "LT", &ms));
        assert!(f("lastmodifieddate", "EQ", "2024-01-01T00:00:00.500Z"));
        assert!(f("hs_object_id", "GT", "9") && !f("hs_object_id", "GT", "10"));
        assert!(
            matches(
                &v,
                &json!({"propertyName": "x", "operator": "ROUGHLY", "value": "1"})
            )
            .is_err()
        );
        assert_eq!(iso_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
