//! The GraphQL side: the eight streams as field lists, the documents built from them, their
//! complexity and page size, the request bodies, and how Linear's answers are read.
//!
//! Every document is built here and nowhere else, so [`all_requests`] can list every request
//! body the connector can send (the contract check validates them against Linear's published
//! schema, `tests/contract/linear/`).

use serde::Deserialize;
use sluice_sdk::fields::{Fields, RecordWriter};
use sluice_sdk::serde_json::value::RawValue;
use sluice_sdk::serde_json::{self, Map, Value, json};
use sluice_sdk::{ConnectorError, ErrorCode, StreamSpec};

/// Linear's per-query limit ("Rate limiting", linear.app/developers/rate-limiting: "a single
/// query may not exceed 10,000 complexity points"); a larger one answers "Query too complex".
pub const MAX_QUERY_COMPLEXITY: f64 = 10_000.0;

/// What a page's document may cost by [`complexity`]: half of [`MAX_QUERY_COMPLEXITY`], a
/// margin for Linear counting a field differently than we estimate it.
pub const COMPLEXITY_BUDGET: f64 = MAX_QUERY_COMPLEXITY / 2.0;

/// The largest `first` Linear serves ("Pagination", linear.app/developers/pagination: 1–250).
pub const MAX_PAGE: u32 = 250;

/// How a field of a node is selected and what column it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A scalar kept as it comes (`String`, `ID`).
    Text,
    /// A `DateTime` (ISO 8601 with milliseconds, UTC) or `TimelessDate` (`YYYY-MM-DD`).
    Time,
    /// A `Float` or `Int`.
    Number,
    /// A `Boolean`.
    Flag,
    /// A list of ids (`labelIds: [String!]!`).
    Ids,
    /// A relation: selected as `field { id }`, the column is the id (or null).
    Ref,
}

/// One field of a stream: its GraphQL name, its column, its kind.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub graphql: &'static str,
    pub column: &'static str,
    pub kind: Kind,
}

const fn f(graphql: &'static str, column: &'static str, kind: Kind) -> Field {
    Field {
        graphql,
        column,
        kind,
    }
}

use Kind::{Flag, Ids, Number, Ref, Text, Time};

/// The fields every stream has, first.
const COMMON: [Field; 4] = [
    f("id", "id", Text),
    f("createdAt", "created_at", Time),
    f("updatedAt", "updated_at", Time),
    f("archivedAt", "archived_at", Time),
];

/// A stream: a root connection of `Query` and the fields read of its nodes.
#[derive(Debug)]
pub struct Stream {
    /// The stream's name (`[a-z_]+`).
    pub name: &'static str,
    /// The root field of `Query` (`issueLabels`).
    pub root: &'static str,
    /// The operation name (`IssueLabels`).
    pub operation: &'static str,
    /// The connection's filter input type (`IssueLabelFilter`).
    pub filter: &'static str,
    /// Arguments beyond paging, filter, order and `includeArchived`.
    pub extra_args: &'static str,
    pub description: &'static str,
    /// Fields beyond [`COMMON`].
    pub fields: &'static [Field],
}

impl Stream {
    /// Every field read, [`COMMON`] first.
    pub fn all_fields(&self) -> impl Iterator<Item = &Field> {
        COMMON.iter().chain(self.fields.iter())
    }
}

