#!/usr/bin/env bash
# Issue 10's Slack comparison (not measured before): the messages of C channels × M messages
# (default 200 × 500 = 100,000) from the fake Slack (tests/src/bin/fake-slack.rs), once with
# Sluice (release `sluice serve`, slack.wasm, the `messages` stream committed as Parquet into
# Garage), once with `sluice run` (one process per sync like the peer, Parquet into a local
# directory) and once with Airbyte's `source-slack` 3.0.0 from PyPI (its `channel_messages`
# stream, records to a file, no destination), on the same fake in the same run, alternating.
# Prints wall time, records/s, CPU seconds, peak RSS and peak anonymous RSS of each, their
# medians and ratios.
#   scripts/bench-slack.sh [channels] [messages_per_channel] [rounds]   SKIP_AIRBYTE=1 leaves the peer out
#   SLUICE_BENCH_S3_PORT=3910 uses (or starts) Garage on that port (default 3900).
#   SLUICE_BIN=path/to/sluice runs that binary (the service and `sluice run`), e.g. the dist build.
#   SLUICE_BENCH_NO_BUILD=1 measures the binaries and plugins already built.
#   FAKE_BIN=path runs another build of the fake (e.g. an older one, to compare its own CPU).
# Each round prints the CPU seconds the fake spent serving it (from /proc/PID/stat) and the load.
#   SLACK_RATE_LIMIT_EVERY=N makes the fake answer every Nth request 429 + Retry-After: 1
#   (default 0: the fake's rate limits are OFF; it does not emulate Slack's per-method tiers).
#   Both tools always run under the same fake settings.
#   AIRBYTE_CDK_VERSION=X (default 6.58.0) pins airbyte-cdk in its own venv (see below); AIRBYTE_TIMEOUT_SECS (900)
#   bounds one Airbyte round.
#
# THE PEER'S CDK: airbyte-source-slack 3.0.0 declares `airbyte-cdk >=6,<7`; pip would resolve
# airbyte-cdk 6.61.6, whose SimpleRetriever no longer has `_get_most_recent_record` (removed by
# airbyte-python-cdk PR #674, 2025-07), which the connector's own ChannelsRetriever
# (source_slack/components/join_channels.py) still calls: every read fails with AttributeError
# and 0 records (the repair, airbytehq/airbyte PR #64153, was closed; Airbyte's image pins an
# older CDK through its poetry.lock, which PyPI's wheel does not carry). So the venv pins
# airbyte-cdk 6.58.0 (AIRBYTE_CDK_VERSION), a 6.x checked to still have the method; with
# it the peer reads all messages (2026-12-01: 100,000 of 100,000).
# If a pinned CDK ever fails, the script reports the round as failed (records 0) and still
# measures Sluice.
#
# What each tool reads: the fake's token is a member of every channel (nothing to join), every
# third channel is private (both read public and private channels: Sluice's default
# channel_types, Airbyte's include_private_channels=true), the last one is archived (both read
# it), no threads. Sluice: conversations.list, then conversations.history per channel,
# limit 200 (its default), newest first to the end. Airbyte: the same methods, limit 1000, one
# window of `channel_messages_window_size` (100) days from start_date (60 days back) per
# channel with oldest/latest/inclusive=True, 2 workers (its default num_workers), its HTTP cache
# (requests-cache, `use_cache: true` in its manifest) on as shipped. The API-token credential is
# used: Airbyte's 1-request-a-minute budget for history applies only to OAuth credentials after a
# 429, so it never engages here.
# Airbyte hard-codes https://slack.com/api/: it runs behind scripts/bench/connect_proxy.py, a
# loopback CONNECT proxy that terminates TLS for slack.com only (a throwaway CA made here, in the
# temp dir) and relays to the fake; any other target is refused and counted. The proxy's own CPU
# (TLS, relaying) is not in Airbyte's CPU seconds but shares the machine with it.
set -euo pipefail
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/bench-lib.sh"
cd "$SLUICE_ROOT"
CHANNELS=${1:-200}
PER_CHANNEL=${2:-500}
ROUNDS=${3:-3}
MESSAGES=$((CHANNELS * PER_CHANNEL))
RATE_LIMIT_EVERY=${SLACK_RATE_LIMIT_EVERY:-0}
AIRBYTE_VERSION=${AIRBYTE_VERSION:-3.0.0}
AIRBYTE_CDK_VERSION=${AIRBYTE_CDK_VERSION:-6.58.0}
AIRBYTE_VENV=${AIRBYTE_VENV:-$SLUICE_CACHE/airbyte-slack-venv-$AIRBYTE_CDK_VERSION}

