"""Policy for tests whose infrastructure (nats-server, PostgreSQL, Docker) is missing.

Locally a missing dependency skips the test with the reason; in CI (``FAAS_REQUIRE_INFRA=1``) every
dependency must be present, so the same situation fails the test instead of hiding it.
"""

from __future__ import annotations

import functools
import os
import subprocess
from typing import NoReturn

import pytest

REQUIRE_INFRA_ENV = "FAAS_REQUIRE_INFRA"


def infra_required() -> bool:
    """True when missing infrastructure must fail tests rather than skip them (CI)."""
    return os.environ.get(REQUIRE_INFRA_ENV, "").strip().lower() in {"1", "true", "yes"}


def require(what: str, reason: str) -> NoReturn:
    """Stop the current test because ``what`` is unavailable: fail in CI, skip otherwise."""
    message = f"{what} unavailable: {reason}"
    if infra_required():
        pytest.fail(f"{message} ({REQUIRE_INFRA_ENV}=1)", pytrace=False)
    pytest.skip(message)


@functools.cache
def _docker_problem() -> str | None:
    """Why the Docker engine cannot be used, or None when ``docker info`` answers."""
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except FileNotFoundError:
        return "the docker CLI is not installed"
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        return f"`docker info` failed: {detail[-1] if detail else f'exit {result.returncode}'}"
    return None


def docker_available() -> bool:
    """Whether a Docker engine answers ``docker info`` (checked once per test session)."""
    return _docker_problem() is None


def require_docker() -> None:
    """Skip (locally) or fail (CI) the current test unless a Docker engine answers."""
    problem = _docker_problem()
    if problem is not None:
        require("docker", problem)
