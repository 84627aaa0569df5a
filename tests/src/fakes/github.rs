//! A fake GitHub REST API (v3): `/user`, `/repos/{o}/{r}`, `/orgs/{org}/repos`, and the
//! issues, pulls, commits and issue-comments listings of a repository.
//!
//! What it reproduces from GitHub's documentation: Bearer (or `token`) auth with 401
//! `{"message":"Bad credentials"}`; a token without access getting 404 on a repository; `Link`
//! pagination (`next`, `prev`, `first`, `last`; `per_page` default 30, max 100); issues that
//! include pull requests (with a `pull_request` key and another id than the pulls API's);
//! `state` defaulting to `open`; `since` on issues, comments and commits, none on pulls; the
//! pulls default direction (desc only for `sort=created`); 409 on the commits of an empty
//! repository; `x-ratelimit-*` headers on every answer; primary (403, remaining 0, reset) and
//! secondary (403/429 with `retry-after`) rate limits; 502s. See [`crate::fakes::Knobs`].
//!
//! Tokens ([`Grant`]): classic ones send `x-oauth-scopes` on every answer, as given (GitHub
//! writes `repo, read:org`), and see private repositories only with `repo`; fine-grained ones
//! send no such header, see public repositories and the private ones they were granted, and
//! get 403 `Resource not accessible by personal access token` with
//! `x-accepted-github-permissions` (e.g. `contents=read`) on a listing of a private
//! repository their permissions do not cover.
//!
//! Commits form a history per repository: `GET /commits` walks it from the default branch's
//! head as `git log` does (newest committer date first among the commits whose child was
//! listed), so [`GithubHandle::merge_branch`] can bring in commits dated before the last sync.

// Handlers return early with an axum `Response` as the error of a `Result`.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{
    Counters, Injected, Knobs, Rng, bind, encode, get, iso, now_secs, parse_iso, query, spawn,
};

/// The first timestamp of generated data (2020-09-13).
const T0: i64 = 1_600_000_000;
const USERS: [(&str, u64); 5] = [
    ("octocat", 583_231),
    ("hubot", 480_938),
    ("mona", 9_919),
    ("defunkt", 2),
    ("sluice-bot", 4_242),
];
const LABELS: [&str; 5] = [
    "bug",
    "enhancement",
    "documentation",
    "good first issue",
    "wontfix",
];
const WORDS: [&str; 12] = [
    "fix", "crash", "when", "parsing", "large", "pages", "add", "support", "for", "retries",
    "docs", "flaky",
];

/// What to generate and which tokens to accept.
#[derive(Debug, Clone)]
pub struct GithubConfig {
    pub seed: u64,
    /// The organization owning every repository.
    pub owner: String,
    /// Repositories `owner/repo-0` ... `owner/repo-{n-1}`.
    pub repos: usize,
    /// Also `owner/empty`: no issues, no commits (its commits listing answers 409).
    pub empty_repo: bool,
    /// Issues across the repositories, pull requests included.
    pub issues: usize,
    /// Every `pr_every`-th issue is a pull request (0: none).
    pub pr_every: usize,
    pub comments: usize,
    pub commits: usize,
    /// A classic token with the scopes `repo, read:org`: access to everything.
    pub token: String,
    /// A valid token that sees no repository (404) and no organization (403).
    pub limited_token: String,
    /// How long each page of a listing (issues, pulls, commits, comments, an organization's
    /// repositories) takes to answer, as a remote API's latency: makes a sync upstream-bound
    /// and slow enough to act on mid-run. Other routes answer at once. Zero: no delay.
    pub page_delay: Duration,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            owner: "acme".into(),
            repos: 3,
            empty_repo: true,
            issues: 600,
            pr_every: 4,
            comments: 400,
            commits: 300,
            token: "ghp_good0123456789".into(),
            limited_token: "ghp_limited0123456789".into(),
            page_delay: Duration::ZERO,
        }
    }
}

/// What a token may read.
#[derive(Debug, Clone, PartialEq)]
pub enum Grant {
    /// A classic token: every answer has `x-oauth-scopes: {scopes}`; with `repo` among them it
    /// sees every repository, else only the public ones (a private one is 404).
    Classic { scopes: String },
    /// A fine-grained token: no `x-oauth-scopes`; sees the public repositories and the private
    /// ones in `repos`, whose listings need `permissions` (`issues=read` for issues and
    /// comments, `pull_requests=read`, `contents=read` for commits).
    FineGrained {
        repos: Vec<String>,
        permissions: Vec<String>,
    },
    /// Sees no repository (404) and no organization (403).
    Nothing,
}

impl Grant {
    fn sees(&self, repo: &Repo) -> bool {
        match self {
            Grant::Classic { scopes } => {
                !repo.private || scopes.split(',').any(|s| s.trim() == "repo")
            }
            Grant::FineGrained { repos, .. } => {
                !repo.private
                    || repos
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(&repo.full_name))
            }
            Grant::Nothing => false,
        }
    }

    /// The permission a listing of `repo` needs that this grant lacks.
    fn lacks(&self, repo: &Repo, listing: &str) -> Option<&'static str> {
        let Grant::FineGrained { permissions, .. } = self else {
            return None;
        };
        let needed = match listing {
            "pulls" => "pull_requests=read",
            "commits" => "contents=read",
            _ => "issues=read",
        };
        (repo.private && !permissions.iter().any(|p| p == needed)).then_some(needed)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Repo {
    pub id: u64,
    pub full_name: String,
    pub private: bool,
    pub language: String,
    pub created_at: i64,
    pub empty: bool,
}

/// An issue, or a pull request (which the issues API lists too).
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// The id the issues API shows.
    pub id: u64,
    /// The id the pulls API shows, for a pull request.
    pub pr_id: Option<u64>,
    pub repo: String,
    pub number: u64,
    pub title: String,
    pub body: String,
    pub state: &'static str,
    pub user: &'static str,
    pub labels: Vec<&'static str>,
    pub comments: u64,
    pub created_at: i64,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
    pub merged_at: Option<i64>,
}

