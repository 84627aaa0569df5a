"""python-issues: GitHub issues, incrementally, with the Python SDK (sluice-sdk).

Reads `GET {api_url}/repos/{owner}/{repo}/issues?state=all&sort=updated&direction=asc&since=…`
for each configured repository, following `Link: rel="next"` pages, with the secret `token`
injected by the host as `Authorization: Bearer …`. Emits the stream `issues` and checkpoints,
after each page, the newest `updated_at` seen per repository: the next run starts there.

Build: `sluice-py-build app.py -o python-issues.wasm` (see docs/sdk-python.md).
"""
import sluice_sdk
from sluice_sdk import Batcher, ConnectorError, LoopGuard, Manifest, Secret, Stream, SyncRequest, bearer, clamp_to_now, fetch

ISSUE = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "repository": {"type": "string"},
        "number": {"type": "integer"},
        "title": {"type": "string"},
        "state": {"type": "string"},
        "user_login": {"type": ["string", "null"]},
        "comments": {"type": "integer"},
        "is_pull_request": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "closed_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
CONFIG = {
    "type": "object",
    "additionalProperties": False,  # a misnamed field is refused by name, not ignored
    "required": ["api_url", "repositories"],
    "properties": {
        "api_url": {"type": "string", "description": "GitHub's API root, e.g. https://api.github.com"},
        "repositories": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "page_size": {"type": "integer", "minimum": 1, "maximum": 100},
    },
}


class Issues(sluice_sdk.Connector):
    def manifest(self) -> Manifest:
        return Manifest(
            id="python-issues",
            name="GitHub issues (Python SDK example)",
            version="0.1.0",
            description="Issues of GitHub repositories, incrementally on updated_at.",
            config_schema=CONFIG,
            secrets=[Secret("token", "A GitHub token")],
            hosts=["https://api.github.com", "{config.api_url}"],
            streams=[Stream("issues", ISSUE, primary_key=["id"], cursor_field="updated_at")],
        )

    def validate(self, config):
        user = fetch(f"{api(config)}/user", secret_headers=[bearer("token")]).raise_for_status().json()
        for repo in config["repositories"]:
            fetch(f"{api(config)}/repos/{repo}", secret_headers=[bearer("token")]).raise_for_status()
        return {"login": user.get("login"), "repositories": len(config["repositories"])}

    def sync(self, request: SyncRequest) -> None:
        config = request.config
        since = dict((request.state.get("issues") or {}).get("since", {}))
        out = Batcher(500)
        for repo in config["repositories"]:
            params = {"state": "all", "sort": "updated", "direction": "asc", "per_page": config.get("page_size", 100)}
            if repo in since:
                params["since"] = since[repo]
            url = f"{api(config)}/repos/{repo}/issues"
            page = fetch(url, params=params, secret_headers=[bearer("token")])
            # An upstream whose pages go round in circles fails the run instead of looping.
            guard = LoopGuard(f"issues of {repo}")
            while True:
                issues = page.raise_for_status().json()
                guard.page(len(issues), page.body)
                for issue in issues:
                    out.push("issues", record(repo, issue))
                    since[repo] = max(since.get(repo, ""), issue["updated_at"])
                # An issue dated in the future never becomes the cursor (later runs would skip
                # everything written until then).
                if repo in since:
                    since[repo] = clamp_to_now(since[repo], f"issues of {repo}")
                out.checkpoint("issues", {"since": since})
                url = page.next_link()
                if url is None:
                    break
                guard.follow(url)
                page = fetch(url, secret_headers=[bearer("token")])
        out.flush()


def api(config) -> str:
    url = config.get("api_url", "")
    if not url.startswith(("http://", "https://")):
        raise ConnectorError("invalid-config", "api_url must be an http(s) URL")
    return url.rstrip("/")


def record(repo: str, issue: dict) -> dict:
    return {
        "id": issue["id"],
        "repository": repo,
        "number": issue["number"],
        "title": issue["title"],
        "state": issue["state"],
        "user_login": (issue.get("user") or {}).get("login"),
        "comments": issue.get("comments", 0),
        "is_pull_request": "pull_request" in issue,
        "created_at": issue["created_at"],
        "updated_at": issue["updated_at"],
        "closed_at": issue.get("closed_at"),
    }


Connector = sluice_sdk.export(Issues)