/// The eight streams, in sync order (what issues refer to first).
pub static STREAMS: [Stream; 8] = [
    Stream {
        name: "teams",
        root: "teams",
        operation: "Teams",
        filter: "TeamFilter",
        extra_args: "",
        description: "Teams (`teams`).",
        fields: &[
            f("key", "key", Text),
            f("name", "name", Text),
            f("description", "description", Text),
            f("private", "private", Flag),
            f("timezone", "timezone", Text),
            f("cyclesEnabled", "cycles_enabled", Flag),
            f("parent", "parent_id", Ref),
        ],
    },
    Stream {
        name: "users",
        root: "users",
        operation: "Users",
        filter: "UserFilter",
        extra_args: "includeDisabled: true",
        description: "Users of the workspace, deactivated ones included (`users(includeDisabled: true)`).",
        fields: &[
            f("name", "name", Text),
            f("displayName", "display_name", Text),
            f("email", "email", Text),
            f("active", "active", Flag),
            f("admin", "admin", Flag),
            f("guest", "guest", Flag),
            f("timezone", "timezone", Text),
        ],
    },
    Stream {
        name: "workflow_states",
        root: "workflowStates",
        operation: "WorkflowStates",
        filter: "WorkflowStateFilter",
        extra_args: "",
        description: "Workflow states of every team (`workflowStates`).",
        fields: &[
            f("name", "name", Text),
            f("type", "type", Text),
            f("color", "color", Text),
            f("position", "position", Number),
            f("description", "description", Text),
            f("team", "team_id", Ref),
        ],
    },
    Stream {
        name: "labels",
        root: "issueLabels",
        operation: "IssueLabels",
        filter: "IssueLabelFilter",
        extra_args: "",
        description: "Issue labels, workspace-wide (team_id null) and per team (`issueLabels`).",
        fields: &[
            f("name", "name", Text),
            f("color", "color", Text),
            f("description", "description", Text),
            f("isGroup", "is_group", Flag),
            f("team", "team_id", Ref),
            f("parent", "parent_id", Ref),
        ],
    },
    Stream {
        name: "projects",
        root: "projects",
        operation: "Projects",
        filter: "ProjectFilter",
        extra_args: "",
        description: "Projects (`projects`).",
        fields: &[
            f("name", "name", Text),
            f("description", "description", Text),
            f("state", "state", Text),
            f("priority", "priority", Number),
            f("progress", "progress", Number),
            f("startDate", "start_date", Time),
            f("targetDate", "target_date", Time),
            f("startedAt", "started_at", Time),
            f("completedAt", "completed_at", Time),
            f("canceledAt", "canceled_at", Time),
            f("url", "url", Text),
            f("lead", "lead_id", Ref),
            f("creator", "creator_id", Ref),
            f("status", "status_id", Ref),
        ],
    },
    Stream {
        name: "cycles",
        root: "cycles",
        operation: "Cycles",
        filter: "CycleFilter",
        extra_args: "",
        description: "Cycles of every team (`cycles`).",
        fields: &[
            f("number", "number", Number),
            f("name", "name", Text),
            f("description", "description", Text),
            f("startsAt", "starts_at", Time),
            f("endsAt", "ends_at", Time),
            f("completedAt", "completed_at", Time),
            f("progress", "progress", Number),
            f("team", "team_id", Ref),
        ],
    },
    Stream {
        name: "issues",
        root: "issues",
        operation: "Issues",
        filter: "IssueFilter",
        extra_args: "",
        description: "Issues, archived ones included (`issues`).",
        fields: &[
            f("identifier", "identifier", Text),
            f("number", "number", Number),
            f("title", "title", Text),
            f("description", "description", Text),
            f("priority", "priority", Number),
            f("priorityLabel", "priority_label", Text),
            f("estimate", "estimate", Number),
            f("dueDate", "due_date", Time),
            f("startedAt", "started_at", Time),
            f("completedAt", "completed_at", Time),
            f("canceledAt", "canceled_at", Time),
            f("url", "url", Text),
            f("labelIds", "label_ids", Ids),
            f("team", "team_id", Ref),
            f("state", "state_id", Ref),
            f("assignee", "assignee_id", Ref),
            f("creator", "creator_id", Ref),
            f("project", "project_id", Ref),
            f("cycle", "cycle_id", Ref),
            f("parent", "parent_id", Ref),
        ],
    },
    Stream {
        name: "comments",
        root: "comments",
        operation: "Comments",
        filter: "CommentFilter",
        extra_args: "",
        description: "Comments (`comments`): on issues (issue_id) and elsewhere (issue_id null).",
        fields: &[
            f("body", "body", Text),
            f("url", "url", Text),
            f("editedAt", "edited_at", Time),
            f("issue", "issue_id", Ref),
            f("user", "user_id", Ref),
            f("parent", "parent_id", Ref),
        ],
    },
];

