#!/usr/bin/env bash
# Issue 14's benchmark: RUNS GitHub syncs (issues stream, ISSUES issues each over 2 repositories)
# against the fake GitHub answering each page after PAGE_DELAY_MS (upstream-bound, as in
# production), submitted round-robin to 1, 2 and 3 release `sluice serve` replicas that share one
# PostgreSQL (scripts/postgres.sh, pg_stat_statements loaded) and write Parquet to Garage, each
# with SLUICE_MAX_CONCURRENT_RUNS=2. Per cluster size it prints:
#   - wall time of the batch (first submission to last end seen) and the speedup over 1 replica;
#   - queue wait under that load: created_at → started_at of the batch's run records, p50/p99;
#   - claim latency on an idle cluster: CLAIM_RUNS short runs (the repositories stream) submitted
#     one at a time, created_at → started_at, p50/p99;
#   - database load: statements (pg_stat_statements calls in the cluster's own database, less the
#     bench's own list reads: one GET runs every 0.2 s) and committed transactions (pg_stat_database
#     xact_commit, those reads included) per run of the batch, the most frequent statements, and
#     statements per second while the replicas sit idle for IDLE_SECS (heartbeats, reaping).
#   scripts/bench-replicas.sh [runs] [issues] [page_delay_ms]      (defaults 30 5000 50)
# REPLICAS="1 2 3" picks the cluster sizes; SLUICE_BENCH_S3_PORT Garage's port (default 3900, started
# if nothing answers there); SLUICE_BENCH_PG_PORT PostgreSQL's (default 15432); SLUICE_BENCH_NO_BUILD=1 uses the
# binaries already built; CLAIM_RUNS (default 20), IDLE_SECS (default 10).
set -euo pipefail
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/bench-lib.sh"
cd "$SLUICE_ROOT"
RUNS=${1:-30}
ISSUES=${2:-5000}
DELAY_MS=${3:-50}
REPLICAS=${REPLICAS:-"1 2 3"}
CONCURRENT=2
CLAIM_RUNS=${CLAIM_RUNS:-20}
IDLE_SECS=${IDLE_SECS:-10}
S3_PORT=${SLUICE_BENCH_S3_PORT:-3900}
PG_PORT=${SLUICE_BENCH_PG_PORT:-15432}
BASE_PORT=18090
TOKEN=bench-token-0123456789

if [ -z "${SLUICE_BENCH_NO_BUILD:-}" ]; then
  bash scripts/build-plugins.sh >&2
  cargo build --release --quiet -p sluice --bin sluice -p sluice-tests --bin fake-github
fi
# A Garage already answering on S3_PORT (e.g. one started for the tests) is used as it is.
if ! curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"; then
  GARAGE_BIN=$GARAGE_ROOT/bin/garage bash scripts/garage.sh "$SLUICE_CACHE/garage-data" "$S3_PORT" >/dev/null
fi

WORK=$(mktemp -d)
chmod 755 "$WORK"   # PostgreSQL's own user must reach $WORK/pg
PIDS=()
SVCS=()
cleanup() {
  kill "${SVCS[@]}" "${PIDS[@]}" 2>/dev/null || true
  bash scripts/postgres.sh "$WORK/pg" stop 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
start_fake_github "$ISSUES" "$WORK" --page-delay-ms "$DELAY_MS"
bash scripts/postgres.sh "$WORK/pg" "$PG_PORT" >/dev/null
psql_super() { PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "$1"; }
mkdir -p "$WORK/plugins" && cp "$SLUICE_PLUGIN_OUT/github.wasm" "$WORK/plugins/"
SECRETS_KEY=$(openssl rand -hex 32)
REPOS='["acme/repo-0", "acme/repo-1"]'
STORAGE='{"bucket":"sluice-test","prefix":"bench-replicas/'$(date +%s%N)'","access_key_id":"GK5106e0a2b1c8d0e7a3f4b5c6",
  "secret_access_key":"5c1ce0a7e5c2e4b1d8f9a6b3c0d7e4f1a8b5c2d9e6f3a0b7c4d1e8f5a2b9c6d3"}'
cat > "$WORK/sync.json" <<JSON
{"connection_id":"{connection}","connector":"github","streams":["issues"],
 "config":{"api_url":"$URL","repositories":$REPOS},"credentials":{"token":"$GH_TOKEN"},"storage":$STORAGE}
JSON
cat > "$WORK/short.json" <<JSON
{"connection_id":"{connection}","connector":"github","streams":["repositories"],
 "config":{"api_url":"$URL","repositories":$REPOS},"credentials":{"token":"$GH_TOKEN"},"storage":$STORAGE}
JSON

stats() {  # DB: "statements xact_commit" so far
  echo "$(psql_super "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '$1'") \
$(psql_super "SELECT xact_commit FROM pg_stat_database WHERE datname = '$1'")"
}

