//! `github`: repositories, issues, pull requests, commits and issue comments from the GitHub
//! REST API (v3), for a list of repositories and/or every repository of an organization.
//!
//! The host injects the `token` secret as `Authorization: Bearer …` and does retries, 5xx
//! backoff and rate-limit waits (`x-ratelimit-*`, `retry-after`); what it hands back is mapped
//! here. Listings follow `Link: rel="next"` with `per_page=100`.
//!
//! Incremental streams keep one cursor per repository: `{"repos": {"owner/repo": "<ISO>"}}`.
//! Every listing is read newest first (`sort=updated&direction=desc`, or the commit order):
//! a page-numbered listing read oldest first skips an item whenever an already-read one is
//! updated mid-listing (everything after it shifts one place back), whereas newest first that
//! only re-reads one. So a repository's cursor advances when its listing is complete; the
//! state is checkpointed after every page and every repository. Issues, issue comments and
//! commits filter with `since` (inclusive: the newest record of the last run is read again,
//! and deduplicated on the primary key); pull requests have no `since`, so their listing stops
//! at the first one updated before the cursor. Commits are the exception: a commit's date is
//! not when it reached the default branch (a merged branch keeps its old dates), so their
//! state also keeps the head synced last per repository, and the history is walked from the
//! new head back to it ([`Walk`]).
//!
//! Access: `validate` names what the token cannot read (classic tokens from `x-oauth-scopes`,
//! fine-grained ones by reading each listing once); a sync skips a listing that answers 403
//! or 404 with a warning, unless `required_streams` names it, and fails if it could read
//! nothing at all.

mod schema;
use sluice_sdk::time;

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_sdk::http::{Request, Response};
use sluice_sdk::paging::LoopGuard;
use sluice_sdk::records::Batcher;
use sluice_sdk::{
    Connector, ConnectorError, Manifest, Result, StreamSpec, SyncRequest, Value, json, log,
    parse_config, serde_json,
};

use schema::{COMMITS, ISSUE_COMMENTS, ISSUES, PULL_REQUESTS, REPOSITORIES};

const TOKEN: &str = "token";
const DEFAULT_API_URL: &str = "https://api.github.com";
const PER_PAGE: &str = "100";
const STREAMS: [&str; 5] = [REPOSITORIES, ISSUES, PULL_REQUESTS, COMMITS, ISSUE_COMMENTS];

struct Github;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    repositories: Vec<String>,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    required_streams: Vec<String>,
}

/// A checked config.
#[derive(Debug)]
struct Config {
    /// API root without a trailing slash.
    api: String,
    repositories: Vec<String>,
    organization: Option<String>,
    /// `start_date` as `YYYY-MM-DDTHH:MM:SSZ`: the cursor of a repository with no state.
    start: Option<String>,
    /// Streams that must be readable in every repository: `validate` answers
    /// `insufficient-scope` and `sync` fails instead of skipping them.
    required: Vec<String>,
}

impl Config {
    fn load(config: &Value) -> Result<Self> {
        let raw: RawConfig = parse_config(config)?;
        let invalid = |m: String| Err(ConnectorError::invalid_config(m));
        let api = raw.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        sluice_sdk::http::check_base_url("api_url", api)?;
        let mut repositories: Vec<String> = Vec::new();
        for repo in &raw.repositories {
            let repo = repo.trim();
            let valid = repo
                .split_once('/')
                .is_some_and(|(owner, name)| is_name(owner) && is_name(name));
            if !valid {
                return invalid(format!("repository {repo:?} must be owner/repo"));
            }
            if !repositories.iter().any(|r| r.eq_ignore_ascii_case(repo)) {
                repositories.push(repo.to_string());
            }
        }
        let organization = raw.organization.map(|o| o.trim().to_string());
        if let Some(org) = &organization
            && !is_name(org)
        {
            return invalid(format!("organization {org:?} is not a GitHub login"));
        }
        if repositories.is_empty() && organization.is_none() {
            return invalid("set repositories, organization, or both".into());
        }
        let start = match raw.start_date.as_deref() {
            None => None,
            Some(s) => match time::parse_iso(s) {
                Some(epoch) => Some(time::format_iso(epoch)),
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
            repositories,
            organization,
            start,
            required: raw.required_streams,
        })
    }

