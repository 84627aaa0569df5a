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
