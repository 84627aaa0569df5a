#!/usr/bin/env bash
# The API contract as a typed client sees it: a TypeScript client generated from the /openapi.json the
# built service serves (openapi-typescript, default options; openapi-fetch) must compile typed calls of
# every route (tests/contract/client.ts) under `tsc --strict`. Fails when it does not, or when a
# route of the document has no call in client.ts. Needs Node 20 + npm and target/debug/sluice.
set -euo pipefail
. "$(dirname "$0")/env.sh"
DIR=$SLUICE_ROOT/tests/contract
cd "$DIR"
BIN=$CARGO_TARGET_DIR/debug/sluice
if [ ! -x "$BIN" ]; then
  echo "contract: $BIN is missing: cargo build --workspace --bins" >&2
  exit 1
fi

# The exact versions of package-lock.json, reinstalled when the lock changes.
LOCK_SUM=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.lock-sum 2>/dev/null || true)" != "$LOCK_SUM" ]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$LOCK_SUM" > node_modules/.lock-sum
fi

WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/plugins"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CONNECT_SERVICE_TOKEN=contract-$(openssl rand -hex 8) PORT=$PORT SLUICE_DATA_DIR=$WORK/data \
  PLUGINS_DIR=$WORK/plugins RUST_LOG=warn "$BIN" serve > "$WORK/service.log" 2>&1 &
PID=$!
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
if ! curl -sf "http://127.0.0.1:$PORT/openapi.json" -o "$WORK/openapi.json"; then
  echo "contract: the service did not serve /openapi.json; its log:" >&2
  cat "$WORK/service.log" >&2
  exit 1
fi
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=

mkdir -p generated
node_modules/.bin/openapi-typescript "$WORK/openapi.json" -o generated/api.ts >&2

# Every route of the document has a typed call in client.ts.
node -e '
  const fs = require("fs");
  const doc = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
  const client = fs.readFileSync("client.ts", "utf8");
  const missing = [];
  for (const [path, item] of Object.entries(doc.paths))
    for (const method of Object.keys(item))
      if (!new RegExp(`client\\.${method.toUpperCase()}\\(\\s*"${path.replace(/[{}.]/g, "\\$&")}"`).test(client))
        missing.push(`${method.toUpperCase()} ${path}`);
  if (missing.length) {
    console.error("contract: no typed call in tests/contract/client.ts of: " + missing.join(", "));
    process.exit(1);
  }
  console.log(`contract: ${Object.values(doc.paths).flatMap(Object.keys).length} operations`);
' "$WORK/openapi.json"

if ! node_modules/.bin/tsc -p tsconfig.json --strict --noEmit; then
  echo "contract: FAILED: the client generated from /openapi.json does not compile typed calls of every route" >&2
  exit 1
fi
echo "contract: the client generated from /openapi.json compiles typed calls of every route (tsc --strict)"
