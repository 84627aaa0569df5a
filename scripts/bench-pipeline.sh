#!/usr/bin/env bash
# End-to-end pipeline benchmark: the synthetic connector emits N records of ~1 KB across 3 streams
# through a real `sluice serve` into committed Parquet on Garage (S3). Prints records/s and the
# service's peak RSS (VmHWM).   scripts/bench-pipeline.sh [debug|release] [records_per_stream]
set -euo pipefail
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/bench-lib.sh"
cd "$SLUICE_ROOT"
PROFILE=${1:-release}
PER_STREAM=${2:-333334}
BIN=$CARGO_TARGET_DIR/$PROFILE/sluice
export GARAGE_BIN=$GARAGE_ROOT/bin/garage
S3_PORT=${SLUICE_BENCH_S3_PORT:-3900}
bash scripts/garage.sh "$SLUICE_CACHE/garage-data" "$S3_PORT" >/dev/null
WORK=$(mktemp -d)
trap 'kill $SVC 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/plugins" && cp "$SLUICE_PLUGIN_OUT/synthetic.wasm" "$WORK/plugins/"
PORT=18072; TOKEN=bench-token-0123456789
CONNECT_SERVICE_TOKEN=$TOKEN PORT=$PORT SLUICE_DATA_DIR=$WORK/data PLUGINS_DIR=$WORK/plugins \
  S3_ENDPOINT=http://127.0.0.1:$S3_PORT RUST_LOG=${RUST_LOG:-warn} "$BIN" serve > "$WORK/log" 2>&1 &
SVC=$!
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
PREFIX=bench/$(date +%s%N)
BODY='{"connection_id":"bench","connector":"synthetic","config":{"records_per_stream":'$PER_STREAM',"record_bytes":1000},
 "storage":{"bucket":"sluice-test","prefix":"'$PREFIX'","access_key_id":"GK5106e0a2b1c8d0e7a3f4b5c6",
 "secret_access_key":"5c1ce0a7e5c2e4b1d8f9a6b3c0d7e4f1a8b5c2d9e6f3a0b7c4d1e8f5a2b9c6d3"}}'
T0=$(date +%s.%N)
R=$(run_to_end "$PORT" "$TOKEN" "$BODY")
T1=$(date +%s.%N)
HWM=$(grep VmHWM /proc/$SVC/status | awk '{print $2}')
echo "$R" | python3 -c '
import json,sys
r=json.load(sys.stdin); t='"$T1"'-'"$T0"'
rows=sum(s["committed_rows"] for s in r["streams"].values()); mb=sum(s["bytes"] for s in r["streams"].values())/1e6
st=r["status"]
print(f"status {st}  {rows} rows committed in {t:.1f} s  = {rows/t:,.0f} records/s  ({mb/t:.1f} MB/s of JSON)")
print(f"peak RSS of the service: {'"$HWM"'/1024:.0f} MiB")
if r["status"] != "succeeded": print(r.get("error"))
'
grep -hE "run committed|retrying" "$WORK/log" || true   # phase timings, with RUST_LOG=info
