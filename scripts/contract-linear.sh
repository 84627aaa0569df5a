#!/usr/bin/env bash
# The Linear connector's GraphQL against Linear's published schema (tests/contract/linear/): the
# plugin's own unit test writes every request body it can send (every stream, page size, cursor and
# filter variant) to a directory, and graphql-js validates each document and its variables
# (tests/contract/linear/validate.mjs). A field, argument or type Linear does not have fails.
# Needs Node 20 + npm and the plugins' native toolchain (as scripts/dev.sh test runs it).
set -euo pipefail
. "$(dirname "$0")/env.sh"
DIR=$SLUICE_ROOT/tests/contract
cd "$DIR"
# The exact versions of package-lock.json, reinstalled when the lock changes (as contract-api.sh).
LOCK_SUM=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.lock-sum 2>/dev/null || true)" != "$LOCK_SUM" ]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$LOCK_SUM" > node_modules/.lock-sum
fi

DOCS=$(mktemp -d)
trap 'rm -rf "$DOCS"' EXIT
(cd "$SLUICE_ROOT/plugins" && SLUICE_LINEAR_DOCUMENTS=$DOCS CARGO_TARGET_DIR="$SLUICE_CACHE/plugins-native-target" \
  cargo test --workspace --locked --target "$(rustc -vV | sed -n 's/^host: //p')" --lib \
  every_request_for_the_contract_check >&2)
node linear/validate.mjs "$DOCS"
