//! `slack`: channels, users, messages and thread replies from the Slack Web API.
//!
//! Every method is called as `GET {api_url}/{method}?params`, the `token` secret injected by
//! the host as `Authorization: Bearer …`. Slack reports errors as HTTP 200 with
//! `{"ok": false, "error": "..."}`, so `ok` is always checked. Listings follow
//! `response_metadata.next_cursor` until it is empty (a page shorter than `limit` does not mean
//! the end). The host waits out 429 + `Retry-After`; a 429 it hands back is `rate-limited`.
//!
//! `messages` keeps one cursor per channel, `{"channels": {"C123": "<newest ts>"}}`, sent as
//! `oldest` (exclusive). History pages come newest first, so a channel's cursor advances when
//! its history is read to the end. `threads` re-reads the parents posted within
//! `threads_lookback_days` before its own per-channel cursor (the newest reply synced) and
//! fetches the replies of those whose `latest_reply` is newer than that cursor: a reply to a
//! thread older than the look-back window is missed. One history pass serves both streams,
//! and `messages` uses the same window: a message posted before its channel's cursor but edited
//! or replied to after it (`edited.ts`, `latest_reply`) is emitted again.
//!
//! Scopes: `auth.test`'s `x-oauth-scopes` header says what the token has; each stream needs
//! the list scope of every configured conversation type (`channels:read`, `groups:read`, ...),
//! `messages` and `threads` also their history scope, `users` `users:read` ([`parts`]).
//! `validate` lists the streams the token cannot read whole; a sync skips what it cannot read
//! (conversation types, channels, users) with a warning, unless `required_streams` names the
//! stream, and fails if none of the selected streams can be read at all ([`Access`]).

mod canon;
mod time;

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use sluice_sdk::fields::Scanned;
use sluice_sdk::http::{Request, Response};
use sluice_sdk::paging::LoopGuard;
use sluice_sdk::records::Batcher;
use sluice_sdk::schema::object as schema;
use sluice_sdk::serde_json::{Map, Value};
use sluice_sdk::{
    Connector, ConnectorError, Manifest, Result, StreamSpec, SyncRequest, json, log, parse_config,
};

const TOKEN: &str = "token";
const DEFAULT_API_URL: &str = "https://slack.com/api";
const CHANNELS: &str = "channels";
const USERS: &str = "users";
const MESSAGES: &str = "messages";
const THREADS: &str = "threads";
const CHANNEL_TYPES: [&str; 4] = ["public_channel", "private_channel", "mpim", "im"];
const STREAMS: [&str; 4] = [CHANNELS, USERS, MESSAGES, THREADS];
const LEGACY_SCOPES: [&str; 2] = ["read", "client"];

struct Slack;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    channel_types: Option<String>,
    #[serde(default)]
    threads_lookback_days: Option<u32>,
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    page_limit: Option<u32>,
    #[serde(default)]
    required_streams: Vec<String>,
}

/// A checked config.
#[derive(Debug)]
struct Config {
    /// API root without a trailing slash.
    api: String,
    channel_types: String,
    lookback_secs: i64,
    /// `start_date` as a Slack timestamp: the `oldest` of a channel with no state.
    start: Option<String>,
    limit: String,
    /// Streams the token must be able to read whole: `validate` answers `insufficient-scope`
    /// and `sync` fails instead of skipping what it cannot read.
    required: Vec<String>,
}

impl Config {
    fn load(config: &Value) -> Result<Self> {
        let raw: RawConfig = parse_config(config)?;
        let invalid = |m: String| Err(ConnectorError::invalid_config(m));
        let api = raw.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        sluice_sdk::http::check_base_url("api_url", api)?;
        let types = raw
            .channel_types
            .as_deref()
            .unwrap_or("public_channel,private_channel");
        let types: Vec<&str> = types.split(',').map(str::trim).collect();
        if let Some(bad) = types.iter().find(|t| !CHANNEL_TYPES.contains(t)) {
            return invalid(format!(
                "channel type {bad:?} is not one of {}",
                CHANNEL_TYPES.join(", ")
            ));
        }
        let limit = raw.page_limit.unwrap_or(200);
        if !(1..=1000).contains(&limit) {
            return invalid(format!("page_limit {limit} must be between 1 and 1000"));
        }
        let start = match raw.start_date.as_deref() {
            None => None,
            Some(s) => match time::parse_iso(s) {
                Some(epoch) => Some(time::ts_of(epoch)),
                None => return invalid(format!("start_date {s:?} is not an ISO 8601 date")),
            },
        };
        if let Some(bad) = raw
            .required_streams
            .iter()
            .find(|s| !STREAMS.contains(&s.as_str()))
        {
            return invalid(format!(
                "required_streams: {bad:?} is not one of {}",
                STREAMS.join(", ")
            ));
        }
        Ok(Self {
            api: api.trim_end_matches('/').to_string(),
            channel_types: types.join(","),
            lookback_secs: i64::from(raw.threads_lookback_days.unwrap_or(7)) * 86_400,
            start,
            limit: limit.to_string(),
            required: raw.required_streams,
        })
    }

    fn requires(&self, stream: &str) -> bool {
        self.required.iter().any(|s| s == stream)
    }

    /// The configured conversation types.
    fn types(&self) -> impl Iterator<Item = &str> {
        self.channel_types.split(',')
    }

    /// Sends a method call; a 429 the host hands back is `rate-limited`, other non-2xx the
    /// SDK's mapping.
    fn send(&self, method: &str, params: &[(&str, &str)]) -> Result<Response> {
        let mut request = Request::get(format!("{}/{method}", self.api));
        for (name, value) in params {
            request = request.query(name, value);
        }
        let response = request.bearer_secret(TOKEN).send()?;
        if response.status == 429 {
            return Err(ConnectorError::rate_limited(format!(
                "Slack still rate limits {method} after the host's waits (HTTP 429)"
            )));
        }
        response.error_for_status()
    }

    /// Calls a method; `Ok(Err(body))` when Slack answered `ok: false`.
    fn try_call(
        &self,
        method: &str,
        params: &[(&str, &str)],
    ) -> Result<core::result::Result<Value, Value>> {
        Ok(answer(self.send(method, params)?.json()?))
    }

