#!/usr/bin/env bash
# Issue 10's HubSpot comparison: sync the `contacts` stream of N contacts (default 50000) from the
# fake HubSpot (tests/src/bin/fake-hubspot.rs: tests/src/fakes/hubspot.rs, every request checked
# against HubSpot's OpenAPI descriptions), once with Sluice (release `sluice serve`, hubspot.wasm,
# committed as Parquet into Garage), once with `sluice run` (one process per sync like the peers,
# Parquet into a local directory), once with Airbyte's `source-hubspot` 5.7.0 and once with the
# Singer tap `tap-hubspot` 4.5.0 (singer-io's, the package PyPI has under that name; both from
# PyPI, records to a file, no destination), on the same fake in the same run. Prints wall time,
# records/s, CPU seconds, peak RSS and peak anonymous RSS of each (medians of the rounds), and
# the ratios.
#   scripts/bench-hubspot.sh [contacts] [rounds]   SKIP_AIRBYTE=1 / SKIP_TAP=1 leave a peer out
#   SLUICE_BIN=path/to/sluice  runs that binary (the service and `sluice run`), e.g. the dist build
#   SLUICE_BENCH_S3_PORT   Garage's S3 port (default 3900); SLUICE_BENCH_NO_BUILD=1 uses the
#                          binaries and plugins already built
#   FAKE_BIN=path          runs another build of the fake (e.g. an older one, to compare its own CPU)
#   Each round prints the CPU seconds the fake spent serving it (from /proc/PID/stat) and the load.
#   SLUICE_HUBSPOT_SEARCH_INTERVAL_MS=0   Sluice's search unpaced, and the fake's search unlimited:
#                          a figure HubSpot never allows (it answers 429 past ~5 searches/s),
#                          printed as such
#
# What each one asks the fake for (a first sync, no state):
# - Sluice (the service and `sluice run`): a first sync is a read of everything, so it pages
#   `GET /crm/v3/objects/contacts?limit=100&properties=…` (every property) by `after`, then
#   `GET /crm/v3/objects/contacts?archived=true` (none here); later syncs read the window since
#   the cursor through `POST …/search`, spaced by the host (HubSpot's ~5 searches/s). The fake's
#   request counts at the end show which routes were taken.
# - Airbyte (a first sync is its full-refresh path): `GET /properties/v2/contact/properties`
#   (legacy, a bare array), `GET /crm/v3/schemas` (custom objects; 403 MISSING_SCOPES here, which
#   it logs and skips), then `GET /crm/v3/objects/contact?archived=false&associations=contacts,
#   companies&properties=…&limit=100` paged by `after`: the list endpoint, not paced by HubSpot
#   beyond 190 requests/10 s.
# - tap-hubspot: `GET /crm/v3/schemas` (the same 403, skipped), `GET /crm/v3/properties/contacts`,
#   then `GET /crm/v3/objects/contacts?limit=100&properties=…&associations=tickets,companies,deals`.
#   Its catalog is what its discovery makes for `contacts` (its own `load_discovered_schema`),
#   every field selected; the full discovery is not run (it reads ~15 other streams' legacy
#   endpoints the fake does not serve).
# Both peers hard-code https://api.hubapi.com: they run behind scripts/bench/connect_proxy.py, a
# loopback CONNECT proxy that terminates TLS for api.hubapi.com only (a throwaway CA made here,
# in the temp dir) and relays to the fake; any other target is refused. Nothing leaves the
# machine. The proxy's own CPU is not counted in the peers' figures (it is printed).
# No contact is archived (the fake's archived_every is 0), so all three read the same 50,000.
set -euo pipefail
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/bench-lib.sh"
cd "$SLUICE_ROOT"
CONTACTS=${1:-50000}
ROUNDS=${2:-3}
AIRBYTE_VENV=${AIRBYTE_VENV:-$SLUICE_CACHE/airbyte-hubspot-venv}
AIRBYTE_VERSION=${AIRBYTE_VERSION:-5.7.0}
TAP_VENV=${TAP_VENV:-$SLUICE_CACHE/tap-hubspot-venv}
TAP_VERSION=${TAP_VERSION:-4.5.0}
INTERVAL_MS=${SLUICE_HUBSPOT_SEARCH_INTERVAL_MS:-250}   # the service's default
LOCK=${SLUICE_BUILD_LOCK:-/tmp/sluice-build.lock}