    fn requires(&self, stream: &str) -> bool {
        self.required.iter().any(|s| s == stream)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    /// The repositories to read, with their objects: the configured ones (each read with
    /// `GET /repos/{o}/{r}`, so one the token cannot see fails here, naming it), then the
    /// organization's.
    fn resolve(&self) -> Result<Vec<(String, Value)>> {
        let mut repos: Vec<(String, Value)> = Vec::new();
        for repo in &self.repositories {
            let request = Request::get(self.url(&format!("/repos/{repo}")));
            let item: Value = check(send(request)?, &format!("repository {repo}"))?.json()?;
            repos.push((repo.clone(), item));
        }
        if let Some(org) = &self.organization {
            let first = Request::get(self.url(&format!("/orgs/{org}/repos")))
                .query("type", "all")
                .query("per_page", PER_PAGE);
            paginate(first, &format!("organization {org}"), false, |items| {
                for item in items {
                    let item: Value = serde_json::from_str(item.get()).map_err(|e| {
                        ConnectorError::internal(format!("unexpected repository item: {e}"))
                    })?;
                    let Some(name) = item.get("full_name").and_then(Value::as_str) else {
                        continue;
                    };
                    let name = name.to_string();
                    if !repos.iter().any(|(r, _)| r.eq_ignore_ascii_case(&name)) {
                        repos.push((name, item));
                    }
                }
                Ok(true)
            })?;
        }
        Ok(repos)
    }
}

/// A GitHub login or repository name: `[A-Za-z0-9._-]`, 1-100 characters, not `.` or `..`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Sends a request with the token and GitHub's media type.
fn send(request: Request) -> Result<Response> {
    Ok(request
        .bearer_secret(TOKEN)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .send()?)
}

/// A rate-limit answer the host handed back after its waits: 429, or 403 with the budget
/// spent, a `retry-after`, or GitHub's secondary-limit message.
fn is_rate_limited(response: &Response) -> bool {
    response.status == 429
        || (response.status == 403
            && (response.header("x-ratelimit-remaining") == Some("0")
                || response.header("retry-after").is_some()
                || message(response).contains("rate limit")))
}

/// A 403 or 404 that is not a rate limit: on a listing of a repository the token can see,
/// GitHub's answer to a token without the permission that listing needs.
fn is_denied(response: &Response) -> bool {
    matches!(response.status, 403 | 404) && !is_rate_limited(response)
}

/// GitHub's error `message`, on one short line.
fn message(response: &Response) -> String {
    let text = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "no message".into());
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(200).collect()
}

/// `Ok` for a 2xx; else the error GitHub's answer means. `subject` names what was read.
fn check(response: Response, subject: &str) -> Result<Response> {
    if response.is_success() {
        return Ok(response);
    }
    let status = response.status;
    let detail = message(&response);
    if is_rate_limited(&response) {
        return Err(ConnectorError::rate_limited(format!(
            "GitHub rate limit still exhausted reading {subject} (HTTP {status}: {detail})"
        )));
    }
    Err(match status {
        401 => ConnectorError::invalid_credentials(format!(
            "GitHub rejected the token (HTTP 401: {detail})"
        )),
        403 | 404 => ConnectorError::insufficient_scope(format!(
            "the token cannot read {subject} (HTTP {status}: {detail}); check the name and the token's access"
        )),
        500..=599 => ConnectorError::unreachable(format!(
            "GitHub kept failing reading {subject} (HTTP {status})"
        )),
        _ => ConnectorError::internal(format!(
            "unexpected answer reading {subject}: HTTP {status}: {detail}"
        )),
    })
}

/// Reads a listing page by page, following `Link: rel="next"`; `page` gets each page's items
/// (unparsed) and returns whether to go on. A 409 "Git Repository is empty" is an empty
/// listing, and so is a 410 (issues disabled in the repository). With `denied_ok`, a first
/// page answering [`is_denied`] is returned instead of failing.
fn paginate(
    first: Request,
    subject: &str,
    denied_ok: bool,
    mut page: impl FnMut(Vec<&RawValue>) -> Result<bool>,
) -> Result<Option<Response>> {
    paginate_bodies(first, subject, denied_ok, |body| {
        let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
            ConnectorError::internal(format!("{subject}: unexpected response body: {e}"))
        })?;
        page(items)
    })
}

/// [`paginate`], handing each page's body over unparsed (a listing then reads it in one scan).
fn paginate_bodies(
    first: Request,
    subject: &str,
    denied_ok: bool,
    mut page: impl FnMut(&[u8]) -> Result<bool>,
) -> Result<Option<Response>> {
    let mut next = Some(first);
    let mut guard = LoopGuard::new(subject);
    let mut first_page = true;
    while let Some(request) = next.take() {
        // A `Link` back to a page already read, or new links to the same records, is an
        // upstream going round in circles: the run fails instead of reading until its deadline.
        guard.follow(request.url())?;
        let response = send(request)?;
        if response.status == 409 && message(&response).to_lowercase().contains("empty") {
            break;
        }
        if response.status == 410 {
            log::warn(
                "listing disabled in the repository; read as empty",
                &[("subject", subject), ("message", &message(&response))],
            );
            break;
        }
        if denied_ok && first_page && is_denied(&response) {
            return Ok(Some(response));
        }
        first_page = false;
        let response = check(response, subject)?;
        let empty = response
            .body
            .iter()
            .filter(|b| !b.is_ascii_whitespace())
            .eq(b"[]".iter());
        guard.page(usize::from(!empty), &[&response.body])?;
        if !page(&response.body)? {
            break;
        }
        next = response.next_link().map(Request::get);
    }
    Ok(None)
}

