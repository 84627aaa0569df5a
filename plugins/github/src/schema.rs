//! Stream declarations (JSON Schemas, keys) and the shaping of GitHub objects into records.
//!
//! Records keep GitHub's field names. Hypermedia links (`url`, `*_url` except `html_url`) are
//! dropped, a few nested values are flattened next to their objects (`user_login`), and each
//! record gets `repository` (`owner/repo`). Fields not declared here are kept by the host in
//! `_sluice_extra`.

pub use sluice_sdk::fields::Scanned;
use sluice_sdk::fields::{FieldWriter, record_text};
use sluice_sdk::schema::object as schema;
use sluice_sdk::serde_json::{Map, Value, json};
use sluice_sdk::{StreamSpec, serde_json};

pub const REPOSITORIES: &str = "repositories";
pub const ISSUES: &str = "issues";
pub const PULL_REQUESTS: &str = "pull_requests";
pub const COMMITS: &str = "commits";
pub const ISSUE_COMMENTS: &str = "issue_comments";

fn int() -> Value {
    json!({"type": "integer"})
}
fn int_n() -> Value {
    json!({"type": ["integer", "null"]})
}
fn text() -> Value {
    json!({"type": ["string", "null"]})
}
fn flag() -> Value {
    json!({"type": ["boolean", "null"]})
}
fn time() -> Value {
    json!({"type": ["string", "null"], "format": "date-time"})
}
fn object() -> Value {
    json!({"type": ["object", "null"]})
}
fn array() -> Value {
    json!({"type": ["array", "null"]})
}

/// The five streams, in sync order.
pub fn streams() -> Vec<StreamSpec> {
    let repository = || json!({"type": "string", "description": "owner/repo"});
    vec![
        StreamSpec::new(REPOSITORIES)
            .description("The configured repositories (GET /repos/{owner}/{repo}, or the organization's list). Full refresh.")
            .primary_key(&["id"])
            .json_schema(&schema(
                &["id", "repository"],
                vec![
                    ("id", int()),
                    ("node_id", text()),
                    ("repository", repository()),
                    ("name", text()),
                    ("full_name", text()),
                    ("owner_login", text()),
                    ("owner", object()),
                    ("private", flag()),
                    ("visibility", text()),
                    ("description", text()),
                    ("fork", flag()),
                    ("archived", flag()),
                    ("disabled", flag()),
                    ("default_branch", text()),
                    ("language", text()),
                    ("topics", array()),
                    ("license", object()),
                    ("homepage", text()),
                    ("size", int_n()),
                    ("stargazers_count", int_n()),
                    ("watchers_count", int_n()),
                    ("forks_count", int_n()),
                    ("open_issues_count", int_n()),
                    ("has_issues", flag()),
                    ("permissions", object()),
                    ("created_at", time()),
                    ("updated_at", time()),
                    ("pushed_at", time()),
                    ("html_url", text()),
                ],
            )),
        StreamSpec::new(ISSUES)
            .description("Issues of every repository, pull requests excluded (they are in pull_requests). Incremental on updated_at, per repository.")
            .primary_key(&["id"])
            .cursor_field("updated_at")
            .json_schema(&schema(
                &["id", "repository"],
                vec![
                    ("id", int()),
                    ("node_id", text()),
                    ("repository", repository()),
                    ("number", int_n()),
                    ("title", text()),
                    ("body", text()),
                    ("state", text()),
                    ("state_reason", text()),
                    ("locked", flag()),
                    ("active_lock_reason", text()),
                    ("user_login", text()),
                    ("user", object()),
                    ("labels", array()),
                    ("assignee", object()),
                    ("assignees", array()),
                    ("milestone", object()),
                    ("comments", int_n()),
                    ("author_association", text()),
                    ("reactions", object()),
                    ("created_at", time()),
                    ("updated_at", time()),
                    ("closed_at", time()),
                    ("html_url", text()),
                ],
            )),
        StreamSpec::new(PULL_REQUESTS)
            .description("Pull requests of every repository. Incremental on updated_at, per repository.")
            .primary_key(&["id"])
            .cursor_field("updated_at")
            .json_schema(&schema(
                &["id", "repository"],
                vec![
                    ("id", int()),
                    ("node_id", text()),
                    ("repository", repository()),
                    ("number", int_n()),
                    ("title", text()),
                    ("body", text()),
                    ("state", text()),
                    ("locked", flag()),
                    ("draft", flag()),
                    ("user_login", text()),
                    ("user", object()),
                    ("labels", array()),
                    ("assignees", array()),
                    ("requested_reviewers", array()),
                    ("milestone", object()),
                    ("head", object()),
                    ("base", object()),
                    ("head_ref", text()),
                    ("base_ref", text()),
                    ("merge_commit_sha", text()),
                    ("author_association", text()),
                    ("created_at", time()),
                    ("updated_at", time()),
                    ("closed_at", time()),
                    ("merged_at", time()),
                    ("html_url", text()),
                ],
            )),
        StreamSpec::new(COMMITS)
            .description("Commits of every repository's default branch. Incremental on committed_at (the committer date), per repository.")
            .primary_key(&["sha"])
            .cursor_field("committed_at")
            .json_schema(&schema(
                &["sha", "repository"],
                vec![
                    ("sha", json!({"type": "string"})),
                    ("node_id", text()),
                    ("repository", repository()),
                    ("message", text()),
                    ("author_login", text()),
                    ("author_name", text()),
                    ("author_email", text()),
                    ("authored_at", time()),
                    ("committer_login", text()),
                    ("committer_name", text()),
                    ("committer_email", text()),
                    ("committed_at", time()),
                    ("author", object()),
                    ("committer", object()),
                    ("parents", array()),
                    ("verified", flag()),
                    ("comment_count", int_n()),
                    ("html_url", text()),
                ],
            )),
        StreamSpec::new(ISSUE_COMMENTS)
            .description("Comments on issues and pull requests of every repository. Incremental on updated_at, per repository.")
            .primary_key(&["id"])
            .cursor_field("updated_at")
            .json_schema(&schema(
                &["id", "repository"],
                vec![
                    ("id", int()),
                    ("node_id", text()),
                    ("repository", repository()),
                    ("issue_number", int_n()),
                    ("body", text()),
                    ("user_login", text()),
                    ("user", object()),
                    ("author_association", text()),
                    ("reactions", object()),
                    ("created_at", time()),
                    ("updated_at", time()),
                    ("html_url", text()),
                ],
            )),
    ]
}