    /// `auth.test`: the identity, the token's scopes from the `x-oauth-scopes` header Slack
    /// sends with every answer (`channels:read,users:read`; `None` if absent), and Slack's
    /// clock (`Date`) as a Slack timestamp.
    fn auth(&self) -> Result<Auth> {
        let response = self.send("auth.test", &[])?;
        let scopes = response.header("x-oauth-scopes").map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        });
        let now = response
            .header("date")
            .and_then(time::parse_http_date)
            .map(|t| sluice_sdk::time::clamp_to_now(t, "Slack's Date header"))
            .map(time::ts_of);
        let body = answer(response.json()?).map_err(|body| slack_error("auth.test", &body))?;
        Ok(Auth { body, scopes, now })
    }

    /// Reads every page of a listing. `page` gets the JSON text of each page's `field` array
    /// (its items: `channels`, `members`, `messages`) and returns whether to go on. Returns
    /// Slack's answer if the method answered one of the `tolerated` errors.
    ///
    /// An `ok` page is scanned ([`Scanned`]), not parsed: the connector reads its `ok`, its
    /// items and `response_metadata`, and what it does not read is not checked. Any other
    /// answer is parsed whole, as before.
    fn paginate(
        &self,
        method: &str,
        params: &[(&str, &str)],
        tolerated: &[&str],
        field: &str,
        mut page: impl FnMut(&str) -> Result<bool>,
    ) -> Result<Option<Value>> {
        let mut cursor = String::new();
        let mut guard = LoopGuard::new(format!("Slack {method}"));
        loop {
            let mut all = params.to_vec();
            all.push(("limit", &self.limit));
            if !cursor.is_empty() {
                all.push(("cursor", &cursor));
            }
            let response = self.send(method, &all)?;
            let scanned = std::str::from_utf8(&response.body)
                .ok()
                .and_then(|text| Scanned::parse(text).ok());
            let fields = match scanned {
                Some(fields) if fields.get("ok") == Some("true") => fields,
                // `ok: false`, or not an object (then `json` says why, or it is an answer
                // without `ok: true`).
                _ => {
                    let body: Value = response.json()?;
                    if tolerated.contains(&error_name(&body)) {
                        return Ok(Some(body));
                    }
                    return Err(slack_error(method, &body));
                }
            };
            let items = fields
                .get(field)
                .filter(|items| items.starts_with('['))
                .ok_or_else(|| no_items(field))?;
            let empty = items[1..]
                .trim_start_matches([' ', '\n', '\r', '\t'])
                .starts_with(']');
            guard.page(usize::from(!empty), &[field.as_bytes(), items.as_bytes()])?;
            if !page(items)? {
                return Ok(None);
            }
            let next = match fields.get("response_metadata") {
                Some(meta) => sluice_sdk::serde_json::from_str::<Value>(meta)?
                    .get("next_cursor")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_default(),
                None => String::new(),
            };
            if next.is_empty() {
                return Ok(None);
            }
            // A cursor followed before, or new cursors to the same records: the upstream goes
            // round in circles, and the run fails instead of reading until its deadline.
            guard.follow(&next)?;
            cursor = next;
        }
    }
}

/// A Slack `ts` cursor, held at the host's clock when it is later
/// ([`sluice_sdk::time::clamp_to_now`]): a message dated in the future must not make every
/// later run skip what is posted until then.
fn clamp_ts(ts: String, subject: &str) -> String {
    match time::ts_key(&ts) {
        Some((secs, _)) => match sluice_sdk::time::clamp_to_now(secs, subject) {
            held if held < secs => time::ts_of(held),
            _ => ts,
        },
        None => ts,
    }
}

/// What `auth.test` told.
struct Auth {
    body: Value,
    scopes: Option<BTreeSet<String>>,
    /// Slack's time when it answered (`Date`, to the second): every change made before it is
    /// visible to the calls that follow.
    now: Option<String>,
}

/// `Ok(body)` if Slack answered `ok: true`, else `Err(body)`.
fn answer(body: Value) -> core::result::Result<Value, Value> {
    if body.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(body)
    } else {
        Err(body)
    }
}

fn error_name(body: &Value) -> &str {
    body.get("error")
        .and_then(Value::as_str)
        .unwrap_or("unknown_error")
}

/// The error an `ok: false` answer means.
fn slack_error(method: &str, body: &Value) -> ConnectorError {
    let error = error_name(body);
    match error {
        "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked" | "token_expired"
        | "no_permission" | "ekm_access_denied" => {
            ConnectorError::invalid_credentials(format!("Slack rejected the token: {error}"))
        }
        "missing_scope" => {
            let needed = body
                .get("needed")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            ConnectorError::insufficient_scope(format!(
                "the token lacks the scope {needed} that {method} needs (missing_scope)"
            ))
        }
        "ratelimited" => {
            ConnectorError::rate_limited(format!("Slack rate limits {method} (ratelimited)"))
        }
        "fatal_error" | "internal_error" | "service_unavailable" | "request_timeout" => {
            ConnectorError::unreachable(format!("Slack failed on {method}: {error}"))
        }
        _ => ConnectorError::internal(format!("{method} failed: {error}")),
    }
}

/// The scopes Slack documents for listing a conversation type (`conversations.list`) and for
/// reading its history (`conversations.history` and `conversations.replies`).
fn type_scopes(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "public_channel" => ("channels:read", "channels:history"),
        "private_channel" => ("groups:read", "groups:history"),
        "mpim" => ("mpim:read", "mpim:history"),
        _ => ("im:read", "im:history"),
    }
}

/// A conversation's type, from the flags of its `conversations.list` object.
fn channel_kind(c: &Value) -> &'static str {
    let flag = |name: &str| c.get(name).and_then(Value::as_bool) == Some(true);
    if flag("is_im") {
        "im"
    } else if flag("is_mpim") {
        "mpim"
    } else if flag("is_private") || flag("is_group") {
        "private_channel"
    } else {
        "public_channel"
    }
}

/// The scopes each part of a stream needs: one part per configured conversation type (its
/// list, and for `messages` and `threads` its history), or the one list of users.
fn parts(config: &Config, stream: &str) -> Vec<Vec<&'static str>> {
    match stream {
        USERS => vec![vec!["users:read"]],
        CHANNELS => config.types().map(|t| vec![type_scopes(t).0]).collect(),
        _ => config
            .types()
            .map(|t| {
                let (read, history) = type_scopes(t);
                vec![read, history]
            })
            .collect(),
    }
}

