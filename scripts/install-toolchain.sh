#!/usr/bin/env bash
# Installs, idempotently, what building and testing Sluice needs beyond rustup's Rust:
#   - Debian's rustc-web (wasm32 std sources + wasm-component-ld), unpacked into $RUSTWEB;
#   - DuckDB's prebuilt libduckdb.so into $DUCKDB_LIB_DIR;
#   - the chart tests' Python tools (pinned, PyPI) into a venv at $CHART_VENV (alone: --chart-tools);
#   - Debian's PostgreSQL 15 server ($PG_BIN) for the replica tests, which run private clusters
#     as the non-root user `postgres` the package creates (PostgreSQL refuses to run as root);
#   - with --garage: the Garage S3 server into $GARAGE_ROOT (about 12 minutes the first time).
set -euo pipefail
. "$(dirname "$0")/env.sh"
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$SLUICE_CACHE"

# scripts/test-chart.sh: Helm 4's Go SDK as a Python library (renders and lints the chart, no helm
# binary) and the Kubernetes API schemas. Reinstalled when the pins change.
CHART_VENV=${CHART_VENV:-$SLUICE_CACHE/chart-venv}
CHART_TOOLS="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0"
install_chart_tools() {
  [ "$(cat "$CHART_VENV/.installed" 2>/dev/null)" = "$CHART_TOOLS" ] && return 0
  rm -rf "$CHART_VENV"
  python3 -m venv "$CHART_VENV"
  "$CHART_VENV/bin/pip" install --quiet $CHART_TOOLS
  echo "$CHART_TOOLS" > "$CHART_VENV/.installed"
}
if [ "${1:-}" = --chart-tools ]; then
  install_chart_tools
  exit 0
fi

apt_ready() {
  [ -f "$SLUICE_CACHE/.apt-updated" ] && return 0
  apt-get update -q >/dev/null && touch "$SLUICE_CACHE/.apt-updated"
}

# The rust-web packages are pinned to one version so every machine builds the same plugins.
RUSTWEB_DEBS="rustc-web cargo-web rust-web-src rust-web-llvm libstd-rust-web-dev libstd-rust-web-1.96"
HOST_TRIPLE=x86_64-unknown-linux-gnu
if ! dpkg -s libllvm22 lld-22 libgit2-1.5 >/dev/null 2>&1; then
  apt_ready
  apt-get install -y -q libllvm22 lld-22 libgit2-1.5 >/dev/null
fi
# tests/src/postgres.rs starts a private cluster per test with these binaries (initdb, pg_ctl,
# postgres, psql); the package's own cluster service is not used (containers have no init to start it).
if [ ! -x "$PG_BIN/postgres" ]; then
  apt_ready
  apt-get install -y -q --no-install-recommends postgresql-15 postgresql-client-15 >/dev/null
fi
if ! id -u postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi
if [ ! -x "$RUSTWEB/usr/bin/rustc" ]; then
  apt_ready
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q $RUSTWEB_DEBS >/dev/null)
  rm -rf "$RUSTWEB.partial" && mkdir -p "$RUSTWEB.partial"
  for d in "$tmp"/*.deb; do dpkg -x "$d" "$RUSTWEB.partial"; done
  ln -sf /usr/bin/lld-22 "$RUSTWEB.partial/usr/bin/lld-22"
  ln -sf /usr/bin/lld-22 "$RUSTWEB.partial/usr/lib/rustlib/$HOST_TRIPLE/bin/rust-lld"
  rm -rf "$tmp" "$RUSTWEB" && mv "$RUSTWEB.partial" "$RUSTWEB"
fi
cat > "$RUSTWEB/env.sh" <<ENV
export PATH=$RUSTWEB/usr/bin:\$PATH
export LD_LIBRARY_PATH=$RUSTWEB/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export RUSTC_BOOTSTRAP=1
ENV

if [ ! -f "$DUCKDB_LIB_DIR/libduckdb.so" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q "@duckdb/node-bindings-linux-x64@$DUCKDB_VERSION" >/dev/null && tar xzf ./*.tgz)
  mkdir -p "$DUCKDB_LIB_DIR" && cp "$tmp/package/libduckdb.so" "$DUCKDB_LIB_DIR/"
  rm -rf "$tmp"
fi

install_chart_tools

# The JavaScript SDK's build tools (componentize-js 0.23.0, jco 1.34.0, wizer 10.0.0, esbuild; pinned
# in sdk/js/package-lock.json) into sdk/js/node_modules; again only when the lock file changes.
SDK_JS="$SLUICE_ROOT/sdk/js"
sdk_js_lock=$(sha256sum "$SDK_JS/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$SDK_JS/node_modules/.sluice-installed" 2>/dev/null)" != "$sdk_js_lock" ]; then
  (cd "$SDK_JS" && npm ci --quiet --no-audit --no-fund >/dev/null)
  echo "$sdk_js_lock" > "$SDK_JS/node_modules/.sluice-installed"
fi

if [ "${1:-}" = --garage ] && [ ! -x "$GARAGE_ROOT/bin/garage" ]; then
  echo "building garage 2.5.0 (one time, ~12 min)..." >&2
  cargo install garage --version 2.5.0 --locked --no-default-features \
    --features bundled-libs,sqlite --root "$GARAGE_ROOT" --target-dir "$SLUICE_CACHE/garage-build" -q
  rm -rf "$SLUICE_CACHE/garage-build"
fi
echo "toolchain ready: rustweb=$RUSTWEB duckdb=$DUCKDB_LIB_DIR postgres=$PG_BIN${1:+ garage=$GARAGE_ROOT}" >&2