/// An incremental stream: one listing per repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    Issues,
    PullRequests,
    Commits,
    IssueComments,
}

impl Listing {
    const ALL: [Listing; 4] = [
        Listing::Issues,
        Listing::PullRequests,
        Listing::Commits,
        Listing::IssueComments,
    ];

    fn stream(self) -> &'static str {
        match self {
            Listing::Issues => ISSUES,
            Listing::PullRequests => PULL_REQUESTS,
            Listing::Commits => COMMITS,
            Listing::IssueComments => ISSUE_COMMENTS,
        }
    }

    /// The listing's path under `/repos/{o}/{r}/`.
    fn path(self) -> &'static str {
        match self {
            Listing::Issues => "issues",
            Listing::PullRequests => "pulls",
            Listing::Commits => "commits",
            Listing::IssueComments => "issues/comments",
        }
    }

    /// The fine-grained permission GitHub documents for the listing, named as in its
    /// `x-accepted-github-permissions` header (used when an answer lacks that header).
    fn permission(self) -> &'static str {
        match self {
            Listing::Issues | Listing::IssueComments => "issues=read",
            Listing::PullRequests => "pull_requests=read",
            Listing::Commits => "contents=read",
        }
    }

    /// The first page, newest first, filtered with `since` where the API has it.
    fn first(self, config: &Config, repo: &str, since: Option<&str>) -> Request {
        let sorted = self != Listing::Commits;
        let mut request = Request::get(config.url(&format!("/repos/{repo}/{}", self.path())));
        if matches!(self, Listing::Issues | Listing::PullRequests) {
            request = request.query("state", "all");
        }
        if sorted {
            request = request.query("sort", "updated").query("direction", "desc");
        }
        request = request.query("per_page", PER_PAGE);
        match since {
            Some(since) if self != Listing::PullRequests => request.query("since", since),
            _ => request,
        }
    }

    /// The cursor value and the record (`None`: not part of this stream) of each item of a
    /// page, read in one scan of the page. Issues, the biggest stream, are reshaped without
    /// building a tree of each item, and their records are written field by field.
    fn page<'b>(
        self,
        body: &'b [u8],
        repo: &str,
    ) -> Result<Vec<(Option<i64>, Option<Shaped<'b>>)>> {
        let bad = |e: serde_json::Error| {
            ConnectorError::internal(format!(
                "{} of repository {repo}: unexpected response body: {e}",
                self.stream()
            ))
        };
        if self == Listing::Issues {
            // Checked as UTF-8 once here, so that the parse does not check each string again.
            let text = std::str::from_utf8(body).map_err(|e| {
                ConnectorError::internal(format!(
                    "{} of repository {repo}: the response body is not UTF-8: {e}",
                    self.stream()
                ))
            })?;
            // Found, not checked: the host checks every record it is given in full.
            let items = sluice_sdk::fields::scan_objects(text).map_err(bad)?;
            return items
                .into_iter()
                .map(|fields| {
                    let updated = fields.str("updated_at").map_err(bad)?;
                    let issue = schema::is_issue(&fields).then_some(Shaped::Issue(fields));
                    Ok((cursor_of(updated.as_deref()), issue))
                })
                .collect();
        }
        let items: Vec<Value> = serde_json::from_slice(body).map_err(bad)?;
        items
            .into_iter()
            .map(|item| {
                let (cursor, record) = self.shape_tree(item, repo).map_err(bad)?;
                Ok((cursor, record.map(Shaped::Json)))
            })
            .collect()
    }

    /// The cursor value and the record of one item (JSON text).
    fn shape(self, item: &RawValue, repo: &str) -> Result<(Option<i64>, Option<String>)> {
        let bad = |e: serde_json::Error| {
            ConnectorError::internal(format!("unexpected {} item: {e}", self.stream()))
        };
        match self {
            Listing::Issues => {
                Self::shape_issue(schema::Scanned::parse(item.get()).map_err(bad)?, repo)
                    .map_err(bad)
            }
            _ => {
                let item: Value = serde_json::from_str(item.get()).map_err(bad)?;
                self.shape_tree(item, repo).map_err(bad)
            }
        }
    }

    fn shape_issue(
        fields: schema::Scanned<'_>,
        repo: &str,
    ) -> serde_json::Result<(Option<i64>, Option<String>)> {
        let updated = fields.str("updated_at")?;
        Ok((cursor_of(updated.as_deref()), schema::issue(fields, repo)))
    }

    fn shape_tree(
        self,
        item: Value,
        repo: &str,
    ) -> serde_json::Result<(Option<i64>, Option<String>)> {
        let (at, record): (&str, fn(Value, &str) -> Value) = match self {
            Listing::Issues => {
                return Self::shape_issue(schema::Scanned::parse(&item.to_string())?, repo);
            }
            Listing::PullRequests => ("/updated_at", schema::pull_request),
            Listing::Commits => ("/commit/committer/date", schema::commit),
            Listing::IssueComments => ("/updated_at", schema::issue_comment),
        };
        let cursor = cursor_of(item.pointer(at).and_then(Value::as_str));
        Ok((cursor, Some(record(item, repo).to_string())))
    }
}

