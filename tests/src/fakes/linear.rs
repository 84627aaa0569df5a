//! A fake Linear GraphQL API: `POST /graphql`, over a seeded, mutable data set.
//!
//! Every document it receives is parsed and validated against Linear's published schema
//! (`tests/contract/linear/schema.graphql`) with `apollo-compiler` (each distinct document text
//! once: a valid one is kept, parsed, by its text), its variables coerced to the operation's
//! types on every request, and the operation executed from the parsed AST: the root fields `viewer`,
//! `organization` and the connections `teams`, `users`, `workflowStates`, `issueLabels`,
//! `projects`, `cycles`, `issues`, `comments`, each with `first` (default 50, at most 250),
//! `after`, `filter: {updatedAt: {gt|gte|lt|lte|eq}}`, `orderBy: updatedAt|createdAt` (Linear's
//! default: `createdAt`), `includeArchived` (archived items are left out unless true) and, on
//! `users`, `includeDisabled`. Pages are read newest first (by the order field, then id) with
//! keyset cursors, so an item updated while a client pages moves to the front. A relation asked
//! for more than its `id` (`creator { id name email }`) is resolved from the data set. A field
//! the schema has but the fake does not serve is a GraphQL error, not a silent null.
//!
//! What it reproduces from Linear's documentation ("GraphQL API", "Rate limiting",
//! "Pagination", linear.app/developers): a personal API key as `Authorization: <key>` and an
//! OAuth token as `Authorization: Bearer <token>`; a bad one is HTTP 400 with an
//! `AUTHENTICATION_ERROR`; a key without access gets `FORBIDDEN` on HTTP 200; a rate limit is
//! HTTP 400 `RATELIMITED` with `X-RateLimit-Requests-*` / `X-RateLimit-Complexity-*` headers
//! (resets in epoch milliseconds), and every answer carries those headers and `X-Complexity`;
//! a document over the per-query complexity limit (Linear's rule: 0.1 point a property, 1 an
//! object, a connection's nodes times `first`) is HTTP 400 "Query too complex" (code
//! `INPUT_ERROR`, type `invalid input`).
//!
//! So that it keeps up with benchmarks, it keeps each connection's order (sorted once) and each
//! node as rendered for a selection (projected and serialized once); both are dropped whenever
//! the data changes, so answers are the same as computing them afresh.

// Handlers return early with an axum `Response` as the error of a `Result`.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use apollo_compiler::executable::{Field, Selection, SelectionSet};
use apollo_compiler::response::JsonMap;
use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Node, Schema, ast};
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{Counters, Injected, Knobs, Rng, bind, iso, spawn};

/// Linear's published schema, parsed once.
static SCHEMA: LazyLock<Valid<Schema>> = LazyLock::new(|| {
    let sdl = include_str!("../../contract/linear/schema.graphql");
    match Schema::parse_and_validate(sdl, "linear/schema.graphql") {
        Ok(schema) => schema,
        // The published schema is what it is: serve it even where apollo-compiler is stricter.
        Err(with_errors) => Valid::assume_valid(with_errors.partial),
    }
});

/// The first timestamp of generated data, in epoch milliseconds (2023-11-14).
const T0: i64 = 1_700_000_000_000;
/// Linear's page size when `first` is not given, and its largest.
const DEFAULT_FIRST: i64 = 50;
const MAX_FIRST: i64 = 250;
const STATES: [(&str, &str); 5] = [
    ("Backlog", "backlog"),
    ("Todo", "unstarted"),
    ("In Progress", "started"),
    ("Done", "completed"),
    ("Canceled", "canceled"),
];
const WORDS: [&str; 10] = [
    "fix",
    "crash",
    "sync",
    "export",
    "billing",
    "login",
    "slow",
    "page",
    "error",
    "dark mode",
];

/// The eight connections, as `(root field, node type)`.
pub const ROOTS: [(&str, &str); 8] = [
    ("teams", "Team"),
    ("users", "User"),
    ("workflowStates", "WorkflowState"),
    ("issueLabels", "IssueLabel"),
    ("projects", "Project"),
    ("cycles", "Cycle"),
    ("issues", "Issue"),
    ("comments", "Comment"),
];

/// What to generate and which credentials to accept.
#[derive(Debug, Clone)]
pub struct LinearConfig {
    pub seed: u64,
    pub teams: usize,
    pub users: usize,
    pub projects: usize,
    pub issues: usize,
    pub comments: usize,
    /// Every `archived_every`-th issue and comment is archived (0: none).
    pub archived_every: usize,
    /// A personal API key: `Authorization: <key>`.
    pub api_key: String,
    /// An OAuth access token: `Authorization: Bearer <token>`.
    pub oauth_token: String,
    /// A valid key that may read only `viewer` (everything else is `FORBIDDEN`).
    pub forbidden_key: String,
    /// The per-query complexity limit (Linear's: 10,000).
    pub max_complexity: f64,
}

impl Default for LinearConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            teams: 3,
            users: 8,
            projects: 5,
            issues: 600,
            comments: 400,
            archived_every: 17,
            api_key: "lin_api_good0123456789abcdef".into(),
            oauth_token: "lin_oauth_good0123456789abcdef".into(),
            forbidden_key: "lin_api_forbidden0123456789".into(),
            max_complexity: 10_000.0,
        }
    }
}

/// One node of a connection: its id, times (epoch ms) and other fields as GraphQL JSON
/// (relations as `{"id": ...}` or null).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub archived_at: Option<i64>,
    pub fields: Map<String, Value>,
}

impl Item {
    /// A field's value as served (times as ISO 8601 with milliseconds).
    pub fn get(&self, field: &str) -> Option<Value> {
        match field {
            "id" => Some(json!(self.id)),
            "createdAt" => Some(json!(iso_ms(self.created_at))),
            "updatedAt" => Some(json!(iso_ms(self.updated_at))),
            "archivedAt" => Some(self.archived_at.map_or(Value::Null, |t| json!(iso_ms(t)))),
            _ => self.fields.get(field).cloned(),
        }
    }
}

/// Everything the fake serves, per root field.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub items: BTreeMap<&'static str, Vec<Item>>,
    pub viewer: String,
}

impl Dataset {
    /// The items of a root field (`issues`).
    pub fn of(&self, root: &str) -> &[Item] {
        self.items.get(root).map(Vec::as_slice).unwrap_or_default()
    }

