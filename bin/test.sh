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

ensure_uv() {
    if command -v uv >/dev/null 2>&1; then
        return
    fi
    export PATH="${HOME}/.local/bin:${PATH}"
    if ! command -v uv >/dev/null 2>&1; then
        step "Installing uv"
        local python
        python="$(command -v python3 || command -v python || true)"
        if [[ -z "${python}" ]]; then
            echo "error: uv is missing and no python3 is available to install it" >&2
            exit 1
        fi
        "${python}" -m pip install --user uv \
            || "${python}" -m pip install --user --break-system-packages uv \
            || pip install uv
        hash -r
    fi
    if ! command -v uv >/dev/null 2>&1; then
        echo "error: uv was installed but is not on PATH (${PATH})" >&2
        exit 1
    fi
}

ensure_uv

step "uv sync --frozen"
uv sync --frozen

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
