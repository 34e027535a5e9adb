"""A scripted Docker client for ``DockerRuntime`` unit tests: the runtime is given a client whose
low-level ``api`` is a test's scripted object (``containers.create`` goes through its ``_call``),
and a spec for one activation."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import requests

from spawner_service.runtime.base import RunSpec
from spawner_service.runtime.docker import DockerRuntime

LOST = requests.exceptions.ConnectionError("connection aborted")
"""What the SDK raises when the engine's connection goes away mid-call."""

RuntimeOver = Callable[[Any], DockerRuntime]
"""``runtime_over(api)``: a runtime whose Docker client is scripted by ``api``."""


class ScriptedContainers:
    def __init__(self, api: Any) -> None:
        self.api = api

    def create(self, **kwargs: Any) -> SimpleNamespace:
        self.api._call("create")
        return SimpleNamespace(id="c0ffee")


class ScriptedClient:
    """What the runtime uses of a ``docker.DockerClient``."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.containers = ScriptedContainers(api)

    def close(self) -> None:
        return None


def spec(timeout_seconds: float = 20) -> RunSpec:
    return RunSpec(
        execution_id="e-1",
        image="fn:1",
        argument="x",
        env={},
        timeout_seconds=timeout_seconds,
        memory_mb=64,
        deadline=time.time() + timeout_seconds,
    )
