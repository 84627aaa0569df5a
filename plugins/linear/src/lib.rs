//! `linear`: teams, users, workflow states, labels, projects, cycles, issues and comments from
//! Linear's GraphQL API (`POST {api_url}/graphql`, "GraphQL API", linear.app/developers/graphql).
//!
//! **Auth** ("Authentication", linear.app/developers): a personal API key is sent as
//! `Authorization: <key>`, an OAuth access token as `Authorization: Bearer <token>`. The config's
//! `token_type` (`api_key`, the default, or `oauth`) says which; the host injects the secret
//! `token` with the prefix `""` or `"Bearer "`, so the key never enters the plugin (which is
//! also why the kind is not guessed from the key's `lin_api_` prefix: that would mean reading
//! the secret).
//!
//! **Errors** arrive as GraphQL `errors` on HTTP 200 *and* 400 ([`graphql::read_answer`]):
//! `AUTHENTICATION_ERROR` is `invalid-credentials`, `FORBIDDEN` `insufficient-scope`,
//! `RATELIMITED` `rate-limited`. Waiting out `RATELIMITED` is the host's job (its outbound rule
//! waits for the spent bucket's `X-RateLimit-*-Reset`); one the plugin still sees came after the
//! host's waits. Every query only reads, so every POST is marked idempotent (the host may retry
//! it after a 5xx or a connection error).
//!
//! **Paging**: Relay `first`/`after` with `pageInfo { hasNextPage endCursor }`, `orderBy:
//! updatedAt`, `includeArchived: true`. The page size comes from Linear's per-query complexity
//! limit ([`graphql::page_size`]); a "Query too complex" answer halves it (down to 1) and the
//! page is asked again.
//!
//! **Incremental**: every stream filters `updatedAt >= cursor` and checkpoints after each
//! page's records ([`cursor`]).

pub mod cursor;
pub mod graphql;

use serde::Deserialize;
use sluice_sdk::fields::Fields;
use sluice_sdk::http::Request;
use sluice_sdk::paging::LoopGuard;
use sluice_sdk::records::Batcher;
use sluice_sdk::serde_json::Value;
use sluice_sdk::{
    Connector, ConnectorError, Manifest, Result, StreamSpec, SyncRequest, json, log, parse_config,
};

use cursor::State;
use graphql::{Failure, STREAMS, Stream};

const TOKEN: &str = "token";
const DEFAULT_API_URL: &str = "https://api.linear.app";

struct Linear;

/// How the token is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    /// A personal API key (`lin_api_…`): `Authorization: <key>`.
    #[default]
    ApiKey,
    /// An OAuth access token: `Authorization: Bearer <token>`.
    Oauth,
}

impl TokenType {
    /// The prefix the host puts before the secret in `Authorization`.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenType::ApiKey => "",
            TokenType::Oauth => "Bearer ",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    token_type: TokenType,
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    page_size: Option<u32>,
}

/// A checked config.
#[derive(Debug)]
pub struct Config {
    /// The GraphQL endpoint: `{api_url}/graphql`.
    pub endpoint: String,
    pub token_type: TokenType,
    /// `start_date` as given (ISO 8601): the filter of a stream's first sweep.
    pub start: Option<String>,
    /// Upper bound of the page size (1–250; the complexity budget may lower it).
    pub page_cap: u32,
}

impl Config {
    /// Checks a config object; errors are `invalid-config`.
    pub fn load(config: &Value) -> Result<Self> {
        let raw: RawConfig = parse_config(config)?;
        let invalid = |m: String| Err(ConnectorError::invalid_config(m));
        let api = raw.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        sluice_sdk::http::check_base_url("api_url", api)?;
        if let Some(start) = &raw.start_date
            && cursor::instant(start).is_none()
        {
            return invalid(format!("start_date {start:?} is not an ISO 8601 date"));
        }
        let page_cap = raw.page_size.unwrap_or(graphql::MAX_PAGE);
        if !(1..=graphql::MAX_PAGE).contains(&page_cap) {
            return invalid(format!(
                "page_size {page_cap} must be between 1 and {}",
                graphql::MAX_PAGE
            ));
        }
        Ok(Self {
            endpoint: format!("{}/graphql", api.trim_end_matches('/')),
            token_type: raw.token_type,
            start: raw.start_date,
            page_cap,
        })
    }

    /// Sends one GraphQL request body; returns the status and body.
    fn post(&self, body: &Value) -> Result<(u16, Vec<u8>)> {
        let response = Request::post(&self.endpoint)
            .secret_header("authorization", TOKEN, self.token_type.prefix())
            .json_body(body)
            .idempotent()
            .send()?;
        Ok((response.status, response.body))
    }
}