/// A stream the token cannot read whole.
#[derive(Debug, PartialEq)]
struct Unreadable {
    stream: &'static str,
    /// The scopes it lacks, in the order of the stream's parts.
    missing: Vec<&'static str>,
    /// Some part of it is readable (e.g. public channels but not private ones).
    partial: bool,
}

/// What the token may read, as far as known: from `x-oauth-scopes`, and from the `needed`
/// of the `missing_scope` answers met so far.
struct Access<'a> {
    config: &'a Config,
    granted: Option<BTreeSet<String>>,
    missing: BTreeSet<String>,
    /// The streams that matter: every stream for `validate`, the selected ones for `sync`.
    streams: Vec<&'static str>,
}

impl<'a> Access<'a> {
    fn new(
        config: &'a Config,
        granted: Option<BTreeSet<String>>,
        streams: Vec<&'static str>,
    ) -> Self {
        // Legacy tokens' umbrella scopes (`read`, `client`) cover the granular ones: their
        // header says nothing this map can use, so they are treated as unknown.
        let granted = granted.filter(|g| !LEGACY_SCOPES.iter().any(|legacy| g.contains(*legacy)));
        let missing = match &granted {
            Some(granted) => STREAMS
                .iter()
                .flat_map(|s| parts(config, s).into_iter().flatten())
                .filter(|scope| !granted.contains(*scope))
                .map(str::to_string)
                .collect(),
            None => BTreeSet::new(),
        };
        Self {
            config,
            granted,
            missing,
            streams,
        }
    }

    fn lacks(&self, scope: &str) -> bool {
        self.missing.contains(scope)
    }

    /// Records the `needed` scopes of a `missing_scope` answer; an error if they are not new
    /// (nothing to route around).
    fn note<'b>(&mut self, method: &str, body: &'b Value) -> Result<&'b str> {
        let needed = body.get("needed").and_then(Value::as_str).unwrap_or("");
        let mut learned = false;
        for scope in needed.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            learned |= self.missing.insert(scope.to_string());
        }
        if !learned {
            return Err(slack_error(method, body));
        }
        Ok(needed)
    }

    /// Slack answered `missing_scope`: [`Access::note`], warn, then [`Access::judge`].
    fn learn(&mut self, method: &str, body: &Value) -> Result<()> {
        let needed = self.note(method, body)?;
        log::warn(
            "the token lacks a scope; what needs it is skipped",
            &[("method", method), ("missing_scope", needed)],
        );
        self.judge()
    }

    /// The streams that matter and lack a scope.
    fn unreadable(&self) -> Vec<Unreadable> {
        let mut out = Vec::new();
        for &stream in &self.streams {
            let (mut missing, mut partial) = (Vec::new(), false);
            for part in parts(self.config, stream) {
                let lacks: Vec<&'static str> = part.into_iter().filter(|s| self.lacks(s)).collect();
                partial |= lacks.is_empty();
                for scope in lacks {
                    if !missing.contains(&scope) {
                        missing.push(scope);
                    }
                }
            }
            if !missing.is_empty() {
                out.push(Unreadable {
                    stream,
                    missing,
                    partial,
                });
            }
        }
        out
    }

    /// `insufficient-scope` if a required stream lacks a scope, or if no stream that matters
    /// can be read at all.
    fn judge(&self) -> Result<()> {
        let unreadable = self.unreadable();
        let has = match &self.granted {
            Some(g) if g.is_empty() => " (it has no scope)".to_string(),
            Some(g) => format!(
                " (it has {})",
                g.iter().cloned().collect::<Vec<_>>().join(",")
            ),
            None => String::new(),
        };
        if let Some(u) = unreadable.iter().find(|u| self.config.requires(u.stream)) {
            return Err(ConnectorError::insufficient_scope(format!(
                "required stream {} cannot be read{}: the token lacks {}{has}",
                u.stream,
                if u.partial { " whole" } else { "" },
                u.missing.join(",")
            )));
        }
        let none = !self.streams.is_empty()
            && self
                .streams
                .iter()
                .all(|s| unreadable.iter().any(|u| u.stream == *s && !u.partial));
        if none {
            let each: Vec<String> = unreadable
                .iter()
                .map(|u| format!("{} needs {}", u.stream, u.missing.join(",")))
                .collect();
            return Err(ConnectorError::insufficient_scope(format!(
                "the token can read none of the streams: {}{has}",
                each.join("; ")
            )));
        }
        Ok(())
    }

    /// `unreadable_streams` of the `validate` account.
    fn json(&self) -> Value {
        let list: Vec<Value> = self
            .unreadable()
            .iter()
            .map(|u| json!({"stream": u.stream, "missing_scope": u.missing.join(","), "partial": u.partial}))
            .collect();
        Value::Array(list)
    }
}

/// The items of a listing page (channels, users: few) as trees.
fn parse_items(items: &str, method: &str) -> Result<Vec<Value>> {
    sluice_sdk::serde_json::from_str(items).map_err(|e| {
        ConnectorError::internal(format!(
            "the upstream's answer to {method} is not the JSON expected: {e}"
        ))
    })
}

/// An `ok` answer without its items array is an unexpected response, not an empty listing
/// (Slack's methods always answer the array, empty or not).
fn no_items(field: &str) -> ConnectorError {
    ConnectorError::internal(format!(
        "Slack answered ok without a `{field}` array: an unexpected response"
    ))
}

/// Logs the messages of a page skipped for having no `ts` string (they cannot be keyed).
fn warn_untimed(skipped: u64, method: &str, channel: &str) {
    if skipped > 0 {
        log::warn(
            "messages without a ts string were skipped",
            &[
                ("method", method),
                ("channel", channel),
                ("count", &skipped.to_string()),
            ],
        );
    }
}

fn text_of(value: &Value, pointer: &str) -> Value {
    value.pointer(pointer).cloned().unwrap_or(Value::Null)
}

/// An ISO 8601 date-time for epoch seconds in a JSON number or a Slack timestamp string.
fn iso_of(value: Option<&Value>) -> Value {
    let epoch = match value {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => time::ts_key(s).map(|(secs, _)| secs),
        _ => None,
    };
    epoch.map_or(Value::Null, |e| Value::String(time::format_iso(e)))
}

