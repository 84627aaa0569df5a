//! A fake Slack Web API under `/api/{method}`: `auth.test`, `conversations.list`, `users.list`,
//! `conversations.history`, `conversations.replies`.
//!
//! What it reproduces from Slack's documentation: every method answers GET (query) and POST
//! (form); the token comes as `Authorization: Bearer` or a `token` parameter; errors are HTTP
//! 200 with `{"ok": false, "error": ...}` (`not_authed`, `invalid_auth`, `token_revoked`,
//! `missing_scope` with `needed`/`provided`, `channel_not_found`, `not_in_channel`,
//! `thread_not_found`, `invalid_cursor`); cursor pagination through
//! `response_metadata.next_cursor` (empty or absent = done) where a page may be shorter than
//! `limit` while more remains; `limit` capped (e.g. 15, as for non-Marketplace apps); history
//! newest first within `oldest`/`latest` (exclusive unless `inclusive`); replies parent first;
//! edits keep a message's `ts` and add `edited: {user, ts}`;
//! 429 + `Retry-After` with `{"ok":false,"error":"ratelimited"}`; 502s. See
//! [`crate::fakes::Knobs`].
//!
//! Scopes: each token has a grant (see [`SlackHandle::grant`]). Every answer to a known
//! token carries `x-oauth-scopes` (the grant, comma-separated without spaces, as Slack sends
//! it) and, but for `auth.test`, `x-accepted-oauth-scopes` (what the method accepts). A method
//! answers `missing_scope` with `needed` and `provided` when the grant lacks the scope of what
//! was asked: `conversations.list` the list scope of each requested type (`channels:read`,
//! `groups:read`, ...), `users.list` `users:read`, history and replies the history scope of
//! the conversation's type (`channels:history`, `groups:history`). Without `users:read.email`
//! profiles have no `email`.

// Handlers return early with an axum `Response` as the error of a `Result`.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Counters, Injected, Knobs, Rng, bind, get, now_secs, query, spawn};

const FIRST_NAMES: [&str; 8] = [
    "ada", "grace", "linus", "ken", "barbara", "dennis", "margaret", "alan",
];
/// Every scope the connector may use: what `token` is granted.
pub const ALL_SCOPES: &str = "channels:read,groups:read,mpim:read,im:read,users:read,users:read.email,channels:history,groups:history,mpim:history,im:history";

const WORDS: [&str; 10] = [
    "deploy", "is", "green", "again", "who", "owns", "the", "pager", "today", "thanks",
];

/// What to generate and which tokens to accept.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub seed: u64,
    /// Channels `C00001000`...: the first is `general`, every third is private, the last is
    /// archived.
    pub channels: usize,
    /// Every `not_member_every`-th channel does not have the token's user as a member: its
    /// history answers `not_in_channel` (0: member everywhere).
    pub not_member_every: usize,
    pub users: usize,
    /// Top-level messages across all channels, in the 30 days before `now`.
    pub messages: usize,
    /// Every `thread_every`-th message starts a thread (0: none).
    pub thread_every: usize,
    /// Replies per thread: 1 to this many.
    pub max_replies: usize,
    /// The most items a page holds whatever `limit` asks (Slack gives some apps 15).
    pub max_limit: usize,
    /// Every other history/replies page is one item short of the limit though more remains.
    pub ragged_pages: bool,
    /// Granted [`ALL_SCOPES`].
    pub token: String,
    /// Granted no scope: valid for `auth.test` only, every other method answers
    /// `missing_scope`.
    pub scopeless_token: String,
    pub revoked_token: String,
    /// The data lies in the 30 days before this time (epoch seconds).
    pub now: i64,
}

impl Default for SlackConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            channels: 8,
            not_member_every: 4,
            users: 40,
            messages: 800,
            thread_every: 10,
            max_replies: 5,
            max_limit: 1000,
            ragged_pages: true,
            token: "xoxb-good-0123456789".into(),
            scopeless_token: "xoxb-scopeless-0123456789".into(),
            revoked_token: "xoxb-revoked-0123456789".into(),
            now: now_secs(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub is_private: bool,
    pub is_archived: bool,
    pub is_member: bool,
    pub created: i64,
    pub creator: String,
    pub topic: String,
    pub purpose: String,
    pub num_members: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub real_name: String,
    pub display_name: String,
    pub email: Option<String>,
    pub is_bot: bool,
    pub is_admin: bool,
    pub deleted: bool,
    pub tz: String,
    pub updated: i64,
}