    /// The data set of a config: the same config gives the same data.
    pub fn generate(c: &LinearConfig) -> Self {
        let mut rng = Rng::new(c.seed);
        let mut clock = T0;
        let mut tick = |rng: &mut Rng| {
            clock += 1 + rng.below(60_000) as i64;
            clock
        };
        let mut items: BTreeMap<&'static str, Vec<Item>> = BTreeMap::new();
        let item = |id: String, at: i64, fields: Value| Item {
            id,
            created_at: at,
            updated_at: at,
            archived_at: None,
            fields: fields.as_object().cloned().unwrap_or_default(),
        };
        let rel = |id: Option<&String>| id.map_or(Value::Null, |i| json!({"id": i}));

        let teams: Vec<String> = (0..c.teams).map(|k| uuid(1, k)).collect();
        let keys: Vec<String> = (0..c.teams).map(|k| format!("T{k}")).collect();
        for (k, id) in teams.iter().enumerate() {
            let at = tick(&mut rng);
            let parent = (k > 0 && k % 2 == 0).then(|| &teams[0]);
            items.entry("teams").or_default().push(item(
                id.clone(),
                at,
                json!({"key": keys[k], "name": format!("Team {k}"), "description": if k == 0 { Value::Null } else { json!(format!("About team {k}")) },
                       "private": k == 1, "timezone": "Europe/Paris", "cyclesEnabled": k != 2, "parent": rel(parent)}),
            ));
        }
        let users: Vec<String> = (0..c.users).map(|k| uuid(2, k)).collect();
        for (k, id) in users.iter().enumerate() {
            let at = tick(&mut rng);
            items.entry("users").or_default().push(item(
                id.clone(),
                at,
                json!({"name": format!("User {k}"), "displayName": format!("user{k}"), "email": format!("user{k}@acme.example"),
                       "active": k != c.users - 1, "admin": k == 0, "guest": k == 1, "timezone": if k % 3 == 0 { Value::Null } else { json!("UTC") }}),
            ));
        }
        let mut states: Vec<Vec<String>> = Vec::new();
        for (t, team) in teams.iter().enumerate() {
            let mut of_team = Vec::new();
            for (s, (name, kind)) in STATES.iter().enumerate() {
                let id = uuid(3, t * 10 + s);
                let at = tick(&mut rng);
                items.entry("workflowStates").or_default().push(item(
                    id.clone(),
                    at,
                    json!({"name": name, "type": kind, "color": format!("#{:06x}", rng.below(0xFF_FFFF)), "position": s as f64 * 1.5,
                           "description": Value::Null, "team": {"id": team}}),
                ));
                of_team.push(id);
            }
            states.push(of_team);
        }
        let mut labels: Vec<(String, Option<usize>)> = Vec::new();
        for k in 0..(3 + c.teams * 2) {
            let team = (k >= 3).then(|| (k - 3) % c.teams.max(1));
            let id = uuid(4, k);
            let at = tick(&mut rng);
            let parent = (k == 2).then(|| &labels[0].0);
            items.entry("issueLabels").or_default().push(item(
                id.clone(),
                at,
                json!({"name": format!("label-{k}"), "color": "#bec2c8", "description": Value::Null, "isGroup": k == 0,
                       "team": rel(team.map(|t| &teams[t])), "parent": rel(parent)}),
            ));
            labels.push((id, team));
        }
        let projects: Vec<String> = (0..c.projects).map(|k| uuid(5, k)).collect();
        for (k, id) in projects.iter().enumerate() {
            let at = tick(&mut rng);
            let started = k % 2 == 0;
            items.entry("projects").or_default().push(item(
                id.clone(),
                at,
                json!({"name": format!("Project {k}"), "description": format!("Goal {k}"), "state": if started { "started" } else { "planned" },
                       "priority": (k % 5) as i64, "progress": k as f64 / 10.0, "startDate": "2024-01-15", "targetDate": if k == 0 { Value::Null } else { json!("2024-06-30") },
                       "startedAt": if started { json!(iso_ms(at)) } else { Value::Null }, "completedAt": Value::Null, "canceledAt": Value::Null,
                       "url": format!("https://linear.app/acme/project/p-{k}"), "lead": rel(users.get(k % c.users.max(1))),
                       "creator": rel(users.first()), "status": {"id": uuid(9, k % 3)}}),
            ));
        }
        let mut cycles: Vec<Vec<String>> = Vec::new();
        for (t, team) in teams.iter().enumerate() {
            let mut of_team = Vec::new();
            for n in 1..=3usize {
                let id = uuid(6, t * 10 + n);
                let at = tick(&mut rng);
                let starts = T0 + (n as i64 - 1) * 14 * 86_400_000;
                items.entry("cycles").or_default().push(item(
                    id.clone(),
                    at,
                    json!({"number": n as f64, "name": if n == 2 { Value::Null } else { json!(format!("Sprint {n}")) }, "description": Value::Null,
                           "startsAt": iso_ms(starts), "endsAt": iso_ms(starts + 14 * 86_400_000),
                           "completedAt": if n == 1 { json!(iso_ms(starts + 14 * 86_400_000)) } else { Value::Null },
                           "progress": if n == 1 { 1.0 } else { 0.25 }, "team": {"id": team}}),
                ));
                of_team.push(id);
            }
            cycles.push(of_team);
        }
        let mut issues: Vec<String> = Vec::new();
        let mut numbers = vec![0usize; c.teams.max(1)];
        for k in 0..c.issues {
            let t = k % c.teams.max(1);
            numbers[t] += 1;
            let id = uuid(7, k);
            let at = tick(&mut rng);
            let state = rng.below(STATES.len() as u64) as usize;
            let title = format!("{} {} #{k}", rng.pick(&WORDS), rng.pick(&WORDS));
            let label_ids: Vec<&String> = labels
                .iter()
                .filter(|(_, team)| team.is_none_or(|x| x == t))
                .map(|(id, _)| id)
                .filter(|_| rng.percent(20))
                .collect();
            let priority = rng.below(5) as i64;
            let label = ["No priority", "Urgent", "High", "Medium", "Low"][priority as usize];
            let mut it = item(
                id.clone(),
                at,
                json!({"identifier": format!("{}-{}", keys[t], numbers[t]), "number": numbers[t] as f64, "title": title,
                       "description": if rng.percent(30) { Value::Null } else { json!(format!("Steps for {title}.\n\n- one\n- \"two\"")) },
                       "priority": priority as f64, "priorityLabel": label,
                       "estimate": if rng.percent(50) { Value::Null } else { json!(rng.below(8) as f64) },
                       "dueDate": if rng.percent(25) { json!("2024-03-01") } else { Value::Null },
                       "startedAt": if state >= 2 { json!(iso_ms(at)) } else { Value::Null },
                       "completedAt": if state == 3 { json!(iso_ms(at)) } else { Value::Null },
                       "canceledAt": if state == 4 { json!(iso_ms(at)) } else { Value::Null },
                       "url": format!("https://linear.app/acme/issue/{}-{}", keys[t], numbers[t]), "labelIds": label_ids,
                       "team": {"id": teams[t]}, "state": {"id": states[t][state]},
                       "assignee": if rng.percent(30) { Value::Null } else { rel(Some(rng.pick(&users))) },
                       "creator": rel(Some(rng.pick(&users))),
                       "project": if rng.percent(50) || projects.is_empty() { Value::Null } else { rel(Some(rng.pick(&projects))) },
                       "cycle": if rng.percent(50) { Value::Null } else { rel(Some(rng.pick(&cycles[t]))) },
                       "parent": if k > 5 && rng.percent(10) { rel(Some(&issues[rng.below(k as u64) as usize])) } else { Value::Null }}),
            );
            if c.archived_every > 0 && k % c.archived_every == c.archived_every - 1 {
                it.archived_at = Some(at);
            }
            items.entry("issues").or_default().push(it);
            issues.push(id);
        }
        let mut comments: Vec<String> = Vec::new();
        for k in 0..c.comments {
            let id = uuid(8, k);
            let at = tick(&mut rng);
            let on_issue = !issues.is_empty() && k % 10 != 9;
            let mut it = item(
                id.clone(),
                at,
                json!({"body": format!("Comment {k}: {} {}", rng.pick(&WORDS), rng.pick(&WORDS)), "url": format!("https://linear.app/acme/comment/{k}"),
                       "editedAt": if rng.percent(20) { json!(iso_ms(at)) } else { Value::Null },
                       "issue": if on_issue { rel(Some(rng.pick(&issues))) } else { Value::Null },
                       "user": rel(Some(rng.pick(&users))),
                       "parent": if k > 3 && rng.percent(15) { rel(Some(&comments[rng.below(k as u64) as usize])) } else { Value::Null }}),
            );
            if c.archived_every > 0 && k % c.archived_every == 0 {
                it.archived_at = Some(at);
            }
            items.entry("comments").or_default().push(it);
            comments.push(id);
        }
        Self {
            items,
            viewer: users.first().cloned().unwrap_or_default(),
        }
    }
}

