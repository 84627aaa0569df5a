"""python-hello: a test guest written in Python and built with componentize-py.

It proves that components from other toolchains load: it imports the whole of WASI p2
(which the host links, locked down) and prints to stdout (which the host captures as
plugin logs). Built by scripts/build-plugins.sh into python-hello.wasm.
"""
import json
from wit_world import exports
from wit_world.imports import records, log
from wit_world.imports.types import StreamSpec
from wit_world.exports.connector import ConnectorManifest, SyncRequest


class Connector(exports.Connector):
    def manifest(self) -> ConnectorManifest:
        schema = json.dumps({"type": "object", "properties": {"id": {"type": "integer"}, "word": {"type": "string"}}})
        return ConnectorManifest(
            id="python-hello", name="Python hello", version="0.1.0",
            description="A connector written in Python (componentize-py): proves WASI guests load.",
            config_schema=json.dumps({"type": "object", "properties": {"count": {"type": "integer"}}}),
            secrets=[], hosts=[],
            streams=[StreamSpec(name="words", description="numbered words", primary_key=["id"], cursor_field=None, json_schema=schema)],
            memory_mib=None,
        )

    def validate(self, config: str) -> str:
        print("validating from python")
        return json.dumps({"language": "python"})

    def discover(self, config: str):
        return self.manifest().streams

    def sync(self, request: SyncRequest) -> None:
        count = json.loads(request.config).get("count", 3)
        print(f"syncing {count} words")
        batch = [json.dumps({"id": i, "word": f"word-{i}"}) for i in range(count)]
        records.emit("words", batch)
        records.checkpoint("words", json.dumps({"cursor": count}))