/// The stream named `name`.
pub fn stream(name: &str) -> Option<&'static Stream> {
    STREAMS.iter().find(|s| s.name == name)
}

/// The document `validate` sends: who the token is, and its workspace.
pub const VALIDATE: &str =
    "query Validate { viewer { id name email } organization { id name urlKey } }";

/// The document of a stream's pages. Paging, the filter and the page size are variables:
/// `$first: Int!`, `$after: String`, `$filter: <Type>Filter`; the order is `updatedAt` and
/// archived items are included (they are data, with `archivedAt`).
pub fn document(stream: &Stream) -> String {
    let mut selection = String::new();
    for field in stream.all_fields() {
        selection.push(' ');
        selection.push_str(field.graphql);
        if field.kind == Kind::Ref {
            selection.push_str(" { id }");
        }
    }
    let extra = if stream.extra_args.is_empty() {
        String::new()
    } else {
        format!(", {}", stream.extra_args)
    };
    format!(
        "query {op}($first: Int!, $after: String, $filter: {filter}) {{ {root}(first: $first, after: $after, filter: $filter, orderBy: updatedAt, includeArchived: true{extra}) {{ nodes {{{selection} }} pageInfo {{ hasNextPage endCursor }} }} }}",
        op = stream.operation,
        filter = stream.filter,
        root = stream.root,
    )
}

/// The complexity of one node by Linear's documented rule ("Rate limiting": each property
/// costs 0.1 point, each object 1 point): the node itself, its scalars, and each relation's
/// object and `id`.
pub fn node_complexity(stream: &Stream) -> f64 {
    1.0 + stream
        .all_fields()
        .map(|f| if f.kind == Kind::Ref { 1.1 } else { 0.1 })
        .sum::<f64>()
}

/// The complexity of a page of `first` nodes: the connection object, `first` times a node
/// (connections multiply their children by `first`), and `pageInfo` (an object, two
/// properties). Rounded up, as Linear does.
pub fn complexity(stream: &Stream, first: u32) -> f64 {
    (1.0 + f64::from(first) * node_complexity(stream) + 1.2).ceil()
}

/// The page size of a stream: the largest `first` (at most `cap`, and [`MAX_PAGE`]) whose
/// [`complexity`] fits [`COMPLEXITY_BUDGET`]; at least 1.
pub fn page_size(stream: &Stream, cap: u32) -> u32 {
    let cap = cap.clamp(1, MAX_PAGE);
    let fits = ((COMPLEXITY_BUDGET - 2.2) / node_complexity(stream)).floor();
    // `fits` is finite and positive: the node complexity is at least 1.
    let fits = if fits >= f64::from(cap) {
        cap
    } else {
        fits.max(1.0) as u32
    };
    fits.clamp(1, cap)
}

/// The next page size after a "query too complex" answer: half, at least 1; `None` when the
/// page was already 1 (nothing smaller to try).
pub fn shrink(first: u32) -> Option<u32> {
    (first > 1).then(|| (first / 2).max(1))
}

/// The filter of an incremental page: `{updatedAt: {gte: since}}`. `gte`, not `gt`: an item
/// updated in the same millisecond as the last one seen is read again rather than skipped
/// (see [`crate::cursor`] for how the ones already emitted are recognised).
pub fn filter(since: Option<&str>) -> Option<Value> {
    since.map(|t| json!({"updatedAt": {"gte": t}}))
}

