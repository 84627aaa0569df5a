#!/usr/bin/env bash
# `sluice plugin new` as an author uses it: for each language (rust, python, js) a skeleton is
# written into a scratch directory outside the clone, built with the commands its README gives
# (Python: a fresh venv + pip install -r requirements.txt + `sluice plugin build`; JavaScript:
# npm install + `sluice plugin build`; Rust: cargo with the rustc-web recipe of docs/sdk-rust.md),
# then `sluice plugin test` replays its own cassette, unchanged: exit 0, `items: 3 records`, the
# committed cursor; a second test into the same --out continues from that state (`?since=`, 1
# record). Also: a bad id and a non-empty directory are refused. Part of scripts/dev.sh test;
# shares the pip/npm caches and $SLUICE_CACHE/plugins-target with scripts/test-sdk-install.sh.
set -euo pipefail
. "$(dirname "$0")/env.sh"
SLUICE=${SLUICE_BIN:-$CARGO_TARGET_DIR/debug/sluice}
scratch=$(mktemp -d /tmp/sluice-plugin-new.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export RUST_BACKTRACE=0

fail() { echo "test-plugin-new: $*" >&2; exit 1; }

# Refusals: no files written, exit non-zero, a reason.
if out=$("$SLUICE" plugin new My_Api --lang js --dir "$scratch/bad" 2>&1); then fail "bad id accepted"; fi
grep -q "is not a connector id" <<<"$out" || fail "bad id: $out"
[ ! -e "$scratch/bad" ] || fail "bad id wrote files"
mkdir "$scratch/full" && touch "$scratch/full/keep"
if out=$("$SLUICE" plugin new my-api --lang js --dir "$scratch/full" 2>&1); then fail "non-empty dir accepted"; fi
grep -q "exists and is not empty" <<<"$out" || fail "non-empty dir: $out"

check() { # LANG DIR WASM
  local lang=$1 dir=$2 wasm=$3 first second
  [ -s "$wasm" ] || fail "$lang: no $wasm"
  # The README's test command, run as written (cwd = the skeleton).
  first=$(cd "$dir" && "$SLUICE" plugin test "$wasm" --config test/config.json \
    --secret api_key=any-value-12345 --cassette test/cassette --out "$scratch/$lang-out" --show 3) ||
    { echo "$first" >&2; fail "$lang: plugin test failed"; }
  python3 - "$lang" "$first" <<'PY' || { echo "$first" >&2; fail "$lang: unexpected first test output"; }
import sys
lang, out = sys.argv[1], sys.argv[2]
assert "plugin: my-api 0.1.0" in out, "plugin line"
assert 'validate: ok {"account":"Example account"}' in out, "validate"
assert "discover: 1 stream(s)" in out and 'key ["id"]  cursor updated_at' in out, "discover"
assert 'items: 3 records in 1 file(s), state {"since":"2026-01-03T09:30:00Z"}' in out, "sync"
assert '{"id":3,"updated_at":"2026-01-03T09:30:00Z"}' in out or '"id":3' in out, "records"
assert "cassette: not in the cassette" not in out, "miss"
PY
  second=$(cd "$dir" && "$SLUICE" plugin test "$wasm" --config test/config.json \
    --secret api_key=another-value-678 --cassette test/cassette --out "$scratch/$lang-out") ||
    { echo "$second" >&2; fail "$lang: incremental plugin test failed"; }
  grep -qF 'items: 1 records in 1 file(s), state {"since":"2026-01-04T12:00:00Z"}' <<<"$second" ||
    { echo "$second" >&2; fail "$lang: incremental run"; }
  echo "  $lang: built ($(stat -c %s "$wasm") bytes), plugin test: 3 records, then 1 from ?since=" >&2
}

start=$(date +%s)
cd "$scratch"
echo "python: plugin new, venv + pip install -r requirements.txt, plugin build, plugin test" >&2
"$SLUICE" plugin new my-api --lang python --dir py >/dev/null
(
  cd py
  python3 -m venv .venv
  .venv/bin/pip install --quiet -r requirements.txt
  PYTHONDONTWRITEBYTECODE=1 "$SLUICE" plugin build . -o my-api.wasm 2>/dev/null >/dev/null
)
check python "$scratch/py" "$scratch/py/my-api.wasm"

echo "javascript: plugin new, npm install, plugin build, plugin test" >&2
"$SLUICE" plugin new my-api --lang js --dir js >/dev/null
(
  cd js
  npm install --quiet --no-audit --no-fund >/dev/null 2>&1
  "$SLUICE" plugin build . -o my-api.wasm 2>/dev/null >/dev/null
)
check js "$scratch/js" "$scratch/js/my-api.wasm"

echo "rust: plugin new, cargo build (docs/sdk-rust.md recipe), plugin test" >&2
"$SLUICE" plugin new my-api --lang rust --dir rs >/dev/null
(
  . "$RUSTWEB/env.sh"
  cd rs
  CARGO_TARGET_DIR="$SLUICE_CACHE/plugins-target" \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$RUSTWEB/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld" \
    cargo build --release --quiet
  cp "$SLUICE_CACHE/plugins-target/wasm32-unknown-unknown/release/my_api.wasm" my-api.wasm
)
check rust "$scratch/rs" "$scratch/rs/my-api.wasm"
echo "plugin new: three skeletons built and tested in $(($(date +%s) - start))s" >&2