if [ -z "${SLUICE_BENCH_NO_BUILD:-}" ]; then
  flock "$LOCK" bash scripts/build-plugins.sh >&2
  flock "$LOCK" cargo build --release --quiet -p sluice --bin sluice -p sluice-tests --bin fake-hubspot
fi
if [ -z "${SKIP_AIRBYTE:-}" ] && [ ! -x "$AIRBYTE_VENV/bin/source-hubspot" ]; then
  python3 -m venv "$AIRBYTE_VENV"
  flock "$LOCK" "$AIRBYTE_VENV/bin/pip" install --quiet "airbyte-source-hubspot==$AIRBYTE_VERSION"
fi
if [ -z "${SKIP_TAP:-}" ] && [ ! -x "$TAP_VENV/bin/tap-hubspot" ]; then
  python3 -m venv "$TAP_VENV"
  flock "$LOCK" "$TAP_VENV/bin/pip" install --quiet "tap-hubspot==$TAP_VERSION"
fi
# GNU time gives the peers' CPU seconds and peak RSS (Debian package `time`).
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
export GARAGE_BIN=$GARAGE_ROOT/bin/garage
S3_PORT=${SLUICE_BENCH_S3_PORT:-3900}
bash scripts/garage.sh "$SLUICE_CACHE/garage-data" "$S3_PORT" >/dev/null

WORK=$(mktemp -d)
PIDS=()
FAKE=""
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# The fake's search limit is HubSpot's (5 a second) unless Sluice's pacing is off.
SEARCH_PER_SECOND=5
[ "$INTERVAL_MS" = 0 ] && SEARCH_PER_SECOND=0
FAKE_BIN=${FAKE_BIN:-$CARGO_TARGET_DIR/release/fake-hubspot}
"$FAKE_BIN" "$CONTACTS" "$SEARCH_PER_SECOND" > "$WORK/fake.json" &
FAKE=$!
PIDS+=($FAKE)
for _ in $(seq 1 300); do [ -s "$WORK/fake.json" ] && break; sleep 0.1; done
URL=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["url"])' "$WORK/fake.json")
HS_TOKEN=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["token"])' "$WORK/fake.json")

# --- Sluice: the service, the contacts stream only, into Parquet on Garage.
mkdir -p "$WORK/plugins" && cp "$SLUICE_PLUGIN_OUT/hubspot.wasm" "$WORK/plugins/"
PORT=18074; TOKEN=bench-token-0123456789
CONNECT_SERVICE_TOKEN=$TOKEN PORT=$PORT SLUICE_DATA_DIR=$WORK/data PLUGINS_DIR=$WORK/plugins \
  SLUICE_ALLOW_PRIVATE_ADDRESSES=loopback S3_ENDPOINT=http://127.0.0.1:$S3_PORT RUST_LOG=${RUST_LOG:-warn} \
  SLUICE_HUBSPOT_SEARCH_INTERVAL_MS=$INTERVAL_MS \
  "${SLUICE_BIN:-$CARGO_TARGET_DIR/release/sluice}" serve > "$WORK/service.log" 2>&1 &
SVC=$!
PIDS+=($SVC)
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
echo "sluice serve idle: RSS $(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$SVC/status") MiB"


sluice_round() {
  service_round "$SVC" "$PORT" "$TOKEN" contacts "$WORK" '{"connection_id":"hs","connector":"hubspot","streams":["contacts"],"full_refresh":true,
    "config":{"api_url":"'"$URL"'","streams":["contacts"]},"credentials":{"token":"'"$HS_TOKEN"'"}}'
}