/// A message; a reply has `thread_ts` set to its parent's `ts` (a parent has its own).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub channel: String,
    pub ts: String,
    pub user: String,
    pub text: String,
    pub thread_ts: Option<String>,
    pub reply_count: u64,
    pub reply_users: Vec<String>,
    pub latest_reply: Option<String>,
    /// When it was last edited (`edited.ts`).
    pub edited: Option<String>,
}

impl Message {
    /// Whether this is a reply (in a thread, not its parent).
    pub fn is_reply(&self) -> bool {
        self.thread_ts.as_deref().is_some_and(|t| t != self.ts)
    }
}

/// Everything the fake serves.
#[derive(Debug, Clone, Default)]
pub struct SlackDataset {
    pub channels: Vec<Channel>,
    pub users: Vec<User>,
    /// Top-level messages, oldest first per channel.
    pub messages: Vec<Message>,
    /// Thread replies, oldest first per thread.
    pub replies: Vec<Message>,
}

/// `(seconds, sequence)` of a ts, for ordering.
fn ts_key(ts: &str) -> (i64, u64) {
    let (s, f) = ts.split_once('.').unwrap_or((ts, "0"));
    (s.parse().unwrap_or(0), f.parse().unwrap_or(0))
}

fn ts_of(secs: i64, seq: u64) -> String {
    format!("{secs}.{:06}", seq % 1_000_000)
}

impl SlackDataset {
    /// The data set of a config: the same config gives the same data.
    pub fn generate(c: &SlackConfig) -> Self {
        let mut rng = Rng::new(c.seed);
        let users: Vec<User> = (0..c.users)
            .map(|u| {
                let first = FIRST_NAMES[u % FIRST_NAMES.len()];
                let is_bot = u % 10 == 9;
                User {
                    id: format!("U{:08}", 1000 + u),
                    name: format!("{first}{u}"),
                    real_name: format!("{} {u}", first.to_uppercase()),
                    display_name: if rng.percent(70) {
                        format!("{first}-{u}")
                    } else {
                        String::new()
                    },
                    email: (!is_bot).then(|| format!("{first}{u}@acme.test")),
                    is_bot,
                    is_admin: u == 0,
                    deleted: u % 13 == 12,
                    tz: rng
                        .pick(&["Europe/Paris", "America/New_York", "Asia/Tokyo"])
                        .to_string(),
                    updated: c.now - 40 * 86_400 + rng.below(86_400) as i64,
                }
            })
            .collect();
        let creator = users
            .first()
            .map_or_else(|| "U00000000".to_string(), |u| u.id.clone());
        let channels: Vec<Channel> = (0..c.channels)
            .map(|k| Channel {
                id: format!("C{:08}", 1000 + k),
                name: match k {
                    0 => "general".into(),
                    1 => "random".into(),
                    _ => format!("team-{k}"),
                },
                is_private: k % 3 == 2,
                is_archived: k + 1 == c.channels && c.channels > 2,
                is_member: c.not_member_every == 0
                    || k % c.not_member_every != c.not_member_every - 1,
                created: c.now - 400 * 86_400 + k as i64 * 3_600,
                creator: creator.clone(),
                topic: format!("Topic of channel {k}"),
                purpose: format!("Purpose of channel {k}"),
                num_members: 3 + rng.below(50),
            })
            .collect();
        let user_ids: Vec<String> = users
            .iter()
            .filter(|u| !u.is_bot)
            .map(|u| u.id.clone())
            .collect();
        let user_ids = if user_ids.is_empty() {
            vec![creator.clone()]
        } else {
            user_ids
        };
        let start = c.now - 30 * 86_400;
        let span = 30 * 86_400 - 3_600;
        let mut messages = Vec::with_capacity(c.messages);
        let mut replies = Vec::new();
        for k in 0..c.messages {
            if channels.is_empty() {
                break;
            }
            let channel = channels[k % channels.len()].id.clone();
            let secs = start + (k as i64 * span) / c.messages.max(1) as i64;
            let ts = ts_of(secs, k as u64 + 100);
            let mut m = Message {
                channel: channel.clone(),
                ts: ts.clone(),
                user: rng.pick(&user_ids).clone(),
                text: format!(
                    "{} {} {} ({k})",
                    rng.pick(&WORDS),
                    rng.pick(&WORDS),
                    rng.pick(&WORDS)
                ),
                thread_ts: None,
                reply_count: 0,
                reply_users: vec![],
                latest_reply: None,
                edited: None,
            };
            if c.thread_every > 0 && k % c.thread_every == 0 && c.max_replies > 0 {
                let n = 1 + rng.below(c.max_replies as u64);
                for j in 0..n {
                    let r = Message {
                        channel: channel.clone(),
                        ts: ts_of(secs + 30 * (j as i64 + 1), k as u64 * 100 + j + 1),
                        user: rng.pick(&user_ids).clone(),
                        text: format!("re: {} {}", rng.pick(&WORDS), rng.pick(&WORDS)),
                        thread_ts: Some(ts.clone()),
                        reply_count: 0,
                        reply_users: vec![],
                        latest_reply: None,
                        edited: None,
                    };
                    add_reply(&mut m, &r);
                    replies.push(r);
                }
            }
            messages.push(m);
        }
        Self {
            channels,
            users,
            messages,
            replies,
        }
    }