/// The JSON body of one page request, exactly as sent: `{query, variables}`; `after` and
/// `filter` are left out when absent.
pub fn page_request(
    stream: &Stream,
    first: u32,
    after: Option<&str>,
    since: Option<&str>,
) -> Value {
    let mut variables = Map::new();
    variables.insert("first".into(), json!(first));
    if let Some(after) = after {
        variables.insert("after".into(), json!(after));
    }
    if let Some(filter) = filter(since) {
        variables.insert("filter".into(), filter);
    }
    json!({"query": document(stream), "variables": variables})
}

/// The body `validate` sends.
pub fn validate_request() -> Value {
    json!({"query": VALIDATE})
}

/// Every request body the connector can send, named: `validate`, then for every stream each
/// page size it may use (the chosen one and every halving down to 1), with and without an
/// `after` cursor and an `updatedAt` filter. For the contract check.
pub fn all_requests(cap: u32) -> Vec<(String, Value)> {
    let mut out = vec![("validate".to_string(), validate_request())];
    for stream in &STREAMS {
        let mut sizes = vec![page_size(stream, cap)];
        while let Some(next) = sizes.last().copied().and_then(shrink) {
            sizes.push(next);
        }
        for first in sizes {
            for after in [None, Some("c2f6c67a-0000-4000-8000-000000000000")] {
                for since in [None, Some("2024-05-01T10:00:00.123Z")] {
                    let name = format!(
                        "{}-first{first}{}{}",
                        stream.name,
                        if after.is_some() { "-after" } else { "" },
                        if since.is_some() { "-since" } else { "" }
                    );
                    out.push((name, page_request(stream, first, after, since)));
                }
            }
        }
    }
    out
}

/// One GraphQL error of an answer, as Linear shapes it: `message` and `extensions` with
/// `code` (`AUTHENTICATION_ERROR`, `FORBIDDEN`, `RATELIMITED`, `INPUT_ERROR`, ...), `type`
/// (`authentication error`, `forbidden`, `ratelimited`, `invalid input`, ...) and
/// `userPresentableMessage`.
#[derive(Debug, Default, Deserialize)]
pub struct GraphqlError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub extensions: Option<Extensions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extensions {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub user_presentable_message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Envelope<'a> {
    /// Borrowed from the answer: a page is read from it without a tree of its nodes.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    errors: Option<Vec<GraphqlError>>,
}

/// What a failed answer means.
#[derive(Debug)]
pub enum Failure {
    /// "Query too complex" (HTTP 400, code `INPUT_ERROR`, message `Query too complex`,
    /// `userPresentableMessage` "The query is too complex. Complexity: N. Maximum allowed
    /// complexity: 10000."): retry with a smaller page.
    TooComplex(String),
    /// Anything else: the error to fail with.
    Error(ConnectorError),
}

/// What kind of error a GraphQL error is, by its `extensions.code` or, failing that, the
/// `extensions.type` Linear's SDK reads (`packages/sdk/src/error.ts`).
pub fn error_code(error: &GraphqlError) -> Option<ErrorCode> {
    let ext = error.extensions.as_ref()?;
    let code = ext.code.as_deref().unwrap_or_default();
    let kind = ext.kind.as_deref().unwrap_or_default();
    if code == "AUTHENTICATION_ERROR" || kind == "authentication error" {
        Some(ErrorCode::InvalidCredentials)
    } else if code == "FORBIDDEN" || kind == "forbidden" {
        Some(ErrorCode::InsufficientScope)
    } else if code == "RATELIMITED" || kind == "ratelimited" {
        Some(ErrorCode::RateLimited)
    } else {
        None
    }
}

/// Whether a GraphQL error is Linear's "Query too complex".
pub fn is_too_complex(error: &GraphqlError) -> bool {
    let mentions =
        |s: Option<&str>| s.is_some_and(|s| s.to_ascii_lowercase().contains("too complex"));
    mentions(error.message.as_deref())
        || mentions(
            error
                .extensions
                .as_ref()
                .and_then(|e| e.user_presentable_message.as_deref()),
        )
}