fn with(item: &Value, extra: &[(&str, Value)]) -> Value {
    let mut map = match item {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (k, v) in extra {
        map.insert((*k).to_string(), v.clone());
    }
    Value::Object(map)
}

/// A `channels` record.
fn channel_record(c: &Value) -> Value {
    with(
        c,
        &[
            ("topic_text", text_of(c, "/topic/value")),
            ("purpose_text", text_of(c, "/purpose/value")),
            ("created_at", iso_of(c.get("created"))),
        ],
    )
}

/// A `users` record.
fn user_record(u: &Value) -> Value {
    with(
        u,
        &[
            ("display_name", text_of(u, "/profile/display_name")),
            ("email", text_of(u, "/profile/email")),
            ("updated_at", iso_of(u.get("updated"))),
        ],
    )
}

/// A `messages` or `threads` record: the message (whose `ts` is `ts`) with `channel_id`
/// (`channel`, as JSON text) and `created_at`, written as the tree of it was ([`canon`]).
fn message_record(mut m: canon::Object<'_>, channel: &str, ts: &str) -> String {
    m.insert("channel_id", channel);
    match time::ts_key(ts) {
        Some((secs, _)) => m.insert("created_at", &time::iso_json(secs)),
        None => m.insert("created_at", "null"),
    }
    m.finish()
}

/// Per-channel cursors of a stream's state `{"channels": {...}}`.
fn cursors(state: Option<&Value>) -> BTreeMap<String, String> {
    per_channel(state, "channels")
}

/// The per-channel strings of the object `key` of a state.
fn per_channel(state: Option<&Value>, key: &str) -> BTreeMap<String, String> {
    state
        .and_then(|s| s.get(key))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a message changed at or after Slack timestamp `since`: edited (`edited.ts`) or
/// replied to (`latest_reply`, which also moves `reply_count`).
fn changed_since(m: &canon::Object<'_>, since: &str) -> bool {
    [m.inner_str("edited", "ts"), m.str("latest_reply")]
        .iter()
        .flatten()
        .any(|t| !time::ts_after(since, t))
}

/// The earlier of two optional `oldest` bounds (`None` = from the beginning).
fn earliest(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if time::ts_after(&a, &b) { b } else { a }),
        _ => None,
    }
}

/// What one channel's sync reads, from the run's selection and the states.
struct ChannelPlan {
    /// What `messages` reads, if selected.
    messages: Option<MessagesPlan>,
    /// Scan parents from this ts (`None` = all) and take threads whose latest reply is
    /// newer than the cursor, if `threads` is selected.
    threads: Option<(Option<String>, Option<String>)>,
}

/// One channel's part of `messages`.
#[derive(Debug, PartialEq)]
struct MessagesPlan {
    /// Emit the messages posted after this (exclusive; `None` = all): the cursor.
    after: Option<String>,
    /// Scan history from this ts (exclusive; `None` = all): the look-back window.
    from: Option<String>,
    /// Emit again the older messages of the scan edited or replied to at or after this: the
    /// channel's `changes_seen`, else its cursor.
    changed: Option<String>,
}

struct Run<'a> {
    config: &'a Config,
    access: Access<'a>,
    out: Batcher,
    /// Writes the messages of history and replies pages into records.
    canon: canon::Canon,
    /// `messages` state: the cursor (newest `ts`) per channel...
    messages: BTreeMap<String, String>,
    /// ... and up to when its edits and replies were seen (`changes_seen`): Slack's time at
    /// the start of the sync that last scanned the channel.
    seen: BTreeMap<String, String>,
    /// Slack's time at the start of this sync.
    now: Option<String>,
    threads: BTreeMap<String, String>,
}

