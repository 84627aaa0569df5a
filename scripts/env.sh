# Sourced by the other scripts: one place for every cache path and build variable.
# Caches live outside the clone so that a fresh clone (and CI) reuses compiled work.
SLUICE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export SLUICE_ROOT
export SLUICE_CACHE=${SLUICE_CACHE:-/var/cache/sluice}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$SLUICE_CACHE/target}
# Debian's rustc-web, unpacked privately: builds the wasm plugins (rustup has no wasm target here).
export RUSTWEB=${RUSTWEB:-$SLUICE_CACHE/rustweb}
# DuckDB's official prebuilt shared library (from its npm package), linked by the tests' `duckdb` crate
# (they read the committed Parquet with DuckDB; the service itself does not link it).
export DUCKDB_VERSION=1.5.6-r.1
export DUCKDB_LIB_DIR=${DUCKDB_LIB_DIR:-$SLUICE_CACHE/duckdb-$DUCKDB_VERSION}
export LD_LIBRARY_PATH=$DUCKDB_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# Garage: a real S3-compatible server for the storage tests (a test tool, never linked).
export GARAGE_ROOT=${GARAGE_ROOT:-$SLUICE_CACHE/garage-2.5.0}
# Where scripts/build-plugins.sh puts every built component; tests and `serve` load from here.
export SLUICE_PLUGIN_OUT=${SLUICE_PLUGIN_OUT:-$SLUICE_CACHE/plugins}
# Debian's PostgreSQL server (package postgresql-15): the replica tests start private clusters with it.
export PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