    /// Top-level messages of the channels the token's user is a member of.
    pub fn readable_messages(&self) -> Vec<&Message> {
        self.messages
            .iter()
            .filter(|m| self.member_of(&m.channel))
            .collect()
    }

    /// Replies in the channels the token's user is a member of.
    pub fn readable_replies(&self) -> Vec<&Message> {
        self.replies
            .iter()
            .filter(|m| self.member_of(&m.channel))
            .collect()
    }

    pub fn member_of(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c.id == channel && c.is_member)
    }
}

fn add_reply(parent: &mut Message, reply: &Message) {
    parent.thread_ts = Some(parent.ts.clone());
    parent.reply_count += 1;
    if !parent.reply_users.contains(&reply.user) {
        parent.reply_users.push(reply.user.clone());
    }
    parent.latest_reply = Some(reply.ts.clone());
}

struct Shared {
    config: SlackConfig,
    /// Scopes by token.
    grants: RwLock<BTreeMap<String, Vec<String>>>,
    data: RwLock<SlackDataset>,
    knobs: Arc<Knobs>,
    counters: Arc<Counters>,
    /// Sequence numbers of messages added while serving.
    added: AtomicU64,
    /// Each channel's top-level messages newest first, rendered once; built on the first
    /// history read and dropped (under the data's write lock) whenever the data changes, so
    /// paging through 100,000 messages neither rescans nor re-renders them per request.
    history_index: Mutex<Option<Arc<HistoryIndex>>>,
}

/// Per channel id, its top-level messages newest first: `(ts key, message as JSON text)`.
type HistoryIndex = HashMap<String, Vec<((i64, u64), Arc<str>)>>;

impl Shared {
    /// The history index of `data` (which the caller holds read-locked), built if needed.
    fn history_index(&self, data: &SlackDataset) -> Arc<HistoryIndex> {
        let mut cached = self.history_index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(index) = cached.as_ref() {
            return index.clone();
        }
        let mut index: HistoryIndex = HashMap::new();
        for m in &data.messages {
            index
                .entry(m.channel.clone())
                .or_default()
                .push((ts_key(&m.ts), message_json(m).to_string().into()));
        }
        // Newest first, as `history` pages (a stable sort: data order among equal ts).
        for messages in index.values_mut() {
            messages.sort_by_key(|(k, _)| std::cmp::Reverse(*k));
        }
        let index = Arc::new(index);
        *cached = Some(index.clone());
        index
    }

