#!/usr/bin/env bash
# Starts (or stops) a private PostgreSQL cluster on 127.0.0.1 with Debian's server ($PG_BIN), for
# benchmarks and manual runs of shared mode (the tests start their own: tests/src/postgres.rs).
#   scripts/postgres.sh DATA_DIR PORT    start (idempotent); prints the service's DATABASE_URL
#   scripts/postgres.sh DATA_DIR stop
# Trust authentication on loopback only, fsync off (a scratch cluster), pg_stat_statements loaded.
# The service's role/database: sluice/sluice (password sluice). As root, the cluster runs as the
# user `postgres` (PostgreSQL refuses root), so DATA_DIR's parent must be reachable by it.
set -euo pipefail
. "$(dirname "$0")/env.sh"
DATA=${1:?usage: postgres.sh DATA_DIR PORT|stop}
PORT=${2:?usage: postgres.sh DATA_DIR PORT|stop}
as_pg() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u "${SLUICE_PG_USER:-postgres}" -- "$@"); else "$@"; fi
}
if [ "$PORT" = stop ]; then
  [ -f "$DATA/data/postmaster.pid" ] || exit 0
  as_pg "$PG_BIN/pg_ctl" -D "$DATA/data" -m fast -w -t 60 stop >/dev/null
  exit 0
fi
mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)
[ "$(id -u)" = 0 ] && chown "${SLUICE_PG_USER:-postgres}:" "$DATA"
if [ ! -f "$DATA/data/PG_VERSION" ]; then
  as_pg "$PG_BIN/initdb" -D "$DATA/data" -A trust -U postgres -E UTF8 --locale=C -N --no-instructions >/dev/null
  cat >> "$DATA/data/postgresql.conf" <<CONF
# scripts/postgres.sh
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DATA'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
CONF
fi
if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA/data" status >/dev/null 2>&1; then
  as_pg "$PG_BIN/pg_ctl" -D "$DATA/data" -l "$DATA/server.log" -w -t 60 start >/dev/null
fi
psql_super() { PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres "$@"; }
if [ "$(psql_super -c "SELECT 1 FROM pg_roles WHERE rolname = 'sluice'")" != 1 ]; then
  psql_super -c "CREATE ROLE sluice LOGIN PASSWORD 'sluice'" -c "CREATE DATABASE sluice OWNER sluice"
fi
psql_super -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
echo "postgres://sluice:sluice@127.0.0.1:$PORT/sluice"