/// A record of a listing page: its JSON text, or the fields of an issue, written into the
/// batch as they are ([`schema::write_issue`]).
enum Shaped<'a> {
    Json(String),
    Issue(schema::Scanned<'a>),
}

/// A cursor value: an ISO 8601 time as seconds since the epoch (`None` when absent or
/// unreadable); the state keeps it as [`time::format_iso`] text.
fn cursor_of(v: Option<&str>) -> Option<i64> {
    v.and_then(time::parse_iso)
}

/// A listing the token may not read in one repository.
#[derive(Debug, Clone, PartialEq)]
struct Denied {
    stream: &'static str,
    repository: String,
    /// What GitHub says the listing needs (`x-accepted-github-permissions`, e.g.
    /// `contents=read`), else [`Listing::permission`].
    permission: String,
    status: u16,
}

impl Denied {
    fn of(listing: Listing, repository: &str, response: &Response) -> Self {
        let permission = response
            .header("x-accepted-github-permissions")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .unwrap_or(listing.permission());
        Self {
            stream: listing.stream(),
            repository: repository.to_string(),
            permission: permission.to_string(),
            status: response.status,
        }
    }

    /// The entry of `unreadable_streams` in the `validate` account.
    fn json(&self) -> Value {
        json!({"stream": self.stream, "repository": self.repository, "missing_scope": self.permission})
    }

    fn describe(&self) -> String {
        format!(
            "{} of {} (HTTP {}; needs {})",
            self.stream, self.repository, self.status, self.permission
        )
    }

    /// The error for a stream `required_streams` names.
    fn required_error(&self) -> ConnectorError {
        ConnectorError::insufficient_scope(format!(
            "required stream {} cannot be read in repository {} (HTTP {}): the token lacks the permission {}",
            self.stream, self.repository, self.status, self.permission
        ))
    }
}

/// What a sync could read, across streams and repositories.
#[derive(Default)]
struct Coverage {
    /// Some selected stream was read in some repository.
    read: bool,
    /// Listings skipped because the token may not read them.
    denied: Vec<Denied>,
}

impl Coverage {
    /// A listing answered [`is_denied`]: an error for a required stream, else skipped with a
    /// warning (its cursor stays where it was).
    fn deny(&mut self, config: &Config, denied: Denied) -> Result<()> {
        if config.requires(denied.stream) {
            return Err(denied.required_error());
        }
        log::warn(
            "stream not readable in this repository with this token; skipped",
            &[
                ("stream", denied.stream),
                ("repository", &denied.repository),
                ("status", &denied.status.to_string()),
                ("missing_scope", &denied.permission),
            ],
        );
        self.denied.push(denied);
        Ok(())
    }

    /// An error if the token could read none of what was selected.
    fn finish(&self) -> Result<()> {
        if self.read || self.denied.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = self.denied.iter().map(Denied::describe).collect();
        Err(ConnectorError::insufficient_scope(format!(
            "the token can read none of the selected streams: {}",
            list.join("; ")
        )))
    }
}

/// The per-repository cursors of a stream's state `{"repos": {...}}`.
fn cursors(state: Option<&Value>) -> BTreeMap<String, String> {
    strings(state, "repos")
}

