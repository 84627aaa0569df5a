"""{{id}}: a Sluice connector written with the Python SDK (sluice-sdk).

- config `base_url` (the API root); secret `api_key`, put by the host into the `x-api-key`
  header (the value never enters the plugin);
- validate: `GET {base_url}/me`;
- stream `items` (primary key `id`, cursor `updated_at`): `GET {base_url}/items`, then
  `?since=<newest updated_at seen>` from the committed state on later runs, following
  `Link: rel="next"` pages and checkpointing the newest cursor after each page.
"""
import sluice_sdk
from sluice_sdk import Batcher, ConnectorError, LoopGuard, Manifest, Secret, SecretHeader, Stream, SyncRequest, clamp_to_now, fetch

ITEM = {
    "type": "object",
    "required": ["id", "updated_at"],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": ["string", "null"]},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
CONFIG = {
    "type": "object",
    "additionalProperties": False,  # a misnamed field is refused by name, not ignored
    "required": ["base_url"],
    "properties": {
        "base_url": {"type": "string", "description": "The API root, e.g. https://api.example.com/v1"},
    },
}
# The API key in `x-api-key`, injected by the host.
API_KEY = [SecretHeader("x-api-key", "api_key")]


class Items(sluice_sdk.Connector):
    def manifest(self) -> Manifest:
        return Manifest(
            id="{{id}}",
            name="{{id}}",
            version="0.1.0",
            description="Items of an HTTP API, incrementally on updated_at.",
            config_schema=CONFIG,
            secrets=[Secret("api_key", "The API key, sent as the x-api-key header")],
            hosts=["{config.base_url}"],
            streams=[Stream("items", ITEM, primary_key=["id"], cursor_field="updated_at")],
        )

    def validate(self, config):
        me = fetch(f"{base(config)}/me", secret_headers=API_KEY).raise_for_status().json()
        return {"account": me.get("name")}

    def sync(self, request: SyncRequest) -> None:
        since = (request.state.get("items") or {}).get("since")
        params = {"since": since} if since else None
        page = fetch(f"{base(request.config)}/items", params=params, secret_headers=API_KEY)
        out = Batcher(500)
        # An API whose pages go round in circles fails the run instead of looping until its deadline.
        guard = LoopGuard("items")
        while True:
            items = page.raise_for_status().json()
            guard.page(len(items), page.body)
            for item in items:
                out.push("items", record(item))
                if since is None or item["updated_at"] > since:
                    since = item["updated_at"]
            if since is not None:
                # An item dated in the future never becomes the cursor.
                since = clamp_to_now(since, "items")
                out.checkpoint("items", {"since": since})
            url = page.next_link()
            if url is None:
                break
            guard.follow(url)
            page = fetch(url, secret_headers=API_KEY)
        out.flush()


def base(config) -> str:
    url = config.get("base_url", "")
    if not url.startswith(("http://", "https://")):
        raise ConnectorError("invalid-config", "base_url must be an http(s) URL")
    return url.rstrip("/")


def record(item: dict) -> dict:
    """The record as the stream's schema declares it."""
    return {"id": item["id"], "name": item.get("name"), "updated_at": item["updated_at"]}


Connector = sluice_sdk.export(Items)
