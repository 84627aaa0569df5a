//! rust-issues: GitHub issues, incrementally, with the Rust SDK (`sluice-sdk`).
//!
//! Reads `GET {api_url}/repos/{owner}/{repo}/issues?state=all&sort=updated&direction=asc&since=…`
//! for each configured repository, following `Link: rel="next"` pages, with the secret `token`
//! injected by the host as `Authorization: Bearer …`. Emits the stream `issues` and checkpoints,
//! after each page, the newest `updated_at` seen per repository: the next run starts there.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_sdk::http::Request;
use sluice_sdk::paging::LoopGuard;
use sluice_sdk::records::Batcher;
use sluice_sdk::{
    Connector, ConnectorError, Manifest, Result, StreamSpec, SyncRequest, Value, json, parse_config,
};

#[derive(Deserialize)]
struct Config {
    api_url: String,
    repositories: Vec<String>,
    page_size: Option<u32>,
}

impl Config {
    fn api(&self) -> Result<&str> {
        if !(self.api_url.starts_with("http://") || self.api_url.starts_with("https://")) {
            return Err(ConnectorError::invalid_config(
                "api_url must be an http(s) URL",
            ));
        }
        Ok(self.api_url.trim_end_matches('/'))
    }
}

struct Issues;

impl Connector for Issues {
    fn manifest() -> Manifest {
        let issue = json!({"type": "object", "properties": {
            "id": {"type": "integer"}, "repository": {"type": "string"}, "number": {"type": "integer"},
            "title": {"type": "string"}, "state": {"type": "string"}, "user_login": {"type": ["string", "null"]},
            "comments": {"type": "integer"}, "is_pull_request": {"type": "boolean"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "closed_at": {"type": ["string", "null"], "format": "date-time"}}});
        // additionalProperties false: a misnamed field is refused by name, not ignored.
        let config = json!({"type": "object", "additionalProperties": false, "required": ["api_url", "repositories"], "properties": {
            "api_url": {"type": "string", "description": "GitHub's API root, e.g. https://api.github.com"},
            "repositories": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "page_size": {"type": "integer", "minimum": 1, "maximum": 100}}});
        Manifest::new("rust-issues", "GitHub issues (Rust SDK example)", "0.1.0")
            .description("Issues of GitHub repositories, incrementally on updated_at.")
            .config_schema(&config)
            .secret("token", "A GitHub token", true)
            .host("https://api.github.com")
            .host("{config.api_url}")
            .stream(
                StreamSpec::new("issues")
                    .json_schema(&issue)
                    .primary_key(&["id"])
                    .cursor_field("updated_at"),
            )
    }

    fn validate(config: Value) -> Result<Value> {
        let config: Config = parse_config(&config)?;
        let api = config.api()?;
        let user: Value = Request::get(format!("{api}/user"))
            .bearer_secret("token")
            .send()?
            .error_for_status()?
            .json()?;
        for repo in &config.repositories {
            Request::get(format!("{api}/repos/{repo}"))
                .bearer_secret("token")
                .send()?
                .error_for_status()?;
        }
        Ok(json!({"login": user["login"], "repositories": config.repositories.len()}))
    }

    fn sync(request: SyncRequest) -> Result<()> {
        let config: Config = request.config()?;
        let api = config.api()?;
        let mut since: BTreeMap<String, String> = request
            .state("issues")
            .and_then(|s| s.get("since"))
            .and_then(|s| sluice_sdk::serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        let mut out = Batcher::new(500);
        for repo in &config.repositories {
            let mut page = Request::get(format!("{api}/repos/{repo}/issues"))
                .query("state", "all")
                .query("sort", "updated")
                .query("direction", "asc")
                .query("per_page", &config.page_size.unwrap_or(100).to_string());
            if let Some(cursor) = since.get(repo) {
                page = page.query("since", cursor);
            }
            // An upstream whose pages go round in circles fails the run instead of looping.
            let mut guard = LoopGuard::new(format!("issues of {repo}"));
            let mut next = Some(page);
            while let Some(request) = next.take() {
                guard.follow(request.url())?;
                let response = request.bearer_secret("token").send()?.error_for_status()?;
                let issues = response.json::<Vec<Value>>()?;
                guard.page(issues.len(), &[&response.body])?;
                for issue in issues {
                    let updated = issue["updated_at"].as_str().unwrap_or_default().to_string();
                    out.push("issues", &record(repo, &issue))?;
                    if since.get(repo).is_none_or(|s| *s < updated) {
                        since.insert(repo.clone(), updated);
                    }
                }
                // An issue dated in the future never becomes the cursor (later runs would skip
                // everything written until then).
                if let Some(cursor) = since.get_mut(repo) {
                    *cursor =
                        sluice_sdk::time::clamp_iso_to_now(cursor, &format!("issues of {repo}"));
                }
                out.checkpoint("issues", &json!({"since": since}))?;
                next = response.next_link().map(Request::get);
            }
        }
        out.flush()
    }
}

fn record(repo: &str, issue: &Value) -> Value {
    json!({
        "id": issue["id"], "repository": repo, "number": issue["number"], "title": issue["title"],
        "state": issue["state"], "user_login": issue["user"]["login"],
        "comments": issue.get("comments").cloned().unwrap_or(json!(0)),
        "is_pull_request": issue.get("pull_request").is_some(),
        "created_at": issue["created_at"], "updated_at": issue["updated_at"],
        "closed_at": issue["closed_at"],
    })
}

sluice_sdk::export_connector!(Issues);
