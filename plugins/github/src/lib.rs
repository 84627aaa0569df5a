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
//! at the first one updated before the cursor.

mod schema;
use sluice_sdk::time;

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_sdk::http::{Request, Response};
use sluice_sdk::records::Batcher;
use sluice_sdk::{
    Connector, ConnectorError, Manifest, Result, StreamSpec, SyncRequest, Value, json, log,
    parse_config, serde_json,
};

use schema::{COMMITS, ISSUE_COMMENTS, ISSUES, PULL_REQUESTS, REPOSITORIES};

const TOKEN: &str = "token";
const DEFAULT_API_URL: &str = "https://api.github.com";
const PER_PAGE: &str = "100";

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
}

impl Config {
    fn load(config: &Value) -> Result<Self> {
        let raw: RawConfig = parse_config(config)?;
        let invalid = |m: String| Err(ConnectorError::invalid_config(m));
        let api = raw.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        if !(api.starts_with("https://") || api.starts_with("http://")) {
            return invalid(format!("api_url {api:?} must be an http(s) URL"));
        }
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
        Ok(Self {
            api: api.trim_end_matches('/').to_string(),
            repositories,
            organization,
            start,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    /// The repositories to read: the configured ones, then the organization's (with the
    /// objects its listing returned).
    fn resolve(&self) -> Result<Vec<(String, Option<Value>)>> {
        let mut repos: Vec<(String, Option<Value>)> = self
            .repositories
            .iter()
            .map(|r| (r.clone(), None))
            .collect();
        if let Some(org) = &self.organization {
            let first = Request::get(self.url(&format!("/orgs/{org}/repos")))
                .query("type", "all")
                .query("per_page", PER_PAGE);
            paginate(first, &format!("organization {org}"), |items| {
                for item in items {
                    let item: Value = serde_json::from_str(item.get()).map_err(|e| {
                        ConnectorError::internal(format!("unexpected repository item: {e}"))
                    })?;
                    let Some(name) = item.get("full_name").and_then(Value::as_str) else {
                        continue;
                    };
                    let name = name.to_string();
                    if !repos.iter().any(|(r, _)| r.eq_ignore_ascii_case(&name)) {
                        repos.push((name, Some(item)));
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
/// (unparsed) and returns whether to go on. A 409 "Git Repository is empty" is an empty listing.
fn paginate(
    first: Request,
    subject: &str,
    mut page: impl FnMut(Vec<&RawValue>) -> Result<bool>,
) -> Result<()> {
    let mut next = Some(first);
    let mut seen = HashSet::new();
    while let Some(request) = next.take() {
        if !seen.insert(request.url().to_string()) {
            log::warn(
                "pagination loops back to a page already read; stopping",
                &[("subject", subject)],
            );
            break;
        }
        let response = send(request)?;
        if response.status == 409 && message(&response).to_lowercase().contains("empty") {
            break;
        }
        let response = check(response, subject)?;
        let items: Vec<&RawValue> = serde_json::from_slice(&response.body).map_err(|e| {
            ConnectorError::internal(format!("{subject}: unexpected response body: {e}"))
        })?;
        if !page(items)? {
            break;
        }
        next = response.next_link().map(Request::get);
    }
    Ok(())
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

    /// The first page, newest first, filtered with `since` where the API has it.
    fn first(self, config: &Config, repo: &str, since: Option<&str>) -> Request {
        let (path, sorted) = match self {
            Listing::Issues => ("issues", true),
            Listing::PullRequests => ("pulls", true),
            Listing::Commits => ("commits", false),
            Listing::IssueComments => ("issues/comments", true),
        };
        let mut request = Request::get(config.url(&format!("/repos/{repo}/{path}")));
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

    /// The cursor value and the record (JSON; `None`: not part of this stream) of an item.
    /// Issues, the biggest stream, are reshaped without building a tree of the item.
    fn shape(self, item: &RawValue, repo: &str) -> Result<(Option<String>, Option<String>)> {
        let bad = |e: serde_json::Error| {
            ConnectorError::internal(format!("unexpected {} item: {e}", self.stream()))
        };
        let cursor = |v: Option<&str>| v.and_then(time::parse_iso).map(time::format_iso);
        let tree = |at: &str, record: fn(Value, &str) -> Value| {
            let item: Value = serde_json::from_str(item.get()).map_err(bad)?;
            let cursor = cursor(item.pointer(at).and_then(Value::as_str));
            Ok((cursor, Some(record(item, repo).to_string())))
        };
        match self {
            Listing::Issues => {
                let fields = schema::Fields::parse(item).map_err(bad)?;
                let updated = fields.str("updated_at").map_err(bad)?;
                Ok((cursor(updated.as_deref()), schema::issue(fields, repo)))
            }
            Listing::PullRequests => tree("/updated_at", schema::pull_request),
            Listing::Commits => tree("/commit/committer/date", schema::commit),
            Listing::IssueComments => tree("/updated_at", schema::issue_comment),
        }
    }
}

/// The per-repository cursors of a stream's state `{"repos": {...}}`.
fn cursors(state: Option<&Value>) -> BTreeMap<String, String> {
    state
        .and_then(|s| s.get("repos"))
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
    repos: &[(String, Option<Value>)],
    state: Option<&Value>,
    out: &mut Batcher,
) -> Result<()> {
    let stream = listing.stream();
    let mut cursors = cursors(state);
    for (repo, _) in repos {
        let since = cursors.get(repo).or(config.start.as_ref()).cloned();
        let mut newest: Option<String> = None;
        let (mut pages, mut records) = (0u64, 0u64);
        let subject = format!("{stream} of repository {repo}");
        let first = listing.first(config, repo, since.as_deref());
        paginate(first, &subject, |items| {
            let mut more = true;
            for item in items {
                let (cursor, record) = listing.shape(item, repo)?;
                if let (Some(c), Some(since)) = (&cursor, &since)
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
                if let Some(record) = record {
                    out.push_json(stream, record)?;
                    records += 1;
                }
            }
            pages += 1;
            // The repository's cursor moves once its listing is complete (pages come newest
            // first); this checkpoint covers the records so far with the state so far.
            out.checkpoint(stream, &json!({ "repos": cursors }))?;
            Ok(more)
        })?;
        if let Some(newest) = newest
            && since.as_ref().is_none_or(|s| &newest > s)
        {
            cursors.insert(repo.clone(), newest);
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

fn sync_repositories(
    config: &Config,
    repos: Vec<(String, Option<Value>)>,
    out: &mut Batcher,
) -> Result<()> {
    for (repo, item) in repos {
        let item = match item {
            Some(item) => item,
            None => {
                let request = Request::get(config.url(&format!("/repos/{repo}")));
                check(send(request)?, &format!("repository {repo}"))?.json()?
            }
        };
        out.push(REPOSITORIES, &schema::repository(item, &repo))?;
    }
    out.flush_stream(REPOSITORIES)
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
                 (contents, issues, pull requests, metadata).",
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
        let user: Value = check(
            send(Request::get(config.url("/user")))?,
            "the authenticated user",
        )?
        .json()?;
        for repo in &config.repositories {
            let request = Request::get(config.url(&format!("/repos/{repo}")));
            check(send(request)?, &format!("repository {repo}"))?;
        }
        if let Some(org) = &config.organization {
            let request =
                Request::get(config.url(&format!("/orgs/{org}/repos"))).query("per_page", "1");
            check(send(request)?, &format!("organization {org}"))?;
        }
        Ok(json!({"login": user.get("login"), "id": user.get("id")}))
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
        for listing in Listing::ALL {
            if request.selected(listing.stream()) {
                sync_listing(
                    &config,
                    listing,
                    &repos,
                    request.state(listing.stream()),
                    &mut out,
                )?;
            }
        }
        if request.selected(REPOSITORIES) {
            sync_repositories(&config, repos, &mut out)?;
        }
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
        let s = json!({"repos": {"o/a": "2024-01-01T00:00:00Z", "o/b": 5}});
        let c = cursors(Some(&s));
        assert_eq!(c.len(), 1);
        assert!(cursors(None).is_empty());
    }
}
