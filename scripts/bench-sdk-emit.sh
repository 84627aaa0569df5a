#!/usr/bin/env bash
# Emit throughput of each SDK's example connector (issue 13's benchmark): the examples of
# examples/{rust,python,js}-issues sync N issues from the fake GitHub through `sluice run`
# (release) into a local directory; the compiled artifact is cached by a first run, then each
# round is a `--full-refresh` run. Prints records/s (wall) and CPU seconds (user+sys) per round.
#   scripts/bench-sdk-emit.sh [issues] [rounds]
set -euo pipefail
. "$(dirname "$0")/env.sh"
issues=${1:-20000}
rounds=${2:-3}
cd "$SLUICE_ROOT"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet -p sluice --bin sluice -p sluice-tests --bin fake-github
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
trap 'kill "$fake" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin/fake-github" "$issues" 2 > "$work/fake.json" &
fake=$!
until [ -s "$work/fake.json" ]; do sleep 0.2; done
url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$work/fake.json")
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$work/fake.json")
echo "{\"api_url\": \"$url\", \"repositories\": [\"acme/repo-0\", \"acme/repo-1\"]}" > "$work/cfg.json"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-14s %6s %10s %10s %8s\n' example round records records/s cpu_s
for ex in rust-issues python-issues js-issues; do
  wasm="$SLUICE_PLUGIN_OUT/$ex.wasm"
  out="$work/out-$ex"
  run() {
    /usr/bin/time -f '%e %U %S' -o "$work/time" "$bin/sluice" run "$wasm" --config "$work/cfg.json" \
      --secret "token=$token" --out "$out" --allow-private-addresses loopback "$@" > "$work/run.log" 2>&1
  }
  run   # compiles and caches the artifact; not counted
  for r in $(seq 1 "$rounds"); do
    run --full-refresh
    read -r wall user sys < "$work/time"
    rows=$(awk '$1 == "issues" { print $2 }' "$work/run.log")
    awk -v ex="$ex" -v r="$r" -v n="$rows" -v w="$wall" -v u="$user" -v s="$sys" \
      'BEGIN { printf "%-14s %6d %10d %10.0f %8.2f\n", ex, r, n, n / w, u + s }'
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
