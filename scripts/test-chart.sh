#!/usr/bin/env bash
# The Helm chart (charts/sluice) rendered and linted by real Helm (Helm 4's Go SDK, PyPI's
# helm-python-sdk: no helm binary), every object validated against the Kubernetes API schemas
# (kubernetes-validate, strict), and assertions on the objects; with the built debug binary and
# plugins present, the rendered environment also starts the real service (charts/tests/test_chart.py).
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$SLUICE_ROOT"
export CHART_VENV=${CHART_VENV:-$SLUICE_CACHE/chart-venv}
bash scripts/install-toolchain.sh --chart-tools >&2
start=$(date +%s)
PYTHONDONTWRITEBYTECODE=1 "$CHART_VENV/bin/python" charts/tests/test_chart.py
echo "chart tests: $(($(date +%s) - start)) s" >&2