    /// Drops what was rendered from the data; called with the data write-locked.
    fn data_changed(&self) {
        *self.history_index.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Starts fake Slack servers.
pub struct FakeSlack;

impl FakeSlack {
    /// Generates the data set and serves it on 127.0.0.1 (an ephemeral port).
    pub async fn start(config: SlackConfig) -> SlackHandle {
        let knobs = Arc::new(Knobs::default());
        knobs.set_retry_after_secs(1);
        let counters = Arc::new(Counters::default());
        let data = SlackDataset::generate(&config);
        let (listener, addr) = bind().await;
        let grants = BTreeMap::from([
            (config.token.clone(), scope_list(ALL_SCOPES)),
            (config.scopeless_token.clone(), vec![]),
        ]);
        let shared = Arc::new(Shared {
            config,
            grants: RwLock::new(grants),
            data: RwLock::new(data),
            knobs: knobs.clone(),
            counters: counters.clone(),
            added: AtomicU64::new(0),
            history_index: Mutex::new(None),
        });
        let task = spawn(
            listener,
            Router::new().fallback(handle).with_state(shared.clone()),
        );
        SlackHandle {
            url: format!("http://{addr}/api"),
            knobs,
            counters,
            shared,
            task,
        }
    }
}

/// A running fake Slack; stops when dropped.
pub struct SlackHandle {
    /// Web API root, e.g. `http://127.0.0.1:41234/api`: the connector's `api_url`.
    pub url: String,
    pub knobs: Arc<Knobs>,
    pub counters: Arc<Counters>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl SlackHandle {
    /// A copy of the data served now.
    pub fn data(&self) -> SlackDataset {
        self.shared
            .data
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    pub fn token(&self) -> &str {
        &self.shared.config.token
    }

    pub fn scopeless_token(&self) -> &str {
        &self.shared.config.scopeless_token
    }

    pub fn revoked_token(&self) -> &str {
        &self.shared.config.revoked_token
    }

    /// Makes `token` valid with the comma-separated `scopes` (e.g.
    /// `"channels:read,users:read"`); it replaces the grant of a known token.
    pub fn grant(&self, token: &str, scopes: &str) {
        if let Ok(mut g) = self.shared.grants.write() {
            g.insert(token.to_string(), scope_list(scopes));
        }
    }

    /// Posts `n` new top-level messages, round robin over the member channels, timestamped
    /// now (later than anything served so far). Returns them.
    pub fn post(&self, n: usize) -> Vec<Message> {
        let Ok(mut data) = self.shared.data.write() else {
            return vec![];
        };
        self.shared.data_changed();
        let channels: Vec<String> = data
            .channels
            .iter()
            .filter(|c| c.is_member)
            .map(|c| c.id.clone())
            .collect();
        let user = data.users.first().map(|u| u.id.clone()).unwrap_or_default();
        let mut out = Vec::new();
        for k in 0..n {
            let Some(channel) = channels.get(k % channels.len().max(1)) else {
                break;
            };
            let m = Message {
                channel: channel.clone(),
                ts: self.next_ts(),
                user: user.clone(),
                text: format!("new message {k}"),
                thread_ts: None,
                reply_count: 0,
                reply_users: vec![],
                latest_reply: None,
                edited: None,
            };
            data.messages.push(m.clone());
            out.push(m);
        }
        out
    }

    /// Edits the `n` most recent top-level messages of the member channels: their text gets
    /// " (edited)" and `edited.ts` is now (their `ts` stays). Returns them as edited.
    pub fn edit(&self, n: usize) -> Vec<Message> {
        let Ok(mut data) = self.shared.data.write() else {
            return vec![];
        };
        self.shared.data_changed();
        let mut recent: Vec<usize> = (0..data.messages.len())
            .filter(|&i| data.member_of(&data.messages[i].channel))
            .collect();
        recent.sort_by_key(|&i| std::cmp::Reverse(ts_key(&data.messages[i].ts)));
        let mut out = Vec::new();
        for &i in recent.iter().take(n) {
            let ts = self.next_ts();
            let m = &mut data.messages[i];
            m.text.push_str(" (edited)");
            m.edited = Some(ts);
            out.push(m.clone());
        }
        out
    }

    /// Adds one reply, timestamped now, to each of the `n` most recent thread parents of the
    /// member channels. Returns the replies.
    pub fn reply(&self, n: usize) -> Vec<Message> {
        let Ok(mut data) = self.shared.data.write() else {
            return vec![];
        };
        self.shared.data_changed();
        let mut parents: Vec<usize> = (0..data.messages.len())
            .filter(|&i| {
                data.messages[i].reply_count > 0 && data.member_of(&data.messages[i].channel)
            })
            .collect();
        parents.sort_by_key(|&i| std::cmp::Reverse(ts_key(&data.messages[i].ts)));
        let user = data.users.first().map(|u| u.id.clone()).unwrap_or_default();
        let mut out = Vec::new();
        for &i in parents.iter().take(n) {
            let parent = &data.messages[i];
            let r = Message {
                channel: parent.channel.clone(),
                ts: self.next_ts(),
                user: user.clone(),
                text: "a late reply".into(),
                thread_ts: Some(parent.ts.clone()),
                reply_count: 0,
                reply_users: vec![],
                latest_reply: None,
                edited: None,
            };
            add_reply(&mut data.messages[i], &r);
            data.replies.push(r.clone());
            out.push(r);
        }
        out
    }

    fn next_ts(&self) -> String {
        let k = self.shared.added.fetch_add(1, Ordering::SeqCst);
        // Now, as Slack stamps it (never ahead of its `Date`); later than the generated data,
        // which ends an hour before `config.now`, and than earlier ones (the sequence grows).
        ts_of(now_secs().max(self.shared.config.now), 900_000 + k)
    }
}

impl Drop for SlackHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ok(mut body: Value) -> Response {
    body["ok"] = json!(true);
    axum::Json(body).into_response()
}

/// Slack's error shape: HTTP 200, `ok: false`.
fn fail(error: &str) -> Response {
    axum::Json(json!({"ok": false, "error": error})).into_response()
}

fn scope_list(scopes: &str) -> Vec<String> {
    scopes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The scopes a method accepts (`x-accepted-oauth-scopes`).
fn accepted_scopes(method: &str) -> &'static str {
    match method {
        "conversations.list" => "channels:read,groups:read,mpim:read,im:read",
        "users.list" => "users:read",
        "conversations.history" | "conversations.replies" => {
            "channels:history,groups:history,mpim:history,im:history"
        }
        _ => "",
    }
}

/// The list and history scopes of a conversation type.
fn type_scopes(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "public_channel" => ("channels:read", "channels:history"),
        "private_channel" => ("groups:read", "groups:history"),
        "mpim" => ("mpim:read", "mpim:history"),
        _ => ("im:read", "im:history"),
    }
}

fn kind_of(ch: &Channel) -> &'static str {
    if ch.is_private {
        "private_channel"
    } else {
        "public_channel"
    }
}

/// `missing_scope` if `granted` lacks any of `needed`, as Slack answers it.
fn require(needed: &[&str], granted: &[String]) -> Result<(), Response> {
    let lacking: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|n| !granted.iter().any(|g| g == n))
        .collect();
    if lacking.is_empty() {
        return Ok(());
    }
    Err(axum::Json(json!({"ok": false, "error": "missing_scope", "needed": lacking.join(","), "provided": granted.join(",")})).into_response())
}

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let n = s.counters.next();
    match s.knobs.decide(n).await {
        Injected::None => {}
        Injected::BadGateway => {
            s.counters.bad_gateways.fetch_add(1, Ordering::SeqCst);
            return (
                StatusCode::BAD_GATEWAY,
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response();
        }
        Injected::RateLimited | Injected::Exhausted => {
            s.counters.rate_limited.fetch_add(1, Ordering::SeqCst);
            let secs = if s.knobs.exhausted.load(Ordering::SeqCst) {
                3_600
            } else {
                s.knobs.retry_after_secs.load(Ordering::SeqCst)
            };
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            return r;
        }
    }
    let Some(name) = uri
        .path()
        .strip_prefix("/api/")
        .filter(|m| !m.contains('/'))
    else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"ok": false, "error": "unknown_method"})),
        )
            .into_response();
    };
    let mut params = query(uri.query().unwrap_or(""));
    if method == Method::POST {
        params.extend(query(&body));
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| get(&params, "token").map(str::to_string));
    let c = &s.config;
    let granted = match token.as_deref() {
        None => return unauthorized(&s, "not_authed"),
        Some(t) if t == c.revoked_token => return unauthorized(&s, "token_revoked"),
        Some(t) => match s.grants.read().ok().and_then(|g| g.get(t).cloned()) {
            Some(granted) => granted,
            None => return unauthorized(&s, "invalid_auth"),
        },
    };
    let known = [
        "auth.test",
        "conversations.list",
        "users.list",
        "conversations.history",
        "conversations.replies",
    ];
    if !known.contains(&name) {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"ok": false, "error": "unknown_method"})),
        )
            .into_response();
    }
    s.counters.route(name);
    let mut resp = answer(&s, name, &params, &granted);
    if let Ok(v) = HeaderValue::from_str(&granted.join(",")) {
        resp.headers_mut().insert("x-oauth-scopes", v);
    }
    let accepted = accepted_scopes(name);
    if !accepted.is_empty() {
        resp.headers_mut().insert(
            "x-accepted-oauth-scopes",
            HeaderValue::from_static(accepted),
        );
    }
    resp
}