impl Issue {
    pub fn is_pull_request(&self) -> bool {
        self.pr_id.is_some()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    pub id: u64,
    pub repo: String,
    pub issue_number: u64,
    pub user: &'static str,
    pub body: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub sha: String,
    pub repo: String,
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    /// The GitHub user the author email maps to, if any.
    pub author_login: Option<&'static str>,
    pub authored_at: i64,
    pub committed_at: i64,
    pub parents: Vec<String>,
}

/// Everything the fake serves: what a full sync must bring back.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub repos: Vec<Repo>,
    pub issues: Vec<Issue>,
    pub comments: Vec<Comment>,
    /// Every commit of every default branch.
    pub commits: Vec<Commit>,
    /// The head of each repository's default branch.
    pub heads: BTreeMap<String, String>,
}

impl Dataset {
    /// The data set of a config: the same config gives the same data.
    pub fn generate(c: &GithubConfig) -> Self {
        let mut rng = Rng::new(c.seed);
        let mut repos: Vec<Repo> = (0..c.repos)
            .map(|r| Repo {
                id: 1_000 + r as u64,
                full_name: format!("{}/repo-{r}", c.owner),
                private: r % 2 == 1,
                language: rng.pick(&["Rust", "Go", "Python"]).to_string(),
                created_at: T0 - 86_400 * (1 + r as i64),
                empty: false,
            })
            .collect();
        let filled: Vec<String> = repos.iter().map(|r| r.full_name.clone()).collect();
        if c.empty_repo {
            repos.push(Repo {
                id: 999,
                full_name: format!("{}/empty", c.owner),
                private: false,
                language: "Rust".into(),
                created_at: T0,
                empty: true,
            });
        }
        let mut numbers: BTreeMap<String, u64> = BTreeMap::new();
        let mut issues = Vec::with_capacity(c.issues);
        for i in 0..c.issues {
            if filled.is_empty() {
                break;
            }
            let repo = filled[i % filled.len()].clone();
            let number = numbers.entry(repo.clone()).or_default();
            *number += 1;
            let is_pr = c.pr_every > 0 && i % c.pr_every == c.pr_every - 1;
            let created_at = T0 + i as i64 * 600;
            let updated_at = created_at + rng.below(90 * 86_400) as i64;
            let closed = rng.percent(60);
            let closed_at =
                closed.then(|| created_at + rng.below((updated_at - created_at + 1) as u64) as i64);
            let merged_at = if is_pr && closed && rng.percent(80) {
                closed_at
            } else {
                None
            };
            let title = format!(
                "{} {} {} #{number}",
                rng.pick(&WORDS),
                rng.pick(&WORDS),
                rng.pick(&WORDS)
            );
            let labels: Vec<&'static str> =
                LABELS.iter().copied().filter(|_| rng.percent(25)).collect();
            issues.push(Issue {
                id: 10_000_000 + i as u64,
                pr_id: is_pr.then_some(50_000_000 + i as u64),
                repo,
                number: *number,
                body: format!("Body of {title}.\n\nSteps: {}", rng.next_u64()),
                title,
                state: if closed { "closed" } else { "open" },
                user: rng.pick(&USERS).0,
                labels,
                comments: 0,
                created_at,
                updated_at,
                closed_at,
                merged_at,
            });
        }
        let mut comments = Vec::with_capacity(c.comments);
        for k in 0..c.comments {
            if issues.is_empty() {
                break;
            }
            let i = rng.below(issues.len() as u64) as usize;
            issues[i].comments += 1;
            let created_at = issues[i].created_at + rng.below(30 * 86_400) as i64;
            let updated_at = if rng.percent(20) {
                created_at + rng.below(10 * 86_400) as i64
            } else {
                created_at
            };
            comments.push(Comment {
                id: 90_000_000 + k as u64,
                repo: issues[i].repo.clone(),
                issue_number: issues[i].number,
                user: rng.pick(&USERS).0,
                body: format!("Comment {k}: {} {}", rng.pick(&WORDS), rng.pick(&WORDS)),
                created_at,
                updated_at,
            });
        }
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        let mut commits = Vec::with_capacity(c.commits);
        for k in 0..c.commits {
            if filled.is_empty() {
                break;
            }
            let repo = filled[k % filled.len()].clone();
            let sha = format!(
                "{:016x}{:016x}{:08x}",
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64() as u32
            );
            let committed_at = T0 + k as i64 * 900 + rng.below(600) as i64;
            let (name, login) = match rng.below(6) {
                5 => ("Build Robot".to_string(), None),
                u => (
                    USERS[u as usize % USERS.len()].0.to_string(),
                    Some(USERS[u as usize % USERS.len()].0),
                ),
            };
            commits.push(Commit {
                parents: last.get(&repo).cloned().into_iter().collect(),
                message: format!("{} {} ({k})", rng.pick(&WORDS), rng.pick(&WORDS)),
                author_email: format!(
                    "{}@users.noreply.github.com",
                    name.replace(' ', ".").to_lowercase()
                ),
                author_name: name,
                author_login: login,
                authored_at: committed_at - rng.below(3_600) as i64,
                committed_at,
                sha: sha.clone(),
                repo: repo.clone(),
            });
            last.insert(repo, sha);
        }
        Self {
            repos,
            issues,
            comments,
            commits,
            heads: last,
        }
    }

    /// A repository's default branch as `GET /commits` lists it (`git log`): from the head,
    /// repeatedly the newest (by committer date) commit whose child was listed.
    pub fn history(&self, repo: &str) -> Vec<&Commit> {
        let by_sha: HashMap<&str, &Commit> = self
            .commits
            .iter()
            .filter(|c| c.repo == repo)
            .map(|c| (c.sha.as_str(), c))
            .collect();
        let Some(head) = self.heads.get(repo).and_then(|h| by_sha.get(h.as_str())) else {
            return vec![];
        };
        let mut queue = BinaryHeap::from([(head.committed_at, head.sha.as_str())]);
        let mut queued = HashSet::from([head.sha.as_str()]);
        let mut out = Vec::new();
        while let Some((_, sha)) = queue.pop() {
            let commit = by_sha[sha];
            out.push(commit);
            for p in &commit.parents {
                if let Some(parent) = by_sha.get(p.as_str())
                    && queued.insert(p.as_str())
                {
                    queue.push((parent.committed_at, p.as_str()));
                }
            }
        }
        out
    }

