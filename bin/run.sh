#!/usr/bin/env bash
# Start the FaaS platform.
#   ./bin/run.sh [local]   the local stack on http://localhost:8080 (default; Ctrl-C stops it)
# Environment: FAAS_PORT (8080), FAAS_HOST (127.0.0.1), FAAS_NATS_PORT (4222),
# FAAS_DATA_DIR (.data), LOG_LEVEL (INFO).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-local}"

ensure_uv() {
  if command -v uv >/dev/null 2>&1; then return; fi
  export PATH="$HOME/.local/bin:$PATH"
  if command -v uv >/dev/null 2>&1; then return; fi
  echo "installing uv (the Python package manager) from PyPI..." >&2
  python3 -m pip install --user --quiet uv 2>/dev/null \
    || python3 -m pip install --quiet uv 2>/dev/null \
    || { python3 -m venv .data/uv && .data/uv/bin/pip install --quiet uv && export PATH="$PWD/.data/uv/bin:$PATH"; }
  command -v uv >/dev/null 2>&1 || { echo "error: uv could not be installed" >&2; exit 1; }
}

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
