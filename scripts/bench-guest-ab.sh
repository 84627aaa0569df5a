#!/usr/bin/env bash
# A/B of two builds of the GitHub connector (a guest change): `sluice run` (release, one process
# per sync, into a local directory) of the `issues` stream of N issues from the fake GitHub,
# A and B alternating for R rounds after one uncounted warm-up each (which also fills the
# compile cache). Prints each round and the medians of wall time, CPU seconds (user + sys) and
# peak RSS, and B/A ratios. Same fake, same run: the ratios are what to read on a shared machine.
#   scripts/bench-guest-ab.sh A.wasm B.wasm [issues] [rounds]
# A_BIN / B_BIN run side A / B with another `sluice` binary (a host change: pass the same wasm twice).
# Build A from the commit before a change, e.g.:
#   git worktree add /tmp/wt-a HEAD~1 && (cd /tmp/wt-a && bash scripts/build-plugins.sh) …
set -euo pipefail
. "$(dirname "$0")/env.sh"
. "$(dirname "$0")/bench-lib.sh"
cd "$SLUICE_ROOT"
A=$(realpath "$1")
B=$(realpath "$2")
ISSUES=${3:-20000}
ROUNDS=${4:-5}

cargo build --release --quiet -p sluice --bin sluice -p sluice-tests --bin fake-github
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null

WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
start_fake_github "$ISSUES" "$WORK"
echo '{"api_url":"'"$URL"'","repositories":["acme/repo-0","acme/repo-1"]}' > "$WORK/config.json"
mkdir -p "$WORK/a" "$WORK/b"
cp "$A" "$WORK/a/github.wasm"
cp "$B" "$WORK/b/github.wasm"

# round SIDE: prints "records wall cpu rss_kib"
round() {
  local bin=${A_BIN:-}
  [ "$1" = b ] && bin=${B_BIN:-}
  SLUICE_BIN=${bin:-$CARGO_TARGET_DIR/release/sluice} cli_run "$WORK/$1/github.wasm" "$WORK/config.json" "token=$GH_TOKEN" "$WORK/$1/out" "$WORK" || exit 1
}

round a > /dev/null
round b > /dev/null
: > "$WORK/results"
for i in $(seq 1 "$ROUNDS"); do
  for side in a b; do
    read -r n wall cpu rss <<< "$(round "$side")"
    printf '%s round %d: %6d records  %5.2f s wall  %5.2f CPU s  peak RSS %.0f MiB\n' \
      "$side" "$i" "$n" "$wall" "$cpu" "$(python3 -c "print($rss/1024)")"
    echo "$side $n $wall $cpu $rss" >> "$WORK/results"
  done
done
python3 - "$WORK/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for side in "ab":
    r = [x for x in rows if x[0] == side]
    n = {x[1] for x in r}
    if len(n) != 1: sys.exit(f"{side}: record counts differ between rounds: {n}")
    wall = statistics.median(float(x[2]) for x in r)
    med[side] = (int(r[0][1]) / wall, statistics.median(float(x[3]) for x in r),
                 statistics.median(float(x[4]) for x in r) / 1024)
    print(f"{side}: {med[side][0]:9,.0f} records/s  {med[side][1]:.2f} CPU s  peak RSS {med[side][2]:.0f} MiB (medians)")
if {x[1] for x in rows if x[0] == "a"} != {x[1] for x in rows if x[0] == "b"}:
    sys.exit("A and B committed different record counts")
(ra, ca, ma), (rb, cb, mb) = med["a"], med["b"]
print(f"B/A: records/s {rb / ra:.2f}x   CPU s {cb / ca:.2f}x   peak RSS {mb / ma:.2f}x")
EOF