/// A Linear-looking id (a UUID) for item `k` of kind `kind`.
fn uuid(kind: u32, k: usize) -> String {
    format!("{kind:08x}-0000-4000-8000-{k:012x}")
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for epoch milliseconds (Linear's `DateTime`).
pub fn iso_ms(ms: i64) -> String {
    let secs = iso(ms.div_euclid(1000));
    format!("{}.{:03}Z", &secs[..secs.len() - 1], ms.rem_euclid(1000))
}

/// Epoch milliseconds of an ISO 8601 UTC date-time (`2024-05-01T10:00:00.123Z`, fraction
/// optional).
pub fn parse_ms(s: &str) -> Option<i64> {
    let secs = super::parse_iso(s)?;
    let frac = s
        .get(19..)
        .and_then(|r| r.strip_prefix('.'))
        .map_or(0, |r| {
            let digits: String = r.chars().take_while(char::is_ascii_digit).take(3).collect();
            format!("{digits:0<3}").parse::<i64>().unwrap_or(0)
        });
    Some(secs * 1000 + frac)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A rate-limit answer served, and the request that came next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitWait {
    /// When the answer was served (epoch ms).
    pub served_at: i64,
    /// The reset it announced for the spent bucket (epoch ms).
    pub reset_at: i64,
    /// When the next request arrived (epoch ms), if one did.
    pub next_at: Option<i64>,
}

struct Shared {
    config: LinearConfig,
    data: RwLock<Dataset>,
    knobs: Arc<Knobs>,
    counters: Arc<Counters>,
    /// The last `updatedAt` given by an edit (epoch ms), so edits are strictly newer.
    clock: AtomicI64,
    made: AtomicU64,
    /// Documents that did not validate against the schema.
    invalid_documents: AtomicU64,
    /// Requests answered "Query too complex".
    too_complex: AtomicU64,
    waits: Mutex<Vec<RateLimitWait>>,
    /// Page sizes (`first`) asked, per root field.
    firsts: Mutex<BTreeMap<String, Vec<i64>>>,
    /// Valid documents by their text: each distinct document is parsed and validated once
    /// (a client pages with the same document and new variables), then executed from the
    /// parsed AST every time. Documents that fail validation are not kept (each one is
    /// parsed, refused and counted again).
    documents: Mutex<HashMap<String, NumberedDocument>>,
    /// Numbers the documents kept in `documents` (never reused).
    document_ids: AtomicU64,
    /// Per root field and order (`true`: `createdAt`), the positions of its items newest
    /// first; built on first use and dropped (under the data's write lock) when the data
    /// changes, so a page is a binary search for its cursor, not a sort of every item.
    orders: Mutex<HashMap<(String, bool), Order>>,
    /// Nodes rendered as JSON text, per (document number, operation, the connection's response
    /// key) and item position; dropped with `orders` when the data changes. A client paging
    /// with one document gets each node projected and serialized once, not once a round.
    nodes: Mutex<HashMap<NodesKey, HashMap<usize, Arc<str>>>>,
}

/// A valid document and its number.
type NumberedDocument = (u64, Arc<Valid<ExecutableDocument>>);

/// Positions of a root field's items, newest first.
type Order = Arc<Vec<usize>>;

/// Which selection a node was rendered with: (document number, operation name, response key).
type NodesKey = (u64, Option<String>, String);

/// The most selections kept rendered; past it the cache starts over.
const MAX_NODE_SELECTIONS: usize = 16;

/// The most distinct valid documents kept; past it the cache starts over.
const MAX_DOCUMENTS: usize = 256;

impl Shared {
    /// The document `query`, parsed and validated against the schema (once per distinct
    /// text), and its number.
    fn document(&self, query: &str) -> Result<NumberedDocument, Failure> {
        if let Some(doc) = self
            .documents
            .lock()
            .ok()
            .and_then(|d| d.get(query).cloned())
        {
            return Ok(doc);
        }
        let doc = ExecutableDocument::parse_and_validate(&SCHEMA, query, "request.graphql")
            .map_err(|e| {
                self.invalid_documents.fetch_add(1, Ordering::SeqCst);
                bad(format!("{}", e.errors).replace('\n', " "))
            })?;
        let doc = (
            self.document_ids.fetch_add(1, Ordering::SeqCst),
            Arc::new(doc),
        );
        if let Ok(mut docs) = self.documents.lock() {
            if docs.len() >= MAX_DOCUMENTS {
                docs.clear();
            }
            docs.insert(query.to_string(), doc.clone());
        }
        Ok(doc)
    }

    /// The positions of `root`'s items in `data` (read-locked by the caller), newest first by
    /// `createdAt` (`by_created`) or `updatedAt`, then by id.
    fn order(&self, data: &Dataset, root: &str, by_created: bool) -> Order {
        let mut orders = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(order) = orders.get(&(root.to_string(), by_created)) {
            return order.clone();
        }
        let items = data.of(root);
        let mut positions: Vec<usize> = (0..items.len()).collect();
        positions.sort_by(|&a, &b| {
            order_key(&items[b], by_created).cmp(&order_key(&items[a], by_created))
        });
        let positions = Arc::new(positions);
        orders.insert((root.to_string(), by_created), positions.clone());
        positions
    }

    /// Drops the orders built from the data; called with the data write-locked.
    fn data_changed(&self) {
        self.orders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The items at `positions` of `root` projected on `set` as JSON texts, each rendered once
    /// per `key` (an item that does not project is an error, as [`project`] gives it).
    fn render_nodes(
        &self,
        data: &Dataset,
        root: &str,
        positions: &[usize],
        set: &SelectionSet,
        key: NodesKey,
    ) -> Result<Vec<Arc<str>>, Failure> {
        let items = data.of(root);
        let mut cache = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.contains_key(&key) && cache.len() >= MAX_NODE_SELECTIONS {
            cache.clear();
        }
        let rendered = cache.entry(key).or_default();
        let mut out = Vec::with_capacity(positions.len());
        for &p in positions {
            let text = match rendered.get(&p) {
                Some(text) => text.clone(),
                None => {
                    let text: Arc<str> = project(data, &items[p], set)?.to_string().into();
                    rendered.insert(p, text.clone());
                    text
                }
            };
            out.push(text);
        }
        Ok(out)
    }
}

/// A connection's order key: the order field's time (epoch ms), then the id.
fn order_key(i: &Item, by_created: bool) -> (i64, &str) {
    let at = if by_created {
        i.created_at
    } else {
        i.updated_at
    };
    (at, i.id.as_str())
}

/// Starts fake Linear servers.
pub struct FakeLinear;

impl FakeLinear {
    /// Generates the data set and serves it on 127.0.0.1 (an ephemeral port).
    pub async fn start(config: LinearConfig) -> LinearHandle {
        LazyLock::force(&SCHEMA);
        let knobs = Arc::new(Knobs::default());
        knobs.set_retry_after_secs(1);
        let counters = Arc::new(Counters::default());
        let data = Dataset::generate(&config);
        let (listener, addr) = bind().await;
        let shared = Arc::new(Shared {
            config,
            data: RwLock::new(data),
            knobs: knobs.clone(),
            counters: counters.clone(),
            clock: AtomicI64::new(now_ms()),
            made: AtomicU64::new(0),
            invalid_documents: AtomicU64::new(0),
            too_complex: AtomicU64::new(0),
            waits: Mutex::new(Vec::new()),
            firsts: Mutex::new(BTreeMap::new()),
            documents: Mutex::new(HashMap::new()),
            document_ids: AtomicU64::new(0),
            orders: Mutex::new(HashMap::new()),
            nodes: Mutex::new(HashMap::new()),
        });
        let router = Router::new()
            .route("/graphql", axum::routing::post(handle))
            .with_state(shared.clone());
        let task = spawn(listener, router);
        LinearHandle {
            url: format!("http://{addr}"),
            knobs,
            counters,
            shared,
            task,
        }
    }
}

/// A running fake Linear; stops when dropped.
pub struct LinearHandle {
    /// Base URL (`http://127.0.0.1:PORT`): the connector's `api_url`.
    pub url: String,
    pub knobs: Arc<Knobs>,
    pub counters: Arc<Counters>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LinearHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LinearHandle {
    /// A copy of the data served now.
    pub fn data(&self) -> Dataset {
        self.shared
            .data
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    pub fn config(&self) -> &LinearConfig {
        &self.shared.config
    }

    /// The next edit time: now, and strictly after every earlier edit.
    pub fn tick(&self) -> i64 {
        let now = now_ms();
        let prev = self.shared.clock.fetch_max(now, Ordering::SeqCst).max(now);
        let next = prev + 1;
        self.shared.clock.fetch_max(next, Ordering::SeqCst);
        next
    }

    /// Applies `edit` to the item `id` of `root` and sets its `updatedAt` to `at`.
    pub fn edit(&self, root: &str, id: &str, at: i64, edit: impl FnOnce(&mut Item)) -> bool {
        let Ok(mut data) = self.shared.data.write() else {
            return false;
        };
        self.shared.data_changed();
        let Some(item) = data
            .items
            .get_mut(root)
            .and_then(|items| items.iter_mut().find(|i| i.id == id))
        else {
            return false;
        };
        edit(item);
        item.updated_at = at;
        true
    }

    /// Archives an item now (`archivedAt` and `updatedAt` set).
    pub fn archive(&self, root: &str, id: &str) -> bool {
        let at = self.tick();
        self.edit(root, id, at, |item| item.archived_at = Some(at))
    }

    /// Adds a copy of `template` (an item of `root`) under a new id, created and updated at
    /// `at`; returns the id.
    pub fn add_like(&self, root: &'static str, template: &Item, at: i64, title: &str) -> String {
        let k = self.shared.made.fetch_add(1, Ordering::SeqCst) as usize;
        let id = uuid(0xA0, k);
        let mut item = template.clone();
        item.id = id.clone();
        item.created_at = at;
        item.updated_at = at;
        item.archived_at = None;
        if item.fields.contains_key("title") {
            item.fields.insert("title".into(), json!(title));
        }
        if let Ok(mut data) = self.shared.data.write() {
            self.shared.data_changed();
            data.items.entry(root).or_default().push(item);
        }
        id
    }

    /// Documents received that did not validate against Linear's schema.
    pub fn invalid_documents(&self) -> u64 {
        self.shared.invalid_documents.load(Ordering::SeqCst)
    }

    /// "Query too complex" answers served.
    pub fn too_complex(&self) -> u64 {
        self.shared.too_complex.load(Ordering::SeqCst)
    }

    /// The rate-limit answers served and when the next request came.
    pub fn waits(&self) -> Vec<RateLimitWait> {
        self.shared
            .waits
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
    }

    /// The page sizes asked of a root field, in order.
    pub fn firsts(&self, root: &str) -> Vec<i64> {
        self.shared
            .firsts
            .lock()
            .map(|f| f.get(root).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// A GraphQL error object in Linear's shape.
fn gql_error(message: &str, code: &str, kind: &str, presentable: &str) -> Value {
    json!({"message": message, "extensions": {"type": kind, "code": code, "userError": true, "userPresentableMessage": presentable}})
}

/// Linear's rate-limit headers, with `remaining` requests left and a reset at `reset` (ms).
fn rate_headers(remaining: i64, reset: i64, complexity: f64) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put("x-ratelimit-requests-limit", "5000".into());
    put("x-ratelimit-requests-remaining", remaining.to_string());
    put("x-ratelimit-requests-reset", reset.to_string());
    put("x-ratelimit-complexity-limit", "3000000".into());
    put("x-ratelimit-complexity-remaining", "2990000".into());
    put(
        "x-ratelimit-complexity-reset",
        (now_ms() + 3_600_000).to_string(),
    );
    put("x-complexity", (complexity.ceil() as i64).to_string());
    h
}

fn answer(status: StatusCode, headers: HeaderMap, body: Value) -> Response {
    (status, headers, axum::Json(body)).into_response()
}

async fn handle(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let n = s.counters.next();
    let arrived = now_ms();
    if let Ok(mut waits) = s.waits.lock()
        && let Some(last) = waits.last_mut()
        && last.next_at.is_none()
    {
        last.next_at = Some(arrived);
    }
    let hour = now_ms() + 3_600_000;
    match s.knobs.decide(n).await {
        Injected::None => {}
        Injected::BadGateway => {
            s.counters.bad_gateways.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::BAD_GATEWAY, "bad gateway").into_response();
        }
        Injected::RateLimited | Injected::Exhausted => {
            s.counters.rate_limited.fetch_add(1, Ordering::SeqCst);
            let exhausted = s.knobs.exhausted.load(Ordering::SeqCst);
            let reset = if exhausted {
                hour
            } else {
                now_ms() + s.knobs.retry_after_secs.load(Ordering::SeqCst) as i64 * 1000
            };
            if let Ok(mut waits) = s.waits.lock() {
                waits.push(RateLimitWait {
                    served_at: now_ms(),
                    reset_at: reset,
                    next_at: None,
                });
            }
            let error = gql_error(
                "Rate limit exceeded",
                "RATELIMITED",
                "ratelimited",
                "Rate limit exceeded. Please try again later.",
            );
            return answer(
                StatusCode::BAD_REQUEST,
                rate_headers(0, reset, 0.0),
                json!({"errors": [error]}),
            );
        }
    }
    let normal = rate_headers(4999, hour, 0.0);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let c = &s.config;
    let forbidden = auth == c.forbidden_key;
    if !(auth == c.api_key || auth == format!("Bearer {}", c.oauth_token) || forbidden) {
        s.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
        let error = gql_error(
            "Authentication required, not authenticated",
            "AUTHENTICATION_ERROR",
            "authentication error",
            "You need to authenticate to access this operation.",
        );
        return answer(StatusCode::BAD_REQUEST, normal, json!({"errors": [error]}));
    }
    match execute(&s, &body, forbidden) {
        Ok((data, complexity)) => (
            StatusCode::OK,
            rate_headers(4999, hour, complexity),
            [(CONTENT_TYPE, "application/json")],
            format!("{{\"data\":{data}}}"),
        )
            .into_response(),
        Err((status, errors)) => answer(status, normal, json!({"errors": errors})),
    }
}

type Failure = (StatusCode, Vec<Value>);

fn bad(message: String) -> Failure {
    (
        StatusCode::BAD_REQUEST,
        vec![
            json!({"message": message, "extensions": {"code": "GRAPHQL_VALIDATION_FAILED", "type": "graphql error"}}),
        ],
    )
}

/// Parses, validates and runs one request body; the `data` (as JSON text) and the document's
/// complexity.
fn execute(s: &Shared, body: &str, forbidden: bool) -> Result<(String, f64), Failure> {
    let request: Value = serde_json::from_str(body).map_err(|e| bad(format!("body: {e}")))?;
    let query = request["query"]
        .as_str()
        .ok_or_else(|| bad("no query".into()))?;
    let (doc_id, doc) = s.document(query)?;
    let operation_name = request["operationName"].as_str();
    let operation = doc
        .operations
        .get(request["operationName"].as_str())
        .map_err(|e| bad(e.message().to_string()))?;
    let values: JsonMap = serde_json::from_value(match &request["variables"] {
        Value::Null => json!({}),
        v => v.clone(),
    })
    .map_err(|e| bad(format!("variables: {e}")))?;
    let coerced = apollo_compiler::request::coerce_variable_values(&SCHEMA, operation, &values)
        .map_err(|e| bad(format!("variables: {}", e.message())))?;
    let variables: Map<String, Value> = serde_json::to_value(&*coerced)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    // The page sizes asked, complex or not.
    for field in fields(&operation.selection_set) {
        if ROOTS.iter().any(|(r, _)| *r == field.name.as_str())
            && let Ok(mut firsts) = s.firsts.lock()
        {
            let first = argument(field, "first", &variables).and_then(|v| v.as_i64());
            firsts
                .entry(field.name.to_string())
                .or_default()
                .push(first.unwrap_or(DEFAULT_FIRST));
        }
    }
    let complexity = selection_complexity(&operation.selection_set, &variables);
    if complexity > s.config.max_complexity {
        s.too_complex.fetch_add(1, Ordering::SeqCst);
        let presentable = format!(
            "The query is too complex. Complexity: {complexity}. Maximum allowed complexity: {}.",
            s.config.max_complexity
        );
        let mut error = gql_error(
            "Query too complex",
            "INPUT_ERROR",
            "invalid input",
            &presentable,
        );
        error["extensions"]["statusCode"] = json!(400);
        return Err((StatusCode::BAD_REQUEST, vec![error]));
    }
    let data = s.data.read().map_err(|_| bad("poisoned".into()))?;
    let mut out = Members::default();
    for field in fields(&operation.selection_set) {
        let name = field.name.as_str();
        let value = match name {
            "viewer" => {
                let viewer = data
                    .of("users")
                    .iter()
                    .find(|u| u.id == data.viewer)
                    .ok_or_else(|| bad("no viewer".into()))?;
                project(&data, viewer, &field.selection_set)?.to_string()
            }
            _ if forbidden => {
                let error = json!({"message": "Forbidden", "path": [field.response_key().as_str()],
                    "extensions": {"code": "FORBIDDEN", "type": "forbidden", "userError": true,
                                   "userPresentableMessage": "You don't have permission to access this resource."}});
                return Err((StatusCode::OK, vec![error]));
            }
            "organization" => {
                let org = Item {
                    id: uuid(0xF0, 0),
                    created_at: T0,
                    updated_at: T0,
                    archived_at: None,
                    fields: json!({"name": "Acme", "urlKey": "acme"})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                };
                project(&data, &org, &field.selection_set)?.to_string()
            }
            root if ROOTS.iter().any(|(r, _)| *r == root) => {
                let key = (
                    doc_id,
                    operation_name.map(str::to_string),
                    field.response_key().to_string(),
                );
                connection(s, &data, root, field, &variables, key)?
            }
            other => return Err(bad(format!("the fake does not serve Query.{other}"))),
        };
        out.insert(field.response_key().as_str(), value);
    }
    Ok((out.object(), complexity))
}

/// An object's members as JSON texts, in order; a response key given twice keeps its first
/// place and its last value (as a `serde_json::Map` insert does).
#[derive(Default)]
struct Members(Vec<(String, String)>);

impl Members {
    fn insert(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// The object as JSON text.
    fn object(&self) -> String {
        let mut out = String::from("{");
        for (k, (key, value)) in self.0.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            out.push_str(&Value::String(key.clone()).to_string());
            out.push(':');
            out.push_str(value);
        }
        out.push('}');
        out
    }
}

/// The fields of a selection set (the documents the connector sends use no fragments).
fn fields(set: &SelectionSet) -> impl Iterator<Item = &Node<Field>> {
    set.selections.iter().filter_map(|s| match s {
        Selection::Field(f) => Some(f),
        _ => None,
    })
}

/// An argument's value as JSON, variables substituted (absent: `None`).
fn argument(field: &Field, name: &str, variables: &Map<String, Value>) -> Option<Value> {
    let arg = field.arguments.iter().find(|a| a.name == name)?;
    let value = to_json(&arg.value, variables);
    (!value.is_null()).then_some(value)
}

fn to_json(value: &ast::Value, variables: &Map<String, Value>) -> Value {
    match value {
        ast::Value::Null => Value::Null,
        ast::Value::Enum(e) => json!(e.as_str()),
        ast::Value::Variable(v) => variables.get(v.as_str()).cloned().unwrap_or(Value::Null),
        ast::Value::String(s) => json!(s),
        ast::Value::Float(f) => json!(f.try_to_f64().unwrap_or_default()),
        ast::Value::Int(i) => json!(i.try_to_i32().unwrap_or_default()),
        ast::Value::Boolean(b) => json!(b),
        ast::Value::List(l) => Value::Array(l.iter().map(|v| to_json(v, variables)).collect()),
        ast::Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.to_string(), to_json(v, variables)))
                .collect(),
        ),
    }
}

/// Linear's documented complexity ("Rate limiting"): 0.1 point a property, 1 an object; a
/// connection's `nodes`/`edges` count `first` times (50 when not given).
fn selection_complexity(set: &SelectionSet, variables: &Map<String, Value>) -> f64 {
    fields(set)
        .map(|f| field_complexity(f, variables, 1.0))
        .sum()
}

fn field_complexity(field: &Field, variables: &Map<String, Value>, times: f64) -> f64 {
    if field.selection_set.selections.is_empty() {
        return 0.1 * times;
    }
    let is_connection = field.selection_set.ty.as_str().ends_with("Connection");
    let first = argument(field, "first", variables)
        .and_then(|v| v.as_f64())
        .unwrap_or(DEFAULT_FIRST as f64);
    let children: f64 = fields(&field.selection_set)
        .map(|child| {
            let each = if is_connection && matches!(child.name.as_str(), "nodes" | "edges") {
                first
            } else {
                1.0
            };
            field_complexity(child, variables, each)
        })
        .sum();
    (1.0 * times) + children * times
}

/// An item with only the selected fields. A relation (`{"id": ...}` in the data) asked for
/// more than its `id` is looked up in the data set by its type (`creator { id name email }`
/// reads the user) and projected in turn, as Linear resolves it.
fn project(data: &Dataset, item: &Item, set: &SelectionSet) -> Result<Value, Failure> {
    let mut out = Map::new();
    for field in fields(set) {
        let name = field.name.as_str();
        let value = match name {
            "__typename" => json!(set.ty.as_str()),
            _ => item.get(name).ok_or_else(|| {
                bad(format!(
                    "the fake does not serve {}.{name}",
                    set.ty.as_str()
                ))
            })?,
        };
        let value = match (&value, field.selection_set.selections.is_empty()) {
            (Value::Object(related), false) => relation(data, name, related, &field.selection_set)?,
            _ => value,
        };
        out.insert(field.response_key().to_string(), value);
    }
    Ok(Value::Object(out))
}

/// A relation's selection: only `id` (and `__typename`) from the reference itself, anything
/// else from the related item of the data set.
fn relation(
    data: &Dataset,
    name: &str,
    related: &Map<String, Value>,
    set: &SelectionSet,
) -> Result<Value, Failure> {
    let ty = set.ty.as_str();
    let id_only = fields(set).all(|f| matches!(f.name.as_str(), "id" | "__typename"));
    if id_only {
        let mut sub = Map::new();
        for f in fields(set) {
            let v = match f.name.as_str() {
                "__typename" => json!(ty),
                _ => related.get("id").cloned().unwrap_or(Value::Null),
            };
            sub.insert(f.response_key().to_string(), v);
        }
        return Ok(Value::Object(sub));
    }
    let root = ROOTS
        .iter()
        .find(|(_, node)| *node == ty)
        .map(|(root, _)| *root)
        .ok_or_else(|| bad(format!("the fake serves only the id of {name} ({ty})")))?;
    let id = related
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let target = data
        .of(root)
        .iter()
        .find(|i| i.id == id)
        .ok_or_else(|| bad(format!("{name}: no {ty} {id}")))?;
    project(data, target, set)
}

/// A connection's `filter`, read once per request: its comparisons in order, each a time
/// comparison or the error that [`matches`] meets when it gets there (only `updatedAt` /
/// `createdAt` comparators are supported; anything else is an error, not ignored).
struct Filter(Vec<Step>);

enum Step {
    /// `(createdAt?, operator, epoch ms)`.
    Compare(bool, &'static str, i64),
    Fail(Failure),
}

impl Filter {
    fn parse(filter: &Value) -> Self {
        let mut steps = Vec::new();
        let Some(filter) = filter.as_object() else {
            return Self(steps);
        };
        for (field, comparator) in filter {
            let created = match field.as_str() {
                "updatedAt" => false,
                "createdAt" => true,
                other => {
                    steps.push(Step::Fail(bad(format!(
                        "the fake does not filter on {other}"
                    ))));
                    break;
                }
            };
            let Some(comparator) = comparator.as_object() else {
                continue;
            };
            for (op, value) in comparator {
                let Some(t) = value.as_str().and_then(parse_ms) else {
                    steps.push(Step::Fail(bad(format!(
                        "{field}.{op}: not an ISO 8601 date-time"
                    ))));
                    return Self(steps);
                };
                let op = match op.as_str() {
                    "gt" => "gt",
                    "gte" => "gte",
                    "lt" => "lt",
                    "lte" => "lte",
                    "eq" => "eq",
                    "neq" => "neq",
                    other => {
                        steps.push(Step::Fail(bad(format!(
                            "the fake does not support {field}.{other}"
                        ))));
                        return Self(steps);
                    }
                };
                steps.push(Step::Compare(created, op, t));
            }
        }
        Self(steps)
    }

    /// Whether the filter can fail (then an item may meet its error).
    fn can_fail(&self) -> bool {
        self.0.iter().any(|s| matches!(s, Step::Fail(_)))
    }

    /// Whether an item passes the filter: the comparisons in order, the first false one
    /// deciding, an error met on the way returned.
    fn matches(&self, item: &Item) -> Result<bool, Failure> {
        for step in &self.0 {
            match step {
                Step::Fail(f) => return Err(f.clone()),
                Step::Compare(created, op, t) => {
                    let at = if *created {
                        item.created_at
                    } else {
                        item.updated_at
                    };
                    let ok = match *op {
                        "gt" => at > *t,
                        "gte" => at >= *t,
                        "lt" => at < *t,
                        "lte" => at <= *t,
                        "eq" => at == *t,
                        _ => at != *t,
                    };
                    if !ok {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }
}

/// One page of a connection: filtered, newest first by the order field (then id), after the
/// keyset cursor `after` (`"<ms>|<id>"`).
fn connection(
    s: &Shared,
    data: &Dataset,
    root: &str,
    field: &Field,
    variables: &Map<String, Value>,
    nodes_key: NodesKey,
) -> Result<String, Failure> {
    let first = argument(field, "first", variables)
        .and_then(|v| v.as_i64())
        .unwrap_or(DEFAULT_FIRST);
    if !(1..=MAX_FIRST).contains(&first) {
        return Err(bad(format!("first must be between 1 and {MAX_FIRST}")));
    }
    let archived = argument(field, "includeArchived", variables) == Some(json!(true));
    let disabled = argument(field, "includeDisabled", variables) == Some(json!(true));
    // Linear's default order is `createdAt` ("Pagination").
    let by_created = argument(field, "orderBy", variables) != Some(json!("updatedAt"));
    let filter = Filter::parse(&argument(field, "filter", variables).unwrap_or(Value::Null));
    let items = data.of(root);
    let passes = |item: &Item| -> Result<bool, Failure> {
        Ok(!((item.archived_at.is_some() && !archived)
            || (!disabled && item.fields.get("active") == Some(&json!(false)))
            || !filter.matches(item)?))
    };
    // Every item is filtered before the cursor is looked at: a filter that can fail fails on
    // the first item (in data order) that reaches the failing comparison, wherever the page.
    if filter.can_fail() {
        for item in items {
            passes(item)?;
        }
    }
    let cursor = match argument(field, "after", variables) {
        None => None,
        Some(after) => Some(
            after
                .as_str()
                .and_then(|a| a.split_once('|'))
                .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| bad("after: not a cursor of this connection".into()))?,
        ),
    };
    // Newest first; after the cursor, the items whose key is below it.
    let order = s.order(data, root, by_created);
    let start = cursor.as_ref().map_or(0, |(ms, id)| {
        order.partition_point(|&p| order_key(&items[p], by_created) >= (*ms, id.as_str()))
    });
    // One more than the page, to know whether another follows.
    let mut listed: Vec<usize> = Vec::with_capacity(first as usize + 1);
    for &p in &order[start..] {
        if listed.len() as i64 > first {
            break;
        }
        if passes(&items[p])? {
            listed.push(p);
        }
    }
    s.counters.route(field.name.as_str());
    let has_next = listed.len() as i64 > first;
    listed.truncate(first as usize);
    let nodes_set = fields(&field.selection_set).find(|f| f.name == "nodes");
    let nodes = match nodes_set {
        Some(set) => s.render_nodes(data, root, &listed, &set.selection_set, nodes_key)?,
        None => Vec::new(),
    };
    let end = listed.last().map(|&p| {
        let (ms, id) = order_key(&items[p], by_created);
        format!("{ms}|{id}")
    });
    let mut out = Members::default();
    for f in fields(&field.selection_set) {
        let value = match f.name.as_str() {
            "nodes" => {
                let mut text =
                    String::with_capacity(2 + nodes.iter().map(|n| n.len() + 1).sum::<usize>());
                text.push('[');
                for (k, node) in nodes.iter().enumerate() {
                    if k > 0 {
                        text.push(',');
                    }
                    text.push_str(node);
                }
                text.push(']');
                text
            }
            "pageInfo" => {
                let info = json!({"hasNextPage": has_next, "hasPreviousPage": false, "endCursor": end, "startCursor": Value::Null});
                let mut sub = Map::new();
                for p in fields(&f.selection_set) {
                    sub.insert(p.response_key().to_string(), info[p.name.as_str()].clone());
                }
                Value::Object(sub).to_string()
            }
            other => return Err(bad(format!("the fake does not serve connection.{other}"))),
        };
        out.insert(f.response_key().as_str(), value);
    }
    Ok(out.object())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_the_schema() {
        assert_eq!(iso_ms(1_709_209_805_123), "2024-02-29T12:30:05.123Z");
        assert_eq!(
            parse_ms("2024-02-29T12:30:05.123Z"),
            Some(1_709_209_805_123)
        );
        assert_eq!(parse_ms("2024-02-29T12:30:05Z"), Some(1_709_209_805_000));
        assert_eq!(parse_ms("2024-02-29T12:30:05.1Z"), Some(1_709_209_805_100));
        assert!(SCHEMA.types.contains_key("IssueFilter"));
    }

    #[test]
    fn documents_are_parsed_validated_and_executed() {
        let c = LinearConfig {
            issues: 30,
            comments: 5,
            ..Default::default()
        };
        let s = Shared {
            data: RwLock::new(Dataset::generate(&c)),
            config: c,
            knobs: Arc::new(Knobs::default()),
            counters: Arc::new(Counters::default()),
            clock: AtomicI64::new(0),
            made: AtomicU64::new(0),
            invalid_documents: AtomicU64::new(0),
            too_complex: AtomicU64::new(0),
            waits: Mutex::new(Vec::new()),
            firsts: Mutex::new(BTreeMap::new()),
            documents: Mutex::new(HashMap::new()),
            document_ids: AtomicU64::new(0),
            orders: Mutex::new(HashMap::new()),
            nodes: Mutex::new(HashMap::new()),
        };
        let q = |query: &str, variables: Value| {
            execute(
                &s,
                &json!({"query": query, "variables": variables}).to_string(),
                false,
            )
            .map(|(data, complexity)| {
                let data: Value = serde_json::from_str(&data).expect("the data is JSON");
                (data, complexity)
            })
        };
        let doc = "query I($first: Int!, $after: String, $filter: IssueFilter) { issues(first: $first, after: $after, filter: $filter, orderBy: updatedAt, includeArchived: true) { nodes { id updatedAt team { id } labelIds } pageInfo { hasNextPage endCursor } } }";
        let (page, complexity) = q(doc, json!({"first": 20})).expect("page 1");
        // 1 + 20 × (1 + 0.1 + 0.1 + (1 + 0.1) + 0.1) + (1 + 0.2)
        assert!((complexity - 50.2).abs() < 1e-9, "{complexity}");
        let nodes = page["issues"]["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 20);
        assert_eq!(nodes[0].as_object().expect("node").len(), 4);
        assert!(nodes[0]["team"]["id"].is_string());
        let end = page["issues"]["pageInfo"]["endCursor"].clone();
        assert_eq!(page["issues"]["pageInfo"]["hasNextPage"], true);
        let (page2, _) = q(doc, json!({"first": 20, "after": end})).expect("page 2");
        assert_eq!(
            page2["issues"]["nodes"].as_array().expect("nodes").len(),
            10
        );
        assert_eq!(page2["issues"]["pageInfo"]["hasNextPage"], false);
        // Newest first.
        let t = |v: &Value| parse_ms(v["updatedAt"].as_str().expect("t")).expect("ms");
        assert!(t(&nodes[0]) >= t(&nodes[19]));
        // The filter.
        let since = nodes[4]["updatedAt"].clone();
        let (f, _) = q(
            doc,
            json!({"first": 50, "filter": {"updatedAt": {"gte": since}}}),
        )
        .expect("filtered");
        assert_eq!(f["issues"]["nodes"].as_array().expect("nodes").len(), 5);
        // Without includeArchived, archived issues are left out (one in 17).
        let plain = "{ issues(first: 100) { nodes { id } } }";
        let (p, _) = q(plain, json!({})).expect("plain");
        assert_eq!(p["issues"]["nodes"].as_array().expect("nodes").len(), 29);
        // A field Linear does not have is refused by validation; one it has but the fake
        // does not serve is an error too.
        assert!(q("{ issues { nodes { bogus } } }", json!({})).is_err());
        assert_eq!(s.invalid_documents.load(Ordering::SeqCst), 1);
        let (status, errors) =
            q("{ issues { nodes { branchName } } }", json!({})).expect_err("unserved");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            errors[0]["message"]
                .as_str()
                .expect("m")
                .contains("Issue.branchName")
        );
        // tap-linear's document (PyPI tap-linear 0.1.1, 2022): it declares its filter variable
        // `DateTime`, where Linear's schema now has `DateTimeOrDuration` (`DateComparator.gt`),
        // so it does not validate (graphql-js agrees: "Variable \"$replicationKeyValue\" of
        // type \"DateTime\" used in position expecting type \"DateTimeOrDuration\"").
        let tap = "query Issues($next: String, $replicationKeyValue: DateTime) { issues(first: 100 after: $next filter: { updatedAt: {gt: $replicationKeyValue } }) { pageInfo { hasNextPage endCursor } nodes { id title url updatedAt creator { id name email } assignee { id name email } project { id name } team { id name } } } }";
        let vars = json!({"next": null, "replicationKeyValue": "2010-01-01T00:00:01Z"});
        let refused = s.invalid_documents.load(Ordering::SeqCst);
        assert!(q(tap, vars.clone()).is_err());
        assert_eq!(s.invalid_documents.load(Ordering::SeqCst), refused + 1);
        // With the variable's type fixed (as scripts/bench-linear.sh runs it): no orderBy
        // (createdAt, Linear's default), relations asked for their fields.
        let (t, _) = q(&tap.replace("DateTime)", "DateTimeOrDuration)"), vars)
            .expect("tap-linear's document, its variable's type fixed");
        let tn = t["issues"]["nodes"].as_array().expect("nodes");
        assert_eq!(tn.len(), 29, "archived issues left out");
        let created = |v: &Value| {
            let id = v["id"].as_str().expect("id");
            s.data
                .read()
                .expect("data")
                .of("issues")
                .iter()
                .find(|i| i.id == id)
                .expect("issue")
                .created_at
        };
        assert!(
            tn.windows(2).all(|w| created(&w[0]) >= created(&w[1])),
            "newest created first"
        );
        assert!(
            tn[0]["team"]["name"]
                .as_str()
                .expect("team name")
                .starts_with("Team ")
        );
        assert!(tn.iter().any(|n| {
            n["creator"]["email"]
                .as_str()
                .is_some_and(|e| e.ends_with("@acme.example"))
        }));
        assert!(tn.iter().any(|n| n["assignee"].is_null()));
        let (st, _) = q(
            "{ issues(first: 1) { nodes { state { id name } } } }",
            json!({}),
        )
        .expect("state");
        let name = st["issues"]["nodes"][0]["state"]["name"].clone();
        assert!(STATES.iter().any(|(n, _)| json!(n) == name), "{name}");
        // Variables must fit their types.
        assert!(q(doc, json!({"first": "ten"})).is_err());
        assert!(q(doc, json!({"first": 5, "filter": {"nope": 1}})).is_err());
        // Too complex: 250 nodes of 400 properties each (10,251 points).
        let wide: String = (0..400).map(|_| " id").collect();
        let (status, errors) = q(
            &format!("{{ issues(first: 250) {{ nodes {{{wide} }} }} }}"),
            json!({}),
        )
        .expect_err("complex");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(errors[0]["message"], "Query too complex");
        assert_eq!(errors[0]["extensions"]["code"], "INPUT_ERROR");
    }
}
