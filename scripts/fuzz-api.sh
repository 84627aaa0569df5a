#!/usr/bin/env bash
# OpenAPI-driven fuzzing: schemathesis against the served /openapi.json of a real `sluice serve`
# (built debug binary, built plugins). Fails on any 5xx or a response that breaks the schema.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$SLUICE_ROOT"
VENV=$SLUICE_CACHE/venv
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'schemathesis==4.32.5'
fi
WORK=$(mktemp -d)
PID=
REF_PID=
trap 'for p in $PID $REF_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/plugins"
# The connectors the document's examples name (http-json), so every operation is reached with an id
# that exists; create-run's links hand its run_id to get-run and cancel-run.
cp "$SLUICE_PLUGIN_OUT/http-json.wasm" "$SLUICE_PLUGIN_OUT/probe.wasm" "$WORK/plugins/"
# The internal service the document's examples name (purchase-orders): the reference implementation
# (tests/src/fakes/internal_service.rs) on loopback, so connect, disconnect and health reach a service
# that answers (an unreachable one is a documented 502/504, but the fuzz run fails on every 5xx).
REF_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SC_SECRET_PURCHASE_ORDERS=fuzz-shared-secret-$(openssl rand -hex 8)
"$CARGO_TARGET_DIR/debug/reference-service" --secret-env SC_SECRET_PURCHASE_ORDERS --port "$REF_PORT" \
  > "$WORK/reference.log" 2>&1 &
REF_PID=$!
cat > "$WORK/services.yaml" <<YAML
services:
  - id: purchase-orders
    name: Purchase orders
    base_url: http://127.0.0.1:$REF_PORT
    connector: {kind: http-json, streams: [{name: purchase_orders, path: /api/purchase-orders, records_pointer: /data}]}
    env: [PO_API_KEY]
YAML
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TOKEN=fuzz-token-$(openssl rand -hex 8)
# Plugins may reach only a closed port on loopback and the reference service (loopback is granted for
# it), so validate/runs with generated configs never leave the machine.
CONNECT_SERVICE_TOKEN=$TOKEN PORT=$PORT SLUICE_DATA_DIR=$WORK/data PLUGINS_DIR=$WORK/plugins RUST_LOG=warn \
  SLUICE_ALLOWED_HOSTS=http://127.0.0.1:9,http://127.0.0.1:$REF_PORT SLUICE_ALLOW_PRIVATE_ADDRESSES=loopback \
  SLUICE_CALL_TIMEOUT_SECS=5 SERVICES_FILE=$WORK/services.yaml SLUICE_SERVICE_TIMEOUT_SECS=5 \
  "$CARGO_TARGET_DIR/debug/sluice" serve > "$WORK/service.log" 2>&1 &
PID=$!
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
# An operation the run never gets past 404 on fails it (it would test nothing of its logic).
cat > "$WORK/schemathesis.toml" <<'TOML'
[warnings]
fail-on = ["missing_test_data"]
TOML
status=0
# Run from $WORK: schemathesis keeps its cache in ./.schemathesis.
(cd "$WORK" && "$VENV/bin/schemathesis" --no-color --config-file "$WORK/schemathesis.toml" \
  run "http://127.0.0.1:$PORT/openapi.json" \
  -H "x-connect-service-token: $TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "${FUZZ_EXAMPLES:-40}" --seed 1) 2>&1 | tee "$WORK/fuzz.log" || status=$?
if grep -q "repeatedly returned 404" "$WORK/fuzz.log"; then
  echo "fuzz: some operations were never reached (see the warning above)"
  status=1
fi
if [ "$status" != 0 ]; then
  echo "--- service log (tail)"; tail -50 "$WORK/service.log"
fi
exit "$status"