/// A GraphQL error's most readable text on one line of at most 300 characters.
pub fn describe(error: &GraphqlError) -> String {
    let text = error
        .extensions
        .as_ref()
        .and_then(|e| e.user_presentable_message.as_deref())
        .or(error.message.as_deref())
        .unwrap_or("no message");
    one_line(text)
}

/// `text` on one line (whitespace runs become one space), at most 300 characters.
pub fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(300).collect()
}

/// Reads an answer: its `data` when it has no `errors` and a 2xx status, else what went wrong.
/// `errors` are checked whatever the status (Linear sends them with 200 and 400). Of several
/// errors the most telling one is reported: credentials, then access, then rate limit, then
/// complexity, then the first. Without a GraphQL error the status decides (401
/// `invalid-credentials`, 403 `insufficient-scope`, 429 `rate-limited`, 5xx `unreachable`).
/// `subject` names what was read, for the message.
pub fn read_answer<'a>(
    status: u16,
    body: &'a [u8],
    subject: &str,
) -> Result<&'a RawValue, Failure> {
    let envelope: Option<Envelope<'a>> = serde_json::from_slice(body).ok();
    let errors = envelope
        .as_ref()
        .and_then(|e| e.errors.as_deref())
        .unwrap_or_default();
    for wanted in [
        ErrorCode::InvalidCredentials,
        ErrorCode::InsufficientScope,
        ErrorCode::RateLimited,
    ] {
        if let Some(e) = errors.iter().find(|e| error_code(e) == Some(wanted)) {
            let detail = describe(e);
            let message = match wanted {
                ErrorCode::InvalidCredentials => {
                    format!("Linear rejected the credentials (HTTP {status}: {detail})")
                }
                ErrorCode::InsufficientScope => {
                    format!("the token may not read {subject} (HTTP {status}: {detail})")
                }
                _ => format!(
                    "Linear's rate limit is still spent after the host's waits, reading {subject} (HTTP {status}: {detail})"
                ),
            };
            return Err(Failure::Error(ConnectorError::new(wanted, message)));
        }
    }
    if let Some(e) = errors.iter().find(|e| is_too_complex(e)) {
        return Err(Failure::TooComplex(describe(e)));
    }
    if let Some(e) = errors.first() {
        return Err(Failure::Error(ConnectorError::internal(format!(
            "Linear answered an error reading {subject} (HTTP {status}: {})",
            describe(e)
        ))));
    }
    let error = |code: ErrorCode, what: &str| {
        Err(Failure::Error(ConnectorError::new(
            code,
            format!("{what} reading {subject} (HTTP {status})"),
        )))
    };
    match status {
        200..=299 => match envelope.and_then(|e| e.data) {
            Some(data) if data.get().starts_with('{') => Ok(data),
            _ => error(ErrorCode::Internal, "Linear answered no data"),
        },
        401 => error(
            ErrorCode::InvalidCredentials,
            "Linear rejected the credentials",
        ),
        403 => error(ErrorCode::InsufficientScope, "Linear refused access"),
        429 => error(ErrorCode::RateLimited, "Linear's rate limit is still spent"),
        500..=599 => error(ErrorCode::Unreachable, "Linear kept failing"),
        _ => error(ErrorCode::Internal, "unexpected answer"),
    }
}

/// One page of a connection: its nodes (fields as JSON text, borrowed from the answer) and
/// where the next one starts.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<'a> {
    #[serde(borrow)]
    pub nodes: Vec<Fields<'a>>,
    pub page_info: PageInfo,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    pub has_next_page: bool,
    #[serde(default)]
    pub end_cursor: Option<String>,
}