/// The string values of the object `key` of a state.
fn strings(state: Option<&Value>, key: &str) -> BTreeMap<String, String> {
    state
        .and_then(|s| s.get(key))
        .and_then(Value::as_object)
        .map(|repos| {
            repos
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn sync_listing(
    config: &Config,
    listing: Listing,
    repos: &[(String, Value)],
    state: Option<&Value>,
    out: &mut Batcher,
    coverage: &mut Coverage,
) -> Result<()> {
    let stream = listing.stream();
    let mut cursors = cursors(state);
    for (repo, _) in repos {
        let since = cursors.get(repo).or(config.start.as_ref()).cloned();
        let since_at = cursor_of(since.as_deref());
        let mut newest: Option<i64> = None;
        let (mut pages, mut records) = (0u64, 0u64);
        let subject = format!("{stream} of repository {repo}");
        let first = listing.first(config, repo, since.as_deref());
        let denied = paginate_bodies(first, &subject, true, |body| {
            let mut more = true;
            for (cursor, record) in listing.page(body, repo)? {
                if let (Some(c), Some(since)) = (cursor, since_at)
                    && c < since
                {
                    // Only the pulls listing (no `since`) returns older items: sorted newest
                    // first, everything after this one is older too.
                    more = false;
                    continue;
                }
                if cursor > newest {
                    newest = cursor;
                }
                match record {
                    Some(Shaped::Json(record)) => out.push_json(stream, record)?,
                    Some(Shaped::Issue(fields)) => {
                        out.push_fields(stream, |w| schema::write_issue(&fields, repo, w))?;
                    }
                    None => continue,
                }
                records += 1;
            }
            pages += 1;
            // The repository's cursor moves once its listing is complete (pages come newest
            // first); this checkpoint covers the records so far with the state so far.
            out.checkpoint(stream, &json!({ "repos": cursors }))?;
            Ok(more)
        })?;
        if let Some(response) = denied {
            coverage.deny(config, Denied::of(listing, repo, &response))?;
            continue;
        }
        coverage.read = true;
        let newest = newest.map(|n| time::clamp_to_now(n, &subject));
        if let Some(newest) = newest
            && since_at.is_none_or(|s| newest > s)
        {
            cursors.insert(repo.clone(), time::format_iso(newest));
        }
        out.checkpoint(stream, &json!({ "repos": cursors }))?;
        log::info(
            "repository read",
            &[
                ("stream", stream),
                ("repository", repo),
                ("pages", &pages.to_string()),
                ("records", &records.to_string()),
            ],
        );
    }
    Ok(())
}

/// Which commits of a default branch's history are new since the head synced last: those
/// not reachable from it, whatever their dates (a branch's commits merged later keep their
/// old committer dates, so a date cursor never sees them).
///
/// The listing (`GET /commits`, `git log` order) starts at the current head and shows every
/// commit after at least one of its children. A commit is old when it is the known head or a
/// parent of an old commit seen before it; new otherwise. The walk is over once every parent
/// of a new commit has been seen or is known old: it reads the new commits and, at most, the
/// old ones dated after the oldest merge base. A commit shown before all its children (clock
/// skew) may be taken for new: read again, deduplicated on `sha`; a new one is never taken
/// for old, since only the known head's ancestors are.
#[derive(Debug, Default)]
struct Walk {
    known: Option<String>,
    old: HashSet<String>,
    seen: HashSet<String>,
    /// Parents of new commits, not seen and not known old yet.
    frontier: HashSet<String>,
    /// The known head was seen, or is a parent of a commit seen: it is still in the history.
    found: bool,
    started: bool,
}

impl Walk {
    fn new(known: Option<String>) -> Self {
        Self {
            old: known.iter().cloned().collect(),
            known,
            ..Self::default()
        }
    }

    /// Classifies the next commit of the listing: whether it is new.
    fn see(&mut self, sha: &str, parents: &[String]) -> bool {
        self.started = true;
        if let Some(known) = &self.known
            && (sha == known || parents.iter().any(|p| p == known))
        {
            self.found = true;
        }
        self.frontier.remove(sha);
        let first_time = self.seen.insert(sha.to_string());
        if self.old.contains(sha) {
            for p in parents {
                self.frontier.remove(p);
                self.old.insert(p.clone());
            }
            return false;
        }
        if !first_time {
            return false; // listed again (the listing moved between pages): already read
        }
        for p in parents {
            if !self.old.contains(p) && !self.seen.contains(p) {
                self.frontier.insert(p.clone());
            }
        }
        true
    }

    /// Whether the rest of the listing is old: nothing more to read.
    fn done(&self) -> bool {
        self.known.is_some() && self.started && self.frontier.is_empty()
    }
}

/// The parts of a commit item the walk needs.
#[derive(Deserialize)]
struct CommitLinks {
    sha: String,
    #[serde(default)]
    parents: Vec<CommitRef>,
}

#[derive(Deserialize)]
struct CommitRef {
    sha: String,
}

/// `commits`: state `{"repos": {repo: newest committer date}, "heads": {repo: head sha}}`.
/// With a head, the default branch's history is walked from its current head back to the
/// known one ([`Walk`]); without one (a first sync, or a state written before heads were
/// kept) it is read with `since` (the date cursor, else `start_date`). Either way the head
/// the listing started from becomes the repository's head once the walk is complete.
fn sync_commits(
    config: &Config,
    repos: &[(String, Value)],
    state: Option<&Value>,
    out: &mut Batcher,
    coverage: &mut Coverage,
) -> Result<()> {
    let mut dates = cursors(state);
    let mut heads = strings(state, "heads");
    for (repo, _) in repos {
        let known = heads.get(repo).cloned();
        let since = match known {
            Some(_) => None,
            None => dates.get(repo).or(config.start.as_ref()).cloned(),
        };
        let mut walk = Walk::new(known.clone());
        let mut head: Option<String> = None;
        let mut newest: Option<i64> = None;
        let (mut pages, mut records, mut walked) = (0u64, 0u64, 0u64);
        let subject = format!("commits of repository {repo}");
        let first = Listing::Commits.first(config, repo, since.as_deref());
        let state = json!({"repos": &dates, "heads": &heads});
        let denied = paginate(first, &subject, true, |items| {
            pages += 1;
            for item in items {
                let links: CommitLinks = serde_json::from_str(item.get()).map_err(|e| {
                    ConnectorError::internal(format!("unexpected commits item: {e}"))
                })?;
                walked += 1;
                head.get_or_insert_with(|| links.sha.clone());
                let parents: Vec<String> = links.parents.into_iter().map(|p| p.sha).collect();
                if walk.see(&links.sha, &parents) {
                    let (cursor, record) = Listing::Commits.shape(item, repo)?;
                    if cursor > newest {
                        newest = cursor;
                    }
                    if let Some(record) = record {
                        out.push_json(COMMITS, record)?;
                        records += 1;
                    }
                }
                if walk.done() {
                    break;
                }
            }
            // The head moves once the walk is complete; this covers the records so far.
            out.checkpoint(COMMITS, &state)?;
            Ok(!walk.done())
        })?;
        if let Some(response) = denied {
            coverage.deny(config, Denied::of(Listing::Commits, repo, &response))?;
            continue;
        }
        coverage.read = true;
        if known.is_some() && !walk.found && walked > 0 {
            log::warn(
                "the head synced last is no longer in the default branch's history (force push?): its history was read again in full",
                &[("repository", repo)],
            );
        }
        if let Some(head) = head {
            heads.insert(repo.clone(), head);
        }
        if let Some(newest) = newest
            && cursor_of(dates.get(repo).map(String::as_str)).is_none_or(|d| newest > d)
        {
            dates.insert(repo.clone(), time::format_iso(newest));
        }
        out.checkpoint(COMMITS, &json!({"repos": &dates, "heads": &heads}))?;
        log::info(
            "repository read",
            &[
                ("stream", COMMITS),
                ("repository", repo),
                ("pages", &pages.to_string()),
                ("walked", &walked.to_string()),
                ("records", &records.to_string()),
            ],
        );
    }
    Ok(())
}

fn sync_repositories(repos: Vec<(String, Value)>, out: &mut Batcher) -> Result<()> {
    for (repo, item) in repos {
        out.push(REPOSITORIES, &schema::repository(item, &repo))?;
    }
    out.flush_stream(REPOSITORIES)
}

/// The scopes of an `x-oauth-scopes` header (`repo, read:org`).
fn parse_scopes(header: &str) -> Vec<String> {
    header
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether a repository object is public (fine-grained tokens read public repositories
/// whatever their permissions).
fn is_public(repo: &Value) -> bool {
    match repo.get("visibility").and_then(Value::as_str) {
        Some(visibility) => visibility == "public",
        None => repo.get("private").and_then(Value::as_bool) == Some(false),
    }
}

/// `validate`'s check of what the token may read. A classic token (its answers carry
/// `x-oauth-scopes`) reads every stream of a repository it can see, so only repositories
/// are checked; a fine-grained one (no such header) has per-permission access, so each
/// listing of each non-public repository is read once (`per_page=1`).
fn check_access(config: &Config, scopes: Option<&[String]>) -> Result<(Vec<Denied>, Vec<String>)> {
    let without_repo = scopes.is_some_and(|s| !s.iter().any(|s| s == "repo"));
    let mut probe: Vec<String> = Vec::new();
    for repo in &config.repositories {
        let response = send(Request::get(config.url(&format!("/repos/{repo}"))))?;
        if without_repo && is_denied(&response) {
            let scopes = scopes.unwrap_or_default().join(", ");
            return Err(ConnectorError::insufficient_scope(format!(
                "the token cannot read repository {repo} (HTTP {}: {}): it does not exist, or it is private and this classic token lacks the scope repo (its scopes: {})",
                response.status,
                message(&response),
                if scopes.is_empty() { "none" } else { &scopes }
            )));
        }
        let item: Value = check(response, &format!("repository {repo}"))?.json()?;
        if scopes.is_none() && !is_public(&item) {
            probe.push(repo.clone());
        }
    }
    let mut warnings = Vec::new();
    if let Some(org) = &config.organization {
        let request = Request::get(config.url(&format!("/orgs/{org}/repos")))
            .query("type", "all")
            .query("per_page", PER_PAGE);
        let listed: Vec<Value> = check(send(request)?, &format!("organization {org}"))?.json()?;
        if without_repo {
            warnings.push(format!(
                "this classic token lacks the scope repo: only the public repositories of organization {org} are listed and synced"
            ));
        }
        // A fine-grained token's permissions are the same in every repository it was
        // granted: one private repository of the organization stands for the others.
        if scopes.is_none()
            && let Some(name) = listed
                .iter()
                .filter(|r| !is_public(r))
                .filter_map(|r| r.get("full_name").and_then(Value::as_str))
                .find(|n| !probe.iter().any(|p| p.eq_ignore_ascii_case(n)))
        {
            probe.push(name.to_string());
        }
    }
    let mut denied = Vec::new();
    for repo in &probe {
        for listing in Listing::ALL {
            let request = Request::get(config.url(&format!("/repos/{repo}/{}", listing.path())))
                .query("per_page", "1");
            let response = send(request)?;
            if response.is_success() || matches!(response.status, 409 | 410) {
                continue;
            }
            if is_denied(&response) {
                denied.push(Denied::of(listing, repo, &response));
                continue;
            }
            check(
                response,
                &format!("{} of repository {repo}", listing.stream()),
            )?;
        }
    }
    Ok((denied, warnings))
}

impl Connector for Github {
    fn manifest() -> Manifest {
        let mut manifest = Manifest::new("github", "GitHub", env!("CARGO_PKG_VERSION"))
            .description(
                "GitHub repositories, issues, pull requests, commits and issue comments \
                 (REST API v3), incremental per repository.",
            )
            .config_schema(&config_schema())
            .secret(
                TOKEN,
                "GitHub token (classic, fine-grained or app), sent by the host as \
                 `Authorization: Bearer <token>`. Needs read access to the repositories \
                 (classic: `repo` for private ones; fine-grained: metadata, contents, \
                 issues, pull requests).",
                true,
            )
            .host(DEFAULT_API_URL)
            .host("{config.api_url}")
            .memory_mib(64);
        for stream in schema::streams() {
            manifest = manifest.stream(stream);
        }
        manifest
    }

    fn validate(config: Value) -> Result<Value> {
        let config = Config::load(&config)?;
        let response = send(Request::get(config.url("/user")))?;
        let scopes = response.header("x-oauth-scopes").map(parse_scopes);
        let user: Value = check(response, "the authenticated user")?.json()?;
        let (denied, warnings) = check_access(&config, scopes.as_deref())?;
        if let Some(required) = denied.iter().find(|d| config.requires(d.stream)) {
            return Err(required.required_error());
        }
        let mut account = json!({
            "login": user.get("login"),
            "id": user.get("id"),
            "token_type": if scopes.is_some() { "classic" } else { "fine-grained" },
            "scopes": scopes,
            "unreadable_streams": denied.iter().map(Denied::json).collect::<Vec<_>>(),
        });
        if !warnings.is_empty() {
            account["warnings"] = json!(warnings);
        }
        Ok(account)
    }

    fn discover(config: Value) -> Result<Vec<StreamSpec>> {
        Config::load(&config)?;
        Ok(schema::streams())
    }

    fn sync(request: SyncRequest) -> Result<()> {
        let config = Config::load(&request.config)?;
        let repos = config.resolve()?;
        log::info(
            "repositories resolved",
            &[("count", &repos.len().to_string())],
        );
        let mut out = Batcher::new(500);
        let mut coverage = Coverage::default();
        for listing in Listing::ALL {
            let stream = listing.stream();
            if !request.selected(stream) {
                continue;
            }
            let state = request.state(stream);
            if listing == Listing::Commits {
                sync_commits(&config, &repos, state, &mut out, &mut coverage)?;
            } else {
                sync_listing(&config, listing, &repos, state, &mut out, &mut coverage)?;
            }
        }
        if request.selected(REPOSITORIES) {
            coverage.read |= !repos.is_empty();
            sync_repositories(repos, &mut out)?;
        }
        coverage.finish()?;
        out.flush()
    }
}

fn config_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "GitHub",
        "type": "object",
        "additionalProperties": false,
        "anyOf": [
            {"required": ["repositories"], "properties": {"repositories": {"minItems": 1}}},
            {"required": ["organization"]}
        ],
        "properties": {
            "repositories": {
                "description": "Repositories to read, as owner/repo.",
                "type": "array",
                "items": {"type": "string", "pattern": "^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$"},
                "uniqueItems": true,
                "examples": [["octocat/hello-world"]]
            },
            "organization": {
                "description": "Also read every repository of this organization (GET /orgs/{org}/repos).",
                "type": "string",
                "pattern": "^[A-Za-z0-9._-]+$"
            },
            "api_url": {
                "description": "API root; GitHub Enterprise Server uses https://HOST/api/v3.",
                "type": "string",
                "pattern": "^https?://[^/?#]+",
                "default": DEFAULT_API_URL
            },
            "start_date": {
                "description": "ISO 8601 date or date-time: records updated (commits: committed) before it are not read on a first sync.",
                "type": "string",
                "examples": ["2024-01-01T00:00:00Z"]
            },
            "required_streams": {
                "description": "Streams the token must be able to read in every repository: validate answers insufficient_scope and a sync fails if it cannot, instead of skipping them with a warning.",
                "type": "array",
                "items": {"enum": STREAMS},
                "uniqueItems": true
            }
        }
    })
}

sluice_sdk::export_connector!(Github);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked_and_normalized() {
        let c = Config::load(&json!({
            "repositories": ["o/a", "O/A", "o/b"],
            "api_url": "http://127.0.0.1:9/",
            "start_date": "2024-01-01"
        }))
        .expect("valid");
        assert_eq!(c.repositories, ["o/a", "o/b"]);
        assert_eq!(c.api, "http://127.0.0.1:9");
        assert_eq!(c.start.as_deref(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(
            Config::load(&json!({"organization": "acme"}))
                .expect("valid")
                .api,
            DEFAULT_API_URL
        );
        for bad in [
            json!({}),
            json!({"repositories": ["nope"]}),
            json!({"repositories": ["o/r"], "start_date": "soon"}),
            json!({"repositories": ["o/r"], "api_url": "ftp://x"}),
            json!({"repositories": ["o/r"], "api_url": "https://ghe.example/api/v3?x=1"}),
            json!({"repositories": ["o/r"], "api_url": "https://ghe.example/api/v3#f"}),
            json!({"organization": "a/b"}),
            json!({"repositories": ["o/r"], "extra": 1}),
        ] {
            assert!(Config::load(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn first_pages() {
        let c =
            Config::load(&json!({"repositories": ["o/r"], "api_url": "https://h"})).expect("valid");
        assert_eq!(
            Listing::Issues
                .first(&c, "o/r", Some("2024-01-01T00:00:00Z"))
                .url(),
            "https://h/repos/o/r/issues?state=all&sort=updated&direction=desc&per_page=100&since=2024-01-01T00%3A00%3A00Z"
        );
        assert_eq!(
            Listing::PullRequests.first(&c, "o/r", Some("x")).url(),
            "https://h/repos/o/r/pulls?state=all&sort=updated&direction=desc&per_page=100"
        );
        assert_eq!(
            Listing::Commits.first(&c, "o/r", None).url(),
            "https://h/repos/o/r/commits?per_page=100"
        );
    }

    #[test]
    fn state_cursors() {
        let s =
            json!({"repos": {"o/a": "2024-01-01T00:00:00Z", "o/b": 5}, "heads": {"o/a": "abc"}});
        let c = cursors(Some(&s));
        assert_eq!(c.len(), 1);
        assert!(cursors(None).is_empty());
        assert_eq!(strings(Some(&s), "heads")["o/a"], "abc");
    }

    #[test]
    fn required_streams_and_scopes() {
        let c = Config::load(&json!({"repositories": ["o/r"], "required_streams": ["commits"]}))
            .expect("valid");
        assert!(c.requires(COMMITS) && !c.requires(ISSUES));
        assert!(
            Config::load(&json!({"repositories": ["o/r"], "required_streams": ["nope"]})).is_err()
        );
        assert_eq!(parse_scopes("repo, read:org"), ["repo", "read:org"]);
        assert!(parse_scopes("").is_empty());
        assert!(is_public(
            &json!({"visibility": "public", "private": false})
        ));
        assert!(!is_public(
            &json!({"visibility": "internal", "private": true})
        ));
        assert!(!is_public(&json!({"private": true})));
    }

    /// Runs a walk over a listing of `(sha, parents)`; the new commits, in order.
    fn walk(known: Option<&str>, listing: &[(&str, &[&str])]) -> (Vec<String>, usize, bool) {
        let mut w = Walk::new(known.map(str::to_string));
        let (mut new, mut read) = (Vec::new(), 0);
        for (sha, parents) in listing {
            read += 1;
            let parents: Vec<String> = parents.iter().map(|p| p.to_string()).collect();
            if w.see(sha, &parents) {
                new.push(sha.to_string());
            }
            if w.done() {
                break;
            }
        }
        (new, read, w.found)
    }

    #[test]
    fn walks_stop_at_the_known_head_and_find_merged_branches() {
        // main: x <- g <- h (known); branch off x: b1 <- b2 (older dates); merge m (h, b2).
        // Date order: m, h, g, b2, b1, x, root.
        let listing: &[(&str, &[&str])] = &[
            ("m", &["h", "b2"]),
            ("h", &["g"]),
            ("g", &["x"]),
            ("b2", &["b1"]),
            ("b1", &["x"]),
            ("x", &["root"]),
            ("root", &[]),
        ];
        let (new, read, found) = walk(Some("h"), listing);
        assert_eq!(new, ["m", "b2", "b1"]);
        assert_eq!(read, 5, "stops once the branch joins known history");
        assert!(found);
        // Fast-forward: stops at the first commit whose parent is the known head.
        let ff: &[(&str, &[&str])] = &[("n2", &["n1"]), ("n1", &["h"]), ("h", &["g"])];
        assert_eq!(
            walk(Some("h"), ff),
            (vec!["n2".into(), "n1".into()], 2, true)
        );
        // Nothing new: the head is the known one.
        assert_eq!(walk(Some("h"), &listing[1..]), (vec![], 1, true));
        // The known head is gone (force push): everything is new.
        let (new, read, found) = walk(Some("gone"), listing);
        assert_eq!((new.len(), read, found), (7, 7, false));
        // No known head: everything is read.
        assert_eq!(walk(None, listing).0.len(), 7);
        // A parent listed before its child (clock skew) is read again, never lost.
        let skew: &[(&str, &[&str])] = &[
            ("m", &["h", "b2"]),
            ("b1", &["x"]),
            ("h", &["x"]),
            ("b2", &["b1"]),
            ("x", &[]),
        ];
        let (new, _, _) = walk(Some("h"), skew);
        assert!(
            ["m", "b2", "b1"].iter().all(|c| new.iter().any(|n| n == c)),
            "{new:?}"
        );
    }
}
