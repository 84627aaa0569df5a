#!/usr/bin/env bash
# Internal-service benchmark (issue 11): connect/disconnect round trips through `sluice serve` to the
# reference internal service on loopback (token exchange + revoke upstream, audit events logged at
# info). Prints round trips/s and p50/p99 of connect, disconnect and the round trip, at concurrency 1
# and N; the target is a connect p50 ≤ 5 ms including the upstream call.
#   scripts/bench-services.sh [debug|release] [rounds] [concurrency]   (default: release 2000 4)
# Builds what it runs (under /tmp/sluice-build.lock); SLUICE_BENCH_NO_BUILD=1 uses what is built.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$SLUICE_ROOT"
PROFILE=${1:-release}
ROUNDS=${2:-2000}
CONC=${3:-4}
case "$PROFILE" in release) FLAG=--release ;; debug) FLAG= ;; *) echo "profile: debug|release" >&2; exit 2 ;; esac
if [ -z "${SLUICE_BENCH_NO_BUILD:-}" ]; then
  flock /tmp/sluice-build.lock cargo build -q $FLAG -p sluice --bin sluice \
    -p sluice-tests --bin reference-service --bin bench-services >&2
fi
DIR=$CARGO_TARGET_DIR/$PROFILE
WORK=$(mktemp -d)
SVC=; REF=
trap 'for p in $SVC $REF; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REF_PORT=$(free_port); PORT=$(free_port); TOKEN=bench-token-$(openssl rand -hex 8)
export SC_SECRET_PURCHASE_ORDERS=bench-shared-secret-$(openssl rand -hex 8)
"$DIR/reference-service" --secret-env SC_SECRET_PURCHASE_ORDERS --port "$REF_PORT" > "$WORK/reference.log" 2>&1 &
REF=$!
cat > "$WORK/services.yaml" <<YAML
services:
  - id: purchase-orders
    name: Purchase orders
    base_url: http://127.0.0.1:$REF_PORT
    connector: {kind: http-json, streams: [{name: purchase_orders, path: /api/purchase-orders, records_pointer: /data}]}
    env: [PO_API_KEY]
YAML
mkdir -p "$WORK/plugins"
CONNECT_SERVICE_TOKEN=$TOKEN PORT=$PORT SLUICE_DATA_DIR=$WORK/data PLUGINS_DIR=$WORK/plugins \
  SERVICES_FILE=$WORK/services.yaml SLUICE_ALLOW_PRIVATE_ADDRESSES=loopback RUST_LOG=info \
  "$DIR/sluice" serve > "$WORK/service.log" 2>&1 &
SVC=$!
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
cat > "$WORK/report.py" <<'PY'
import json, sys
r = json.load(sys.stdin)
print("round trips/s  %.0f" % r["round_trips_per_s"])
for k in ("connect", "disconnect", "round_trip"):
    print("%-12s  p50 %.2f ms  p99 %.2f ms  max %.2f ms" % (k, r[k]["p50_ms"], r[k]["p99_ms"], r[k]["max_ms"]))
if r["concurrency"] == 1:
    print("target connect p50 <= 5 ms: " + ("met" if r["connect"]["p50_ms"] <= 5.0 else "MISSED"))
PY
for c in 1 "$CONC"; do
  echo "== $ROUNDS connect+disconnect round trips, concurrency $c ($PROFILE build)"
  out=$("$DIR/bench-services" "http://127.0.0.1:$PORT" "$TOKEN" purchase-orders "$ROUNDS" "$c")
  echo "$out" | python3 "$WORK/report.py"
done
# The key and the shared secret never reach the log.
if grep -q "$SC_SECRET_PURCHASE_ORDERS" "$WORK/service.log"; then
  echo "bench: the shared secret is in the service log" >&2; exit 1
fi
echo "audit events logged: $(grep -c '"target":"sluice::audit"' "$WORK/service.log")"