    /// Issues that are not pull requests.
    pub fn plain_issues(&self) -> Vec<&Issue> {
        self.issues
            .iter()
            .filter(|i| !i.is_pull_request())
            .collect()
    }

    /// Pull requests.
    pub fn pulls(&self) -> Vec<&Issue> {
        self.issues.iter().filter(|i| i.is_pull_request()).collect()
    }

    fn repo(&self, full_name: &str) -> Option<&Repo> {
        self.repos
            .iter()
            .find(|r| r.full_name.eq_ignore_ascii_case(full_name))
    }
}

struct Shared {
    config: GithubConfig,
    /// What each token may read.
    grants: RwLock<BTreeMap<String, Grant>>,
    /// Commits made while serving (for their shas).
    made: AtomicU64,
    base: String,
    data: RwLock<Dataset>,
    knobs: Arc<Knobs>,
    counters: Arc<Counters>,
    /// Rate-limit answers injected so far (their kind rotates).
    injected: AtomicU64,
    touches: AtomicU64,
    /// The last issues listing (its query and data version, and the sorted positions): paging
    /// through a listing sorts once, so the fake keeps up with benchmarks.
    issue_listing: std::sync::Mutex<Option<(String, Arc<Vec<usize>>)>>,
    /// Issues rendered as JSON, by position; emptied when the data changes.
    issue_json: std::sync::Mutex<std::collections::HashMap<usize, Arc<str>>>,
}

/// Starts fake GitHub servers.
pub struct FakeGithub;

impl FakeGithub {
    /// Generates the data set and serves it on 127.0.0.1 (an ephemeral port).
    pub async fn start(config: GithubConfig) -> GithubHandle {
        let knobs = Arc::new(Knobs::default());
        knobs.set_retry_after_secs(1);
        let counters = Arc::new(Counters::default());
        let data = Dataset::generate(&config);
        let (listener, addr) = bind().await;
        let grants = BTreeMap::from([
            (
                config.token.clone(),
                Grant::Classic {
                    scopes: "repo, read:org".into(),
                },
            ),
            (config.limited_token.clone(), Grant::Nothing),
        ]);
        let shared = Arc::new(Shared {
            config,
            grants: RwLock::new(grants),
            made: AtomicU64::new(0),
            base: format!("http://{addr}"),
            data: RwLock::new(data),
            knobs: knobs.clone(),
            counters: counters.clone(),
            injected: AtomicU64::new(0),
            touches: AtomicU64::new(0),
            issue_listing: std::sync::Mutex::new(None),
            issue_json: std::sync::Mutex::new(Default::default()),
        });
        let task = spawn(
            listener,
            Router::new().fallback(handle).with_state(shared.clone()),
        );
        GithubHandle {
            url: shared.base.clone(),
            knobs,
            counters,
            shared,
            task,
        }
    }
}

/// A running fake GitHub; stops when dropped.
pub struct GithubHandle {
    /// Base URL, e.g. `http://127.0.0.1:41234`: the connector's `api_url`.
    pub url: String,
    pub knobs: Arc<Knobs>,
    pub counters: Arc<Counters>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl GithubHandle {
    /// A copy of the data served now.
    pub fn data(&self) -> Dataset {
        self.shared
            .data
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    pub fn token(&self) -> &str {
        &self.shared.config.token
    }

    pub fn limited_token(&self) -> &str {
        &self.shared.config.limited_token
    }

    /// Makes `token` valid with `grant` (replacing a known token's).
    pub fn grant(&self, token: &str, grant: Grant) {
        if let Ok(mut g) = self.shared.grants.write() {
            g.insert(token.to_string(), grant);
        }
    }

    /// A new commit of `repo` on top of `parents`, committed at `at`.
    fn commit(&self, repo: &str, parents: Vec<String>, at: i64, message: String) -> Commit {
        let k = self.shared.made.fetch_add(1, Ordering::SeqCst);
        let mut rng = Rng::new(self.shared.config.seed ^ 0xC0FF_EE00 ^ k);
        Commit {
            sha: format!(
                "{:016x}{:016x}{:08x}",
                rng.next_u64(),
                rng.next_u64(),
                k as u32
            ),
            repo: repo.to_string(),
            message,
            author_name: "mona".into(),
            author_email: "mona@users.noreply.github.com".into(),
            author_login: Some("mona"),
            authored_at: at,
            committed_at: at,
            parents,
        }
    }

    /// Pushes `n` commits onto `repo`'s default branch (a fast-forward), committed now.
    /// Returns them, oldest first.
    pub fn push(&self, repo: &str, n: usize) -> Vec<Commit> {
        let Ok(mut data) = self.shared.data.write() else {
            return vec![];
        };
        let at = now_secs().max(
            data.commits
                .iter()
                .map(|c| c.committed_at)
                .max()
                .unwrap_or(T0)
                + 1,
        );
        let mut out = Vec::new();
        for k in 0..n {
            let parents = data.heads.get(repo).cloned().into_iter().collect();
            let c = self.commit(repo, parents, at + k as i64, format!("pushed ({k})"));
            data.heads.insert(repo.to_string(), c.sha.clone());
            data.commits.push(c.clone());
            out.push(c);
        }
        out
    }

    /// Merges a branch into `repo`'s default branch: `n` commits on top of the commit
    /// `base_back` commits below the head, committed a minute apart just after that commit
    /// (so before everything newer on the branch: a sync's date cursor is past them), then a
    /// merge commit (parents: the old head, the branch) committed now. Returns the branch's
    /// commits, oldest first, and the merge commit last.
    pub fn merge_branch(&self, repo: &str, n: usize, base_back: usize) -> Vec<Commit> {
        let history: Vec<Commit> = {
            let Ok(data) = self.shared.data.read() else {
                return vec![];
            };
            data.history(repo).into_iter().cloned().collect()
        };
        let (Some(head), Some(base)) = (history.first(), history.get(base_back)) else {
            return vec![];
        };
        let mut out = Vec::new();
        let mut tip = base.sha.clone();
        for k in 0..n {
            let c = self.commit(
                repo,
                vec![tip],
                base.committed_at + 60 * (k as i64 + 1),
                format!("branch work ({k})"),
            );
            tip = c.sha.clone();
            out.push(c);
        }
        let Ok(mut data) = self.shared.data.write() else {
            return vec![];
        };
        let at = now_secs().max(
            data.commits
                .iter()
                .map(|c| c.committed_at)
                .max()
                .unwrap_or(T0)
                + 1,
        );
        let merge = self.commit(
            repo,
            vec![head.sha.clone(), tip],
            at,
            "Merge branch 'feature'".into(),
        );
        out.push(merge.clone());
        data.heads.insert(repo.to_string(), merge.sha);
        data.commits.extend(out.iter().cloned());
        out
    }

    /// `owner/repo` of every repository, the empty one included.
    pub fn repositories(&self) -> Vec<String> {
        self.data().repos.into_iter().map(|r| r.full_name).collect()
    }

    /// Edits `n` distinct issues (pull requests among them, as chosen by the seed): their
    /// title gets " (edited)" and `updated_at` becomes now + 1 s, later than anything served
    /// so far. Returns them as edited.
    pub fn touch(&self, n: usize) -> Vec<Issue> {
        let round = self.shared.touches.fetch_add(1, Ordering::SeqCst);
        let mut rng = Rng::new(self.shared.config.seed ^ (round + 1).wrapping_mul(0xA5A5));
        let Ok(mut data) = self.shared.data.write() else {
            return vec![];
        };
        let newest = data.issues.iter().map(|i| i.updated_at).max().unwrap_or(T0);
        let at = now_secs().max(newest) + 1;
        let mut picked: Vec<usize> = Vec::new();
        while picked.len() < n.min(data.issues.len()) {
            let i = rng.below(data.issues.len() as u64) as usize;
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        let edited = picked
            .into_iter()
            .map(|i| {
                let issue = &mut data.issues[i];
                issue.title.push_str(" (edited)");
                issue.updated_at = at;
                issue.clone()
            })
            .collect();
        // Still under the write lock: no listing sorted before the edit outlives it.
        if let Ok(mut c) = self.shared.issue_listing.lock() {
            *c = None;
        }
        if let Ok(mut c) = self.shared.issue_json.lock() {
            c.clear();
        }
        edited
    }
}

impl Drop for GithubHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn message(status: StatusCode, text: &str, docs: &str) -> Response {
    (status, axum::Json(json!({"message": text, "documentation_url": format!("https://docs.github.com/rest{docs}"), "status": status.as_u16().to_string()}))).into_response()
}

fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "Not Found", "")
}

fn validation_failed(field: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({"message": "Validation Failed", "errors": [{"resource": "Search", "field": field, "code": "invalid"}], "documentation_url": "https://docs.github.com/rest", "status": "422"})),
    )
        .into_response()
}

