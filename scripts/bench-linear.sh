#!/usr/bin/env bash
# Issue 10's Linear comparison: sync the `issues` stream of N issues (default 20000) from the fake
# Linear (tests/src/bin/fake-linear.rs: every GraphQL document parsed and validated against
# Linear's published schema, then executed), once with Sluice (release `sluice serve`,
# linear.wasm, committed as Parquet into Garage), once with `sluice run` (one process per sync
# like the peer, Parquet into a local directory) and once with the Singer tap `tap-linear` from
# PyPI (records to a file, no target), on the same fake in the same run, alternating. Prints wall
# time, records/s, CPU seconds, peak RSS and peak anonymous RSS of each, their medians and ratios.
#   scripts/bench-linear.sh [issues] [rounds]      SKIP_TAP=1 leaves the peer out
#   SLUICE_BENCH_S3_PORT=3910 uses (or starts) Garage on that port (default 3900).
#   SLUICE_BIN=path/to/sluice runs that binary (the service and `sluice run`), e.g. the dist build.
#   SLUICE_BENCH_NO_BUILD=1 measures the binaries and plugins already built.
#   FAKE_BIN=path runs another build of the fake (e.g. an older one, to compare its own CPU).
# Each round prints the CPU seconds the fake spent serving it (from /proc/PID/stat) and the load.
#
# The peer: `tap-linear` 0.1.1 (2022-02), the only release on PyPI (there is no Airbyte Linear
# source on PyPI). It declares Requires-Python <3.11 and pins singer-sdk 0.4.x; this machine has
# Python 3.11 only, so it is installed with `pip --ignore-requires-python` (discovery, paging and
# records work on 3.11). It has one stream, `Issues`, read with its own document: `first: 100`,
# Linear's default order (createdAt), `filter: {updatedAt: {gt: $replicationKeyValue}}` (start_date
# + 1 s), the creator/assignee/project/team relations resolved to {id name (email)}. Its `api_url`
# is configurable, so it talks to the fake directly (plain http on loopback, no proxy needed).
# AS PUBLISHED IT DOES NOT RUN against Linear's current schema: it declares
# `$replicationKeyValue: DateTime`, and `DateComparator.gt` is now `DateTimeOrDuration`, so the
# document fails GraphQL validation ("Variable "$replicationKeyValue" of type "DateTime" used in
# position expecting type "DateTimeOrDuration"", graphql-js; the fake's apollo-compiler refuses it
# the same way, HTTP 400 GRAPHQL_VALIDATION_FAILED, and the tap exits on its first request). The
# script shows that once (`as published:` line), then measures the tap with that one word of its
# document changed at start-up (IssuesStream.query patched in memory, nothing else; the installed
# package is not modified).
# Sluice's connector reads issues with `orderBy: updatedAt, includeArchived: true`, 250 a page
# (the largest its complexity budget allows), relations as ids. The fake archives no issue, so
# both read the same N issues. The fake's rate limits are off (no RATELIMITED answers).
set -euo pipefail
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/bench-lib.sh"
cd "$SLUICE_ROOT"
ISSUES=${1:-20000}
ROUNDS=${2:-3}
TAP_VENV=${TAP_VENV:-$SLUICE_CACHE/tap-linear-venv}
TAP_VERSION=${TAP_VERSION:-0.1.1}

if [ -z "${SLUICE_BENCH_NO_BUILD:-}" ]; then
  flock /tmp/sluice-build.lock bash scripts/build-plugins.sh >&2
  flock /tmp/sluice-build.lock cargo build --release --quiet -p sluice --bin sluice -p sluice-tests --bin fake-linear
fi
if [ -z "${SKIP_TAP:-}" ] && [ ! -x "$TAP_VENV/bin/tap-linear" ]; then
  python3 -m venv "$TAP_VENV"
  flock /tmp/sluice-build.lock "$TAP_VENV/bin/pip" install --quiet --ignore-requires-python "tap-linear==$TAP_VERSION"
fi
# GNU time gives the peer's CPU seconds and peak RSS (Debian package `time`).
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
export GARAGE_BIN=$GARAGE_ROOT/bin/garage
S3_PORT=${SLUICE_BENCH_S3_PORT:-3900}
bash scripts/garage.sh "$SLUICE_CACHE/garage-data" "$S3_PORT" >/dev/null

WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

FAKE_BIN=${FAKE_BIN:-$CARGO_TARGET_DIR/release/fake-linear}
"$FAKE_BIN" "$ISSUES" > "$WORK/fake.json" &
FAKE=$!
PIDS+=($FAKE)
for _ in $(seq 1 300); do [ -s "$WORK/fake.json" ] && break; sleep 0.1; done
URL=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["url"])' "$WORK/fake.json")
KEY=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["token"])' "$WORK/fake.json")

