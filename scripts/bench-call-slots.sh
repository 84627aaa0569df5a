#!/usr/bin/env bash
# One plugin's hung calls against everyone's call slots, measured:
#   bench-call-slots.sh [SLUICE_BINARY] [ROUNDS] [HUNG] [CALL_TIMEOUT_SECS]
# Starts `SLUICE_BINARY serve` (default: $CARGO_TARGET_DIR/debug/sluice) with the default 32 call
# slots and the pod's memory settings, with two plugins: `probe` (plugin A) and `probe-v01`
# (plugin B: the frozen WIT 0.1.0 component, served by every binary since; PLUGINS=DIR takes both
# files from DIR instead of $SLUICE_PLUGIN_OUT, e.g. a probe.wasm an older binary can load). Each round: HUNG (default 40, more than the slots) `validate` calls of probe fetch
# from a loopback upstream that accepts and never answers (they hang until SLUICE_CALL_TIMEOUT_SECS,
# default 30); once the upstream holds as many connections as it will get (no new one for 1 s),
# a `validate` of probe-v01 (action ok: no network) is timed. Then the hung calls' clients go away
# (curl killed) and, where the binary has the gauge, the time until /metrics shows no call slot
# in use is printed (a client's cancel frees its slot; otherwise the deadline does). The round
# ends when every slot is free again. Prints each round's figures and the medians. Compare two
# binaries by running it twice. Takes /tmp/sluice-bench.lock for its whole run.
set -euo pipefail
if [ -z "${SLUICE_BENCH_LOCKED:-}" ]; then
  exec env SLUICE_BENCH_LOCKED=1 flock /tmp/sluice-bench.lock "$0" "$@"
fi
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/bench-lib.sh"
BIN=${1:-$CARGO_TARGET_DIR/debug/sluice}
ROUNDS=${2:-3}
HUNG=${3:-40}
TIMEOUT=${4:-30}
WORK=$(mktemp -d /tmp/bench-call-slots.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/plugins" "$WORK/data"
cp "${PLUGINS:-$SLUICE_PLUGIN_OUT}/probe.wasm" "${PLUGINS:-$SLUICE_PLUGIN_OUT}/probe-v01.wasm" "$WORK/plugins/"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TOKEN=bench-token-0123456789abcdef0123456789
BASE=http://127.0.0.1:$PORT

start_silent_upstream "$WORK"

env -i PATH="$PATH" LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" PORT="$PORT" CONNECT_SERVICE_TOKEN="$TOKEN" \
  SLUICE_DATA_DIR="$WORK/data" PLUGINS_DIR="$WORK/plugins" SLUICE_ALLOW_PRIVATE_ADDRESSES=loopback \
  SLUICE_PLUGIN_MEMORY_BUDGET_MIB=192 SLUICE_PLUGIN_MEMORY_MIB=128 SLUICE_CALL_TIMEOUT_SECS="$TIMEOUT" \
  SLUICE_HTTP_TIMEOUT_SECS=$((TIMEOUT * 2)) RUST_LOG=warn "$BIN" serve 2>"$WORK/service.log" &
PIDS+=($!)
for _ in $(seq 3000); do curl -fs "$BASE/ready" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$BASE/ready" >/dev/null

validate() { # connector, config JSON -> prints seconds taken
  curl -s -o /dev/null --max-time $((TIMEOUT * 3)) -w '%{time_total}\n' \
    -H "x-connect-service-token: $TOKEN" -H 'content-type: application/json' \
    "$BASE/internal/mirror-connections/validate" \
    -d "{\"connector\":\"$1\",\"config\":$2,\"credentials\":{\"token\":\"t0ken-value\"}}"
}
# A gauge of /metrics, or empty when the binary has none of that name.
gauge() {
  curl -fs -H "x-connect-service-token: $TOKEN" "$BASE/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{$(now) - float(sys.argv[1]):.3f}')" "$1"; }

UNRELATED=() FREED=()
for round in $(seq "$ROUNDS"); do
  before=$(wc -l <"$WORK/accepted")
  HANG=()
  hang_start=$(now)
  for _ in $(seq "$HUNG"); do
    curl -s -o /dev/null --max-time $((TIMEOUT * 3)) -H "x-connect-service-token: $TOKEN" \
      -H 'content-type: application/json' "$BASE/internal/mirror-connections/validate" \
      -d "{\"connector\":\"probe\",\"config\":{\"action\":\"fetch\",\"url\":\"$UPSTREAM\"},\"credentials\":{\"token\":\"t0ken-value\"}}" &
    HANG+=($!)
  done
  # Until the upstream gets no new connection for 1 s (the calls that got a slot all wait on it).
  last=-1 still=0
  while [ "$still" -lt 10 ]; do
    n=$(wc -l <"$WORK/accepted")
    if [ "$n" -eq "$last" ] && [ "$n" -gt "$before" ]; then still=$((still + 1)); else still=0; fi
    last=$n
    sleep 0.1
  done
  hung=$((last - before))
  in_use=$(gauge sluice_plugin_call_slots_in_use)
  waiting=$(gauge sluice_plugin_call_slots_waiting)
  v=$(validate probe-v01 '{"action":"ok"}')
  t0=$(now)
  kill "${HANG[@]}" 2>/dev/null || true
  wait "${HANG[@]}" 2>/dev/null || true
  freed=n/a
  if [ -n "$in_use" ]; then
    while [ "$(gauge sluice_plugin_call_slots_in_use)" != 0 ]; do sleep 0.05; done
    freed=$(since "$t0")
    FREED+=("$freed")
  fi
  echo "round $round: $hung probe calls hung on the upstream (slots in use ${in_use:-n/a}, waiting ${waiting:-n/a});" \
    "probe-v01 validate ${v}s; slots free ${freed}s after the hung calls' clients went away"
  UNRELATED+=("$v")
  # Every call of the round over (at its deadline, where a client's cancel does not stop it).
  sleep_until=$(python3 -c "print($hang_start + $TIMEOUT + 2)")
  if [ -z "$in_use" ]; then
    while python3 -c "import sys,time; sys.exit(0 if time.time() < $sleep_until else 1)"; do sleep 0.5; done
  fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "$(basename "$BIN") ($BIN): median probe-v01 validate $(median "${UNRELATED[@]}")s" \
  "beside $HUNG hung probe validates over $ROUNDS rounds, SLUICE_CALL_TIMEOUT_SECS=$TIMEOUT" \
  "${FREED[*]:+; median slots free after the clients went away $(median "${FREED[@]}")s}"