if [ -z "${SLUICE_BENCH_NO_BUILD:-}" ]; then
  flock /tmp/sluice-build.lock bash scripts/build-plugins.sh >&2
  flock /tmp/sluice-build.lock cargo build --release --quiet -p sluice --bin sluice -p sluice-tests --bin fake-slack
fi
if [ -z "${SKIP_AIRBYTE:-}" ] && [ ! -x "$AIRBYTE_VENV/bin/source-slack" ]; then
  python3 -m venv "$AIRBYTE_VENV"
  flock /tmp/sluice-build.lock "$AIRBYTE_VENV/bin/pip" install --quiet "airbyte-source-slack==$AIRBYTE_VERSION" \
    ${AIRBYTE_CDK_VERSION:+"airbyte-cdk==$AIRBYTE_CDK_VERSION"}
fi
# GNU time gives the peer's CPU seconds and peak RSS (Debian package `time`).
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
export GARAGE_BIN=$GARAGE_ROOT/bin/garage
S3_PORT=${SLUICE_BENCH_S3_PORT:-3900}
bash scripts/garage.sh "$SLUICE_CACHE/garage-data" "$S3_PORT" >/dev/null

WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

FAKE_BIN=${FAKE_BIN:-$CARGO_TARGET_DIR/release/fake-slack}
"$FAKE_BIN" "$CHANNELS" "$PER_CHANNEL" "$RATE_LIMIT_EVERY" > "$WORK/fake.json" &
FAKE=$!
PIDS+=($FAKE)
for _ in $(seq 1 300); do [ -s "$WORK/fake.json" ] && break; sleep 0.1; done
field() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())[sys.argv[2]])' "$WORK/fake.json" "$1"; }
URL=$(field url); ORIGIN=$(field origin); SLACK_TOKEN=$(field token)

# --- Sluice: the service, the messages stream only, into Parquet on Garage.
mkdir -p "$WORK/plugins" && cp "$SLUICE_PLUGIN_OUT/slack.wasm" "$WORK/plugins/"
PORT=18075; TOKEN=bench-token-0123456789
CONNECT_SERVICE_TOKEN=$TOKEN PORT=$PORT SLUICE_DATA_DIR=$WORK/data PLUGINS_DIR=$WORK/plugins \
  SLUICE_ALLOW_PRIVATE_ADDRESSES=loopback S3_ENDPOINT=http://127.0.0.1:$S3_PORT RUST_LOG=${RUST_LOG:-warn} \
  "${SLUICE_BIN:-$CARGO_TARGET_DIR/release/sluice}" serve > "$WORK/service.log" 2>&1 &
SVC=$!
PIDS+=($SVC)
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
echo "sluice serve idle: RSS $(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$SVC/status") MiB"


sluice_round() {
  service_round "$SVC" "$PORT" "$TOKEN" messages "$WORK" '{"connection_id":"slack","connector":"slack","streams":["messages"],
    "config":{"api_url":"'"$URL"'"},"credentials":{"token":"'"$SLACK_TOKEN"'"}}'
}

# --- `sluice run`: one process per sync (as the peer runs), the messages stream into Parquet in
# a local directory (kept between rounds: it holds the compile cache; --full-refresh each time).
echo '{"api_url":"'"$URL"'"}' > "$WORK/cli-config.json"
cli_round() {
  cli_run "$WORK/plugins/slack.wasm" "$WORK/cli-config.json" "token=$SLACK_TOKEN" "$WORK/cli-out" "$WORK" messages
}

