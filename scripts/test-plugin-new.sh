#!/usr/bin/env bash
# `sluice plugin new` as an author uses it: for each language (rust, python, js) a skeleton is
# written into a scratch directory outside the clone and built by running the commands of its
# README's Build section as written (Python: a fresh venv + pip install -r requirements.txt +
# `sluice plugin build`; JavaScript: npm install + `sluice plugin build`; Rust: the rustc-web
# environment of docs/sdk-rust.md, path/to/sluice being this checkout, + `sluice plugin build`,
# which runs cargo), then the README's
# `sluice plugin test` replays its own cassette, unchanged: exit 0, `items: 3 records`, the
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

# The fenced ```sh block under README heading $2 of skeleton $1, with the checkout's path for
# the placeholder path/to/sluice (the Rust recipe sources its env.sh).
readme_block() {
  python3 - "$1/README.md" "$2" "$SLUICE_ROOT" <<'PY'
import re, sys
text, heading, root = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
section = text.split("\n## " + heading, 1)[1].split("\n## ", 1)[0]
print(re.search(r"```sh\n(.*?)```", section, re.S).group(1).replace("path/to/sluice", root))
PY
}

# plugin new, then the README's build and test commands as written (`sluice` on PATH), then an
# incremental run: a second test into the same --out continues from the committed state.
skeleton() { # LANG
  local lang=$1 dir=$scratch/$1 log=$scratch/$1.log first second
  "$SLUICE" plugin new my-api --lang "$lang" --dir "$dir" >/dev/null
  (cd "$dir" && bash -euo pipefail -c "$(readme_block "$dir" Build)") >"$log" 2>&1 ||
    { tail -30 "$log" >&2; fail "$lang: the README's build commands failed"; }
  [ -s "$dir/my-api.wasm" ] || fail "$lang: no my-api.wasm after the README's build"
  first=$(cd "$dir" && bash -euo pipefail -c "$(readme_block "$dir" "Test (offline)")") ||
    { echo "$first" >&2; fail "$lang: the README's plugin test failed"; }
  python3 - "$first" <<'PY' || { echo "$first" >&2; fail "$lang: unexpected plugin test output"; }
import sys
out = sys.argv[1]
for want in [
    "plugin: my-api 0.1.0",
    'validate: ok {"account":"Example account"}',
    "discover: 1 stream(s)",
    'key ["id"]  cursor updated_at',
    'items: 3 records in 1 file(s), state {"since":"2026-01-03T09:30:00Z"}',
    '{"id":1,"name":"First item","updated_at":"2026-01-01T08:00:00Z",',
    '{"id":3,"updated_at":"2026-01-03T09:30:00Z",',
    "cassette: replayed from",
]:
    assert want in out, want
assert "not in the cassette" not in out
PY
  for key in any-value-12345 another-value-678; do
    second=$(cd "$dir" && "$SLUICE" plugin test my-api.wasm --config test/config.json \
      --secret "api_key=$key" --cassette test/cassette --out "$scratch/$lang-out") ||
      { echo "$second" >&2; fail "$lang: plugin test --out failed"; }
  done
  grep -qF 'items: 1 records in 1 file(s), state {"since":"2026-01-04T12:00:00Z"}' <<<"$second" ||
    { echo "$second" >&2; fail "$lang: the incremental run did not continue from ?since="; }
  echo "  $lang: built ($(stat -c %s "$dir/my-api.wasm") bytes); plugin test: 3 records, then 1 from ?since=" >&2
}

start=$(date +%s)
mkdir "$scratch/bin" && ln -s "$(realpath "$SLUICE")" "$scratch/bin/sluice"
export PATH=$scratch/bin:$PATH
# The Rust recipe's `source env.sh` keeps this: the skeleton shares the plugins' wasm std build.
export CARGO_TARGET_DIR=$SLUICE_CACHE/plugins-target
export PYTHONDONTWRITEBYTECODE=1
for lang in python js rust; do
  echo "$lang: plugin new, the README's build commands, its plugin test" >&2
  skeleton "$lang"
done
echo "plugin new: three skeletons built and tested in $(($(date +%s) - start))s" >&2