impl Run<'_> {
    fn plan(&self, channel: &str, messages: bool, threads: bool) -> ChannelPlan {
        let start = self.config.start.clone();
        let before = |cursor: &str| {
            let secs = time::ts_key(cursor).map_or(0, |(s, _)| s);
            time::ts_of((secs - self.config.lookback_secs).max(0))
        };
        let plan_messages = messages.then(|| match self.messages.get(channel) {
            Some(cursor) => MessagesPlan {
                after: Some(cursor.clone()),
                from: Some(before(cursor)),
                changed: Some(match self.seen.get(channel) {
                    Some(seen) if time::ts_after(seen, cursor) => seen.clone(),
                    _ => cursor.clone(),
                }),
            },
            None => MessagesPlan {
                after: start.clone(),
                from: start.clone(),
                changed: None,
            },
        });
        let plan_threads = threads.then(|| match self.threads.get(channel) {
            Some(cursor) => (Some(before(cursor)), Some(cursor.clone())),
            None => (start.clone(), None),
        });
        ChannelPlan {
            messages: plan_messages,
            threads: plan_threads,
        }
    }

    fn messages_state(&self) -> Value {
        json!({"channels": &self.messages, "changes_seen": &self.seen})
    }

    /// One history pass over a channel, then the replies of the threads it found.
    fn sync_channel(&mut self, channel: &str, plan: ChannelPlan) -> Result<()> {
        let oldest = match (&plan.messages, &plan.threads) {
            (Some(m), Some((t, _))) => earliest(m.from.clone(), t.clone()),
            (Some(m), None) => m.from.clone(),
            (None, Some((t, _))) => t.clone(),
            (None, None) => return Ok(()),
        };
        let channel_json = Value::from(channel).to_string();
        let mut params = vec![("channel", channel)];
        if let Some(oldest) = &oldest {
            params.push(("oldest", oldest));
        }
        let mut newest: Option<String> = None;
        let mut parents: Vec<String> = Vec::new();
        let (mut count, mut changed) = (0u64, 0u64);
        let out = &mut self.out;
        let canon = &mut self.canon;
        let skipped = self.config.paginate(
            "conversations.history",
            &params,
            &["not_in_channel", "channel_not_found", "missing_scope"],
            "messages",
            |items| {
                let mut untimed = 0;
                let not_objects = canon.objects(items, "conversations.history", |m| {
                    let Some(ts) = m.str("ts") else {
                        untimed += 1;
                        return Ok(());
                    };
                    if let Some((from, cursor)) = &plan.threads
                        && m.u64("reply_count").unwrap_or(0) > 0
                        && from.as_ref().is_none_or(|f| !time::ts_after(f, &ts))
                    {
                        let latest = m.str("latest_reply");
                        let latest = latest.as_deref().unwrap_or(&ts);
                        if cursor.as_ref().is_none_or(|c| time::ts_after(latest, c)) {
                            parents.push(ts.clone());
                        }
                    }
                    let emit = match &plan.messages {
                        Some(plan)
                            if plan.after.as_ref().is_none_or(|a| time::ts_after(&ts, a)) =>
                        {
                            count += 1;
                            if newest.as_ref().is_none_or(|n| time::ts_after(&ts, n)) {
                                newest = Some(ts.clone());
                            }
                            true
                        }
                        // Its `ts` is before the cursor, its content is not.
                        Some(plan)
                            if plan.changed.as_ref().is_some_and(|c| changed_since(&m, c)) =>
                        {
                            changed += 1;
                            true
                        }
                        _ => false,
                    };
                    if emit {
                        out.push_json(MESSAGES, message_record(m, &channel_json, &ts))?;
                    }
                    Ok(())
                })?;
                warn_untimed(untimed + not_objects, "conversations.history", channel);
                // The page's records go out with it. The state stays what the last channel
                // checkpointed until this channel is read (its cursor moves only then), so it
                // is not serialized again with every page (it grows with the channels read).
                if plan.messages.is_some() {
                    out.flush_stream(MESSAGES)?;
                }
                Ok(true)
            },
        )?;
        if let Some(body) = skipped {
            if error_name(&body) == "missing_scope" {
                // Its cursors stay: the channel is read once the token has the scope.
                return self.access.learn("conversations.history", &body);
            }
            log::warn(
                "channel history not readable; skipped",
                &[("channel", channel), ("error", error_name(&body))],
            );
            return Ok(());
        }
        if plan.messages.is_some() {
            if let Some(newest) = newest {
                let subject = format!("messages of channel {channel}");
                self.messages
                    .insert(channel.to_string(), clamp_ts(newest, &subject));
            }
            if let Some(now) = &self.now {
                self.seen.insert(channel.to_string(), now.clone());
            }
            self.out.checkpoint(MESSAGES, &self.messages_state())?;
        }
        if let Some((_, cursor)) = plan.threads {
            self.sync_threads(channel, &parents, cursor)?;
        }
        log::info(
            "channel read",
            &[
                ("channel", channel),
                ("messages", &count.to_string()),
                ("changed", &changed.to_string()),
                ("threads", &parents.len().to_string()),
            ],
        );
        Ok(())
    }

    fn sync_threads(
        &mut self,
        channel: &str,
        parents: &[String],
        cursor: Option<String>,
    ) -> Result<()> {
        let mut newest = cursor;
        let channel_json = Value::from(channel).to_string();
        for parent in parents {
            let out = &mut self.out;
            let canon = &mut self.canon;
            let skipped = self.config.paginate(
                "conversations.replies",
                &[("channel", channel), ("ts", parent)],
                &["thread_not_found", "missing_scope"],
                "messages",
                |items| {
                    let mut untimed = 0;
                    let not_objects = canon.objects(items, "conversations.replies", |m| {
                        let Some(ts) = m.str("ts") else {
                            untimed += 1;
                            return Ok(());
                        };
                        if ts == *parent {
                            return Ok(()); // the parent is in `messages`
                        }
                        if newest.as_ref().is_none_or(|n| time::ts_after(&ts, n)) {
                            newest = Some(ts.clone());
                        }
                        out.push_json(THREADS, message_record(m, &channel_json, &ts))
                    })?;
                    warn_untimed(untimed + not_objects, "conversations.replies", channel);
                    Ok(true)
                },
            )?;
            if let Some(body) = skipped
                && error_name(&body) == "missing_scope"
            {
                // The channel's threads cursor stays: they are read once the token can.
                return self.access.learn("conversations.replies", &body);
            }
        }
        if let Some(newest) = newest {
            let subject = format!("thread replies of channel {channel}");
            self.threads
                .insert(channel.to_string(), clamp_ts(newest, &subject));
        }
        self.out
            .checkpoint(THREADS, &json!({ "channels": &self.threads }))
    }
}

impl Connector for Slack {
    fn manifest() -> Manifest {
        let mut manifest = Manifest::new("slack", "Slack", env!("CARGO_PKG_VERSION"))
            .description("Slack channels, users, messages and thread replies (Web API).")
            .config_schema(&config_schema())
            .secret(
                TOKEN,
                "Slack bot (xoxb-) or user (xoxp-) token, sent by the host as \
                 `Authorization: Bearer <token>`. Scopes: channels:read, groups:read, \
                 users:read, users:read.email, channels:history, groups:history (mpim:* \
                 and im:* for those conversation types).",
                true,
            )
            .host("https://slack.com")
            .host("{config.api_url}")
            .memory_mib(64);
        for stream in streams() {
            manifest = manifest.stream(stream);
        }
        manifest
    }

    fn validate(config: Value) -> Result<Value> {
        let config = Config::load(&config)?;
        let Auth {
            body: auth,
            scopes: granted,
            ..
        } = config.auth()?;
        let mut access = Access::new(&config, granted.clone(), STREAMS.to_vec());
        if access.granted.is_none() {
            // No `x-oauth-scopes`: ask the listings (history needs a channel and is slow to
            // pace; a sync learns its scopes as it goes).
            let probes: [(&str, Vec<(&str, &str)>); 2] = [
                (
                    "conversations.list",
                    vec![("types", &config.channel_types), ("limit", "1")],
                ),
                ("users.list", vec![("limit", "1")]),
            ];
            for (method, params) in probes {
                if let Err(body) = config.try_call(method, &params)? {
                    if error_name(&body) != "missing_scope" {
                        return Err(slack_error(method, &body));
                    }
                    access.learn(method, &body)?;
                }
            }
        }
        access.judge()?;
        Ok(json!({
            "team": auth.get("team"),
            "team_id": auth.get("team_id"),
            "user": auth.get("user"),
            "user_id": auth.get("user_id"),
            "bot_id": auth.get("bot_id"),
            "scopes": granted,
            "unreadable_streams": access.json(),
        }))
    }

    fn discover(config: Value) -> Result<Vec<StreamSpec>> {
        Config::load(&config)?;
        Ok(streams())
    }