/// The answer of a known method to a valid token.
fn answer(s: &Shared, name: &str, params: &[(String, String)], granted: &[String]) -> Response {
    if name == "auth.test" {
        return ok(
            json!({"url": "https://acme.slack.com/", "team": "Acme", "user": "sluice-bot", "team_id": "T00000001", "user_id": "U0BOT0001", "bot_id": "B00000001", "is_enterprise_install": false}),
        );
    }
    let Ok(data) = s.data.read() else {
        return fail("internal_error");
    };
    let c = &s.config;
    let result = match name {
        "conversations.list" => conversations_list(c, &data, params, granted),
        "users.list" => users_list(c, &data, params, granted),
        "conversations.history" => history(s, &data, params, granted),
        _ => replies(c, &data, params, granted),
    };
    result.unwrap_or_else(|r| r)
}

fn unauthorized(s: &Shared, error: &str) -> Response {
    s.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
    fail(error)
}

/// A cursor is opaque to clients; here it is the offset of the next item.
fn cursor(params: &[(String, String)]) -> Result<usize, Response> {
    match get(params, "cursor") {
        None => Ok(0),
        Some(c) => c
            .strip_prefix("dGVhbTpD")
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| fail("invalid_cursor")),
    }
}

fn next_cursor(offset: usize) -> String {
    format!("dGVhbTpD{offset:x}")
}

