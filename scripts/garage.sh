#!/usr/bin/env bash
# Starts (or stops) a single-node Garage S3 server on 127.0.0.1 for the storage tests.
#   scripts/garage.sh DATA_DIR PORT    start (idempotent); S3 on PORT, RPC on PORT+1, admin on PORT+2
#   scripts/garage.sh DATA_DIR stop
# Keys (fixed, test-only): a key with read/write on bucket "sluice-test", and a key with no rights on it.
set -euo pipefail
DATA=${1:?usage: garage.sh DATA_DIR PORT|stop}
PORT=${2:?usage: garage.sh DATA_DIR PORT|stop}
BIN=${GARAGE_BIN:-garage}
if [ "$PORT" = stop ]; then
  PID=$(cat "$DATA/garage.pid" 2>/dev/null) || exit 0
  kill "$PID" 2>/dev/null || exit 0
  for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || exit 0; sleep 0.1; done
  kill -9 "$PID" 2>/dev/null || true
  exit 0
fi
AK=GK5106e0a2b1c8d0e7a3f4b5c6
SK=5c1ce0a7e5c2e4b1d8f9a6b3c0d7e4f1a8b5c2d9e6f3a0b7c4d1e8f5a2b9c6d3
AK2=GK9f8e7d6c5b4a39281706f5e4
SK2=0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0
mkdir -p "$DATA/meta" "$DATA/data"
DATA=$(cd "$DATA" && pwd)
export GARAGE_CONFIG_FILE=$DATA/garage.toml RUST_LOG=${RUST_LOG_GARAGE:-garage=warn}
if [ ! -f "$DATA/rpc_secret" ]; then
  (umask 077; openssl rand -hex 32 > "$DATA/rpc_secret"; openssl rand -hex 16 > "$DATA/admin_token")
fi
cat > "$GARAGE_CONFIG_FILE" <<CFG
metadata_dir = "$DATA/meta"
data_dir = "$DATA/data"
db_engine = "sqlite"
replication_factor = 1
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:$((PORT + 1))"
rpc_public_addr = "127.0.0.1:$((PORT + 1))"
rpc_secret_file = "$DATA/rpc_secret"

[s3_api]
api_bind_addr = "127.0.0.1:$PORT"
s3_region = "us-east-1"

[admin]
api_bind_addr = "127.0.0.1:$((PORT + 2))"
admin_token_file = "$DATA/admin_token"
CFG
chmod 600 "$GARAGE_CONFIG_FILE"
if ! { [ -f "$DATA/garage.pid" ] && kill -0 "$(cat "$DATA/garage.pid")" 2>/dev/null; }; then
  # --single-node applies a one-node layout itself. The server outlives this script: it gets
  # none of the caller's descriptors but stdin/out/err. A benchmark runs under
  # `flock /tmp/sluice-bench.lock …`, whose lock is an open descriptor its children inherit: a
  # Garage started there held the lock for as long as it ran, and every later benchmark waited.
  (
    for fd in /proc/self/fd/*; do
      n=${fd##*/}
      [ "$n" -gt 2 ] && eval "exec $n>&-" 2>/dev/null
    done
    exec nohup "$BIN" server --single-node >> "$DATA/garage.log" 2>&1
  ) &
  echo $! > "$DATA/garage.pid"
fi
for _ in $(seq 1 300); do
  "$BIN" status >/dev/null 2>&1 && break
  kill -0 "$(cat "$DATA/garage.pid")" 2>/dev/null || { echo "garage died:" >&2; tail -20 "$DATA/garage.log" >&2; exit 1; }
  sleep 0.1
done
for _ in $(seq 1 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((PORT + 2))/health")" = 200 ] && break
  sleep 0.1
done
# Right after start, admin calls may answer "Layout not ready": retry.
retry() { for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; "$@"; }
key() { "$BIN" key info "$1" >/dev/null 2>&1 || "$BIN" key import --yes -n "$3" "$1" "$2"; }
bucket() { { "$BIN" bucket info "$1" >/dev/null 2>&1 || "$BIN" bucket create "$1"; } && "$BIN" bucket allow --read --write --owner "$1" --key "$2"; }
retry key "$AK" "$SK" sluice-test
retry key "$AK2" "$SK2" sluice-noperm
retry bucket sluice-test "$AK"
retry bucket sluice-other "$AK2"
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
echo "garage ready on http://127.0.0.1:$PORT (bucket sluice-test)"