    fn sync(request: SyncRequest) -> Result<()> {
        let config = Config::load(&request.config)?;
        let auth = config.auth()?;
        let selected: Vec<&'static str> = STREAMS
            .iter()
            .copied()
            .filter(|s| request.selected(s))
            .collect();
        let access = Access::new(&config, auth.scopes, selected);
        access.judge()?;
        for u in access.unreadable() {
            log::warn(
                "the token lacks scopes of this stream; what needs them is skipped",
                &[
                    ("stream", u.stream),
                    ("missing_scope", &u.missing.join(",")),
                ],
            );
        }
        let mut run = Run {
            config: &config,
            access,
            out: Batcher::new(500),
            canon: canon::Canon::default(),
            messages: cursors(request.state(MESSAGES)),
            seen: per_channel(request.state(MESSAGES), "changes_seen"),
            now: auth.now,
            threads: cursors(request.state(THREADS)),
        };
        let emit_channels = request.selected(CHANNELS);
        let (messages, threads) = (request.selected(MESSAGES), request.selected(THREADS));
        let mut channels: Vec<(String, &'static str)> = Vec::new();
        let mut not_member = 0u64;
        if emit_channels || messages || threads {
            // Only the types whose list scope the token has; a `missing_scope` answer takes
            // the types it names out and lists again.
            loop {
                let types: Vec<&str> = config
                    .types()
                    .filter(|t| !run.access.lacks(type_scopes(t).0))
                    .collect();
                if types.is_empty() {
                    break;
                }
                let types = types.join(",");
                let params = [("types", types.as_str()), ("exclude_archived", "false")];
                let out = &mut run.out;
                channels.clear();
                not_member = 0;
                let denied = config.paginate(
                    "conversations.list",
                    &params,
                    &["missing_scope"],
                    "channels",
                    |items| {
                        for c in &parse_items(items, "conversations.list")? {
                            if emit_channels {
                                out.push(CHANNELS, &channel_record(c))?;
                            }
                            let Some(id) = c.get("id").and_then(Value::as_str) else {
                                continue;
                            };
                            // A bot reads only the channels it is a member of
                            // (`not_in_channel`).
                            if c.get("is_member").and_then(Value::as_bool) == Some(false) {
                                not_member += 1;
                            } else if !channels.iter().any(|(x, _)| x == id) {
                                channels.push((id.to_string(), channel_kind(c)));
                            }
                        }
                        Ok(true)
                    },
                )?;
                let Some(body) = denied else { break };
                run.access.learn("conversations.list", &body)?;
                let fewer = config
                    .types()
                    .filter(|t| !run.access.lacks(type_scopes(t).0))
                    .count();
                if fewer == types.split(',').count() {
                    return Err(slack_error("conversations.list", &body));
                }
            }
            run.out.flush_stream(CHANNELS)?;
        }
        if request.selected(USERS) && !run.access.lacks("users:read") {
            let out = &mut run.out;
            let denied =
                config.paginate("users.list", &[], &["missing_scope"], "members", |items| {
                    for u in &parse_items(items, "users.list")? {
                        out.push(USERS, &user_record(u))?;
                    }
                    Ok(true)
                })?;
            if let Some(body) = denied {
                run.access.learn("users.list", &body)?;
            }
            run.out.flush_stream(USERS)?;
        }
        if messages || threads {
            log::info(
                "reading channels",
                &[
                    ("channels", &channels.len().to_string()),
                    ("not_member", &not_member.to_string()),
                ],
            );
            for (channel, kind) in &channels {
                if run.access.lacks(type_scopes(kind).1) {
                    continue; // warned about once, above or when learned
                }
                let plan = run.plan(channel, messages, threads);
                run.sync_channel(channel, plan)?;
            }
        }
        run.out.flush()
    }
}

fn streams() -> Vec<StreamSpec> {
    let id = || json!({"type": "string"});
    let text = || json!({"type": ["string", "null"]});
    let flag = || json!({"type": ["boolean", "null"]});
    let int = || json!({"type": ["integer", "null"]});
    let time = || json!({"type": ["string", "null"], "format": "date-time"});
    let object = || json!({"type": ["object", "null"]});
    let array = || json!({"type": ["array", "null"]});
    let message = || {
        schema(
            &["channel_id", "ts"],
            vec![
                ("channel_id", id()),
                ("ts", id()),
                ("created_at", time()),
                ("type", text()),
                ("subtype", text()),
                ("user", text()),
                ("bot_id", text()),
                ("text", text()),
                ("thread_ts", text()),
                ("parent_user_id", text()),
                ("reply_count", int()),
                ("reply_users_count", int()),
                ("reply_users", array()),
                ("latest_reply", text()),
                ("reactions", array()),
                ("files", array()),
                ("attachments", array()),
                ("blocks", array()),
                ("edited", object()),
                ("client_msg_id", text()),
                ("team", text()),
            ],
        )
    };
    vec![
        StreamSpec::new(CHANNELS)
            .description("Conversations of the configured types (conversations.list). Full refresh.")
            .primary_key(&["id"])
            .json_schema(&schema(
                &["id"],
                vec![
                    ("id", id()),
                    ("name", text()),
                    ("name_normalized", text()),
                    ("is_channel", flag()),
                    ("is_group", flag()),
                    ("is_im", flag()),
                    ("is_mpim", flag()),
                    ("is_private", flag()),
                    ("is_archived", flag()),
                    ("is_general", flag()),
                    ("is_shared", flag()),
                    ("is_ext_shared", flag()),
                    ("is_org_shared", flag()),
                    ("is_member", flag()),
                    ("created", int()),
                    ("created_at", time()),
                    ("creator", text()),
                    ("num_members", int()),
                    ("topic", object()),
                    ("purpose", object()),
                    ("topic_text", text()),
                    ("purpose_text", text()),
                    ("previous_names", array()),
                ],
            )),
        StreamSpec::new(USERS)
            .description("Members of the workspace (users.list). Full refresh.")
            .primary_key(&["id"])
            .json_schema(&schema(
                &["id"],
                vec![
                    ("id", id()),
                    ("team_id", text()),
                    ("name", text()),
                    ("real_name", text()),
                    ("display_name", text()),
                    ("email", text()),
                    ("deleted", flag()),
                    ("is_bot", flag()),
                    ("is_app_user", flag()),
                    ("is_admin", flag()),
                    ("is_owner", flag()),
                    ("is_primary_owner", flag()),
                    ("is_restricted", flag()),
                    ("is_ultra_restricted", flag()),
                    ("tz", text()),
                    ("tz_offset", int()),
                    ("updated", int()),
                    ("updated_at", time()),
                    ("profile", object()),
                ],
            )),
        StreamSpec::new(MESSAGES)
            .description("Messages of every readable channel (conversations.history). Incremental on ts, per channel; messages edited or replied to within the look-back window come again.")
            .primary_key(&["channel_id", "ts"])
            .cursor_field("ts")
            .json_schema(&message()),
        StreamSpec::new(THREADS)
            .description("Thread replies (conversations.replies) of parents within the look-back window whose latest reply is new. Incremental per channel.")
            .primary_key(&["channel_id", "ts"])
            .cursor_field("ts")
            .json_schema(&message()),
    ]
}

fn config_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Slack",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "api_url": {
                "description": "Web API root.",
                "type": "string",
                "pattern": "^https?://[^/?#]+",
                "default": DEFAULT_API_URL
            },
            "channel_types": {
                "description": "Comma-separated conversation types: public_channel, private_channel, mpim, im.",
                "type": "string",
                "pattern": "^(public_channel|private_channel|mpim|im)(,(public_channel|private_channel|mpim|im))*$",
                "default": "public_channel,private_channel"
            },
            "threads_lookback_days": {
                "description": "Parents posted this many days before the last synced reply are checked for new replies, and messages posted this many days before the last synced message are checked for edits and new replies.",
                "type": "integer",
                "minimum": 0,
                "maximum": 365,
                "default": 7
            },
            "start_date": {
                "description": "ISO 8601 date or date-time: older messages are not read on a first sync.",
                "type": "string",
                "examples": ["2024-01-01T00:00:00Z"]
            },
            "page_limit": {
                "description": "`limit` asked per page (Slack may return fewer, e.g. 15 for some apps).",
                "type": "integer",
                "minimum": 1,
                "maximum": 1000,
                "default": 200
            },
            "required_streams": {
                "description": "Streams the token must be able to read whole: validate answers insufficient_scope and a sync fails if it cannot, instead of skipping what it cannot read.",
                "type": "array",
                "items": {"enum": STREAMS},
                "uniqueItems": true
            }
        }
    })
}