/// Reads one stream to the end of a sweep, emitting each page's records, then checkpointing
/// (see [`cursor`]). A "Query too complex" answer halves the page and asks again.
fn sync_stream(
    config: &Config,
    stream: &Stream,
    state: Option<&Value>,
    out: &mut Batcher,
) -> Result<()> {
    let state = State::load(state);
    let mut sweep = state.begin(config.start.as_deref());
    let mut first = graphql::page_size(stream, config.page_cap);
    let (mut pages, mut emitted, mut skipped) = (0u64, 0u64, 0u64);
    let mut guard = LoopGuard::new(format!("Linear {}", stream.name));
    loop {
        let body = graphql::page_request(
            stream,
            first,
            sweep.after.as_deref(),
            sweep.since.as_deref(),
        );
        let (status, answer) = config.post(&body)?;
        let data = match graphql::read_answer(status, &answer, stream.name) {
            Ok(data) => data,
            Err(Failure::TooComplex(detail)) => {
                first = graphql::shrink(first).ok_or_else(|| {
                    ConnectorError::internal(format!(
                        "Linear finds even a page of one {} too complex: {detail}",
                        stream.name
                    ))
                })?;
                log::warn(
                    "query too complex; asking again with a smaller page",
                    &[
                        ("stream", stream.name),
                        ("first", &first.to_string()),
                        ("detail", &detail),
                    ],
                );
                continue;
            }
            Err(Failure::Error(e)) => return Err(e),
        };
        let page = graphql::page(stream, data)?;
        pages += 1;
        fn node_id<'a>(n: Option<&Fields<'a>>) -> &'a str {
            n.and_then(|n| n.get("id")).map_or("", |v| v.get())
        }
        guard.page(
            page.nodes.len(),
            &[
                node_id(page.nodes.first()).as_bytes(),
                node_id(page.nodes.last()).as_bytes(),
            ],
        )?;
        for node in &page.nodes {
            // Ids and times are strings in Linear's schema; anything else reads as "".
            let text = |name: &str| node.str(name).ok().flatten().unwrap_or_default();
            let (id, updated) = (text("id"), text("updatedAt"));
            if state.already_emitted(&id, &updated) {
                skipped += 1;
                continue;
            }
            // A value in the future (a broken clock, a hostile answer) never becomes the
            // cursor: every later run would skip what is written until then.
            if !in_the_future(&updated, stream.name) {
                sweep.see(&id, &updated);
            }
            out.push_json(stream.name, graphql::record(stream, node))?;
            emitted += 1;
        }
        let next = match (page.page_info.has_next_page, page.page_info.end_cursor) {
            (false, _) => None,
            (true, Some(next)) => Some(next),
            (true, None) => {
                return Err(ConnectorError::internal(format!(
                    "Linear {}: the answer says there is a next page but gives no endCursor",
                    stream.name
                )));
            }
        };
        match next {
            Some(next) => {
                guard.follow(&next)?;
                sweep.after = Some(next);
                out.checkpoint(stream.name, &state.during(&sweep))?;
            }
            None => {
                out.checkpoint(stream.name, &state.finish(&sweep))?;
                break;
            }
        }
    }
    log::info(
        "stream read",
        &[
            ("stream", stream.name),
            ("pages", &pages.to_string()),
            ("records", &emitted.to_string()),
            ("already_emitted", &skipped.to_string()),
            ("page_size", &first.to_string()),
        ],
    );
    Ok(())
}

/// Whether `updated_at` (RFC 3339) is later than the host's clock (logged when it is).
fn in_the_future(updated_at: &str, stream: &str) -> bool {
    sluice_sdk::time::parse_iso(updated_at)
        .is_some_and(|t| sluice_sdk::time::clamp_to_now(t, &format!("Linear {stream}")) < t)
}

impl Connector for Linear {
    fn manifest() -> Manifest {
        let mut manifest = Manifest::new("linear", "Linear", env!("CARGO_PKG_VERSION"))
            .description(
                "Linear teams, users, workflow states, labels, projects, cycles, issues and \
                 comments (GraphQL API), incremental on updatedAt, archived items included.",
            )
            .config_schema(&config_schema())
            .secret(
                TOKEN,
                "Linear personal API key (token_type api_key, sent as `Authorization: <key>`) or \
                 OAuth access token with the read scope (token_type oauth, sent as \
                 `Authorization: Bearer <token>`).",
                true,
            )
            .host(DEFAULT_API_URL)
            .host("{config.api_url}")
            .memory_mib(64);
        for stream in &STREAMS {
            manifest = manifest.stream(graphql::spec(stream));
        }
        manifest
    }

    fn validate(config: Value) -> Result<Value> {
        let config = Config::load(&config)?;
        let (status, body) = config.post(&graphql::validate_request())?;
        let data = graphql::read_answer(status, &body, "the viewer and organization").map_err(
            |f| match f {
                Failure::Error(e) => e,
                Failure::TooComplex(d) => ConnectorError::internal(d),
            },
        )?;
        let data: Value = sluice_sdk::serde_json::from_str(data.get()).map_err(|e| {
            ConnectorError::internal(format!("unexpected answer about the viewer: {e}"))
        })?;
        let viewer = &data["viewer"];
        let organization = &data["organization"];
        Ok(json!({
            "user": {"id": viewer["id"], "name": viewer["name"], "email": viewer["email"]},
            "organization": {"id": organization["id"], "name": organization["name"], "url_key": organization["urlKey"]},
            "token_type": match config.token_type { TokenType::ApiKey => "api_key", TokenType::Oauth => "oauth" },
        }))
    }

