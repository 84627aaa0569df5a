#!/usr/bin/env bash
# Builds the SDK example connectors (examples/{rust,python,js}-issues) into
# "$SLUICE_PLUGIN_OUT/{name}.wasm", with the SDKs of sdk/ and plugins/sdk. Called by
# scripts/build-plugins.sh. Idempotent: an example is rebuilt only when its inputs (its sources,
# its SDK, the WIT) change; a second run takes about a second.
#
# - The SDKs' copies of the WIT (sdk/python/src/sluice_sdk/wit/, sdk/js/wit/) are refreshed from
#   wit/connector.wit first, so the SDKs follow the world's version.
# - rust-issues: its own Cargo workspace outside plugins/, sluice-sdk by path; the same compiler
#   and flags as the plugins (Debian's rustc-web, build-std, wasm-component-ld).
# - python-issues: `sluice-py-build` of the Python SDK, pip-installed into a venv in the cache
#   (reinstalled when the SDK changes); it runs componentize-py 0.25.1.
# - js-issues: `sluice-js-build` of the JS SDK (npm ci from its package-lock.json by
#   install-toolchain.sh); esbuild bundles, componentize-js 0.23.0 builds.
set -euo pipefail
. "$(dirname "$0")/env.sh"
ROOT=$SLUICE_ROOT
WIT="$ROOT/wit/connector.wit"
mkdir -p "$SLUICE_PLUGIN_OUT"

write_if_changed() {
  local tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mkdir -p "$(dirname "$1")" && mv "$tmp" "$1"; fi
}
write_if_changed "$ROOT/sdk/python/src/sluice_sdk/wit/connector.wit" <"$WIT"
write_if_changed "$ROOT/sdk/js/wit/connector.wit" <"$WIT"

# A digest of files and directories (contents and names), ignoring build leftovers.
inputs_digest() {
  find "$@" -type f ! -path '*/node_modules/*' ! -path '*/__pycache__/*' ! -path '*/types/wit/*' \
    ! -name '*.wasm' ! -path '*/target/*' ! -name '*.egg-info' ! -path '*.egg-info/*' ! -path '*/build/*' -print0 |
    sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

# up_to_date NAME DIGEST: the output exists and was built from these inputs.
up_to_date() {
  [ -e "$SLUICE_PLUGIN_OUT/$1.wasm" ] && [ "$(cat "$SLUICE_PLUGIN_OUT/.$1.inputs" 2>/dev/null)" = "$2" ]
}
mark_built() { echo "$2" >"$SLUICE_PLUGIN_OUT/.$1.inputs"; }
# Replaced atomically: the host may be watching the directory.
install_wasm() { cmp -s "$1" "$SLUICE_PLUGIN_OUT/$2.wasm" || { cp "$1" "$SLUICE_PLUGIN_OUT/$2.wasm.tmp" && mv "$SLUICE_PLUGIN_OUT/$2.wasm.tmp" "$SLUICE_PLUGIN_OUT/$2.wasm"; }; }

# --- Rust: a crate outside the plugins workspace ------------------------------------------------
(
  . "$RUSTWEB/env.sh"
  export CARGO_TARGET_DIR="$SLUICE_CACHE/plugins-target"
  export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$RUSTWEB/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld"
  cd "$ROOT/examples/rust-issues"
  cargo build --release --locked --quiet
  install_wasm "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/rust_issues.wasm" rust-issues
)

# --- Python ------------------------------------------------------------------------------------
PY_VENV="$SLUICE_CACHE/sdk-python-venv"
sdk_py=$(inputs_digest "$ROOT/sdk/python")
if [ "$(cat "$PY_VENV/.installed" 2>/dev/null)" != "$sdk_py" ]; then
  rm -rf "$PY_VENV"
  python3 -m venv "$PY_VENV"
  "$PY_VENV/bin/pip" install --quiet --no-cache-dir "$ROOT/sdk/python"
  echo "$sdk_py" >"$PY_VENV/.installed"
fi
digest=$(inputs_digest "$ROOT/sdk/python" "$ROOT/examples/python-issues")
if ! up_to_date python-issues "$digest"; then
  start=$(date +%s)
  (cd "$ROOT/examples/python-issues" && PYTHONDONTWRITEBYTECODE=1 "$PY_VENV/bin/sluice-py-build" app.py -o "$SLUICE_CACHE/python-issues.wasm" >/dev/null)
  install_wasm "$SLUICE_CACHE/python-issues.wasm" python-issues
  mark_built python-issues "$digest"
  echo "python-issues built in $(($(date +%s) - start))s" >&2
fi

# --- JavaScript --------------------------------------------------------------------------------
digest=$(inputs_digest "$ROOT/sdk/js" "$ROOT/examples/js-issues")
if ! up_to_date js-issues "$digest"; then
  start=$(date +%s)
  (
    cd "$ROOT/examples/js-issues"
    npm ci --quiet --no-audit --no-fund >/dev/null
    node node_modules/.bin/sluice-js-build connector.js -o "$SLUICE_CACHE/js-issues.wasm" >/dev/null
  )
  install_wasm "$SLUICE_CACHE/js-issues.wasm" js-issues
  mark_built js-issues "$digest"
  echo "js-issues built in $(($(date +%s) - start))s" >&2
fi

# --- SDK test connectors (tests/fixtures/sdk-unflushed: records pushed, never flushed) ---------
FIX="$ROOT/tests/fixtures/sdk-unflushed"
digest=$(inputs_digest "$ROOT/sdk/python" "$FIX/app.py")
if ! up_to_date python-unflushed "$digest"; then
  (cd "$FIX" && PYTHONDONTWRITEBYTECODE=1 "$PY_VENV/bin/sluice-py-build" app.py -o "$SLUICE_CACHE/python-unflushed.wasm" >/dev/null)
  install_wasm "$SLUICE_CACHE/python-unflushed.wasm" python-unflushed
  mark_built python-unflushed "$digest"
fi
digest=$(inputs_digest "$ROOT/sdk/js" "$FIX/connector.js")
if ! up_to_date js-unflushed "$digest"; then
  # Built beside the example's node_modules (the SDK and its pinned build tools).
  [ -d "$ROOT/examples/js-issues/node_modules" ] ||
    (cd "$ROOT/examples/js-issues" && npm ci --quiet --no-audit --no-fund >/dev/null)
  work=$(mktemp -d "$SLUICE_CACHE/js-unflushed.XXXXXX")
  cp "$FIX/connector.js" "$work/"
  ln -s "$ROOT/examples/js-issues/node_modules" "$work/node_modules"
  (cd "$work" && node node_modules/.bin/sluice-js-build connector.js -o "$SLUICE_CACHE/js-unflushed.wasm" >/dev/null)
  rm -rf "$work"
  install_wasm "$SLUICE_CACHE/js-unflushed.wasm" js-unflushed
  mark_built js-unflushed "$digest"
fi

for name in rust-issues python-issues js-issues python-unflushed js-unflushed; do
  printf '  %-20s %8d bytes\n' "$name.wasm" "$(stat -c %s "$SLUICE_PLUGIN_OUT/$name.wasm")"
done
