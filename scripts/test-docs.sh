#!/usr/bin/env bash
# The SDK pages as a stranger follows them (issue 13 item 8): for each of docs/sdk-python.md,
# docs/sdk-js.md and docs/sdk-rust.md, the page's commands run in order, as written, in a fresh
# scratch directory outside the clone, and must end with a synced Parquet file.
#
# What runs, marked in the page itself:
#   - every fenced block with the info string `sh` runs (one bash -euo pipefail script per page,
#     so a `cd` or variable carries to the next block); any other fence (```text, ```python,
#     ```toml, ...) is only shown;
#   - a fenced block right after the HTML comment `<!-- file: NAME -->` is written to NAME
#     (relative to the current directory at that point), as a stranger saves it.
# The one substitution: `path/to/sluice` → this checkout. Nothing else is edited.
# Then: the run's manifest (out/local/_runs/*.json) says 300 issues, and DuckDB (the
# libduckdb.so the Rust tests link, called through ctypes: there is no DuckDB CLI here) reads
# the Parquet files named there: 300 rows, 300 distinct ids, the manifest's sha256.
# Part of scripts/dev.sh test, after test-plugin-new.sh: it reuses the pip/npm caches and
# $SLUICE_CACHE/plugins-target those fill; the pages' `cargo build` of sluice is a no-op then.
set -euo pipefail
. "$(dirname "$0")/env.sh"
scratch=$(mktemp -d /tmp/sluice-docs.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || true; done # a page's leftover fake
  rm -rf "$scratch"
}
trap cleanup EXIT
export RUST_BACKTRACE=0 PYTHONDONTWRITEBYTECODE=1

fail() { echo "test-docs: $*" >&2; exit 1; }

# The page's runnable blocks as one bash script.
page_script() { # PAGE
  python3 - "$1" "$SLUICE_ROOT" <<'PY'
import re, shlex, sys
text, root = open(sys.argv[1]).read(), sys.argv[2]
out = []
for m in re.finditer(r"(?:<!-- file: (\S+) -->\n)?```(\S*)\n(.*?)```", text, re.S):
    name, info, body = m.group(1), m.group(2), m.group(3).replace("path/to/sluice", root)
    if name:
        out.append(f"cat > {shlex.quote(name)} <<'SLUICE_DOC_EOF'\n{body}SLUICE_DOC_EOF")
    elif info == "sh":
        out.append(body)
if not any(out):
    sys.exit(f"{sys.argv[1]}: no sh blocks")
print("\n".join(out))
PY
}

# The Parquet of the last run in OUT, read with DuckDB: rows, distinct ids, sha256 as the manifest says.
check_parquet() { # OUT
  python3 - "$1" "$DUCKDB_LIB_DIR/libduckdb.so" <<'PY'
import ctypes, glob, hashlib, json, os, sys
out, lib = sys.argv[1], ctypes.CDLL(sys.argv[2])
runs = glob.glob(os.path.join(out, "local/_runs/*.json"))
assert len(runs) == 1, runs
issues = json.load(open(runs[0]))["streams"]["issues"]
assert issues["records"] == 300, issues["records"]
files = [os.path.join(out, f["key"]) for f in issues["files"]]
for f, meta in zip(files, issues["files"]):
    assert hashlib.sha256(open(f, "rb").read()).hexdigest() == meta["sha256"], f
db, con, res = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.create_string_buffer(128)
assert lib.duckdb_open(None, ctypes.byref(db)) == 0 and lib.duckdb_connect(db, ctypes.byref(con)) == 0
sql = ("SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE repository LIKE 'acme/repo-_') "
       "FROM read_parquet([" + ", ".join(f"'{f}'" for f in files) + "])")
if lib.duckdb_query(con, sql.encode(), res) != 0:
    lib.duckdb_result_error.restype = ctypes.c_char_p
    sys.exit("duckdb: %s" % lib.duckdb_result_error(res).decode())
lib.duckdb_value_int64.restype = ctypes.c_int64
got = [lib.duckdb_value_int64(res, c, 0) for c in range(3)]
lib.duckdb_destroy_result(res)
assert got == [300, 300, 300], f"rows, distinct ids, acme/repo-* rows: {got}"
print(f"{len(files)} Parquet file(s), DuckDB: {got[0]} rows, {got[1]} distinct ids")
PY
}

page() { # LANG
  local lang=$1 dir=$scratch/$1 log=$scratch/$1.log t0=$(date +%s) result
  mkdir "$dir"
  page_script "$SLUICE_ROOT/docs/sdk-$lang.md" >"$scratch/$lang.sh"
  # The page's commands, then where they ended (the page may `cd`); in a process group of its own,
  # so that a fake GitHub left running by a failed page is stopped by the trap.
  echo 'pwd > "$SLUICE_DOC_END"' >>"$scratch/$lang.sh"
  SLUICE_DOC_END=$scratch/$lang.end setsid bash -c 'cd "$0" && exec bash -euo pipefail "$1"' \
    "$dir" "$scratch/$lang.sh" >"$log" 2>&1 &
  pids+=($!)
  wait $! || { tail -40 "$log" >&2; fail "$lang: docs/sdk-$lang.md's commands failed (script: $scratch/$lang.sh)"; }
  grep -q "^300 rows in local/issues/" "$log" || { tail -20 "$log" >&2; fail "$lang: the page's check did not print 300 rows"; }
  result=$(check_parquet "$(cat "$scratch/$lang.end")/out") || fail "$lang: the synced Parquet is not what the page says"
  echo "  $lang: $result ($(($(date +%s) - t0))s)" >&2
}

start=$(date +%s)
for lang in python js rust; do
  echo "$lang: docs/sdk-$lang.md's commands, from an empty directory" >&2
  page "$lang"
done
echo "docs: three pages followed to a synced Parquet file in $(($(date +%s) - start))s" >&2