fn limit(c: &SlackConfig, params: &[(String, String)], default: usize) -> usize {
    let asked = get(params, "limit")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(default);
    asked.min(c.max_limit.max(1)).min(1000)
}

fn channel_json(ch: &Channel) -> Value {
    json!({
        "id": ch.id, "name": ch.name, "name_normalized": ch.name, "is_channel": !ch.is_private, "is_group": false,
        "is_im": false, "is_mpim": false, "is_private": ch.is_private, "created": ch.created, "is_archived": ch.is_archived,
        "is_general": ch.name == "general", "unlinked": 0, "is_shared": false, "is_org_shared": false, "is_ext_shared": false,
        "is_pending_ext_shared": false, "pending_shared": [], "context_team_id": "T00000001", "updated": ch.created * 1000,
        "parent_conversation": null, "creator": ch.creator, "is_member": ch.is_member, "previous_names": [],
        "topic": {"value": ch.topic, "creator": ch.creator, "last_set": ch.created},
        "purpose": {"value": ch.purpose, "creator": ch.creator, "last_set": ch.created},
        "num_members": ch.num_members,
    })
}

fn user_json(u: &User, emails: bool) -> Value {
    let mut profile = json!({"real_name": u.real_name, "display_name": u.display_name, "real_name_normalized": u.real_name, "display_name_normalized": u.display_name, "image_72": format!("https://avatars.slack-edge.com/{}_72.png", u.id), "team": "T00000001"});
    if let Some(email) = u.email.as_ref().filter(|_| emails) {
        profile["email"] = json!(email);
    }
    if u.is_bot {
        profile["bot_id"] = json!(format!("B{}", &u.id[1..]));
    }
    json!({
        "id": u.id, "team_id": "T00000001", "name": u.name, "deleted": u.deleted, "color": "9f69e7", "real_name": u.real_name,
        "tz": u.tz, "tz_label": u.tz, "tz_offset": if u.tz.starts_with("Europe") { 3_600 } else if u.tz.starts_with("Asia") { 32_400 } else { -18_000 },
        "profile": profile, "is_admin": u.is_admin, "is_owner": u.is_admin, "is_primary_owner": u.is_admin,
        "is_restricted": false, "is_ultra_restricted": false, "is_bot": u.is_bot, "is_app_user": false, "updated": u.updated,
        "is_email_confirmed": !u.is_bot, "who_can_share_contact_card": "EVERYONE",
    })
}

