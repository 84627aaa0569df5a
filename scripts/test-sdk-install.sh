#!/usr/bin/env bash
# "A stranger installs the SDK without our repo": in scratch directories outside the clone,
#   - Python: a fresh venv, `pip install sdk/python`, the example app copied alone, built with
#     `sluice-py-build`;
#   - JavaScript: `npm pack` of sdk/js, a fresh npm project installing that tarball (its pinned
#     tools come from npm), the example copied alone, type-checked (tsc --strict --checkJs against
#     the SDK's .d.ts) and built with `npx sluice-js-build`;
#   - Rust: the example crate copied alone, sluice-sdk as a path dependency on plugins/sdk, built
#     with the documented recipe (docs/sdk-rust.md);
# then each component is checked with `sluice plugin inspect` (its manifest id, world version and
# that it imports no wasi:http). Part of scripts/dev.sh test (about a minute warm).
set -euo pipefail
. "$(dirname "$0")/env.sh"
ROOT=$SLUICE_ROOT
SLUICE=${SLUICE_BIN:-$CARGO_TARGET_DIR/debug/sluice}
scratch=$(mktemp -d /tmp/sluice-sdk-install.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
version=$(sed -n 's/^package sluice:connector@\(.*\);/\1/p' "$ROOT/wit/connector.wit")

check() { # FILE ID
  local report
  report=$("$SLUICE" plugin inspect "$1")
  python3 - "$2" "$version" "$report" <<'EOF'
import json, sys
want_id, want_version, report = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
assert report["manifest"]["id"] == want_id, report["manifest"]["id"]
assert report["wit_version"] == want_version, (report["wit_version"], want_version)
assert not [i for i in report["imports"] if i.startswith("wasi:http")], report["imports"]
print(f"  {want_id}: {report['size']} bytes, sluice:connector@{report['wit_version']}")
EOF
}

start=$(date +%s)
echo "python: pip install sdk/python into a fresh venv, build the example outside the repo" >&2
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install --quiet "$ROOT/sdk/python"
mkdir "$scratch/py" && cp "$ROOT/examples/python-issues/app.py" "$scratch/py/"
(cd "$scratch/py" && "$scratch/venv/bin/sluice-py-build" app.py -o python-issues.wasm >/dev/null)
check "$scratch/py/python-issues.wasm" python-issues

echo "javascript: npm pack sdk/js, install the tarball in a fresh project, build the example" >&2
(cd "$ROOT/sdk/js" && npm pack --quiet --pack-destination "$scratch" >/dev/null)
mkdir "$scratch/js" && cp "$ROOT/examples/js-issues/connector.js" "$scratch/js/"
(
  cd "$scratch/js"
  npm init -y >/dev/null
  npm pkg set type=module
  npm install --quiet --no-audit --no-fund "$scratch"/sluice-connector-sdk-*.tgz typescript@5.9.3 >/dev/null 2>&1
  npx tsc --noEmit --allowJs --checkJs --strict --module nodenext --moduleResolution nodenext --target es2022 connector.js
  npx sluice-js-build connector.js -o js-issues.wasm >/dev/null
)
check "$scratch/js/js-issues.wasm" js-issues

echo "rust: the example crate alone, sluice-sdk by path, the documented build recipe" >&2
cp -r "$ROOT/examples/rust-issues" "$scratch/rs"
sed -i "s#^sluice-sdk = { path = .*#sluice-sdk = { path = \"$ROOT/plugins/sdk\" }#" "$scratch/rs/Cargo.toml"
(
  . "$RUSTWEB/env.sh"
  cd "$scratch/rs"
  CARGO_TARGET_DIR="$SLUICE_CACHE/plugins-target" \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$RUSTWEB/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld" \
    cargo build --release --locked --quiet
)
check "$SLUICE_CACHE/plugins-target/wasm32-unknown-unknown/release/rust_issues.wasm" rust-issues
echo "SDKs installed and built outside the repository in $(($(date +%s) - start))s" >&2