/// The object without hypermedia links (`url`, `*_url` but `html_url`), plus `repository`.
fn base(item: Value, repository: &str) -> Map<String, Value> {
    let mut map = match item {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    map.retain(|k, _| !is_link(k));
    map.insert("repository".into(), Value::String(repository.to_string()));
    map
}

fn at<'a>(map: &'a Map<String, Value>, pointer: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    let mut parts = pointer.split('/');
    let Some(first) = parts.next() else {
        return &NULL;
    };
    parts
        .try_fold(map.get(first).unwrap_or(&NULL), |v, p| v.get(p))
        .unwrap_or(&NULL)
}

fn flatten(map: &mut Map<String, Value>, field: &str, pointer: &str) {
    let value = at(map, pointer).clone();
    map.insert(field.to_string(), value);
}

/// A `repositories` record.
pub fn repository(item: Value, repository: &str) -> Value {
    let mut map = base(item, repository);
    flatten(&mut map, "owner_login", "owner/login");
    Value::Object(map)
}

/// An `issues` record, or `None` for a pull request (the issues API returns both): the item's
/// fields without hypermedia links, plus `user_login` and `repository`.
pub fn issue(fields: Scanned<'_>, repository: &str) -> Option<String> {
    is_issue(&fields).then(|| record_text(|out| write_issue(&fields, repository, out)))
}

/// Whether a listed item is an issue (the issues listing holds pull requests too).
pub fn is_issue(fields: &Scanned<'_>) -> bool {
    fields.get("pull_request").is_none()
}

/// Writes an `issues` record of an item [`is_issue`] accepts: its fields as GitHub wrote them,
/// without hypermedia links, then `user_login` and `repository`.
pub fn write_issue(fields: &Scanned<'_>, repository: &str, out: &mut FieldWriter<'_>) {
    // The user object is scanned, not parsed: only `login` is read (the host checks the rest
    // when it takes the record, as it does every value).
    let login = fields
        .get("user")
        .and_then(|u| Scanned::parse(u).ok())
        .and_then(|u| u.str("login").ok().flatten());
    out.scanned_fields(fields, |k| {
        let key = k.as_str();
        !(is_link(key) || key == "user_login" || key == "repository")
    });
    out.str("user_login", login.as_deref());
    out.str("repository", Some(repository));
}

/// Hypermedia links are dropped: `url` and `*_url`, except `html_url`.
fn is_link(key: &str) -> bool {
    key != "html_url" && (key == "url" || key.ends_with("_url"))
}

