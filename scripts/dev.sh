#!/usr/bin/env bash
# The two set-up commands, and the benchmarks:
#   scripts/dev.sh serve   build the plugins and the service, run it on its local defaults
#   scripts/dev.sh test    install what the tests need, start Garage, run every test
#   scripts/dev.sh bench   run the benchmarks and print their figures
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$SLUICE_ROOT"
cmd=${1:-}
shift || true

case "$cmd" in
  serve)
    bash scripts/build-plugins.sh >&2
    cargo build --release -p sluice
    # The local defaults: plugins from the build output (test guests left out), data under .sluice/.
    mkdir -p .sluice/plugins
    for f in "$SLUICE_PLUGIN_OUT"/*.wasm; do
      case "$(basename "$f")" in probe*|synthetic*|hostile*|wrong-world*|extra-import*|bad-manifest*|python-hello*|*-issues.wasm|*-unflushed.wasm) continue ;; esac
      cp -f "$f" .sluice/plugins/
    done
    export CONNECT_SERVICE_TOKEN=${CONNECT_SERVICE_TOKEN:-}
    exec "$CARGO_TARGET_DIR/release/sluice" serve "$@"
    ;;
  test)
    bash scripts/install-toolchain.sh --garage >&2
    bash scripts/build-plugins.sh >&2
    export GARAGE_BIN="$GARAGE_ROOT/bin/garage"
    GARAGE_DIR=${GARAGE_DIR:-$SLUICE_CACHE/garage-data}
    # Another port (and GARAGE_DIR) lets two test runs share a machine (S3 on it, RPC +1, admin +2).
    GARAGE_PORT=${SLUICE_TEST_GARAGE_PORT:-3900}
    bash scripts/garage.sh "$GARAGE_DIR" "$GARAGE_PORT" >&2
    trap 'bash scripts/garage.sh "$GARAGE_DIR" stop >/dev/null 2>&1 || true' EXIT
    export SLUICE_TEST_S3_ENDPOINT=http://127.0.0.1:$GARAGE_PORT
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --quiet -- -D warnings
    # The black-box tests start target/debug/sluice: `cargo test` builds only test harnesses, so the
    # plain binary is built here first (a fresh machine has no leftover one).
    cargo build --workspace --bins
    cargo test --workspace "$@" 2>&1 | tee "$SLUICE_CACHE/last-test.log"
    # The plugins' own lints and unit tests, built for this machine (the components are built for
    # wasm; the native build shares its dependencies with the unit tests).
    (cd plugins && cargo fmt --all -- --check &&
      CARGO_TARGET_DIR="$SLUICE_CACHE/plugins-native-target" cargo clippy --workspace --all-targets \
        --locked --quiet --target "$(rustc -vV | sed -n 's/^host: //p')" -- -D warnings)
    (cd plugins && CARGO_TARGET_DIR="$SLUICE_CACHE/plugins-native-target" \
      cargo test --workspace --locked --target "$(rustc -vV | sed -n 's/^host: //p')" 2>&1) |
      tee -a "$SLUICE_CACHE/last-test.log"
    bash scripts/fuzz-api.sh
    # The SDKs as a stranger gets them: pip/npm-installed outside the repo, the examples built there.
    bash scripts/test-sdk-install.sh
    bash scripts/test-plugin-new.sh     # plugin new → build → plugin test, per language, outside the repo (~100 s)
    bash scripts/test-docs.sh           # docs/sdk-{python,js,rust}.md followed as written to a synced Parquet file
    # The API as a typed TypeScript client sees it (openapi-typescript + tsc --strict).
    bash scripts/contract-api.sh
    bash scripts/contract-linear.sh   # the Linear connector's GraphQL against Linear's schema (graphql-js)
    bash scripts/test-chart.sh        # the Helm chart: real Helm renders and lints it, Kubernetes schemas, the service
    # One plain closing line for the whole cargo test run (its own last line is a doc-test summary).
    awk '/^test result:/ { p += $4; f += $6 } END { printf "cargo test: %d passed, %d failed\n", p, f }' "$SLUICE_CACHE/last-test.log"
    ;;
  bench)
    bash scripts/build-plugins.sh >&2
    cargo bench -p sluice-runtime --bench runtime "$@"
    ;;
  *)
    echo "usage: scripts/dev.sh serve|test|bench" >&2
    exit 2
    ;;
esac
