#!/usr/bin/env bash
# Issue 5's comparison: sync the `issues` stream of N issues (default 20000, 2 repositories)
# from the fake GitHub (tests/src/bin/fake-github.rs), once with Sluice (release `sluice serve`,
# github.wasm, committed as Parquet into Garage), once with Airbyte's `source-github` and once
# with the Singer tap `tap-github` (both from PyPI, records to a file, no destination), on the same
# fake in the same run; Sluice both as the service and as `sluice run` (one process per sync, as
# the peers run). Prints wall time, records/s, CPU seconds and peak RSS of each, and the ratios.
#   scripts/bench-github.sh [issues] [rounds]     SKIP_AIRBYTE=1 / SKIP_TAP=1 leave a peer out
#   SLUICE_BIN=path/to/sluice runs that binary (the service and `sluice run`), e.g. target/dist/sluice
# tap-github checks its token against the hard-coded https://api.github.com/rate_limit: it runs
# behind scripts/bench/connect_proxy.py, a loopback CONNECT proxy that terminates TLS for
# api.github.com only (a throwaway CA made here, in the temp dir) and relays to the fake.
set -euo pipefail
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/bench-lib.sh"
cd "$SLUICE_ROOT"
ISSUES=${1:-20000}
ROUNDS=${2:-3}
AIRBYTE_VENV=${AIRBYTE_VENV:-$SLUICE_CACHE/airbyte-venv}
AIRBYTE_VERSION=${AIRBYTE_VERSION:-2.7.1}
TAP_VENV=${TAP_VENV:-$SLUICE_CACHE/tap-github-venv}
TAP_VERSION=${TAP_VERSION:-1.30.1}

bash scripts/build-plugins.sh >&2
cargo build --release --quiet -p sluice --bin sluice -p sluice-tests --bin fake-github
if [ ! -x "$AIRBYTE_VENV/bin/source-github" ]; then
  python3 -m venv "$AIRBYTE_VENV"
  "$AIRBYTE_VENV/bin/pip" install --quiet "airbyte-source-github==$AIRBYTE_VERSION"
fi
if [ -z "${SKIP_TAP:-}" ] && [ ! -x "$TAP_VENV/bin/tap-github" ]; then
  python3 -m venv "$TAP_VENV"
  "$TAP_VENV/bin/pip" install --quiet "meltanolabs-tap-github==$TAP_VERSION"
fi
# GNU time gives Airbyte's CPU seconds and peak RSS (Debian package `time`).
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
export GARAGE_BIN=$GARAGE_ROOT/bin/garage
S3_PORT=${SLUICE_BENCH_S3_PORT:-3900}
bash scripts/garage.sh "$SLUICE_CACHE/garage-data" "$S3_PORT" >/dev/null

WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

start_fake_github "$ISSUES" "$WORK"
REPOS='["acme/repo-0", "acme/repo-1"]'

# --- Sluice: the service, the issues stream only, into Parquet on Garage.
mkdir -p "$WORK/plugins" && cp "$SLUICE_PLUGIN_OUT/github.wasm" "$WORK/plugins/"
PORT=18073; TOKEN=bench-token-0123456789
CONNECT_SERVICE_TOKEN=$TOKEN PORT=$PORT SLUICE_DATA_DIR=$WORK/data PLUGINS_DIR=$WORK/plugins \
  SLUICE_ALLOW_PRIVATE_ADDRESSES=loopback S3_ENDPOINT=http://127.0.0.1:$S3_PORT RUST_LOG=${RUST_LOG:-warn} \
  "${SLUICE_BIN:-$CARGO_TARGET_DIR/release/sluice}" serve > "$WORK/service.log" 2>&1 &
SVC=$!
PIDS+=($SVC)
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
echo "sluice serve idle: RSS $(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$SVC/status") MiB"


sluice_round() {
  service_round "$SVC" "$PORT" "$TOKEN" issues "$WORK" '{"connection_id":"gh","connector":"github","streams":["issues"],
    "config":{"api_url":"'"$URL"'","repositories":'"$REPOS"'},"credentials":{"token":"'"$GH_TOKEN"'"}}'
}

# --- Airbyte: source-github read, the issues stream only, records to a file.
cat > "$WORK/airbyte-config.json" <<EOF
{"credentials": {"option_title": "PAT Credentials", "personal_access_token": "$GH_TOKEN"},
 "repositories": $REPOS, "api_url": "$URL", "page_size_for_large_streams": 100}