# --- Airbyte: source-slack read, channel_messages only, records to a file, through the proxy.
if [ -z "${SKIP_AIRBYTE:-}" ]; then
  ( cd "$WORK"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=sluice bench throwaway CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=slack.com -keyout slack.key -out slack.csr 2>/dev/null
    printf 'subjectAltName=DNS:slack.com\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > slack.ext
    openssl x509 -req -in slack.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile slack.ext -out slack.pem 2>/dev/null )
  python3 scripts/bench/connect_proxy.py "$WORK/slack.pem" "$WORK/slack.key" "${ORIGIN#http://}" "$WORK/proxy.port" slack.com 2> "$WORK/proxy.err" &
  PIDS+=($!)
  for _ in $(seq 1 100); do [ -s "$WORK/proxy.port" ] && break; sleep 0.1; done
  PROXY=http://127.0.0.1:$(cat "$WORK/proxy.port")
  START_DATE=$(date -u -d '60 days ago' +%Y-%m-%dT%H:%M:%SZ)
  cat > "$WORK/airbyte-config.json" <<EOF
{"credentials": {"option_title": "API Token Credentials", "api_token": "$SLACK_TOKEN"},
 "start_date": "$START_DATE", "lookback_window": 0, "join_channels": false,
 "include_private_channels": true, "channel_filter": []}