/// The page of `stream` in an answer's `data`.
pub fn page<'a>(stream: &Stream, data: &'a RawValue) -> Result<Page<'a>, ConnectorError> {
    let unexpected = |e: serde_json::Error| {
        ConnectorError::internal(format!("unexpected {} page from Linear: {e}", stream.name))
    };
    let connection = Fields::parse(data.get())
        .map_err(unexpected)?
        .get(stream.root)
        .filter(|c| c.get() != "null")
        .ok_or_else(|| {
            ConnectorError::internal(format!("Linear's answer has no {}", stream.root))
        })?;
    serde_json::from_str(connection.get()).map_err(unexpected)
}

/// A node as a record (JSON object text): each field under its column, as Linear wrote it; a
/// relation becomes its id (or null); a missing field null.
pub fn record(stream: &Stream, node: &Fields<'_>) -> String {
    let mut out = RecordWriter::with_capacity(node.text_len() + 16 * stream.fields.len());
    for field in stream.all_fields() {
        let value = node.get(field.graphql);
        match (field.kind, value) {
            (Kind::Ref, Some(related)) => {
                let id = Fields::parse(related.get()).ok().and_then(|r| r.get("id"));
                out.raw(field.column, id.map_or("null", RawValue::get));
            }
            (_, Some(value)) => out.raw(field.column, value.get()),
            (_, None) => out.raw(field.column, "null"),
        }
    }
    out.finish()
}

