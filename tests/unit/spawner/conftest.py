"""Fixtures of the spawner's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from spawner_service.config import SpawnerSettings
from spawner_service.runtime.docker import DockerRuntime
from tests.unit.spawner.scripted_docker import RuntimeOver, ScriptedClient


@pytest.fixture
async def runtime_over() -> AsyncIterator[RuntimeOver]:
    """``runtime_over(api)``: a ``DockerRuntime`` (2 slots) over a scripted client; closed after
    the test."""
    runtimes: list[DockerRuntime] = []

    def build(api: Any) -> DockerRuntime:
        runtime = DockerRuntime(SpawnerSettings(max_containers=2))
        runtime._client = ScriptedClient(api)
        runtimes.append(runtime)
        return runtime

    yield build
    for runtime in runtimes:
        await runtime.close()
