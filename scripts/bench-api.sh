#!/usr/bin/env bash
# HTTP API benchmark: wrk against /health and against validate (http-json connector → a local
# fake upstream that answers at once). Prints requests/s and latency percentiles.
#   scripts/bench-api.sh [debug|release]     (default: release; needs that build of `sluice`)
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$SLUICE_ROOT"
PROFILE=${1:-release}
BIN=$CARGO_TARGET_DIR/$PROFILE/sluice
command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
WORK=$(mktemp -d)
trap 'kill $SVC $UP 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/plugins" && cp "$SLUICE_PLUGIN_OUT/http-json.wasm" "$WORK/plugins/"
UP_PORT=18071; PORT=18070; TOKEN=bench-token-0123456789
python3 - "$UP_PORT" > /dev/null 2>&1 <<'PY' &
import sys, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # one send per response: no Nagle/delayed-ACK stall on the client
    def do_GET(self):
        body = b'{"id": 1, "name": "bench"}'
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body); self.wfile.flush()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
UP=$!
CONNECT_SERVICE_TOKEN=$TOKEN PORT=$PORT SLUICE_DATA_DIR=$WORK/data PLUGINS_DIR=$WORK/plugins \
  SLUICE_ALLOW_PRIVATE_ADDRESSES=loopback RUST_LOG=warn "$BIN" serve > "$WORK/log" 2>&1 &
SVC=$!
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
cat > "$WORK/validate.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-connect-service-token"] = "$TOKEN"
wrk.body = '{"connector":"http-json","config":{"base_url":"http://127.0.0.1:$UP_PORT"},"credentials":{"api_token":"t"}}'
LUA
curl -sf -XPOST "http://127.0.0.1:$PORT/internal/mirror-connections/validate" -H "x-connect-service-token: $TOKEN" \
  -H 'content-type: application/json' -d '{"connector":"http-json","config":{"base_url":"http://127.0.0.1:'$UP_PORT'"},"credentials":{"api_token":"t"}}'
echo
echo "== GET /health ($PROFILE build), 2 threads, 16 connections, 10 s"
wrk -t2 -c16 -d10s --latency "http://127.0.0.1:$PORT/health" | grep -E "Latency|50%|99%|Requests/sec"
echo "== POST validate, 1 connection (end-to-end latency), 10 s"
wrk -t1 -c1 -d10s --latency -s "$WORK/validate.lua" "http://127.0.0.1:$PORT/internal/mirror-connections/validate" | grep -E "Latency|50%|99%|Requests/sec"
echo "== POST validate, 2 threads, 8 connections, 10 s"
wrk -t2 -c8 -d10s --latency -s "$WORK/validate.lua" "http://127.0.0.1:$PORT/internal/mirror-connections/validate" | grep -E "Latency|50%|99%|Requests/sec"