fn message_json(m: &Message) -> Value {
    let mut v = json!({
        "type": "message", "user": m.user, "text": m.text, "ts": m.ts, "team": "T00000001",
        "client_msg_id": format!("{:08x}-0000-4000-8000-{:012x}", ts_key(&m.ts).0, ts_key(&m.ts).1),
        "blocks": [{"type": "rich_text", "block_id": "b1", "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": m.text}]}]}],
    });
    if let Some(t) = &m.thread_ts {
        v["thread_ts"] = json!(t);
    }
    if let Some(ts) = &m.edited {
        v["edited"] = json!({"user": m.user, "ts": ts});
    }
    if m.is_reply() {
        v["parent_user_id"] = json!("U00001000");
    }
    if m.reply_count > 0 {
        v["reply_count"] = json!(m.reply_count);
        v["reply_users_count"] = json!(m.reply_users.len());
        v["reply_users"] = json!(m.reply_users);
        v["latest_reply"] = json!(m.latest_reply);
        v["subscribed"] = json!(false);
    }
    v
}

fn conversations_list(
    c: &SlackConfig,
    data: &SlackDataset,
    params: &[(String, String)],
    granted: &[String],
) -> Result<Response, Response> {
    let types = get(params, "types").unwrap_or("public_channel");
    let needed: Vec<&str> = types.split(',').map(|t| type_scopes(t.trim()).0).collect();
    require(&needed, granted)?;
    let offset = cursor(params)?;
    let exclude_archived = matches!(get(params, "exclude_archived"), Some("true" | "1"));
    let limit = limit(c, params, 100);
    // Slack pages over every conversation, then filters: pages come short, even empty.
    let end = (offset + limit).min(data.channels.len());
    let page: Vec<Value> = data.channels[offset.min(end)..end]
        .iter()
        .filter(|ch| {
            types.split(',').any(|t| {
                t == if ch.is_private {
                    "private_channel"
                } else {
                    "public_channel"
                }
            })
        })
        .filter(|ch| !(exclude_archived && ch.is_archived))
        .map(channel_json)
        .collect();
    let next = if end < data.channels.len() {
        next_cursor(end)
    } else {
        String::new()
    };
    Ok(ok(
        json!({"channels": page, "response_metadata": {"next_cursor": next}}),
    ))
}

fn users_list(
    c: &SlackConfig,
    data: &SlackDataset,
    params: &[(String, String)],
    granted: &[String],
) -> Result<Response, Response> {
    require(&["users:read"], granted)?;
    let emails = granted.iter().any(|g| g == "users:read.email");
    let offset = cursor(params)?;
    let limit = limit(c, params, 100);
    let end = (offset + limit).min(data.users.len());
    let page: Vec<Value> = data.users[offset.min(end)..end]
        .iter()
        .map(|u| user_json(u, emails))
        .collect();
    let next = if end < data.users.len() {
        next_cursor(end)
    } else {
        String::new()
    };
    Ok(ok(
        json!({"members": page, "cache_ts": now_secs(), "response_metadata": {"next_cursor": next}}),
    ))
}

/// Slices `items` from the cursor: `limit` items, one fewer on every other page when ragged.
fn window(
    c: &SlackConfig,
    params: &[(String, String)],
    default: usize,
    len: usize,
) -> Result<(usize, usize), Response> {
    let offset = cursor(params)?;
    let mut limit = limit(c, params, default);
    if c.ragged_pages && limit > 1 && (offset / limit) % 2 == 1 {
        limit -= 1;
    }
    Ok((offset.min(len), (offset + limit).min(len)))
}