EOF
  cat > "$WORK/airbyte-catalog.json" <<'EOF'
{"streams": [{"stream": {"name": "channel_messages", "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]},
  "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}]}
EOF
fi
airbyte_round() {
  # A fresh directory each round: no HTTP cache carried over from the previous one.
  rm -rf "$WORK/airbyte-cwd" && mkdir "$WORK/airbyte-cwd"
  ( cd "$WORK/airbyte-cwd" && exec env -u HTTP_PROXY -u http_proxy -u ALL_PROXY -u all_proxy \
    HTTPS_PROXY="$PROXY" https_proxy="$PROXY" NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
    REQUESTS_CA_BUNDLE="$WORK/ca.pem" SSL_CERT_FILE="$WORK/ca.pem" \
    SLUICE_BENCH_CA="$WORK/ca.pem" PYTHONPATH="$SLUICE_ROOT/scripts/bench/pyca" \
    timeout "${AIRBYTE_TIMEOUT_SECS:-900}" /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" "$AIRBYTE_VENV/bin/source-slack" read \
    --config "$WORK/airbyte-config.json" --catalog "$WORK/airbyte-catalog.json" > "$WORK/airbyte.jsonl" 2>"$WORK/airbyte.err" ) &
  local tp=$! child="" n
  child=$(peer_pid "$tp")
  echo 0 > "$WORK/airbyte.anon"
  [ -n "$child" ] && sample_anon "$child" "$WORK/airbyte.anon" "$WORK/never"
  wait "$tp" || true
  n=$(grep -c '"type":"RECORD"' "$WORK/airbyte.jsonl" || true)
  if grep -q '"failure_type"' "$WORK/airbyte.jsonl"; then
    grep '"failure_type"' "$WORK/airbyte.jsonl" | head -2 | cut -c1-600 >&2
  fi
  if ! read -r wall user sys rss <<< "$(tail -1 "$WORK/time.txt" 2>/dev/null)" || [ -z "${rss:-}" ]; then
    read -r wall user sys rss <<< "0 0 0 0"
  fi
  echo "$n $wall $(python3 -c "print($user + $sys)") $rss $(cat "$WORK/airbyte.anon")"
}

# Warm-up, not counted: the service compiles slack.wasm once (cached afterwards).
sluice_round > /dev/null
cli_round > /dev/null
echo "messages of $CHANNELS channels × $PER_CHANNEL = $MESSAGES messages served by the fake Slack ($URL), $ROUNDS rounds each, alternating"
if [ "$RATE_LIMIT_EVERY" = 0 ]; then echo "fake rate limits: OFF (no 429s)"; else echo "fake rate limits: every ${RATE_LIMIT_EVERY}th request 429 + Retry-After: 1"; fi
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
: > "$WORK/results"
for i in $(seq 1 "$ROUNDS"); do
  f0=$(cpu_secs "$FAKE")
  read -r n wall cpu anon svc <<< "$(sluice_round)"
  fake=$(python3 -c "print(round($(cpu_secs "$FAKE") - $f0, 2))")
  printf 'sluice   round %d: %6d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak anon RSS %.0f MiB  | fake %.2f CPU s | load %s | service clock %.2f s, %.0f records/s\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($anon/1024)")" "$fake" "$(cut -d' ' -f1 /proc/loadavg)" "$svc" "$(python3 -c "print($n/$svc)")"
  echo "sluice $n $wall $cpu 0 $anon $fake $svc" >> "$WORK/results"
  f0=$(cpu_secs "$FAKE")
  read -r n wall cpu rss <<< "$(cli_round)"
  fake=$(python3 -c "print(round($(cpu_secs "$FAKE") - $f0, 2))")
  printf 'run      round %d: %6d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak RSS %.0f MiB  | fake %.2f CPU s | load %s\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($rss/1024)")" "$fake" "$(cut -d' ' -f1 /proc/loadavg)"
  echo "cli $n $wall $cpu $rss 0 $fake" >> "$WORK/results"
  if [ -z "${SKIP_AIRBYTE:-}" ]; then
    f0=$(cpu_secs "$FAKE")
    read -r n wall cpu rss anon <<< "$(airbyte_round)"
    fake=$(python3 -c "print(round($(cpu_secs "$FAKE") - $f0, 2))")
    if [ "$n" = 0 ]; then
      echo "airbyte  round $i: FAILED, 0 records: $(grep -o '"internal_message":"[^"]*' "$WORK/airbyte.jsonl" | head -1 | cut -c20-220)"
      continue
    fi
    printf 'airbyte  round %d: %6d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak RSS %.0f MiB, anon %.0f MiB  | fake %.2f CPU s | load %s\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($rss/1024)")" "$(python3 -c "print($anon/1024)")" "$fake" "$(cut -d' ' -f1 /proc/loadavg)"
    echo "airbyte $n $wall $cpu $rss $anon $fake" >> "$WORK/results"
  fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "${SKIP_AIRBYTE:-}" ] && echo "proxy: $(grep -c tunnelled "$WORK/proxy.err" || true) CONNECTs to slack.com tunnelled to the fake, $(grep -c refused "$WORK/proxy.err" || true) refused"
grep -hE "run committed|retrying" "$WORK/service.log" || true   # phase timings, with RUST_LOG=info
SLUICE_HWM=$(awk '/VmHWM/ {print $2}' "/proc/$SVC/status")
echo "sluice serve peak RSS (VmHWM) over all rounds: $((SLUICE_HWM / 1024)) MiB"
kill -INT "$FAKE" 2>/dev/null && sleep 0.3 && echo "fake: $(tail -1 "$WORK/fake.json")"
python3 - "$WORK/results" "$SLUICE_HWM" "$MESSAGES" <<'EOF'
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
short = sorted({r[1] for r in rows if r[0] == "cli" and int(r[1]) != int(sys.argv[3])})
if short:
    print(f"WARNING: sluice run committed {', '.join(short)} rows in some rounds, not {sys.argv[3]}")
c_rate, c_cpu, c_rss = med("cli", 1) / med("cli", 2), med("cli", 3), med("cli", 4) / 1024
print(f"         sluice run (one process per sync) {c_rate:,.0f} records/s, {c_cpu:.2f} CPU s, peak RSS {c_rss:.0f} MiB")
print(f"         sluice by the service's own clock (created_at -> finished_at, without the harness's polling): {s_svc:,.0f} records/s")
for peer in ("airbyte",):
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
