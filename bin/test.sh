#!/usr/bin/env bash
# The test command: lint, format check, type check, then pytest (unit, integration, e2e).
#
#   ./bin/test.sh                     everything
#   ./bin/test.sh tests/unit -x       arguments go to pytest
#
# Tests whose infrastructure is missing (nats-server, PostgreSQL via FAAS_TEST_POSTGRES_URL, a
# Docker engine) are skipped locally; with FAAS_REQUIRE_INFRA=1 (CI) they fail instead.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() {
    printf '\n==> %s\n' "$*"
}

# shellcheck source=bin/ensure-uv.sh
. bin/ensure-uv.sh

ensure_uv

step "uv sync --frozen"
uv sync --frozen

# Where the spawner, the local stack and the tests look for it; about 40 s on a fresh machine.
step "spawner shim (spawner-service/shim/build.py --if-stale)"
uv run --no-sync python spawner-service/shim/build.py --if-stale

step "ruff check"
uv run --no-sync ruff check .

step "ruff format --check"
uv run --no-sync ruff format --check .

step "mypy"
uv run --no-sync mypy

step "pytest $*"
status=0
uv run --no-sync pytest "$@" || status=$?
if [[ ${status} -eq 5 ]]; then
    echo "error: pytest collected no tests (exit 5); check the paths and -k/-m filters" >&2
    exit 1
fi
exit "${status}"