EOF
cat > "$WORK/airbyte-catalog.json" <<'EOF'
{"streams": [{"stream": {"name": "issues", "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]},
  "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}]}
EOF
airbyte_round() {
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" "$AIRBYTE_VENV/bin/source-github" read \
    --config "$WORK/airbyte-config.json" --catalog "$WORK/airbyte-catalog.json" > "$WORK/airbyte.jsonl" 2>"$WORK/airbyte.err" &
  local tp=$! child="" n
  for _ in $(seq 1 100); do child=$(pgrep -P "$tp" | head -1); [ -n "$child" ] && break; sleep 0.01; done
  echo 0 > "$WORK/airbyte.anon"
  [ -n "$child" ] && sample_anon "$child" "$WORK/airbyte.anon" "$WORK/never"
  wait "$tp"
  n=$(grep -c '"type":"RECORD"' "$WORK/airbyte.jsonl" || true)
  read -r wall user sys rss < "$WORK/time.txt"
  echo "$n $wall $(python3 -c "print($user + $sys)") $rss $(cat "$WORK/airbyte.anon")"
}

# --- tap-github: the issues stream only (a catalog with just `issues` selected), records to a
# file. Listings go straight to the fake (`api_url_base`, plain http on loopback); only the
# token check on the hard-coded https://api.github.com goes through the proxy.
if [ -z "${SKIP_TAP:-}" ]; then
  ( cd "$WORK"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=sluice bench throwaway CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=api.github.com -keyout gh.key -out gh.csr 2>/dev/null
    printf 'subjectAltName=DNS:api.github.com\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > gh.ext
    openssl x509 -req -in gh.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile gh.ext -out gh.pem 2>/dev/null )
  python3 scripts/bench/connect_proxy.py "$WORK/gh.pem" "$WORK/gh.key" "${URL#http://}" "$WORK/proxy.port" 2> "$WORK/proxy.err" &
  PIDS+=($!)
  for _ in $(seq 1 100); do [ -s "$WORK/proxy.port" ] && break; sleep 0.1; done
  PROXY=http://127.0.0.1:$(cat "$WORK/proxy.port")
  cat > "$WORK/tap-config.json" <<EOF
{"auth_token": "$GH_TOKEN", "repositories": $REPOS, "api_url_base": "$URL"}
EOF
  "$TAP_VENV/bin/tap-github" --config "$WORK/tap-config.json" --discover 2>"$WORK/tap.err" |
    python3 -c '
import json, sys
catalog = json.load(sys.stdin)
for stream in catalog["streams"]:
    for m in stream["metadata"]:
        if m["breadcrumb"] == []:
            m["metadata"]["selected"] = stream["tap_stream_id"] == "issues"
json.dump(catalog, sys.stdout)' > "$WORK/tap-catalog.json"
fi
# Only the proxy for https (the hard-coded api.github.com); loopback http (the fake) goes direct.
tap_round() {
  env -u HTTP_PROXY -u http_proxy -u ALL_PROXY -u all_proxy \
    HTTPS_PROXY="$PROXY" https_proxy="$PROXY" NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
    REQUESTS_CA_BUNDLE="$WORK/ca.pem" SSL_CERT_FILE="$WORK/ca.pem" \
    /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" "$TAP_VENV/bin/tap-github" \
    --config "$WORK/tap-config.json" --catalog "$WORK/tap-catalog.json" > "$WORK/tap.jsonl" 2>"$WORK/tap.err" &
  local tp=$! child="" n
  for _ in $(seq 1 100); do child=$(pgrep -P "$tp" | head -1); [ -n "$child" ] && break; sleep 0.01; done
  echo 0 > "$WORK/tap.anon"
  [ -n "$child" ] && sample_anon "$child" "$WORK/tap.anon" "$WORK/never"
  wait "$tp" || { tail -20 "$WORK/tap.err" >&2; exit 1; }
  n=$(grep -c '^{"type":"RECORD","stream":"issues"' "$WORK/tap.jsonl" || true)
  read -r wall user sys rss < "$WORK/time.txt"
  echo "$n $wall $(python3 -c "print($user + $sys)") $rss $(cat "$WORK/tap.anon")"
}

# --- `sluice run`: one process per sync like the peers (the issue-16 table's method), into a
# local directory; its compile cache lives under --out and is warmed by the first, uncounted run.
echo '{"api_url":"'$URL'","repositories":'"$REPOS"'}' > "$WORK/run-config.json"
cli_round() {
  cli_run "$WORK/plugins/github.wasm" "$WORK/run-config.json" "token=$GH_TOKEN" "$WORK/run-out" "$WORK" || exit 1
}

# Warm-up, not counted: the fake renders each issue's JSON once and serves it from memory
# afterwards, so that every measured round (of either tool) sees the same fast upstream.
sluice_round > /dev/null
cli_round > /dev/null
echo "issues stream, $ISSUES issues served by the fake ($URL), $ROUNDS rounds each, alternating"
: > "$WORK/results"
for i in $(seq 1 "$ROUNDS"); do
  read -r n wall cpu anon _ <<< "$(sluice_round)"
  printf 'sluice  round %d: %6d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak anon RSS %.0f MiB\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($anon/1024)")"
  echo "sluice $n $wall $cpu 0 $anon" >> "$WORK/results"
  read -r n wall cpu rss <<< "$(cli_round)"
  printf 'sluice-run round %d: %3d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak RSS %.0f MiB\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($rss/1024)")"
  echo "cli $n $wall $cpu $rss 0" >> "$WORK/results"
  if [ -z "${SKIP_AIRBYTE:-}" ]; then
    read -r n wall cpu rss anon <<< "$(airbyte_round)"
    printf 'airbyte round %d: %6d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak RSS %.0f MiB, anon %.0f MiB\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($rss/1024)")" "$(python3 -c "print($anon/1024)")"
    echo "airbyte $n $wall $cpu $rss $anon" >> "$WORK/results"
  fi
  if [ -z "${SKIP_TAP:-}" ]; then
    read -r n wall cpu rss anon <<< "$(tap_round)"
    printf 'tapgithub round %d: %4d records  %6.2f s wall  %9.0f records/s  %6.2f CPU s  peak RSS %.0f MiB, anon %.0f MiB\n' "$i" "$n" "$wall" "$(python3 -c "print($n/$wall)")" "$cpu" "$(python3 -c "print($rss/1024)")" "$(python3 -c "print($anon/1024)")"
    echo "tapgithub $n $wall $cpu $rss $anon" >> "$WORK/results"
  fi
done
[ -z "${SKIP_TAP:-}" ] && echo "proxy: $(grep -c tunnelled "$WORK/proxy.err" || true) CONNECTs to api.github.com tunnelled to the fake, $(grep -c refused "$WORK/proxy.err" || true) refused"
grep -hE "run committed|retrying" "$WORK/service.log" || true   # phase timings and DuckDB retries, with RUST_LOG=info
SLUICE_HWM=$(awk '/VmHWM/ {print $2}' "/proc/$SVC/status")
echo "sluice serve peak RSS (VmHWM) over all rounds: $((SLUICE_HWM / 1024)) MiB"
python3 - "$WORK/results" "$SLUICE_HWM" "$ISSUES" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(tool, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == tool)
def anon(tool):
    return max(float(r[5]) for r in rows if r[0] == tool) / 1024
s_rate, s_cpu = med("sluice", 1) / med("sluice", 2), med("sluice", 3)
s_rss, s_anon = int(sys.argv[2]) / 1024, anon("sluice")
print(f"medians: sluice {s_rate:,.0f} records/s, {s_cpu:.2f} CPU s, peak RSS {s_rss:.0f} MiB (the service, all rounds), peak anon RSS {s_anon:.0f} MiB (sampled every 20 ms)")
c_rate, c_cpu, c_rss = med("cli", 1) / med("cli", 2), med("cli", 3), med("cli", 4) / 1024
print(f"         sluice run (one process per sync) {c_rate:,.0f} records/s, {c_cpu:.2f} CPU s, peak RSS {c_rss:.0f} MiB")
for peer in ("airbyte", "tapgithub"):
    if not any(r[0] == peer for r in rows):
        continue
    short = sorted({r[1] for r in rows if r[0] == peer and int(r[1]) != int(sys.argv[3])})
    if short:
        print(f"WARNING: {peer} delivered {', '.join(short)} records in some rounds, not {sys.argv[3]}")
    rate, cpu, rss, p_anon = med(peer, 1) / med(peer, 2), med(peer, 3), med(peer, 4) / 1024, anon(peer)
    print(f"         {peer} {rate:,.0f} records/s, {cpu:.2f} CPU s, peak RSS {rss:.0f} MiB, peak anon RSS {p_anon:.0f} MiB")
    print(f"  sluice run vs {peer}: records/s {c_rate / rate:.1f}x   CPU s {cpu / c_cpu:.1f}x less   peak RSS {c_rss / rss:.2f} of {peer}'s")
    print(f"  sluice vs {peer}: records/s {s_rate / rate:.1f}x   CPU s {cpu / s_cpu:.1f}x less   peak RSS {s_rss / rss:.2f} of {peer}'s   peak anon RSS {s_anon / p_anon:.2f} of {peer}'s")
EOF