# --- Sluice: the service, the issues stream only, into Parquet on Garage.
mkdir -p "$WORK/plugins" && cp "$SLUICE_PLUGIN_OUT/linear.wasm" "$WORK/plugins/"
PORT=18076; TOKEN=bench-token-0123456789  # its own port: the scripts may run side by side
CONNECT_SERVICE_TOKEN=$TOKEN PORT=$PORT SLUICE_DATA_DIR=$WORK/data PLUGINS_DIR=$WORK/plugins \
  SLUICE_ALLOW_PRIVATE_ADDRESSES=loopback S3_ENDPOINT=http://127.0.0.1:$S3_PORT RUST_LOG=${RUST_LOG:-warn} \
  "${SLUICE_BIN:-$CARGO_TARGET_DIR/release/sluice}" serve > "$WORK/service.log" 2>&1 &
SVC=$!
PIDS+=($SVC)
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
echo "sluice serve idle: RSS $(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$SVC/status") MiB"


sluice_round() {
  service_round "$SVC" "$PORT" "$TOKEN" issues "$WORK" '{"connection_id":"lin","connector":"linear","streams":["issues"],
    "config":{"api_url":"'"$URL"'"},"credentials":{"token":"'"$KEY"'"}}'
}

# --- `sluice run`: one process per sync (as the peer runs), the issues stream into Parquet in a
# local directory (kept between rounds: it holds the compile cache; --full-refresh each time).
echo '{"api_url":"'"$URL"'"}' > "$WORK/cli-config.json"
cli_round() {
  cli_run "$WORK/plugins/linear.wasm" "$WORK/cli-config.json" "token=$KEY" "$WORK/cli-out" "$WORK" issues
}

# --- tap-linear: its one stream (Issues), records to a file. `start_date` is the tap's default.
cat > "$WORK/tap-config.json" <<EOF
{"auth_token": "$KEY", "api_url": "$URL/graphql", "start_date": "2010-01-01T00:00:00.000Z"}
EOF
# The tap with its variable's type fixed (see the header): the tap's own CLI otherwise.
TAP_FIXED='import sys, tap_linear.streams as s
s.IssuesStream.query = s.IssuesStream.query.replace("$replicationKeyValue: DateTime)", "$replicationKeyValue: DateTimeOrDuration)")
from tap_linear.tap import TapLinear
TapLinear.cli()'
if [ -z "${SKIP_TAP:-}" ]; then
  if "$TAP_VENV/bin/tap-linear" --config "$WORK/tap-config.json" > "$WORK/tap-published.jsonl" 2> "$WORK/tap-published.err"; then
    echo "tap-linear $TAP_VERSION as published: ran ($(grep -c '"RECORD"' "$WORK/tap-published.jsonl" || true) records)"
  else
    echo "tap-linear $TAP_VERSION as published: FAILS on its first request: $(grep -o 'FatalAPIError: .*' "$WORK/tap-published.err" | head -1) ($(grep -c '"RECORD"' "$WORK/tap-published.jsonl" || true) records; the fake's invalid_documents count below includes it); measured below with the variable typed DateTimeOrDuration"
  fi
fi
tap_round() {
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" "$TAP_VENV/bin/python" -c "$TAP_FIXED" \
    --config "$WORK/tap-config.json" > "$WORK/tap.jsonl" 2>"$WORK/tap.err" &
  local tp=$! child="" n
  for _ in $(seq 1 100); do child=$(pgrep -P "$tp" | head -1); [ -n "$child" ] && break; sleep 0.01; done
  echo 0 > "$WORK/tap.anon"
  [ -n "$child" ] && sample_anon "$child" "$WORK/tap.anon" "$WORK/never"
  wait "$tp" || { tail -20 "$WORK/tap.err" >&2; exit 1; }
  n=$(grep -cE '^\{"type": ?"RECORD", ?"stream": ?"Issues"' "$WORK/tap.jsonl" || true)
  read -r wall user sys rss < "$WORK/time.txt"
  echo "$n $wall $(python3 -c "print($user + $sys)") $rss $(cat "$WORK/tap.anon")"
}

