"""Fixtures of the deployment checks: docker-compose.yml, parsed once per module."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import deploy


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return deploy.load_compose()


@pytest.fixture(scope="module")
def compose_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return deploy.services(compose)
