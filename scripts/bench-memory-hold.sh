#!/usr/bin/env bash
# Containment finding F5 (plugin memory held while waiting on the network), measured:
#   bench-memory-hold.sh [SLUICE_BINARY] [ROUNDS] [CALL_TIMEOUT_SECS]
# Starts `SLUICE_BINARY serve` (default: $CARGO_TARGET_DIR/debug/sluice) with the pod's memory
# settings (a 192 MiB plugin memory budget, 64 MiB for a plugin that declares none) and the
# probe plugin. Each round: three `validate` calls fetch from a loopback upstream that accepts
# and never answers (they hang until SLUICE_CALL_TIMEOUT_SECS, default 30 as in the attack); once
# the upstream holds all three connections, a run of 100 records is posted and an unrelated
# `validate` (action ok) is timed, then the run (POST to succeeded, at the same time). The round ends when the three hanging calls have.
# Prints each round's two times and their medians. Compare two binaries by running it twice.
set -euo pipefail
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/bench-lib.sh"
BIN=${1:-$CARGO_TARGET_DIR/debug/sluice}
ROUNDS=${2:-3}
TIMEOUT=${3:-30}
WORK=$(mktemp -d /tmp/bench-memory-hold.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/plugins" "$WORK/data"
cp "$SLUICE_PLUGIN_OUT/probe.wasm" "$WORK/plugins/"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TOKEN=bench-token-0123456789abcdef0123456789
BASE=http://127.0.0.1:$PORT

start_silent_upstream "$WORK"

env -i PATH="$PATH" LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" PORT="$PORT" CONNECT_SERVICE_TOKEN="$TOKEN" \
  SLUICE_DATA_DIR="$WORK/data" PLUGINS_DIR="$WORK/plugins" SLUICE_ALLOW_PRIVATE_ADDRESSES=loopback \
  SLUICE_PLUGIN_MEMORY_BUDGET_MIB=192 SLUICE_PLUGIN_MEMORY_MIB=128 SLUICE_CALL_TIMEOUT_SECS="$TIMEOUT" \
  RUST_LOG=warn "$BIN" serve 2>"$WORK/service.log" &
PIDS+=($!)
for _ in $(seq 600); do curl -fs "$BASE/ready" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$BASE/ready" >/dev/null

validate() { # config JSON -> prints seconds taken
  curl -s -o /dev/null -w '%{time_total}\n' -H "x-connect-service-token: $TOKEN" \
    -H 'content-type: application/json' "$BASE/internal/mirror-connections/validate" \
    -d "{\"connector\":\"probe\",\"config\":$1,\"credentials\":{\"token\":\"t0ken-value\"}}"
}

VALIDATES=() RUNS=()
for round in $(seq "$ROUNDS"); do
  before=$(wc -l <"$WORK/accepted")
  HANG=()
  for _ in 1 2 3; do
    validate "{\"action\":\"fetch\",\"url\":\"$UPSTREAM\"}" >/dev/null &
    HANG+=($!)
  done
  until [ "$(wc -l <"$WORK/accepted")" -ge $((before + 3)) ]; do sleep 0.02; done
  t0=$(date +%s.%N)
  run=$(curl -fs -H "x-connect-service-token: $TOKEN" -H 'content-type: application/json' \
    "$BASE/internal/mirror-connections/runs" \
    -d "{\"connection_id\":\"bench-$round\",\"connector\":\"probe\",\"config\":{\"count\":100},\"credentials\":{\"token\":\"t0ken-value\"},\"storage\":{\"bucket\":\"local\",\"prefix\":\"bench\"}}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
  v=$(validate '{"action":"ok"}')
  while :; do
    status=$(curl -fs -H "x-connect-service-token: $TOKEN" "$BASE/internal/mirror-connections/runs/$run" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    [ "$status" = queued ] || [ "$status" = running ] || break
    sleep 0.05
  done
  r=$(python3 -c "import time; print(f'{time.time() - $t0:.3f}')")
  echo "round $round: unrelated validate ${v}s, run to $status ${r}s"
  VALIDATES+=("$v") RUNS+=("$r")
  wait "${HANG[@]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "$(basename "$BIN") ($BIN): median unrelated validate $(median "${VALIDATES[@]}")s, median run $(median "${RUNS[@]}")s over $ROUNDS rounds, SLUICE_CALL_TIMEOUT_SECS=$TIMEOUT"