echo "$RUNS syncs of $ISSUES issues, pages after $DELAY_MS ms, SLUICE_MAX_CONCURRENT_RUNS=$CONCURRENT per replica (load $(cut -d' ' -f1-3 /proc/loadavg))"
for N in $REPLICAS; do
  DB=bench_n$N
  psql_super "DROP DATABASE IF EXISTS $DB" && psql_super "CREATE DATABASE $DB OWNER sluice"
  PORTS=()
  SVCS=()
  for i in $(seq 0 $((N - 1))); do
    port=$((BASE_PORT + i))
    PORTS+=("$port")
    mkdir -p "$WORK/n$N/r$i"
    CONNECT_SERVICE_TOKEN=$TOKEN PORT=$port SLUICE_DATA_DIR=$WORK/n$N/r$i PLUGINS_DIR=$WORK/plugins \
      SLUICE_ALLOW_PRIVATE_ADDRESSES=loopback S3_ENDPOINT=http://127.0.0.1:$S3_PORT RUST_LOG=${RUST_LOG:-warn} \
      DATABASE_URL=postgres://sluice:sluice@127.0.0.1:$PG_PORT/$DB SLUICE_RUN_SECRETS_KEY=$SECRETS_KEY \
      SLUICE_REPLICA_ID=r$i SLUICE_MAX_CONCURRENT_RUNS=$CONCURRENT SLUICE_MAX_QUEUED_RUNS=$((RUNS + 8)) \
      "$CARGO_TARGET_DIR/release/sluice" serve > "$WORK/n$N/r$i.log" 2>&1 &
    SVCS+=($!)
  done
  for port in "${PORTS[@]}"; do
    for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$port/ready" >/dev/null || { tail -20 "$WORK"/n"$N"/r*.log >&2; exit 1; }
  done
  PORT_LIST=$(IFS=,; echo "${PORTS[*]}")
  # Warm-up (the fake renders its pages once), not counted.
  python3 scripts/bench/replicas.py claim "$WORK/warmup.json" "$TOKEN" "$PORT_LIST" "$WORK/sync.json" 1

  psql_super "SELECT pg_stat_statements_reset()" >/dev/null
  sleep 1.5   # pg_stat_database is flushed about once a second
  read -r q0 x0 < <(stats "$DB")
  python3 scripts/bench/replicas.py load "$WORK/load-$N.json" "$TOKEN" "$PORT_LIST" "$WORK/sync.json" "$RUNS"
  sleep 1.5
  read -r q1 x1 < <(stats "$DB")
  echo "replicas=$N: statements of the batch by calls (the bench's GET runs polls included):" >> "$WORK/top.txt"
  psql_super "SELECT calls, left(regexp_replace(query, '\s+', ' ', 'g'), 110) FROM pg_stat_statements s
    JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '$DB' ORDER BY calls DESC LIMIT 8" | sed 's/^/  /' >> "$WORK/top.txt"

  psql_super "SELECT pg_stat_statements_reset()" >/dev/null
  sleep "$IDLE_SECS"
  read -r qi _ < <(stats "$DB")

  python3 scripts/bench/replicas.py claim "$WORK/claim-$N.json" "$TOKEN" "$PORT_LIST" "$WORK/short.json" "$CLAIM_RUNS"
  kill -TERM "${SVCS[@]}" 2>/dev/null || true
  for p in "${SVCS[@]}"; do wait "$p" 2>/dev/null || true; done
  SVCS=()
  python3 - "$WORK" "$N" "$RUNS" "$q0" "$q1" "$x0" "$x1" "$qi" "$IDLE_SECS" >> "$WORK/summary.txt" <<'EOF'
import collections, json, re, sys
from datetime import datetime
work, n, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
q0, q1, x0, x1, qi, idle = (float(a) for a in sys.argv[4:10])

def ts(s):
    # RFC 3339 with up to nanoseconds: keep microseconds for datetime.
    s = re.sub(r"(\.\d{6})\d+", r"\1", s.replace("Z", "+00:00"))
    return datetime.fromisoformat(s).timestamp()

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")

load = json.load(open(f"{work}/load-{n}.json"))
claim = json.load(open(f"{work}/claim-{n}.json"))
recs = load["runs"]
ok = sum(r["status"] == "succeeded" for r in recs)
retried = sum((r.get("attempts") or 1) > 1 for r in recs)
wait = [ts(r["started_at"]) - ts(r["created_at"]) for r in recs if r.get("started_at")]
lat = [ts(r["started_at"]) - ts(r["created_at"]) for r in claim["runs"] if r.get("started_at")]
rows = sum(r["streams"].get("issues", {}).get("committed_rows", 0) for r in recs)
per = collections.Counter(r.get("replica") or "?" for r in recs)
print(json.dumps({
    "replicas": n, "ok": ok, "runs": runs, "retried": retried, "wall_s": load["wall_s"], "rows": rows,
    "wait_p50_ms": pct(wait, 50) * 1e3, "wait_p99_ms": pct(wait, 99) * 1e3,
    "claim_p50_ms": pct(lat, 50) * 1e3, "claim_p99_ms": pct(lat, 99) * 1e3, "claim_n": len(lat),
    "stmts_per_run": (q1 - q0 - load["polls"]) / runs, "polls": load["polls"], "xact_per_run": (x1 - x0) / runs, "idle_stmts_per_s": qi / idle,
    "per_replica": dict(sorted(per.items())),
}))
EOF
  tail -1 "$WORK/summary.txt"
done

echo; cat "$WORK/top.txt"
python3 - "$WORK/summary.txt" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = next((r["wall_s"] for r in rows if r["replicas"] == 1), None)
print()
print("replicas  ok     wall s  speedup  queue wait p50/p99 ms  idle claim p50/p99 ms  stmts/run  xact/run  idle stmts/s  runs per replica")
print("                                                                                     (less polls)")
for r in rows:
    speed = f"{base / r['wall_s']:.2f}x" if base else "-"
    print(f"{r['replicas']:>8}  {r['ok']:>2}/{r['runs']:<2} {r['wall_s']:>7.1f}  {speed:>7}  "
          f"{r['wait_p50_ms']:>9.0f} / {r['wait_p99_ms']:<9.0f}  {r['claim_p50_ms']:>9.1f} / {r['claim_p99_ms']:<9.1f}  "
          f"{r['stmts_per_run']:>9.1f}  {r['xact_per_run']:>8.1f}  {r['idle_stmts_per_s']:>12.1f}  {r['per_replica']}"
          + (f"  ({r['retried']} retried)" if r["retried"] else ""))
EOF