fn history(
    s: &Shared,
    data: &SlackDataset,
    params: &[(String, String)],
    granted: &[String],
) -> Result<Response, Response> {
    let c = &s.config;
    let Some(channel) =
        get(params, "channel").and_then(|id| data.channels.iter().find(|ch| ch.id == id))
    else {
        return Err(fail("channel_not_found"));
    };
    require(&[type_scopes(kind_of(channel)).1], granted)?;
    if !channel.is_member {
        return Err(fail("not_in_channel"));
    }
    let inclusive = matches!(get(params, "inclusive"), Some("true" | "1"));
    let oldest = get(params, "oldest").map_or((0, 0), ts_key);
    let latest = get(params, "latest").map(ts_key);
    let index = s.history_index(data);
    let items: Vec<&Arc<str>> = index
        .get(&channel.id)
        .into_iter()
        .flatten()
        .filter(|(k, _)| {
            let after = if inclusive { *k >= oldest } else { *k > oldest };
            let before = latest.is_none_or(|l| if inclusive { *k <= l } else { *k < l });
            after && before
        })
        .map(|(_, json)| json)
        .collect();
    let (start, end) = window(c, params, 100, items.len())?;
    let more = end < items.len();
    // The messages are JSON already: the body is written around them, in the order of
    // `{"messages", "has_more", "pin_count", "channel_actions_ts", "channel_actions_count",
    // "response_metadata"?, "ok"}`.
    let mut body =
        String::with_capacity(64 + items[start..end].iter().map(|m| m.len() + 1).sum::<usize>());
    body.push_str("{\"messages\":[");
    for (k, m) in items[start..end].iter().enumerate() {
        if k > 0 {
            body.push(',');
        }
        body.push_str(m);
    }
    body.push_str(&format!(
        "],\"has_more\":{more},\"pin_count\":0,\"channel_actions_ts\":null,\"channel_actions_count\":0"
    ));
    if more {
        body.push_str(&format!(
            ",\"response_metadata\":{{\"next_cursor\":\"{}\"}}",
            next_cursor(end)
        ));
    }
    body.push_str(",\"ok\":true}");
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

fn replies(
    c: &SlackConfig,
    data: &SlackDataset,
    params: &[(String, String)],
    granted: &[String],
) -> Result<Response, Response> {
    let Some(channel) =
        get(params, "channel").and_then(|id| data.channels.iter().find(|ch| ch.id == id))
    else {
        return Err(fail("channel_not_found"));
    };
    require(&[type_scopes(kind_of(channel)).1], granted)?;
    if !channel.is_member {
        return Err(fail("not_in_channel"));
    }
    let Some(parent) = get(params, "ts").and_then(|ts| {
        data.messages
            .iter()
            .find(|m| m.channel == channel.id && m.ts == ts)
    }) else {
        return Err(fail("thread_not_found"));
    };
    let mut items: Vec<&Message> = vec![parent];
    let mut thread: Vec<&Message> = data
        .replies
        .iter()
        .filter(|r| r.channel == channel.id && r.thread_ts.as_deref() == Some(parent.ts.as_str()))
        .collect();
    thread.sort_by_key(|m| ts_key(&m.ts));
    items.extend(thread);
    let (start, end) = window(c, params, 10, items.len())?;
    let page: Vec<Value> = items[start..end].iter().map(|m| message_json(m)).collect();
    let more = end < items.len();
    Ok(ok(
        json!({"messages": page, "has_more": more, "response_metadata": {"next_cursor": if more { next_cursor(end) } else { String::new() }}}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_consistent() {
        let c = SlackConfig {
            now: 1_700_000_000,
            ..Default::default()
        };
        let (a, b) = (SlackDataset::generate(&c), SlackDataset::generate(&c));
        assert_eq!(a.messages, b.messages);
        assert_eq!(a.messages.len(), 800);
        assert_eq!(a.channels.iter().filter(|ch| !ch.is_member).count(), 2);
        let parents: u64 = a.messages.iter().map(|m| m.reply_count).sum();
        assert_eq!(parents as usize, a.replies.len());
        assert!(
            a.replies
                .iter()
                .all(|r| r.is_reply() && ts_key(&r.ts).0 < c.now)
        );
        let mut seen = std::collections::HashSet::new();
        assert!(
            a.messages
                .iter()
                .chain(&a.replies)
                .all(|m| seen.insert((m.channel.clone(), m.ts.clone()))),
            "unique keys"
        );
    }
}