fn set(resp: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        resp.headers_mut().insert(name, v);
    }
}

/// `x-ratelimit-*` as GitHub sends them: a 5000/h budget, `remaining` going down.
fn rate_headers(resp: &mut Response, used: u64, remaining: Option<u64>, reset: i64) {
    set(resp, "x-ratelimit-limit", 5000);
    set(
        resp,
        "x-ratelimit-remaining",
        remaining.unwrap_or(5000u64.saturating_sub(used)),
    );
    set(resp, "x-ratelimit-used", used.min(5000));
    set(resp, "x-ratelimit-reset", reset);
    set(resp, "x-ratelimit-resource", "core");
    set(resp, "x-github-api-version-selected", "2022-11-28");
}

async fn handle(
    State(s): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let n = s.counters.next();
    let window_reset = now_secs() - now_secs() % 3600 + 3600;
    match s.knobs.decide(n).await {
        Injected::None => {}
        Injected::BadGateway => {
            s.counters.bad_gateways.fetch_add(1, Ordering::SeqCst);
            let mut r = message(StatusCode::BAD_GATEWAY, "Server Error", "");
            rate_headers(&mut r, n, None, window_reset);
            return r;
        }
        Injected::Exhausted => {
            s.counters.rate_limited.fetch_add(1, Ordering::SeqCst);
            let mut r = message(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for user ID 4242. If you reach out to GitHub Support for help, please include the request ID.",
                "/overview/rate-limits-for-the-rest-api",
            );
            rate_headers(&mut r, 5000, Some(0), now_secs() + 3600);
            return r;
        }
        Injected::RateLimited => {
            s.counters.rate_limited.fetch_add(1, Ordering::SeqCst);
            let retry_after = s.knobs.retry_after_secs.load(Ordering::SeqCst);
            let secondary = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";
            let docs = "/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";
            let mut r = match s.injected.fetch_add(1, Ordering::SeqCst) % 3 {
                0 => {
                    let mut r = message(StatusCode::TOO_MANY_REQUESTS, secondary, docs);
                    rate_headers(&mut r, n, None, window_reset);
                    r
                }
                1 => {
                    let mut r = message(StatusCode::FORBIDDEN, secondary, docs);
                    rate_headers(&mut r, n, None, window_reset);
                    r
                }
                _ => {
                    // Primary limit: the budget is spent until the reset, one second away.
                    let mut r = message(
                        StatusCode::FORBIDDEN,
                        "API rate limit exceeded for user ID 4242.",
                        "/overview/rate-limits-for-the-rest-api",
                    );
                    rate_headers(&mut r, 5000, Some(0), now_secs() + 1);
                    return r;
                }
            };
            set(&mut r, "retry-after", retry_after);
            return r;
        }
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .map(str::trim);
    let grant = match token {
        Some(t) => s.grants.read().ok().and_then(|g| g.get(t).cloned()),
        None => {
            s.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
            return message(
                StatusCode::UNAUTHORIZED,
                "Requires authentication",
                "/overview/authenticating-to-the-rest-api",
            );
        }
    };
    let Some(grant) = grant else {
        s.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
        return message(StatusCode::UNAUTHORIZED, "Bad credentials", "");
    };
    let q = query(uri.query().unwrap_or(""));
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let (route, mut resp) = {
        let Ok(data) = s.data.read() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        if segments == ["graphql"] {
            ("graphql", graphql_repositories(&data, &grant, &body))
        } else {
            route(&s, &data, &grant, &segments, &q, uri.path())
        }
    };
    let delay = s.config.page_delay;
    if !delay.is_zero()
        && matches!(
            route,
            "org_repos" | "issues" | "pulls" | "commits" | "issue_comments"
        )
    {
        tokio::time::sleep(delay).await;
    }
    s.counters.route(route);
    rate_headers(&mut resp, n, None, window_reset);
    if let Grant::Classic { scopes } = &grant {
        set(&mut resp, "x-oauth-scopes", scopes);
    }
    resp
}

/// `POST /graphql`, only the query tap-github sends to resolve its `repositories` config:
/// `query {repo0: repository(name: "r", owner: "o") { nameWithOwner databaseId } … rateLimit { cost } }`.
/// Each alias answers the repository (null when the token does not see it).
fn graphql_repositories(data: &Dataset, grant: &Grant, body: &[u8]) -> Response {
    let query = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["query"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut answer = serde_json::Map::new();
    let parts: Vec<&str> = query.split(": repository(").collect();
    for w in parts.windows(2) {
        let alias = w[0]
            .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default();
        let arg = |name: &str| {
            w[1].split(&format!("{name}: \""))
                .nth(1)
                .and_then(|r| r.split('"').next())
        };
        let repo = match (arg("owner"), arg("name")) {
            (Some(o), Some(n)) => data.repo(&format!("{o}/{n}")).filter(|r| grant.sees(r)),
            _ => None,
        };
        answer.insert(
            alias.to_owned(),
            repo.map_or(
                Value::Null,
                |r| json!({"nameWithOwner": r.full_name, "databaseId": r.id}),
            ),
        );
    }
    answer.insert("rateLimit".into(), json!({"cost": 1}));
    axum::Json(json!({ "data": answer })).into_response()
}

/// A fine-grained token's answer on a listing its permissions do not cover.
fn not_accessible(permission: &str) -> Response {
    let mut r = message(
        StatusCode::FORBIDDEN,
        "Resource not accessible by personal access token",
        "/issues/issues#list-repository-issues",
    );
    set(&mut r, "x-accepted-github-permissions", permission);
    r
}

fn route(
    s: &Shared,
    data: &Dataset,
    grant: &Grant,
    segments: &[&str],
    q: &[(String, String)],
    path: &str,
) -> (&'static str, Response) {
    let repo_of = |o: &str, r: &str| -> Option<Repo> {
        data.repo(&format!("{o}/{r}"))
            .filter(|repo| grant.sees(repo))
            .cloned()
    };
    // A listing of a repository the token sees but whose permission it lacks.
    let listing = |o: &str, r: &str, name: &str| -> Result<Repo, Response> {
        let repo = repo_of(o, r).ok_or_else(not_found)?;
        match grant.lacks(&repo, name) {
            Some(permission) => Err(not_accessible(permission)),
            None => Ok(repo),
        }
    };
    match segments {
        // Does not count against the limit; reports the budget as the headers do.
        ["rate_limit"] => {
            let used = s.counters.requests.load(Ordering::SeqCst).min(5000);
            let reset = now_secs() - now_secs() % 3600 + 3600;
            let core = json!({"limit": 5000, "used": used, "remaining": 5000 - used, "reset": reset, "resource": "core"});
            let graphql = json!({"limit": 5000, "used": 0, "remaining": 5000, "reset": reset, "resource": "graphql"});
            (
                "rate_limit",
                axum::Json(json!({"resources": {"core": core, "graphql": graphql}, "rate": core}))
                    .into_response(),
            )
        }
        ["user"] => (
            "user",
            axum::Json(user_json(&s.base, "sluice-bot", 4_242)).into_response(),
        ),
        ["repos", o, r] => match repo_of(o, r) {
            Some(repo) => (
                "repo",
                axum::Json(repo_json(&s.base, &s.config.owner, &repo)).into_response(),
            ),
            None => ("repo", not_found()),
        },
        ["orgs", org, "repos"] => {
            if !org.eq_ignore_ascii_case(&s.config.owner) {
                return ("org_repos", not_found());
            }
            if *grant == Grant::Nothing {
                return (
                    "org_repos",
                    message(
                        StatusCode::FORBIDDEN,
                        "Resource not accessible by personal access token",
                        "/repos/repos#list-organization-repositories",
                    ),
                );
            }
            let items: Vec<&Repo> = data.repos.iter().filter(|r| grant.sees(r)).collect();
            (
                "org_repos",
                paginate(&s.base, path, q, &items, |r| {
                    repo_json(&s.base, &s.config.owner, r)
                }),
            )
        }
        ["repos", o, r, "issues"] => match listing(o, r, "issues") {
            Ok(repo) => ("issues", list_issues(s, data, &repo.full_name, path, q)),
            Err(resp) => ("issues", resp),
        },
        ["repos", o, r, "pulls"] => match listing(o, r, "pulls") {
            Ok(repo) => ("pulls", list_pulls(s, data, &repo, path, q)),
            Err(resp) => ("pulls", resp),
        },
        ["repos", o, r, "commits"] => match listing(o, r, "commits") {
            Ok(repo) => ("commits", list_commits(s, data, &repo, path, q)),
            Err(resp) => ("commits", resp),
        },
        ["repos", o, r, "issues", "comments"] => match listing(o, r, "issues/comments") {
            Ok(repo) => (
                "issue_comments",
                list_comments(s, data, &repo.full_name, path, q),
            ),
            Err(resp) => ("issue_comments", resp),
        },
        _ => ("unknown", not_found()),
    }
}

/// `since`: absent, or a valid timestamp (else GitHub answers 422).
fn since(q: &[(String, String)], name: &str) -> Result<Option<i64>, Response> {
    match get(q, name) {
        None => Ok(None),
        Some(v) => parse_iso(v)
            .map(Some)
            .ok_or_else(|| validation_failed(name)),
    }
}

fn list_issues(
    s: &Shared,
    data: &Dataset,
    repo: &str,
    path: &str,
    q: &[(String, String)],
) -> Response {
    let since = match since(q, "since") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let state = get(q, "state").unwrap_or("open");
    if !matches!(state, "open" | "closed" | "all") {
        return validation_failed("state");
    }
    let sort = get(q, "sort").unwrap_or("created");
    let direction = get(q, "direction").unwrap_or("desc");
    let listing = format!("{repo}|{state}|{sort}|{direction}|{since:?}");
    let cached = s.issue_listing.lock().ok().and_then(|c| {
        c.as_ref()
            .filter(|(k, _)| *k == listing)
            .map(|(_, v)| v.clone())
    });
    let positions = cached.unwrap_or_else(|| {
        let key = |i: &Issue| match sort {
            "updated" => i.updated_at,
            "comments" => i.comments as i64,
            _ => i.created_at,
        };
        let mut positions: Vec<usize> = (0..data.issues.len())
            .filter(|&n| {
                let i = &data.issues[n];
                i.repo == repo
                    && (state == "all" || i.state == state)
                    && since.is_none_or(|t| i.updated_at >= t)
            })
            .collect();
        positions.sort_unstable_by_key(|&n| (key(&data.issues[n]), data.issues[n].number));
        if direction == "desc" {
            positions.reverse();
        }
        let positions = Arc::new(positions);
        if let Ok(mut c) = s.issue_listing.lock() {
            *c = Some((listing, positions.clone()));
        }
        positions
    });
    // Issues are rendered once and kept until the data changes.
    let items: Vec<&usize> = positions.iter().collect();
    paginate_json(&s.base, path, q, &items, true, |&n| {
        let mut cache = s.issue_json.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(n)
            .or_insert_with(|| issue_json(&s.base, &data.issues[n]).to_string().into())
            .to_string()
    })
}

fn list_pulls(
    s: &Shared,
    data: &Dataset,
    repo: &Repo,
    path: &str,
    q: &[(String, String)],
) -> Response {
    let state = get(q, "state").unwrap_or("open");
    if !matches!(state, "open" | "closed" | "all") {
        return validation_failed("state");
    }
    let sort = get(q, "sort").unwrap_or("created");
    let mut items: Vec<&Issue> = data
        .issues
        .iter()
        .filter(|i| {
            i.repo == repo.full_name && i.is_pull_request() && (state == "all" || i.state == state)
        })
        .collect();
    items.sort_by_key(|i| {
        (
            if sort == "updated" {
                i.updated_at
            } else {
                i.created_at
            },
            i.number,
        )
    });
    // GitHub: "Default: desc when sort is created or sort is not specified, otherwise asc."
    let default_direction = if sort == "created" { "desc" } else { "asc" };
    if get(q, "direction").unwrap_or(default_direction) == "desc" {
        items.reverse();
    }
    paginate(&s.base, path, q, &items, |i| {
        pull_json(&s.base, &s.config.owner, repo, i)
    })
}

fn list_commits(
    s: &Shared,
    data: &Dataset,
    repo: &Repo,
    path: &str,
    q: &[(String, String)],
) -> Response {
    if repo.empty {
        return message(
            StatusCode::CONFLICT,
            "Git Repository is empty.",
            "/commits/commits#list-commits",
        );
    }
    let (since, until) = match (since(q, "since"), since(q, "until")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let items: Vec<&Commit> = data
        .history(&repo.full_name)
        .into_iter()
        .filter(|c| {
            since.is_none_or(|t| c.committed_at >= t) && until.is_none_or(|t| c.committed_at <= t)
        })
        .collect();
    paginate(&s.base, path, q, &items, |c| commit_json(&s.base, c))
}

fn list_comments(
    s: &Shared,
    data: &Dataset,
    repo: &str,
    path: &str,
    q: &[(String, String)],
) -> Response {
    let since = match since(q, "since") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut items: Vec<&Comment> = data
        .comments
        .iter()
        .filter(|c| c.repo == repo && since.is_none_or(|t| c.updated_at >= t))
        .collect();
    match get(q, "sort") {
        Some("updated") => items.sort_by_key(|c| (c.updated_at, c.id)),
        Some(_) => items.sort_by_key(|c| (c.created_at, c.id)),
        None => items.sort_by_key(|c| c.id),
    }
    if get(q, "sort").is_some() && get(q, "direction") == Some("desc") {
        items.reverse();
    }
    paginate(&s.base, path, q, &items, |c| comment_json(&s.base, c))
}

/// One page of `items`, rendered, with GitHub's `Link` header (`per_page` default 30, max 100).
fn paginate<T>(
    base: &str,
    path: &str,
    q: &[(String, String)],
    items: &[&T],
    render: impl Fn(&T) -> Value,
) -> Response {
    paginate_json(base, path, q, items, false, |i| render(i).to_string())
}

/// GitHub's opaque listing cursor (`after=`) for the item at `start`: here the hex of
/// `cursor:v2:{start}`.
fn cursor(start: usize) -> String {
    format!("cursor:v2:{start}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_cursor(c: &str) -> Option<usize> {
    let raw = (0..c.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(c.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("cursor:v2:")?
        .parse()
        .ok()
}

/// [`paginate`] with items already rendered as JSON text. With `cursors` (GitHub's issue
/// listings), the next link also carries an `after` cursor and a request's `after` (which takes
/// precedence over `page`) starts the page after it: clients such as tap-github page by it.
fn paginate_json<T>(
    base: &str,
    path: &str,
    q: &[(String, String)],
    items: &[&T],
    cursors: bool,
    render: impl Fn(&T) -> String,
) -> Response {
    let per_page = get(q, "per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let after = match get(q, "after").filter(|_| cursors) {
        None => None,
        Some(c) => match parse_cursor(c) {
            Some(start) => Some(start),
            None => return validation_failed("after"),
        },
    };
    let page = match after {
        Some(start) => start / per_page + 1,
        None => get(q, "page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1),
    };
    let last = items.len().div_ceil(per_page).max(1);
    let start = after
        .unwrap_or((page - 1).saturating_mul(per_page))
        .min(items.len());
    let end = (start + per_page).min(items.len());
    let body: Vec<String> = items[start..end].iter().map(|i| render(i)).collect();
    let body = format!("[{}]", body.join(","));
    let url = |p: usize, after: Option<usize>| {
        let mut params: Vec<String> = q
            .iter()
            .filter(|(k, _)| k != "page" && k != "after")
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        params.push(format!("page={p}"));
        if let Some(a) = after {
            params.push(format!("after={}", cursor(a)));
        }
        format!("<{base}{path}?{}>", params.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", url(page - 1, None)));
    }
    if end < items.len() {
        let next = url(page + 1, cursors.then_some(end));
        links.push(format!("{next}; rel=\"next\""));
        links.push(format!("{}; rel=\"last\"", url(last, None)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1, None)));
    }
    let mut resp = ([("content-type", "application/json; charset=utf-8")], body).into_response();
    if !links.is_empty() {
        set(&mut resp, "link", links.join(", "));
    }
    resp
}

fn user_json(base: &str, login: &str, id: u64) -> Value {
    json!({
        "login": login, "id": id, "node_id": format!("MDQ6VXNlcj{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "url": format!("{base}/users/{login}"), "html_url": format!("https://github.com/{login}"),
        "repos_url": format!("{base}/users/{login}/repos"),
        "type": if login.ends_with("-bot") { "Bot" } else { "User" }, "site_admin": false,
    })
}

fn user_of(base: &str, login: &str) -> Value {
    let id = USERS
        .iter()
        .find(|(l, _)| *l == login)
        .map_or(1, |(_, id)| *id);
    user_json(base, login, id)
}

fn label_json(base: &str, repo: &str, name: &str) -> Value {
    let id = 7_000 + LABELS.iter().position(|l| *l == name).unwrap_or(0) as u64;
    json!({"id": id, "node_id": format!("LA_{id}"), "url": format!("{base}/repos/{repo}/labels/{}", encode(name)), "name": name, "color": "d73a4a", "default": true, "description": format!("{name} label")})
}

fn repo_json(base: &str, owner: &str, r: &Repo) -> Value {
    let name = r.full_name.split('/').nth(1).unwrap_or_default();
    json!({
        "id": r.id, "node_id": format!("R_{}", r.id), "name": name, "full_name": r.full_name,
        "private": r.private, "owner": user_json(base, owner, 77_777),
        "html_url": format!("https://github.com/{}", r.full_name),
        "description": format!("The {name} repository"), "fork": false,
        "url": format!("{base}/repos/{}", r.full_name),
        "issues_url": format!("{base}/repos/{}/issues{{/number}}", r.full_name),
        "pulls_url": format!("{base}/repos/{}/pulls{{/number}}", r.full_name),
        "homepage": null, "size": if r.empty { 0 } else { 1024 + r.id }, "stargazers_count": r.id % 97,
        "watchers_count": r.id % 97, "language": r.language, "has_issues": true, "forks_count": r.id % 13,
        "archived": false, "disabled": false, "open_issues_count": 3, "license": {"key": "apache-2.0", "name": "Apache License 2.0", "spdx_id": "Apache-2.0"},
        "topics": ["data", "sluice"], "visibility": if r.private { "private" } else { "public" },
        "default_branch": "main", "permissions": {"admin": false, "push": true, "pull": true},
        "created_at": iso(r.created_at), "updated_at": iso(r.created_at + 86_400), "pushed_at": iso(r.created_at + 2 * 86_400),
    })
}

fn issue_json(base: &str, i: &Issue) -> Value {
    let api = format!("{base}/repos/{}/issues/{}", i.repo, i.number);
    let mut v = json!({
        "url": api, "repository_url": format!("{base}/repos/{}", i.repo),
        "labels_url": format!("{api}/labels{{/name}}"), "comments_url": format!("{api}/comments"),
        "events_url": format!("{api}/events"), "html_url": format!("https://github.com/{}/issues/{}", i.repo, i.number),
        "id": i.id, "node_id": format!("I_{}", i.id), "number": i.number, "title": i.title,
        "user": user_of(base, i.user), "labels": i.labels.iter().map(|l| label_json(base, &i.repo, l)).collect::<Vec<_>>(),
        "state": i.state, "locked": false, "assignee": null, "assignees": [], "milestone": null,
        "comments": i.comments, "created_at": iso(i.created_at), "updated_at": iso(i.updated_at),
        "closed_at": i.closed_at.map(iso), "author_association": "MEMBER", "active_lock_reason": null,
        "body": i.body, "closed_by": null,
        "reactions": {"url": format!("{api}/reactions"), "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0, "confused": 0, "heart": 0, "rocket": 0, "eyes": 0},
        "timeline_url": format!("{api}/timeline"), "performed_via_github_app": null,
        "state_reason": if i.state == "closed" { Some("completed") } else { None },
        // The issue type (GitHub's organization issue types); null where none is set.
        "type": null,
    });
    if i.is_pull_request() {
        v["draft"] = json!(false);
        v["pull_request"] = json!({
            "url": format!("{base}/repos/{}/pulls/{}", i.repo, i.number),
            "html_url": format!("https://github.com/{}/pull/{}", i.repo, i.number),
            "diff_url": format!("https://github.com/{}/pull/{}.diff", i.repo, i.number),
            "patch_url": format!("https://github.com/{}/pull/{}.patch", i.repo, i.number),
            "merged_at": i.merged_at.map(iso),
        });
    }
    v
}

fn pull_json(base: &str, owner: &str, repo: &Repo, i: &Issue) -> Value {
    let api = format!("{base}/repos/{}/pulls/{}", i.repo, i.number);
    let branch = |label: &str, r#ref: &str, sha: String| json!({"label": label, "ref": r#ref, "sha": sha, "user": user_json(base, owner, 77_777), "repo": repo_json(base, owner, repo)});
    json!({
        "url": api, "id": i.pr_id, "node_id": format!("PR_{}", i.pr_id.unwrap_or_default()),
        "html_url": format!("https://github.com/{}/pull/{}", i.repo, i.number),
        "diff_url": format!("https://github.com/{}/pull/{}.diff", i.repo, i.number),
        "issue_url": format!("{base}/repos/{}/issues/{}", i.repo, i.number),
        "number": i.number, "state": i.state, "locked": false, "title": i.title, "user": user_of(base, i.user),
        "body": i.body, "created_at": iso(i.created_at), "updated_at": iso(i.updated_at),
        "closed_at": i.closed_at.map(iso), "merged_at": i.merged_at.map(iso),
        "merge_commit_sha": i.merged_at.map(|_| format!("{:040x}", i.id)),
        "assignee": null, "assignees": [], "requested_reviewers": [], "requested_teams": [],
        "labels": i.labels.iter().map(|l| label_json(base, &i.repo, l)).collect::<Vec<_>>(), "milestone": null, "draft": false,
        "commits_url": format!("{api}/commits"), "review_comments_url": format!("{api}/comments"),
        "statuses_url": format!("{base}/repos/{}/statuses/{:040x}", i.repo, i.id),
        "head": branch(&format!("{owner}:feature-{}", i.number), &format!("feature-{}", i.number), format!("{:040x}", i.id)),
        "base": branch(&format!("{owner}:main"), "main", format!("{:040x}", i.id + 1)),
        "_links": {"self": {"href": api}, "html": {"href": format!("https://github.com/{}/pull/{}", i.repo, i.number)}},
        "author_association": "MEMBER", "auto_merge": null, "active_lock_reason": null,
    })
}

fn commit_json(base: &str, c: &Commit) -> Value {
    let api = format!("{base}/repos/{}/commits/{}", c.repo, c.sha);
    let user = |login: Option<&str>| login.map_or(Value::Null, |l| user_of(base, l));
    json!({
        "sha": c.sha, "node_id": format!("C_{}", &c.sha[..12]), "url": api,
        "html_url": format!("https://github.com/{}/commit/{}", c.repo, c.sha), "comments_url": format!("{api}/comments"),
        "commit": {
            "url": format!("{base}/repos/{}/git/commits/{}", c.repo, c.sha),
            "author": {"name": c.author_name, "email": c.author_email, "date": iso(c.authored_at)},
            "committer": {"name": "GitHub", "email": "noreply@github.com", "date": iso(c.committed_at)},
            "message": c.message, "tree": {"sha": format!("{:0>40}", &c.sha[..8]), "url": format!("{base}/repos/{}/git/trees/x", c.repo)},
            "comment_count": 0,
            "verification": {"verified": c.author_login.is_some(), "reason": if c.author_login.is_some() { "valid" } else { "unsigned" }, "signature": null, "payload": null},
        },
        "author": user(c.author_login),
        "committer": user(Some("octocat")),
        "parents": c.parents.iter().map(|p| json!({"sha": p, "url": format!("{base}/repos/{}/commits/{p}", c.repo), "html_url": format!("https://github.com/{}/commit/{p}", c.repo)})).collect::<Vec<_>>(),
    })
}

fn comment_json(base: &str, c: &Comment) -> Value {
    json!({
        "url": format!("{base}/repos/{}/issues/comments/{}", c.repo, c.id),
        "html_url": format!("https://github.com/{}/issues/{}#issuecomment-{}", c.repo, c.issue_number, c.id),
        "issue_url": format!("{base}/repos/{}/issues/{}", c.repo, c.issue_number),
        "id": c.id, "node_id": format!("IC_{}", c.id), "user": user_of(base, c.user),
        "created_at": iso(c.created_at), "updated_at": iso(c.updated_at), "body": c.body,
        "author_association": "MEMBER", "performed_via_github_app": null,
        "reactions": {"url": format!("{base}/repos/{}/issues/comments/{}/reactions", c.repo, c.id), "total_count": 0},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic() {
        let c = GithubConfig::default();
        let (a, b) = (Dataset::generate(&c), Dataset::generate(&c));
        assert_eq!(a.issues, b.issues);
        assert_eq!(a.issues.len(), 600);
        assert_eq!(a.pulls().len(), 150);
        assert_eq!(a.repos.len(), 4);
        assert_eq!(a.comments.len(), 400);
        assert_eq!(a.issues.iter().map(|i| i.comments).sum::<u64>(), 400);
        let history = a.history("acme/repo-0");
        assert_eq!(history.len(), 100);
        assert!(
            history.windows(2).all(
                |w| w[0].parents == [w[1].sha.clone()] && w[0].committed_at > w[1].committed_at
            ),
            "a linear history, newest first"
        );
    }
    #[tokio::test]
    async fn issue_listings_page_by_after_cursor_and_rate_limit_answers() {
        let gh = FakeGithub::start(GithubConfig {
            repos: 1,
            issues: 250,
            pr_every: 0,
            ..Default::default()
        })
        .await;
        let client = reqwest::Client::new();
        let get = |url: String| {
            client
                .get(url)
                .header("authorization", format!("token {}", gh.token()))
                .send()
        };
        let limit: Value = get(format!("{}/rate_limit", gh.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(limit["resources"]["core"]["limit"], 5000);
        assert!(limit["rate"]["remaining"].as_u64().is_some());

        // Follow only the `after` cursor of each next link, as tap-github does.
        let mut url = format!("{}/repos/acme/repo-0/issues?state=all&per_page=100", gh.url);
        let mut numbers = Vec::new();
        loop {
            let resp = get(url.clone()).await.unwrap();
            let next = resp
                .headers()
                .get("link")
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.split(", ").find(|p| p.ends_with("rel=\"next\"")))
                .map(|p| p[1..p.find('>').unwrap()].to_string());
            let page: Vec<Value> = resp.json().await.unwrap();
            numbers.extend(page.iter().map(|i| i["number"].as_u64().unwrap()));
            let Some(next) = next else { break };
            let after = next.split("after=").nth(1).expect("next link has a cursor");
            url = format!(
                "{}/repos/acme/repo-0/issues?state=all&per_page=100&after={after}",
                gh.url
            );
        }
        let mut unique = numbers.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!((numbers.len(), unique.len()), (250, 250));
        let bad = get(format!(
            "{}/repos/acme/repo-0/issues?after=nonsense",
            gh.url
        ))
        .await
        .unwrap();
        assert_eq!(bad.status(), 422);
    }
}