# --- `sluice run`: one process per sync (as the peers run), the contacts stream into Parquet in
# a local directory (kept between rounds: it holds the compile cache; --full-refresh each time).
echo '{"api_url":"'"$URL"'","streams":["contacts"]}' > "$WORK/cli-config.json"
cli_round() {
  SLUICE_HUBSPOT_SEARCH_INTERVAL_MS=$INTERVAL_MS cli_run "$WORK/plugins/hubspot.wasm" "$WORK/cli-config.json" \
    "token=$HS_TOKEN" "$WORK/cli-out" "$WORK" contacts
}

# --- The proxy for the peers' hard-coded https://api.hubapi.com.
if [ -z "${SKIP_AIRBYTE:-}" ] || [ -z "${SKIP_TAP:-}" ]; then
  ( cd "$WORK"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=sluice bench throwaway CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=api.hubapi.com -keyout hs.key -out hs.csr 2>/dev/null
    printf 'subjectAltName=DNS:api.hubapi.com\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > hs.ext
    openssl x509 -req -in hs.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile hs.ext -out hs.pem 2>/dev/null )
  python3 scripts/bench/connect_proxy.py "$WORK/hs.pem" "$WORK/hs.key" "${URL#http://}" "$WORK/proxy.port" api.hubapi.com 2> "$WORK/proxy.err" &
  PROXY_PID=$!
  PIDS+=($PROXY_PID)
  for _ in $(seq 1 100); do [ -s "$WORK/proxy.port" ] && break; sleep 0.1; done
  PROXY=http://127.0.0.1:$(cat "$WORK/proxy.port")
fi
# Every https request through the proxy (only api.hubapi.com gets through); loopback direct.
# The throwaway CA is the only one trusted (scripts/bench/pyca/sitecustomize.py: tap-hubspot
# sends prepared requests, which ignore REQUESTS_CA_BUNDLE).
peer_env() {
  env -u HTTP_PROXY -u http_proxy -u ALL_PROXY -u all_proxy \
    HTTPS_PROXY="$PROXY" https_proxy="$PROXY" NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
    REQUESTS_CA_BUNDLE="$WORK/ca.pem" SSL_CERT_FILE="$WORK/ca.pem" \
    SLUICE_BENCH_CA="$WORK/ca.pem" PYTHONPATH="$SLUICE_ROOT/scripts/bench/pyca" "$@"
}

# Runs a peer ($1: name, rest: command) under GNU time, records to $WORK/$1.jsonl; prints
# "records wall cpu rss anon" ($RECORD_PATTERN counts the records).
peer_round() {
  local name=$1; shift
  peer_env /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" "$@" > "$WORK/$name.jsonl" 2>"$WORK/$name.err" &
  local tp=$! child="" n
  child=$(peer_pid "$tp")
  echo 0 > "$WORK/$name.anon"
  [ -n "$child" ] && sample_anon "$child" "$WORK/$name.anon" "$WORK/never"
  wait "$tp" || { tail -20 "$WORK/$name.err" >&2; exit 1; }
  n=$(grep -c "$RECORD_PATTERN" "$WORK/$name.jsonl" || true)
  read -r wall user sys rss < "$WORK/time.txt"
  echo "$n $wall $(python3 -c "print($user + $sys)") $rss $(cat "$WORK/$name.anon")"
}

# --- Airbyte: source-hubspot read, the contacts stream only (a private-app token).
cat > "$WORK/airbyte-config.json" <<EOF
{"credentials": {"credentials_title": "Private App Credentials", "access_token": "$HS_TOKEN"},
 "start_date": "2000-01-01T00:00:00Z"}