    fn discover(config: Value) -> Result<Vec<StreamSpec>> {
        Config::load(&config)?;
        Ok(STREAMS.iter().map(graphql::spec).collect())
    }

    fn sync(request: SyncRequest) -> Result<()> {
        let config = Config::load(&request.config)?;
        let mut out = Batcher::new(500);
        for stream in &STREAMS {
            if request.selected(stream.name) {
                sync_stream(&config, stream, request.state(stream.name), &mut out)?;
            }
        }
        out.flush()
    }
}

fn config_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Linear",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "token_type": {
                "description": "How the token is sent: api_key (a personal API key, `Authorization: <key>`) or oauth (an OAuth access token, `Authorization: Bearer <token>`).",
                "enum": ["api_key", "oauth"],
                "default": "api_key"
            },
            "api_url": {
                "description": "API root; the GraphQL endpoint is {api_url}/graphql.",
                "type": "string",
                "pattern": "^https?://[^/?#]+",
                "default": DEFAULT_API_URL
            },
            "start_date": {
                "description": "ISO 8601 date or date-time: a first sync reads only what was updated at or after it.",
                "type": "string",
                "examples": ["2024-01-01T00:00:00Z"]
            },
            "page_size": {
                "description": "Most items per page (Linear serves at most 250); the connector also keeps every query under Linear's complexity limit.",
                "type": "integer",
                "minimum": 1,
                "maximum": graphql::MAX_PAGE
            }
        }
    })
}

sluice_sdk::export_connector!(Linear);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::serde_json;

    #[test]
    fn config_is_checked() {
        let c = Config::load(&json!({})).expect("empty config");
        assert_eq!(c.endpoint, "https://api.linear.app/graphql");
        assert_eq!(c.token_type, TokenType::ApiKey);
        assert_eq!(c.token_type.prefix(), "");
        assert_eq!(c.page_cap, 250);
        let c = Config::load(&json!({"api_url": "http://127.0.0.1:9/", "token_type": "oauth", "page_size": 10, "start_date": "2024-01-01"}))
            .expect("valid");
        assert_eq!(c.endpoint, "http://127.0.0.1:9/graphql");
        assert_eq!(c.token_type.prefix(), "Bearer ");
        assert_eq!(c.page_cap, 10);
        for bad in [
            json!({"api_url": "ftp://x"}),
            json!({"api_url": "https://api.linear.app?x=1"}),
            json!({"api_url": "https://api.linear.app#f"}),
            json!({"token_type": "bearer"}),
            json!({"page_size": 0}),
            json!({"page_size": 251}),
            json!({"start_date": "soon"}),
            json!({"extra": 1}),
        ] {
            let e = Config::load(&bad).expect_err(&bad.to_string());
            assert_eq!(e.code, sluice_sdk::ErrorCode::InvalidConfig, "{bad}");
        }
    }

    #[test]
    fn the_manifest_declares_every_stream() {
        let m = Linear::manifest();
        let names: Vec<&str> = m.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "teams",
                "users",
                "workflow_states",
                "labels",
                "projects",
                "cycles",
                "issues",
                "comments"
            ]
        );
        assert_eq!(m.hosts, ["https://api.linear.app", "{config.api_url}"]);
        let schema: Value = serde_json::from_str(&m.config_schema).expect("schema");
        assert_eq!(schema["properties"]["page_size"]["maximum"], 250);
    }

    /// Writes every request body the connector can send to `$SLUICE_LINEAR_DOCUMENTS` (one JSON
    /// file each) for the contract check (`scripts/contract-linear.sh`), and checks each here.
    #[test]
    fn every_request_for_the_contract_check() {
        let all = graphql::all_requests(graphql::MAX_PAGE);
        for (name, body) in &all {
            let query = body["query"].as_str().expect("query");
            assert!(query.starts_with("query "), "{name}");
            if let Some(first) = body["variables"]["first"].as_u64() {
                let stream =
                    graphql::stream(name.split('-').next().unwrap_or_default()).expect("stream");
                assert!(
                    graphql::complexity(stream, first as u32) <= graphql::MAX_QUERY_COMPLEXITY,
                    "{name}"
                );
            }
        }
        if let Some(dir) = std::env::var_os("SLUICE_LINEAR_DOCUMENTS") {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("documents dir");
            for (name, body) in &all {
                std::fs::write(dir.join(format!("{name}.json")), body.to_string())
                    .expect("write a document");
            }
        }
    }
}
