#!/usr/bin/env bash
# Start the FaaS platform.
#   ./bin/run.sh [local]   the local stack on http://localhost:8080 (default; Ctrl-C stops it)
# Environment: FAAS_PORT (8080), FAAS_HOST (127.0.0.1), FAAS_NATS_PORT (4222),
# FAAS_DATA_DIR (.data), LOG_LEVEL (INFO).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-local}"

# shellcheck source=bin/ensure-uv.sh
. bin/ensure-uv.sh

case "$mode" in
  local)
    ensure_uv
    uv sync --frozen --quiet
    exec "${UV_PROJECT_ENVIRONMENT:-.venv}/bin/python" bin/localstack.py
    ;;
  -h|--help|help)
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    echo "error: unknown mode '$mode' (expected: local)" >&2
    exit 2
    ;;
esac
