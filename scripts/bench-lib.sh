# Sourced by the bench scripts: submit a run to a local `sluice serve` and wait for its end.

# run_to_end PORT TOKEN BODY: POSTs the run, polls it every POLL_SECS (default 0.05 s), prints its final JSON.
# A poll is one curl and a shell pattern match: it used to start python3 to read each answer,
# ~20 interpreters a second at nice 0 beside the service, whose plugin work runs at nice 10 —
# in the same autogroup (one session), so they took most of the CPU from the run they waited for.
run_to_end() {
  local port=$1 token=$2 body=$3 run r
  r=$(curl -s -XPOST "http://127.0.0.1:$port/internal/mirror-connections/runs" \
    -H "x-connect-service-token: $token" -H 'content-type: application/json' -d "$body")
  run=$(echo "$r" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])' 2>/dev/null) ||
    { echo "run_to_end: the service refused the run: ${r:-no answer}" >&2; return 1; }
  while :; do
    r=$(curl -sf "http://127.0.0.1:$port/internal/mirror-connections/runs/$run" -H "x-connect-service-token: $token")
    case "$r" in
      *'"status":"queued"'* | *'"status":"running"'*) sleep "${POLL_SECS:-0.05}" ;;
      *) break ;;
    esac
  done
  echo "$r"
}

# Peak anonymous RSS of a process (heap, stacks: what file-backed pages of shared libraries are
# not), sampled every 20 ms into $2 until the process exits or $3 exists.
sample_anon() {
  local pid=$1 out=$2 stop=$3 max=0 v
  while kill -0 "$pid" 2>/dev/null && [ ! -e "$stop" ]; do
    v=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${v:-0}" -gt "$max" ] && max=$v
    echo "$max" > "$out"
    sleep 0.02
  done
}

# cpu_secs PID: the user + system CPU seconds process PID has used so far.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

# service_round SVC PORT TOKEN STREAM WORK REQUEST: one run through the `sluice serve` of pid SVC
# (its API on PORT with TOKEN) of REQUEST, a run request's JSON without "storage" (the bench
# bucket on Garage under a fresh prefix is added); WORK is a scratch directory. Fails unless the
# run succeeded. Prints "rows wall_s cpu_s peak_anon_kib service_s": STREAM's committed rows, the
# round's wall time and the service's CPU over it, the service's anonymous RSS sampled every 20 ms,
# and created_at -> finished_at by the service's own clock (the harness's polling left out).
service_round() {
  local svc=$1 port=$2 token=$3 stream=$4 work=$5 body t0 t1 c0 c1 r sampler
  body=$(python3 -c '
import json,sys
r=json.loads(sys.argv[1])
r["storage"]={"bucket":"sluice-test","prefix":sys.argv[2],"access_key_id":"GK5106e0a2b1c8d0e7a3f4b5c6",
  "secret_access_key":"5c1ce0a7e5c2e4b1d8f9a6b3c0d7e4f1a8b5c2d9e6f3a0b7c4d1e8f5a2b9c6d3"}
print(json.dumps(r))' "$6" "bench/$stream/$(date +%s%N)")
  rm -f "$work/stop"; sample_anon "$svc" "$work/sluice.anon" "$work/stop" &
  sampler=$!
  c0=$(cpu_secs "$svc"); t0=$(date +%s.%N)
  r=$(run_to_end "$port" "$token" "$body")
  t1=$(date +%s.%N); c1=$(cpu_secs "$svc")
  touch "$work/stop"; wait "$sampler"
  echo "$r" | python3 -c '
import json,sys
from datetime import datetime
r=json.load(sys.stdin)
if r["status"] != "succeeded": sys.exit(f"sluice run failed: {r}")
at=lambda k: datetime.fromisoformat(r[k])
print(r["streams"][sys.argv[1]]["committed_rows"], '"$t1"'-'"$t0"', '"$c1"'-'"$c0"', '"$(cat "$work/sluice.anon")"', (at("finished_at") - at("created_at")).total_seconds())' "$stream"
}

# cli_run WASM CONFIG SECRET OUT TMP [STREAM]: one `sluice run` (release, or $SLUICE_BIN; full refresh, loopback
# upstream) of STREAM (default issues) into the local directory OUT, under GNU time; TMP is a
# scratch directory. Prints "records wall_s cpu_s peak_rss_kib"; TIME_FMT='%e %U %S %M %R %w %c' adds GNU
# time's minor page faults and voluntary/involuntary context switches after the RSS.
cli_run() {
  local wasm=$1 config=$2 secret=$3 out=$4 tmp=$5 stream=${6:-issues} n wall user sys rss
  /usr/bin/time -f "${TIME_FMT:-%e %U %S %M}" -o "$tmp/time.txt" "${SLUICE_BIN:-$CARGO_TARGET_DIR/release/sluice}" run \
    "$wasm" --config "$config" --secret "$secret" --out "$out" --stream "$stream" --full-refresh \
    --allow-private-addresses loopback > "$tmp/run.out" 2> "$tmp/run.err" ||
    { tail -20 "$tmp/run.err" >&2; return 1; }
  n=$(awk -v s="$stream" '$1 == s {print $2}' "$tmp/run.out")
  read -r wall user sys rss < "$tmp/time.txt"
  echo "$n $wall $(python3 -c "print($user + $sys)") $rss"
}

# start_fake_github ISSUES WORK [FAKE_ARGS...]: starts the release fake GitHub (ISSUES issues over 2
# repositories; e.g. --page-delay-ms 50), adds its pid to PIDS, and sets URL and GH_TOKEN from its first line.
start_fake_github() {
  "$CARGO_TARGET_DIR/release/fake-github" "$1" 2 "${@:3}" > "$2/fake.json" &
  PIDS+=($!)
  for _ in $(seq 1 100); do [ -s "$2/fake.json" ] && break; sleep 0.1; done
  read -r URL GH_TOKEN < <(python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline()); print(d["url"], d["token"])' "$2/fake.json")
}

# peer_pid PID: the first process at or below PID that is not a wrapper (bash, env, GNU time,
# timeout), i.e. the measured tool itself, waiting up to 3 s for it to start; prints nothing
# when none appears. For sampling a peer's anonymous RSS (GNU time's own process is not it).
peer_pid() {
  local p=$1 c
  for _ in $(seq 1 300); do
    case "$(cat "/proc/$p/comm" 2>/dev/null)" in
      bash|env|time|timeout) ;;
      "") return 0 ;;
      *) echo "$p"; return 0 ;;
    esac
    c=$(pgrep -P "$p" | head -1)
    if [ -n "$c" ]; then p=$c; continue; fi
    sleep 0.01
  done
}

# start_silent_upstream WORK: a loopback upstream that accepts, keeps every connection open and
# never answers; it appends a line to WORK/accepted per connection. Sets UPSTREAM (a URL on it)
# and adds its pid to PIDS.
start_silent_upstream() {
  local work=$1
  python3 - "$work/upstream.port" "$work/accepted" <<'EOF' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(256)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
held = []
while True:
    c, _ = s.accept()
    held.append(c)
    with open(sys.argv[2], "a") as f:
        f.write("x\n")
EOF
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$work/upstream.port" ] && break; sleep 0.05; done
  UPSTREAM=http://127.0.0.1:$(cat "$work/upstream.port")/never
  : >"$work/accepted"
}