/// A `pull_requests` record; `head` and `base` keep their label, ref, sha and repository name
/// (not the full repository objects GitHub nests there).
pub fn pull_request(item: Value, repository: &str) -> Value {
    let mut map = base(item, repository);
    flatten(&mut map, "user_login", "user/login");
    flatten(&mut map, "head_ref", "head/ref");
    flatten(&mut map, "base_ref", "base/ref");
    for side in ["head", "base"] {
        if let Some(Value::Object(branch)) = map.get(side) {
            let reduced = json!({
                "label": branch.get("label"),
                "ref": branch.get("ref"),
                "sha": branch.get("sha"),
                "repository": at(branch, "repo/full_name"),
            });
            map.insert(side.to_string(), reduced);
        }
    }
    map.remove("_links");
    Value::Object(map)
}

/// A `commits` record: the git commit's fields flattened, `author`/`committer` kept as the
/// GitHub users they are (or null), `parents` as SHAs.
pub fn commit(item: Value, repository: &str) -> Value {
    let mut map = base(item, repository);
    flatten(&mut map, "message", "commit/message");
    flatten(&mut map, "author_name", "commit/author/name");
    flatten(&mut map, "author_email", "commit/author/email");
    flatten(&mut map, "authored_at", "commit/author/date");
    flatten(&mut map, "committer_name", "commit/committer/name");
    flatten(&mut map, "committer_email", "commit/committer/email");
    flatten(&mut map, "committed_at", "commit/committer/date");
    flatten(&mut map, "verified", "commit/verification/verified");
    flatten(&mut map, "comment_count", "commit/comment_count");
    flatten(&mut map, "author_login", "author/login");
    flatten(&mut map, "committer_login", "committer/login");
    map.remove("commit");
    if let Some(Value::Array(parents)) = map.get("parents") {
        let shas: Vec<Value> = parents
            .iter()
            .filter_map(|p| p.get("sha").cloned())
            .collect();
        map.insert("parents".into(), Value::Array(shas));
    }
    Value::Object(map)
}

/// An `issue_comments` record, with `issue_number` taken from `issue_url`.
pub fn issue_comment(item: Value, repository: &str) -> Value {
    let number = item
        .get("issue_url")
        .and_then(Value::as_str)
        .and_then(|u| u.rsplit('/').next())
        .and_then(|n| n.parse::<u64>().ok());
    let mut map = base(item, repository);
    flatten(&mut map, "user_login", "user/login");
    map.insert(
        "issue_number".into(),
        serde_json::to_value(number).unwrap_or(Value::Null),
    );
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let issue_of = |v: Value| -> Option<Value> {
            let text = v.to_string();
            let fields = Scanned::parse(&text).expect("an object");
            issue(fields, "o/r").map(|s| serde_json::from_str(&s).expect("valid JSON"))
        };
        let i = json!({"id": 1, "url": "u", "comments_url": "c", "html_url": "h", "title": "a \"q\" é", "user": {"login": "octo"}, "we\"ird\nkey": 2});
        assert_eq!(
            issue_of(i),
            Some(
                json!({"id": 1, "html_url": "h", "title": "a \"q\" é", "user": {"login": "octo"}, "we\"ird\nkey": 2, "user_login": "octo", "repository": "o/r"})
            )
        );
        assert_eq!(
            issue_of(json!({"id": 5, "user": null}))
                .expect("an issue")
                .get("user_login"),
            Some(&Value::Null)
        );
        assert!(issue_of(json!({"id": 2, "pull_request": {}})).is_none());
        let c = commit(
            json!({"sha": "abc", "commit": {"message": "m", "committer": {"date": "2024-01-01T00:00:00Z"}}, "author": null, "parents": [{"sha": "p1", "url": "x"}]}),
            "o/r",
        );
        assert_eq!(c["committed_at"], "2024-01-01T00:00:00Z");
        assert_eq!(c["author_login"], Value::Null);
        assert_eq!(c["parents"], json!(["p1"]));
        assert!(c.get("commit").is_none());
        let n = issue_comment(
            json!({"id": 3, "issue_url": "https://x/repos/o/r/issues/42"}),
            "o/r",
        );
        assert_eq!(n["issue_number"], 42);
        let p = pull_request(
            json!({"id": 4, "head": {"ref": "f", "sha": "s", "repo": {"full_name": "o/r", "id": 9}}, "_links": {}}),
            "o/r",
        );
        assert_eq!(p["head_ref"], "f");
        assert_eq!(p["head"]["repository"], "o/r");
        assert!(p.get("_links").is_none());
    }
}
