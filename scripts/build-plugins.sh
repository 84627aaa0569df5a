#!/usr/bin/env bash
# Builds every connector of the plugins/ workspace into a WebAssembly component and copies it to
# "$SLUICE_PLUGIN_OUT/<crate-name>.wasm" (probe.wasm, http-json.wasm, ...). Idempotent: a second
# run rebuilds nothing and leaves unchanged outputs untouched.
#
# Plugins build for wasm32-unknown-unknown with Debian's rustc-web (installed by
# install-toolchain.sh), std built from source (plugins/.cargo/config.toml), and
# wasm-component-ld as the linker: its output is already a component importing only the world.
set -euo pipefail
. "$(dirname "$0")/env.sh"
"$SLUICE_ROOT/scripts/install-toolchain.sh"
. "$RUSTWEB/env.sh"

# Never the host's target dir: another compiler, another target.
export CARGO_TARGET_DIR="$SLUICE_CACHE/plugins-target"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$RUSTWEB/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld"
PLUGINS="$SLUICE_ROOT/plugins"
WIT="$SLUICE_ROOT/wit/connector.wit"

# Writes stdin to $1 only if the content differs, so cargo sees no change otherwise.
write_if_changed() {
  local tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mkdir -p "$(dirname "$1")" && mv "$tmp" "$1"; fi
}

# The two negative-test components carry their own copy of the WIT, derived from the real one:
# wrong-world's package version is one no host serves (9.0.0; the host serves 0.1.x and 0.2.x).
sed 's/^package sluice:connector@[0-9.]*;/package sluice:connector@9.0.0;/' "$WIT" |
  write_if_changed "$PLUGINS/testing/wrong-world/wit/connector.wit"
sed 's/^world connector-plugin {/&\n    import evil:backdoor\/shell@0.1.0;/' "$WIT" |
  write_if_changed "$PLUGINS/testing/extra-import/wit/connector.wit"
grep -q '^package sluice:connector@9.0.0;' "$PLUGINS/testing/wrong-world/wit/connector.wit"
grep -q 'import evil:backdoor/shell@0.1.0;' "$PLUGINS/testing/extra-import/wit/connector.wit"

cd "$PLUGINS"
start=$(date +%s)
cargo build --release --locked --workspace
echo "plugins built in $(($(date +%s) - start))s" >&2

# Every cdylib crate of the workspace is a component; the SDK is a library.
mkdir -p "$SLUICE_PLUGIN_OUT"
out="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release"
built=()
for manifest in */Cargo.toml testing/*/Cargo.toml; do
  grep -q '^crate-type = \["cdylib"\]' "$manifest" || continue
  name=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -n1)
  src="$out/${name//-/_}.wasm"
  dst="$SLUICE_PLUGIN_OUT/$name.wasm"
  # A component starts with \0asm, then version 0x0d 0x00 and layer 0x01 0x00.
  if [ "$(head -c 8 "$src" | od -An -tx1 | tr -d ' \n')" != 0061736d0d000100 ]; then
    echo "error: $src is not a WebAssembly component" >&2
    exit 1
  fi
  # Replaced atomically: the host may be watching the directory.
  cmp -s "$src" "$dst" || { cp "$src" "$dst.tmp" && mv "$dst.tmp" "$dst"; }
  built+=("$dst")
done
# Python guests (plugins/python-*/app.py), built with componentize-py from PyPI: they show that
# components of other toolchains (WASI p2 imports) load. Rebuilt only when app.py or the WIT change.
CPY_VERSION=0.25.1
CPY_VENV="$SLUICE_CACHE/componentize-py-$CPY_VERSION"
if [ ! -e "$CPY_VENV/.installed" ]; then
  rm -rf "$CPY_VENV"
  python3 -m venv "$CPY_VENV"
  "$CPY_VENV/bin/pip" install --quiet "componentize-py==$CPY_VERSION"
  touch "$CPY_VENV/.installed"
fi
for app in "$PLUGINS"/python-*/app.py; do
  [ -e "$app" ] || continue
  dir=$(dirname "$app")
  dst="$SLUICE_PLUGIN_OUT/$(basename "$dir").wasm"
  if [ ! -e "$dst" ] || [ "$app" -nt "$dst" ] || [ "$WIT" -nt "$dst" ]; then
    (cd "$dir" && PYTHONDONTWRITEBYTECODE=1 "$CPY_VENV/bin/componentize-py" -d "$SLUICE_ROOT/wit" \
      -w connector-plugin componentize app -o "$dst.tmp" >/dev/null)
    mv "$dst.tmp" "$dst"
  fi
  built+=("$dst")
done

echo "components in $SLUICE_PLUGIN_OUT:"
for f in "${built[@]}"; do
  printf '  %-20s %8d bytes\n' "$(basename "$f")" "$(stat -c %s "$f")"
done

# The SDK examples (examples/*-issues: Rust outside this workspace, Python, JavaScript).
bash "$SLUICE_ROOT/scripts/build-sdk-examples.sh"
