//! {{id}}: a Sluice connector written with the Rust SDK (`sluice-sdk`).
//!
//! - config `base_url` (the API root); secret `api_key`, put by the host into the `x-api-key`
//!   header (the value never enters the plugin);
//! - validate: `GET {base_url}/me`;
//! - stream `items` (primary key `id`, cursor `updated_at`): `GET {base_url}/items`, then
//!   `?since=<newest updated_at seen>` from the committed state on later runs, following
//!   `Link: rel="next"` pages and checkpointing the newest cursor after each page.

use serde::Deserialize;
use sluice_sdk::http::Request;
use sluice_sdk::paging::LoopGuard;
use sluice_sdk::records::Batcher;
use sluice_sdk::{
    Connector, ConnectorError, Manifest, Result, StreamSpec, SyncRequest, Value, json, parse_config,
};

#[derive(Deserialize)]
struct Config {
    base_url: String,
}

impl Config {
    fn base(&self) -> Result<&str> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(ConnectorError::invalid_config(
                "base_url must be an http(s) URL",
            ));
        }
        Ok(self.base_url.trim_end_matches('/'))
    }
}

/// A GET with the API key in `x-api-key`, injected by the host.
fn get(url: String) -> Request {
    Request::get(url).secret_header("x-api-key", "api_key", "")
}

struct Items;

impl Connector for Items {
    fn manifest() -> Manifest {
        let item = json!({"type": "object", "required": ["id", "updated_at"], "properties": {
            "id": {"type": "integer"},
            "name": {"type": ["string", "null"]},
            "updated_at": {"type": "string", "format": "date-time"}}});
        // additionalProperties false: a misnamed field is refused by name, not ignored.
        let config = json!({"type": "object", "additionalProperties": false, "required": ["base_url"], "properties": {
            "base_url": {"type": "string", "description": "The API root, e.g. https://api.example.com/v1"}}});
        Manifest::new("{{id}}", "{{id}}", "0.1.0")
            .description("Items of an HTTP API, incrementally on updated_at.")
            .config_schema(&config)
            .secret("api_key", "The API key, sent as the x-api-key header", true)
            .host("{config.base_url}")
            .stream(
                StreamSpec::new("items")
                    .json_schema(&item)
                    .primary_key(&["id"])
                    .cursor_field("updated_at"),
            )
    }

    fn validate(config: Value) -> Result<Value> {
        let config: Config = parse_config(&config)?;
        let me: Value = get(format!("{}/me", config.base()?))
            .send()?
            .error_for_status()?
            .json()?;
        Ok(json!({"account": me["name"]}))
    }

    fn sync(request: SyncRequest) -> Result<()> {
        let config: Config = request.config()?;
        let mut since: Option<String> = request
            .state("items")
            .and_then(|s| s.get("since"))
            .and_then(|s| s.as_str())
            .map(str::to_string);
        let mut first = get(format!("{}/items", config.base()?));
        if let Some(cursor) = &since {
            first = first.query("since", cursor);
        }
        let mut out = Batcher::new(500);
        // An API whose pages go round in circles fails the run instead of looping until its
        // deadline.
        let mut guard = LoopGuard::new("items");
        let mut next = Some(first);
        while let Some(page) = next.take() {
            guard.follow(page.url())?;
            let response = page.send()?.error_for_status()?;
            let items = response.json::<Vec<Value>>()?;
            guard.page(items.len(), &[&response.body])?;
            for item in items {
                let updated = item["updated_at"].as_str().unwrap_or_default().to_string();
                out.push("items", &record(&item))?;
                if since.as_ref().is_none_or(|s| *s < updated) {
                    since = Some(updated);
                }
            }
            if let Some(cursor) = &mut since {
                // An item dated in the future never becomes the cursor.
                *cursor = sluice_sdk::time::clamp_iso_to_now(cursor, "items");
                out.checkpoint("items", &json!({"since": cursor}))?;
            }
            next = response.next_link().map(get);
        }
        out.flush()
    }
}

/// The record as the stream's schema declares it.
fn record(item: &Value) -> Value {
    json!({"id": item["id"], "name": item["name"], "updated_at": item["updated_at"]})
}

sluice_sdk::export_connector!(Items);