sluice_sdk::export_connector!(Slack);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_checks() {
        let c = Config::load(&json!({"start_date": "2023-11-14T22:13:20Z"})).expect("valid");
        assert_eq!(c.api, DEFAULT_API_URL);
        assert_eq!(c.channel_types, "public_channel,private_channel");
        assert_eq!(c.limit, "200");
        assert_eq!(c.lookback_secs, 7 * 86_400);
        assert_eq!(c.start.as_deref(), Some("1700000000.000000"));
        for bad in [
            json!({"channel_types": "public_channel,dm"}),
            json!({"page_limit": 0}),
            json!({"api_url": "slack.com"}),
            json!({"api_url": "https://slack.com/api?x=1"}),
            json!({"api_url": "https://slack.com/api#f"}),
            json!({"start_date": "nope"}),
            json!({"unknown": true}),
        ] {
            assert!(Config::load(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_map_to_codes() {
        use sluice_sdk::ErrorCode;
        let code = |body: Value| slack_error("m", &body).code;
        assert_eq!(
            code(json!({"ok": false, "error": "invalid_auth"})),
            ErrorCode::InvalidCredentials
        );
        assert_eq!(
            code(json!({"ok": false, "error": "token_revoked"})),
            ErrorCode::InvalidCredentials
        );
        let scope = slack_error(
            "m",
            &json!({"ok": false, "error": "missing_scope", "needed": "channels:read"}),
        );
        assert_eq!(scope.code, ErrorCode::InsufficientScope);
        assert!(scope.message.contains("channels:read"));
        assert_eq!(
            code(json!({"ok": false, "error": "ratelimited"})),
            ErrorCode::RateLimited
        );
        assert_eq!(code(json!({"ok": false})), ErrorCode::Internal);
    }

    fn scopes(list: &str) -> Option<BTreeSet<String>> {
        Some(
            list.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    #[test]
    fn access_from_scopes() {
        let config = Config::load(&json!({})).expect("valid");
        let all = "channels:read,groups:read,users:read,channels:history,groups:history";
        let access = Access::new(&config, scopes(all), STREAMS.to_vec());
        assert!(access.unreadable().is_empty());
        assert_eq!(access.json(), json!([]));
        assert!(access.judge().is_ok());

        let partial = "channels:read,groups:read,users:read,channels:history";
        let access = Access::new(&config, scopes(partial), STREAMS.to_vec());
        assert_eq!(
            access.json(),
            json!([
                {"stream": "messages", "missing_scope": "groups:history", "partial": true},
                {"stream": "threads", "missing_scope": "groups:history", "partial": true}
            ])
        );
        assert!(access.judge().is_ok());

        let no_history = "channels:read,groups:read,users:read";
        let access = Access::new(&config, scopes(no_history), STREAMS.to_vec());
        let u = access.unreadable();
        assert_eq!(u[0].missing, ["channels:history", "groups:history"]);
        assert!(!u[0].partial);
        assert!(access.judge().is_ok(), "channels and users are readable");
        // Only messages selected: nothing readable.
        let access = Access::new(&config, scopes(no_history), vec![MESSAGES]);
        let e = access.judge().expect_err("nothing readable");
        assert!(
            e.message
                .contains("messages needs channels:history,groups:history"),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("(it has channels:read,groups:read,users:read)"),
            "{}",
            e.message
        );
        // A required stream is checked whole.
        let required = Config::load(&json!({"required_streams": ["messages"]})).expect("valid");
        let access = Access::new(&required, scopes(partial), STREAMS.to_vec());
        let e = access.judge().expect_err("required");
        assert_eq!(e.code, sluice_sdk::ErrorCode::InsufficientScope);
        assert!(
            e.message.contains("required stream messages"),
            "{}",
            e.message
        );
        assert!(Config::load(&json!({"required_streams": ["nope"]})).is_err());

        // A legacy token's umbrella scope: as if there were no header.
        let legacy = Access::new(&config, scopes("identify,read,post"), STREAMS.to_vec());
        assert!(legacy.granted.is_none() && legacy.unreadable().is_empty());

        // No header: learned from `missing_scope` answers.
        let mut access = Access::new(&config, None, STREAMS.to_vec());
        assert!(access.unreadable().is_empty());
        let body = json!({"ok": false, "error": "missing_scope", "needed": "users:read"});
        access.note("users.list", &body).expect("new");
        access.judge().expect("other streams remain");
        assert!(
            access.note("users.list", &body).is_err(),
            "nothing new learned"
        );
        assert_eq!(access.unreadable()[0].stream, USERS);
    }

    #[test]
    fn channel_kinds() {
        assert_eq!(channel_kind(&json!({"is_channel": true})), "public_channel");
        assert_eq!(
            channel_kind(&json!({"is_private": true})),
            "private_channel"
        );
        assert_eq!(
            channel_kind(&json!({"is_private": true, "is_mpim": true})),
            "mpim"
        );
        assert_eq!(channel_kind(&json!({"is_im": true})), "im");
        assert_eq!(
            type_scopes("private_channel"),
            ("groups:read", "groups:history")
        );
    }

    #[test]
    fn plans() {
        let config = Config::load(&json!({"threads_lookback_days": 1})).expect("valid");
        let run = Run {
            config: &config,
            access: Access::new(&config, None, vec![]),
            out: Batcher::new(1),
            canon: canon::Canon::default(),
            messages: BTreeMap::from([("C1".to_string(), "1700000000.000200".to_string())]),
            seen: BTreeMap::from([("C1".to_string(), "1700000500.000000".to_string())]),
            now: None,
            threads: BTreeMap::from([("C1".to_string(), "1700086400.000100".to_string())]),
        };
        let p = run.plan("C1", true, true);
        assert_eq!(
            p.messages,
            Some(MessagesPlan {
                after: Some("1700000000.000200".into()),
                from: Some("1699913600.000000".into()),
                changed: Some("1700000500.000000".into()),
            })
        );
        assert_eq!(
            p.threads,
            Some((
                Some("1700000000.000000".into()),
                Some("1700086400.000100".into())
            ))
        );
        let p = run.plan("C2", false, true);
        assert_eq!(p.messages, None);
        assert_eq!(p.threads, Some((None, None)));
        assert_eq!(
            earliest(Some("2.0".into()), Some("1.5".into())),
            Some("1.5".into())
        );
        assert_eq!(earliest(None, Some("1.5".into())), None);
        let p = run.plan("C2", true, false);
        let first = MessagesPlan {
            after: None,
            from: None,
            changed: None,
        };
        assert_eq!(p.messages, Some(first));
        let edited = json!({"ts": "1.000000", "edited": {"user": "U1", "ts": "5.000000"}});
        assert!(with_message(&edited, |m| changed_since(m, "5.000000")));
        assert!(!with_message(&edited, |m| changed_since(m, "5.000001")));
        assert!(with_message(
            &json!({"ts": "1.0", "latest_reply": "9.0"}),
            |m| changed_since(m, "4.0")
        ));
        assert!(
            !with_message(&json!({"ts": "1.0"}), |m| changed_since(m, "0.5")),
            "ts alone is not a change"
        );
        let m = record(r#"{"ts": "1700000000.000200", "text": "hi"}"#, "C1");
        assert_eq!(
            m,
            r#"{"channel_id":"C1","created_at":"2023-11-14T22:13:20Z","text":"hi","ts":"1700000000.000200"}"#
        );
    }

    /// `f` of the message `m` as a page's item.
    fn with_message<T>(m: &Value, f: impl FnOnce(&canon::Object<'_>) -> T) -> T {
        let mut canon = canon::Canon::default();
        let mut f = Some(f);
        let mut out = None;
        canon
            .objects(&format!("[{m}]"), "test", |o| {
                out = f.take().map(|f| f(&o));
                Ok(())
            })
            .expect("a page");
        out.expect("one message")
    }

    /// The record of the message `item` (a page's item, JSON text) in `channel`.
    fn record(item: &str, channel: &str) -> String {
        let mut canon = canon::Canon::default();
        let mut out = None;
        canon
            .objects(&format!("[{item}]"), "test", |o| {
                let ts = o.str("ts").expect("a ts");
                out = Some(message_record(o, &Value::from(channel).to_string(), &ts));
                Ok(())
            })
            .expect("a page");
        out.expect("one message")
    }

    /// The tree's record of a message (the connector's before [`canon`]): the message parsed
    /// to a `Value`, `channel_id` and `created_at` inserted, written back.
    fn tree_record(item: &str, channel: &str) -> String {
        let mut map: Map<String, Value> =
            sluice_sdk::serde_json::from_str(item).expect("an object");
        let created_at = iso_of(map.get("ts"));
        map.insert("channel_id".to_string(), Value::String(channel.to_string()));
        map.insert("created_at".to_string(), created_at);
        Value::Object(map).to_string()
    }

    #[test]
    fn message_records_are_what_the_tree_wrote() {
        // As fake-slack writes them (its keys in insertion order), and as Slack does (`\/`,
        // `\u` escapes), with a `channel_id` of its own, numbers with exponents.
        let items = [
            r#"{"type":"message","user":"U00001000","text":"hello there","ts":"1700000000.000200","team":"T00000001","client_msg_id":"6553f100-0000-4000-8000-0000000000c8","blocks":[{"type":"rich_text","block_id":"b1","elements":[{"type":"rich_text_section","elements":[{"type":"text","text":"hello there"}]}]}],"thread_ts":"1700000000.000200","reply_count":2,"reply_users_count":1,"reply_users":["U00001001"],"latest_reply":"1700000100.000000","subscribed":false,"edited":{"user":"U00001000","ts":"1700000050.000000"}}"#,
            r#"{"client_msg_id":"x","type":"message","text":"see https:\/\/acme.slack.com\/archives\/C1 \u00e9 \ud83d\ude00 \"q\" \\ \u0007","user":"U1","ts":"1700000001.000001","channel_id":"C_SELF","created_at":7,"files":[{"id":"F1","size":1E3,"ratio":0.50,"url_private":"https:\/\/files.slack.com\/f"}],"reactions":[{"name":"+1","users":["U2","U1"],"count":2}],"attachments":[],"z":{},"a":null}"#,
            r#"{"ts":"junk","text":"a","text":"b"}"#,
            r#" { "ts" : "1.5" , "k\u0065y" : [ 1 , { "b" : 2 , "a" : 1 } ] } "#,
        ];
        for item in items {
            assert_eq!(record(item, "C9"), tree_record(item, "C9"), "{item}");
        }
    }
}
