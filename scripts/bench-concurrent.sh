#!/usr/bin/env bash
# Issue 16's memory figure: N concurrent GitHub syncs (issues stream, ISSUES issues each, from the
# fake GitHub) in one release `sluice serve` writing Parquet to Garage. Prints the service's idle
# RSS, its high-water mark (VmHWM) after all runs, the wall time and the runs' outcome.
#   scripts/bench-concurrent.sh [runs] [issues]     GITHUB_WASM=path/to/github.wasm syncs with another build
# SLUICE_BENCH_S3_PORT picks the Garage port (default 3900; started if not running).
set -euo pipefail
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/bench-lib.sh"
cd "$SLUICE_ROOT"
RUNS=${1:-20}
ISSUES=${2:-20000}
S3_PORT=${SLUICE_BENCH_S3_PORT:-3900}

if [ -z "${SLUICE_BENCH_NO_BUILD:-}" ]; then  # set it to measure the binaries already built
  bash scripts/build-plugins.sh >&2
  cargo build --release --quiet -p sluice --bin sluice -p sluice-tests --bin fake-github
fi
GARAGE_BIN=$GARAGE_ROOT/bin/garage bash scripts/garage.sh "$SLUICE_CACHE/garage-data" "$S3_PORT" >/dev/null

WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
start_fake_github "$ISSUES" "$WORK"

mkdir -p "$WORK/plugins" && cp "${GITHUB_WASM:-$SLUICE_PLUGIN_OUT/github.wasm}" "$WORK/plugins/github.wasm"
PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"); TOKEN=bench-token-0123456789
CONNECT_SERVICE_TOKEN=$TOKEN PORT=$PORT SLUICE_DATA_DIR=$WORK/data PLUGINS_DIR=$WORK/plugins \
  SLUICE_ALLOW_PRIVATE_ADDRESSES=loopback S3_ENDPOINT=http://127.0.0.1:$S3_PORT RUST_LOG=${RUST_LOG:-warn} \
  SLUICE_MAX_CONCURRENT_RUNS=$RUNS SLUICE_MAX_QUEUED_RUNS=$RUNS \
  "$CARGO_TARGET_DIR/release/sluice" serve > "$WORK/service.log" 2>&1 &
SVC=$!
PIDS+=($SVC)
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
echo "sluice serve idle: RSS $(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$SVC/status") MiB"

body() {
  echo '{"connection_id":"gh-'"$1"'","connector":"github","streams":["issues"],
    "config":{"api_url":"'$URL'","repositories":["acme/repo-0","acme/repo-1"]},"credentials":{"token":"'$GH_TOKEN'"},
    "storage":{"bucket":"sluice-test","prefix":"bench-concurrent/'"$(date +%s%N)"'","access_key_id":"GK5106e0a2b1c8d0e7a3f4b5c6",
    "secret_access_key":"5c1ce0a7e5c2e4b1d8f9a6b3c0d7e4f1a8b5c2d9e6f3a0b7c4d1e8f5a2b9c6d3"}}'
}
# Each client polls its run every POLL_SECS (0.5 s here): at bench-lib's 50 ms, 20 clients forked
# ~800 curl and sleep processes a second, and that system time starved the service (plugin work
# runs at nice 10): 20 syncs took 41–92 s, the service using ~15 % of a core.
export POLL_SECS=${POLL_SECS:-0.5}
# One warm-up run (compiles the component, warms the fake's rendered pages), not counted.
run_to_end "$PORT" "$TOKEN" "$(body warmup)" > /dev/null
t0=$(date +%s.%N)
CLIENTS=()
for i in $(seq 1 "$RUNS"); do
  run_to_end "$PORT" "$TOKEN" "$(body "$i")" > "$WORK/run-$i.json" &
  CLIENTS+=($!)
done
for p in "${CLIENTS[@]}"; do wait "$p" || true; done
t1=$(date +%s.%N)
python3 - "$WORK" "$RUNS" "$t0" "$t1" "$(awk '/VmHWM/ {print $2}' "/proc/$SVC/status")" <<'EOF'
import json, sys
work, runs, t0, t1, hwm = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
rows, ok = 0, 0
for i in range(1, runs + 1):
    r = json.load(open(f"{work}/run-{i}.json"))
    if r["status"] == "succeeded":
        ok += 1
        rows += r["streams"]["issues"]["committed_rows"]
print(f"{ok}/{runs} runs succeeded, {rows} rows committed in {t1 - t0:.1f} s ({rows / (t1 - t0):,.0f} records/s together)")
print(f"sluice serve high-water mark (VmHWM) with {runs} concurrent syncs: {hwm / 1024:.0f} MiB")
EOF