/// The stream's declaration: primary key `id`, cursor `updated_at`, a JSON Schema of its
/// columns.
pub fn spec(stream: &Stream) -> StreamSpec {
    let properties: Vec<(&str, Value)> = stream
        .all_fields()
        .map(|f| {
            let schema = match f.kind {
                Kind::Text | Kind::Ref => json!({"type": ["string", "null"]}),
                Kind::Time if f.graphql.ends_with("Date") => {
                    json!({"type": ["string", "null"], "format": "date"})
                }
                Kind::Time => json!({"type": ["string", "null"], "format": "date-time"}),
                Kind::Number => json!({"type": ["number", "null"]}),
                Kind::Flag => json!({"type": ["boolean", "null"]}),
                Kind::Ids => json!({"type": ["array", "null"], "items": {"type": "string"}}),
            };
            (f.column, schema)
        })
        .collect();
    StreamSpec::new(stream.name)
        .description(format!(
            "{} Incremental on updated_at; archived items are included, with archived_at.",
            stream.description
        ))
        .primary_key(&["id"])
        .cursor_field("updated_at")
        .json_schema(&sluice_sdk::schema::object(&["id"], properties))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues() -> &'static Stream {
        stream("issues").expect("issues")
    }

    #[test]
    fn documents_select_every_field_and_relations_by_id() {
        let doc = document(issues());
        assert!(doc.starts_with("query Issues($first: Int!, $after: String, $filter: IssueFilter) { issues(first: $first, after: $after, filter: $filter, orderBy: updatedAt, includeArchived: true) { nodes { id createdAt updatedAt archivedAt identifier"), "{doc}");
        assert!(
            doc.contains(" labelIds team { id } state { id } assignee { id }"),
            "{doc}"
        );
        assert!(
            doc.ends_with("pageInfo { hasNextPage endCursor } } }"),
            "{doc}"
        );
        let users = document(stream("users").expect("users"));
        assert!(
            users.contains("includeArchived: true, includeDisabled: true)"),
            "{users}"
        );
        let mut names: Vec<&str> = STREAMS.iter().map(|s| s.name).collect();
        names.dedup();
        assert_eq!(names.len(), 8);
    }

    #[test]
    fn page_sizes_come_from_the_complexity_budget() {
        // issues: 1 + 17 scalars × 0.1 + 7 relations × 1.1 = 10.4 points a node.
        assert!((node_complexity(issues()) - 10.4).abs() < 1e-9);
        assert_eq!(complexity(issues(), 10), 107.0);
        // 250 issues cost 2,603: under the budget, so the page is Linear's largest.
        assert_eq!(page_size(issues(), 250), 250);
        assert!(complexity(issues(), 250) <= COMPLEXITY_BUDGET);
        assert_eq!(page_size(issues(), 40), 40, "a configured cap wins");
        assert_eq!(page_size(issues(), 0), 1);
        assert_eq!(page_size(issues(), 10_000), MAX_PAGE);
        for s in &STREAMS {
            let first = page_size(s, MAX_PAGE);
            assert!(complexity(s, first) <= COMPLEXITY_BUDGET, "{}", s.name);
            assert!(complexity(s, first) < MAX_QUERY_COMPLEXITY, "{}", s.name);
        }
        assert_eq!(shrink(250), Some(125));
        assert_eq!(shrink(3), Some(1));
        assert_eq!(shrink(1), None);
    }

    #[test]
    fn page_requests_carry_paging_and_the_filter_as_variables() {
        let body = page_request(issues(), 50, Some("abc"), Some("2024-01-01T00:00:00.000Z"));
        assert_eq!(
            body["variables"],
            json!({"first": 50, "after": "abc", "filter": {"updatedAt": {"gte": "2024-01-01T00:00:00.000Z"}}})
        );
        let body = page_request(issues(), 50, None, None);
        assert_eq!(body["variables"], json!({"first": 50}));
        let all = all_requests(MAX_PAGE);
        // validate + per stream: 250 → 125 → 62 → 31 → 15 → 7 → 3 → 1 (8 sizes) × 4 variants.
        assert_eq!(all.len(), 1 + 8 * 8 * 4);
        let mut names: Vec<&String> = all.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "every request has its own name");
    }

    fn failure(status: u16, body: &str) -> Failure {
        match read_answer(status, body.as_bytes(), "issues") {
            Ok(data) => panic!("no failure: {data}"),
            Err(f) => f,
        }
    }

    fn code(status: u16, body: &str) -> (ErrorCode, String) {
        match failure(status, body) {
            Failure::Error(e) => (e.code, e.message),
            Failure::TooComplex(m) => panic!("too complex: {m}"),
        }
    }

    #[test]
    fn answers_map_to_error_codes() {
        let auth = r#"{"errors":[{"message":"Authentication required, not authenticated","extensions":{"type":"authentication error","code":"AUTHENTICATION_ERROR","statusCode":401,"userError":true,"userPresentableMessage":"You need to authenticate to access this operation."}}]}"#;
        let (c, m) = code(400, auth);
        assert_eq!(c, ErrorCode::InvalidCredentials);
        assert_eq!(
            m,
            "Linear rejected the credentials (HTTP 400: You need to authenticate to access this operation.)"
        );
        let forbidden = r#"{"data":null,"errors":[{"message":"Forbidden","path":["organization"],"extensions":{"code":"FORBIDDEN","type":"forbidden","userPresentableMessage":"You don't have\naccess."}}]}"#;
        let (c, m) = code(200, forbidden);
        assert_eq!(c, ErrorCode::InsufficientScope);
        assert!(
            m.contains("may not read issues") && !m.contains('\n'),
            "{m}"
        );
        let limited = r#"{"errors":[{"message":"Rate limit exceeded","extensions":{"code":"RATELIMITED","type":"ratelimited"}}]}"#;
        assert_eq!(code(400, limited).0, ErrorCode::RateLimited);
        assert_eq!(
            code(200, limited).0,
            ErrorCode::RateLimited,
            "errors on 200 count"
        );
        // By type alone (Linear's SDK reads extensions.type).
        let typed = r#"{"errors":[{"message":"x","extensions":{"type":"forbidden"}}]}"#;
        assert_eq!(code(200, typed).0, ErrorCode::InsufficientScope);
        // Credentials win over the rest.
        let both = r#"{"errors":[{"message":"a","extensions":{"code":"INPUT_ERROR"}},{"message":"b","extensions":{"code":"AUTHENTICATION_ERROR"}}]}"#;
        assert_eq!(code(400, both).0, ErrorCode::InvalidCredentials);
        let other =
            r#"{"errors":[{"message":"Entity not found","extensions":{"code":"INVALID_INPUT"}}]}"#;
        assert_eq!(code(200, other).0, ErrorCode::Internal);
        assert_eq!(code(401, "").0, ErrorCode::InvalidCredentials);
        assert_eq!(code(403, "<html>").0, ErrorCode::InsufficientScope);
        assert_eq!(code(429, "").0, ErrorCode::RateLimited);
        assert_eq!(code(502, "bad gateway").0, ErrorCode::Unreachable);
        assert_eq!(code(200, r#"{"data":null}"#).0, ErrorCode::Internal);
        assert_eq!(code(200, "not json").0, ErrorCode::Internal);
        let data = read_answer(200, br#"{"data":{"issues":{}}}"#, "issues").expect("data");
        assert_eq!(data.get(), r#"{"issues":{}}"#);
    }

    #[test]
    fn query_too_complex_is_recognised_in_linears_shape() {
        let body = r#"{"errors":[{"message":"Query too complex","extensions":{"type":"invalid input","code":"INPUT_ERROR","statusCode":400,"userError":true,"userPresentableMessage":"The query is too complex. Complexity: 12304.999999999998. Maximum allowed complexity: 10000.","http":{"status":400}}}]}"#;
        match failure(400, body) {
            Failure::TooComplex(m) => {
                assert!(m.contains("Maximum allowed complexity: 10000"), "{m}")
            }
            Failure::Error(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn graphql_field_names_are_distinct_per_stream() {
        // Each field becomes one column: a name listed twice would make a repeated key.
        for stream in &STREAMS {
            let mut names = std::collections::BTreeSet::new();
            for field in stream.all_fields() {
                assert!(
                    names.insert(field.graphql),
                    "{}.{}",
                    stream.name,
                    field.graphql
                );
            }
        }
    }

    #[test]
    fn nodes_become_flat_records() {
        let node = r#"{
            "id": "i1", "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-02T00:00:00.000Z",
            "archivedAt": null, "identifier": "ENG-1", "title": "T\u00e9", "labelIds": ["l1", "l2"],
            "team": {"id": "t1", "name": "x"}, "assignee": null, "state": {"id": "s1"},
            "estimate": 2.50, "project": "not an object", "creator": {"name": "no id"}
        }"#;
        let text = record(issues(), &Fields::parse(node).expect("node"));
        let r: serde_json::Map<String, Value> = serde_json::from_str(&text).expect("a JSON object");
        assert_eq!(r["id"], "i1");
        assert_eq!(r["team_id"], "t1");
        assert_eq!(r["assignee_id"], Value::Null);
        assert_eq!(r["state_id"], "s1");
        assert_eq!(
            r["project_id"],
            Value::Null,
            "a relation that is not an object"
        );
        assert_eq!(r["creator_id"], Value::Null, "a relation without an id");
        assert_eq!(r["label_ids"], json!(["l1", "l2"]));
        assert_eq!(r["updated_at"], "2024-01-02T00:00:00.000Z");
        assert_eq!(r["title"], "Té");
        assert_eq!(
            r["cycle_id"],
            Value::Null,
            "a field Linear left out is null"
        );
        assert!(!r.contains_key("team"));
        assert_eq!(r.len(), issues().all_fields().count());
        // Values keep Linear's text: the number is not rewritten, the escape not decoded.
        assert!(text.contains(r#""estimate":2.50"#), "{text}");
        assert!(text.contains(r#""title":"T\u00e9""#), "{text}");
        let spec = spec(issues());
        assert_eq!(spec.primary_key, ["id"]);
        assert_eq!(spec.cursor_field.as_deref(), Some("updated_at"));
        let schema: Value = serde_json::from_str(&spec.json_schema).expect("schema");
        assert_eq!(schema["properties"]["due_date"]["format"], "date");
        assert_eq!(schema["properties"]["label_ids"]["items"]["type"], "string");
    }
}
