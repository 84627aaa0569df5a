#!/usr/bin/env bash
# Issue 13 item 7: how soon a plugin is live after it lands in PLUGINS_DIR, per language.
# Components: github.wasm (Rust), python-hello.wasm (Python, componentize-py) and every other
# .wasm of $SLUICE_PLUGIN_OUT built by componentize-js (JavaScript; found by its StarlingMonkey
# engine's name in the bytes). For each, medians of ROUNDS (default 3):
#   size;
#   drop → listed: a release `sluice serve` runs; the file is copied beside PLUGINS_DIR under a
#     hidden name and renamed in (as an operator's copy or a Kubernetes ..data swap makes it
#     appear); the time until GET /internal/connectors lists it (baseline code), and until it
#     lists it as `tier: optimized` (the background compile swapped in). Its cached artifacts
#     are removed between rounds, so that every round is a first load;
#   all at once: every component renamed in together, until all are listed;
#   cold load per tier, cached load, instantiate + manifest call: in-process figures of
#     tests/src/bin/bench-plugin-load.rs (one process per measurement; a cold load is compile +
#     link + manifest call with an empty cache; the cached load reads the optimized artifact).
#   scripts/bench-plugin-load.sh [rounds]      SKIP_BUILD=1 uses the binaries as they are
# The machine is shared: `uptime` is printed before and after; compare figures of one run only.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$SLUICE_ROOT"
ROUNDS=${1:-3}
BIN=${SLUICE_BIN:-$CARGO_TARGET_DIR/release/sluice}
LOADER=$CARGO_TARGET_DIR/release/bench-plugin-load
if [ -z "${SKIP_BUILD:-}" ]; then
  [ -s "$SLUICE_PLUGIN_OUT/python-hello.wasm" ] || bash scripts/build-plugins.sh >&2
  cargo build --release --quiet -p sluice --bin sluice -p sluice-tests --bin bench-plugin-load
fi

# name:language:file
COMPONENTS=("github:Rust:$SLUICE_PLUGIN_OUT/github.wasm" "python-hello:Python:$SLUICE_PLUGIN_OUT/python-hello.wasm")
for f in "$SLUICE_PLUGIN_OUT"/*.wasm; do
  if grep -q -a -m1 StarlingMonkey "$f"; then
    COMPONENTS+=("$(basename "$f" .wasm):JavaScript:$f")
  fi
done

WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=${SLUICE_BENCH_PORT:-18097}
TOKEN=bench-token-0123456789
mkdir -p "$WORK/plugins" "$WORK/data"
CONNECT_SERVICE_TOKEN=$TOKEN PORT=$PORT SLUICE_DATA_DIR=$WORK/data PLUGINS_DIR=$WORK/plugins \
  RUST_LOG=${RUST_LOG:-info} "$BIN" serve > "$WORK/service.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done

echo "before: $(uptime)"
# drop FILE...: renames the files into PLUGINS_DIR together, polls the listing every 10 ms;
# prints "listed_s optimized_s" (the last file's), then removes them and their cached artifacts.
drop() {
  python3 - "$PORT" "$TOKEN" "$WORK/plugins" "$WORK/data/cache" "$@" <<'EOF'
import hashlib, json, os, shutil, sys, time, urllib.request
port, token, plugins, cache, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
shas = {hashlib.sha256(open(f, "rb").read()).hexdigest(): os.path.basename(f) for f in files}
def listing():
    req = urllib.request.Request(f"http://127.0.0.1:{port}/internal/connectors",
                                 headers={"x-connect-service-token": token})
    with urllib.request.urlopen(req) as r:
        return {c["sha256"]: c["tier"] for c in json.load(r)["connectors"]}
for f in files:
    shutil.copy(f, os.path.join(plugins, "." + os.path.basename(f) + ".tmp"))
t0 = time.monotonic()
for f in files:
    n = os.path.basename(f)
    os.rename(os.path.join(plugins, "." + n + ".tmp"), os.path.join(plugins, n))
listed = optimized = None
while optimized is None:
    now = listing()
    if listed is None and all(s in now for s in shas):
        listed = time.monotonic() - t0
    if all(now.get(s) == "optimized" for s in shas):
        optimized = time.monotonic() - t0
    if time.monotonic() - t0 > 600:
        sys.exit("not listed as optimized within 600 s")
    time.sleep(0.01)
print(f"{listed:.3f} {optimized:.3f}")
for f in files:
    os.remove(os.path.join(plugins, os.path.basename(f)))
while any(s in listing() for s in shas):
    time.sleep(0.05)
for name in os.listdir(cache):
    if name[:64] in shas:
        os.remove(os.path.join(cache, name))
EOF
}
median() { python3 -c 'import sys; xs=sorted(float(x) for x in sys.argv[1:]); print(xs[len(xs)//2])' "$@"; }

ROWS=()
ALL_FILES=()
for c in "${COMPONENTS[@]}"; do
  IFS=: read -r name lang file <<< "$c"
  ALL_FILES+=("$file")
  listed=(); opt=(); base=(); full=(); cached=(); calls=()
  for _ in $(seq 1 "$ROUNDS"); do
    out=$(drop "$file"); read -r l o <<< "$out"
    listed+=("$l"); opt+=("$o")
  done
  for _ in $(seq 1 "$ROUNDS"); do
    base+=("$("$LOADER" baseline "$file")")
    full+=("$("$LOADER" optimized "$file")")
  done
  mkdir -p "$WORK/cache-$name"
  for _ in $(seq 1 "$ROUNDS"); do
    out=$("$LOADER" cached "$file" "$WORK/cache-$name"); read -r ms us <<< "$out"
    cached+=("$ms"); calls+=("$us")
  done
  ROWS+=("$(printf '| %s | %s | %.1f MB | %.2f s | %.2f s | %.2f s | %.2f s | %.1f ms | %.0f µs |' \
    "$name" "$lang" "$(python3 -c "print($(stat -c %s "$file") / 1e6)")" \
    "$(median "${listed[@]}")" "$(median "${opt[@]}")" \
    "$(python3 -c "print($(median "${base[@]}") / 1e3)")" "$(python3 -c "print($(median "${full[@]}") / 1e3)")" \
    "$(median "${cached[@]}")" "$(median "${calls[@]}")")")
  echo "${ROWS[-1]}" >&2
done
# Every component at once (a Kubernetes ..data swap of the whole set).
together=(); together_opt=()
for _ in $(seq 1 "$ROUNDS"); do
  out=$(drop "${ALL_FILES[@]}"); read -r l o <<< "$out"
  together+=("$l"); together_opt+=("$o")
done

echo "after: $(uptime)"
echo
echo "| component | language | size | drop → listed | drop → optimized | cold load, baseline (Winch) | cold load, optimized (Cranelift) | cached load | instantiate + manifest call |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
printf '| all %d at once | | | %.2f s | %.2f s | | | | |\n' "${#ALL_FILES[@]}" "$(median "${together[@]}")" "$(median "${together_opt[@]}")"
echo
echo "medians of $ROUNDS rounds ($(nproc) cores)"