# Warm-up, not counted: the service compiles linear.wasm once (cached afterwards).
sluice_round > /dev/null
cli_round > /dev/null
echo "issues stream, $ISSUES issues served by the fake Linear ($URL/graphql), $ROUNDS rounds each, alternating"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
: > "$WORK/results"
for i in $(seq 1 "$ROUNDS"); do
  f0=$(cpu_secs "$FAKE")
  read -r n wall cpu anon svc <<< "$(sluice_round)"
  fake=$(python3 -c "print(round($(cpu_secs "$FAKE") - $f0, 2))")
  printf 'sluice     round %d: %6d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak anon RSS %.0f MiB  | fake %.2f CPU s | load %s | service clock %.2f s, %.0f records/s\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($anon/1024)")" "$fake" "$(cut -d' ' -f1 /proc/loadavg)" "$svc" "$(python3 -c "print($n/$svc)")"
  echo "sluice $n $wall $cpu 0 $anon $fake $svc" >> "$WORK/results"
  f0=$(cpu_secs "$FAKE")
  read -r n wall cpu rss <<< "$(cli_round)"
  fake=$(python3 -c "print(round($(cpu_secs "$FAKE") - $f0, 2))")
  printf 'sluice run round %d: %6d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak RSS %.0f MiB  | fake %.2f CPU s | load %s\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($rss/1024)")" "$fake" "$(cut -d' ' -f1 /proc/loadavg)"
  echo "cli $n $wall $cpu $rss 0 $fake" >> "$WORK/results"
  if [ -z "${SKIP_TAP:-}" ]; then
    f0=$(cpu_secs "$FAKE")
    read -r n wall cpu rss anon <<< "$(tap_round)"
    fake=$(python3 -c "print(round($(cpu_secs "$FAKE") - $f0, 2))")
    printf 'taplinear  round %d: %6d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak RSS %.0f MiB, anon %.0f MiB  | fake %.2f CPU s | load %s\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($rss/1024)")" "$(python3 -c "print($anon/1024)")" "$fake" "$(cut -d' ' -f1 /proc/loadavg)"
    echo "taplinear $n $wall $cpu $rss $anon $fake" >> "$WORK/results"
  fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
grep -hE "run committed|retrying" "$WORK/service.log" || true   # phase timings, with RUST_LOG=info
SLUICE_HWM=$(awk '/VmHWM/ {print $2}' "/proc/$SVC/status")
echo "sluice serve peak RSS (VmHWM) over all rounds: $((SLUICE_HWM / 1024)) MiB"
kill -INT "$FAKE" 2>/dev/null && sleep 0.3 && echo "fake: $(tail -1 "$WORK/fake.json")"
python3 - "$WORK/results" "$SLUICE_HWM" "$ISSUES" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(tool, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == tool)
def anon(tool):
    return max(float(r[5]) for r in rows if r[0] == tool) / 1024
s_rate, s_cpu = med("sluice", 1) / med("sluice", 2), med("sluice", 3)
s_rss, s_anon = int(sys.argv[2]) / 1024, anon("sluice")
s_svc = med("sluice", 1) / med("sluice", 7)
short = sorted({r[1] for r in rows if r[0] == "sluice" and int(r[1]) != int(sys.argv[3])})
if short:
    print(f"WARNING: sluice committed {', '.join(short)} rows in some rounds, not {sys.argv[3]}")
print(f"medians: sluice {s_rate:,.0f} records/s, {s_cpu:.2f} CPU s, peak RSS {s_rss:.0f} MiB (the service, all rounds), peak anon RSS {s_anon:.0f} MiB (sampled every 20 ms); the fake {med('sluice', 6):.2f} CPU s a round")
c_rate, c_cpu, c_rss = med("cli", 1) / med("cli", 2), med("cli", 3), med("cli", 4) / 1024
print(f"         sluice run (one process per sync) {c_rate:,.0f} records/s, {c_cpu:.2f} CPU s, peak RSS {c_rss:.0f} MiB")
print(f"         sluice by the service's own clock (created_at -> finished_at, without the harness's polling): {s_svc:,.0f} records/s")
for peer in ("taplinear",):
    if not any(r[0] == peer for r in rows):
        continue
    short = sorted({r[1] for r in rows if r[0] == peer and int(r[1]) != int(sys.argv[3])})
    if short:
        print(f"WARNING: {peer} delivered {', '.join(short)} records in some rounds, not {sys.argv[3]}")
    rate, cpu, rss, p_anon = med(peer, 1) / med(peer, 2), med(peer, 3), med(peer, 4) / 1024, anon(peer)
    print(f"         {peer} {rate:,.0f} records/s, {cpu:.2f} CPU s, peak RSS {rss:.0f} MiB, peak anon RSS {p_anon:.0f} MiB; the fake {med(peer, 6):.2f} CPU s a round")
    print(f"  sluice run vs {peer}: records/s {c_rate / rate:.1f}x   CPU s {cpu / c_cpu:.1f}x less   peak RSS {c_rss / rss:.2f} of {peer}'s")
    print(f"  sluice vs {peer}: records/s {s_rate / rate:.1f}x (by the service's clock {s_svc / rate:.1f}x)   CPU s {cpu / s_cpu:.1f}x less   peak RSS {s_rss / rss:.2f} of {peer}'s   peak anon RSS {s_anon / p_anon:.2f} of {peer}'s")
EOF