EOF
cat > "$WORK/airbyte-catalog.json" <<'EOF'
{"streams": [{"stream": {"name": "contacts", "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]},
  "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}]}
EOF
airbyte_round() {
  RECORD_PATTERN='"type":"RECORD"' peer_round airbyte "$AIRBYTE_VENV/bin/source-hubspot" read \
    --config "$WORK/airbyte-config.json" --catalog "$WORK/airbyte-catalog.json"
}

# --- tap-hubspot: the contacts stream only, records to a file.
if [ -z "${SKIP_TAP:-}" ]; then
  cat > "$WORK/tap-config.json" <<EOF
{"api_key": "$HS_TOKEN", "start_date": "2000-01-01T00:00:00Z"}
EOF
  peer_env "$TAP_VENV/bin/python" - "$WORK/tap-config.json" > "$WORK/tap-catalog.json" 2>"$WORK/tap-discover.err" <<'EOF'
import json, sys
import tap_hubspot
tap_hubspot.CONFIG.update(json.load(open(sys.argv[1])))
stream = next(s for s in tap_hubspot.STREAMS if s.tap_stream_id == "contacts")
schema, mdata = tap_hubspot.load_discovered_schema(stream)
for m in mdata:
    m["metadata"]["selected"] = True
json.dump({"streams": [{"stream": "contacts", "tap_stream_id": "contacts", "schema": schema, "metadata": mdata}]}, sys.stdout)
EOF
fi
tap_round() {
  # tap-hubspot reads its catalog from --properties (the older Singer flag; --catalog is ignored).
  RECORD_PATTERN='^{"type": *"RECORD", *"stream": *"contacts"' peer_round tap "$TAP_VENV/bin/tap-hubspot" \
    --config "$WORK/tap-config.json" --properties "$WORK/tap-catalog.json"
}

# Warm-up, not counted (the service compiles and caches the plugin; the fake's pages warm up).
sluice_round > /dev/null
cli_round > /dev/null
LABEL=""
[ "$INTERVAL_MS" = 0 ] && LABEL=" [UNPACED: SLUICE_HUBSPOT_SEARCH_INTERVAL_MS=0 and the fake's search limit off; HubSpot allows ~5 searches/s]"
echo "contacts stream, $CONTACTS contacts served by the fake ($URL), $ROUNDS rounds each, alternating$LABEL"
: > "$WORK/results"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
fake_spent() { python3 -c "print(round($(cpu_secs "$FAKE") - $1, 2))"; }
for i in $(seq 1 "$ROUNDS"); do
  f0=$(cpu_secs "$FAKE")
  read -r n wall cpu anon svc <<< "$(sluice_round)"
  fake=$(fake_spent "$f0")
  printf 'sluice  round %d: %6d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak anon RSS %.0f MiB  | fake %.2f CPU s | load %s | service clock %.2f s, %.0f records/s\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($anon/1024)")" "$fake" "$(cut -d' ' -f1 /proc/loadavg)" "$svc" "$(python3 -c "print($n/$svc)")"
  echo "sluice $n $wall $cpu 0 $anon $fake $svc" >> "$WORK/results"
  f0=$(cpu_secs "$FAKE")
  read -r n wall cpu rss <<< "$(cli_round)"
  fake=$(fake_spent "$f0")
  printf 'run     round %d: %6d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak RSS %.0f MiB  | fake %.2f CPU s | load %s\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($rss/1024)")" "$fake" "$(cut -d' ' -f1 /proc/loadavg)"
  echo "cli $n $wall $cpu $rss 0 $fake" >> "$WORK/results"
  if [ -z "${SKIP_AIRBYTE:-}" ]; then
    f0=$(cpu_secs "$FAKE")
    read -r n wall cpu rss anon <<< "$(airbyte_round)"
    fake=$(fake_spent "$f0")
    printf 'airbyte round %d: %6d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak RSS %.0f MiB, anon %.0f MiB  | fake %.2f CPU s | load %s\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($rss/1024)")" "$(python3 -c "print($anon/1024)")" "$fake" "$(cut -d' ' -f1 /proc/loadavg)"
    echo "airbyte $n $wall $cpu $rss $anon $fake" >> "$WORK/results"
  fi
  if [ -z "${SKIP_TAP:-}" ]; then
    f0=$(cpu_secs "$FAKE")
    read -r n wall cpu rss anon <<< "$(tap_round)"
    fake=$(fake_spent "$f0")
    printf 'tap     round %d: %6d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak RSS %.0f MiB, anon %.0f MiB  | fake %.2f CPU s | load %s\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($rss/1024)")" "$(python3 -c "print($anon/1024)")" "$fake" "$(cut -d' ' -f1 /proc/loadavg)"
    echo "taphubspot $n $wall $cpu $rss $anon $fake" >> "$WORK/results"
  fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${PROXY_PID:-}" ]; then
  echo "proxy: $(grep -c tunnelled "$WORK/proxy.err" || true) CONNECTs to api.hubapi.com tunnelled to the fake, $(grep -c refused "$WORK/proxy.err" || true) refused, $(cpu_secs "$PROXY_PID") CPU s over all peer rounds (not in the peers' figures)"
fi
grep -hE "run committed|retrying" "$WORK/service.log" || true   # phase timings and retries, with RUST_LOG=info
SLUICE_HWM=$(awk '/VmHWM/ {print $2}' "/proc/$SVC/status")
echo "sluice serve peak RSS (VmHWM) over all rounds: $((SLUICE_HWM / 1024)) MiB"
# The fake's request counts, its 429s and any request that broke HubSpot's descriptions.
kill -INT "$FAKE"
for _ in $(seq 1 50); do [ "$(wc -l < "$WORK/fake.json")" -ge 2 ] && break; sleep 0.1; done
tail -n +2 "$WORK/fake.json" | python3 -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    print("fake: requests by route", json.dumps(d["requests"]), "| SECONDLY 429s", d["secondly_429s"], "| contract violations", len(d["violations"]))
    for v in d["violations"][:5]:
        print("  violation:", v)'
python3 - "$WORK/results" "$SLUICE_HWM" "$CONTACTS" "$INTERVAL_MS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
contacts, interval = int(sys.argv[3]), int(sys.argv[4])
def med(tool, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == tool)
def anon(tool):
    return max(float(r[5]) for r in rows if r[0] == tool) / 1024
s_rate, s_cpu = med("sluice", 1) / med("sluice", 2), med("sluice", 3)
s_rss, s_anon = int(sys.argv[2]) / 1024, anon("sluice")
s_svc = med("sluice", 1) / med("sluice", 7)
print(f"medians: sluice {s_rate:,.0f} records/s, {s_cpu:.2f} CPU s, peak RSS {s_rss:.0f} MiB (the service, all rounds), peak anon RSS {s_anon:.0f} MiB (sampled every 20 ms); the fake {med('sluice', 6):.2f} CPU s a round")
c_rate, c_cpu, c_rss = med("cli", 1) / med("cli", 2), med("cli", 3), med("cli", 4) / 1024
print(f"         sluice run (one process per sync) {c_rate:,.0f} records/s, {c_cpu:.2f} CPU s, peak RSS {c_rss:.0f} MiB")
print(f"         sluice by the service's own clock (created_at -> finished_at, without the harness's polling): {s_svc:,.0f} records/s")
for peer in ("airbyte", "taphubspot"):
    if not any(r[0] == peer for r in rows):
        continue
    short = sorted({r[1] for r in rows if r[0] == peer and int(r[1]) != contacts})
    if short:
        print(f"WARNING: {peer} delivered {', '.join(short)} records in some rounds, not {contacts}")
    rate, cpu, rss, p_anon = med(peer, 1) / med(peer, 2), med(peer, 3), med(peer, 4) / 1024, anon(peer)
    print(f"         {peer} {rate:,.0f} records/s, {cpu:.2f} CPU s, peak RSS {rss:.0f} MiB, peak anon RSS {p_anon:.0f} MiB; the fake {med(peer, 6):.2f} CPU s a round")
    print(f"  sluice run vs {peer}: records/s {c_rate / rate:.1f}x   CPU s {cpu / c_cpu:.1f}x less   peak RSS {c_rss / rss:.2f} of {peer}'s")
    print(f"  sluice vs {peer}: records/s {s_rate / rate:.1f}x (by the service's clock {s_svc / rate:.1f}x)   CPU s {cpu / s_cpu:.1f}x less   peak RSS {s_rss / rss:.2f} of {peer}'s   peak anon RSS {s_anon / p_anon:.2f} of {peer}'s")
EOF
