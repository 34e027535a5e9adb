"""Fixtures of the spawner's integration tests: test images, a Docker client for looking at what
the runtime did, runtimes built from settings, and a per-test execution id prefix.

Every execution id a test uses starts with its prefix; after the test, no container labelled with
such an id may remain (other users of the engine are left alone).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from faas_common.contract import EXECUTIONS_STREAM, MANAGED_LABEL
from faas_common.executions import ExecutionStore
from faas_common.nats import connect_nats, ensure_kv
from spawner_service.config import SpawnerSettings
from spawner_service.runtime.base import RunSpec
from spawner_service.runtime.docker import EXECUTION_LABEL, MANAGED_VALUE, DockerRuntime
from tests.integration.spawner.jobs import Replies
from tests.support.images import build, busybox_image, image_exists, python_base_image

ARGV_ECHO_TAG = "faas-test/argv-echo:1"
ARGV_ECHO = (
    "import os, sys\n"
    "# Exactly the bytes of the last argv element, nothing added.\n"
    "sys.stdout.buffer.write(os.fsencode(sys.argv[1]))\n"
)


@pytest.fixture(scope="session")
def busybox() -> str:
    return busybox_image()


@pytest.fixture(scope="session")
def python_base() -> str:
    """The local stand-in for ``python:3.11-slim`` (no ENTRYPOINT; CMD ``python3``)."""
    return python_base_image()


@pytest.fixture(scope="session")
def argv_echo_image() -> str:
    """A Python function image whose ENTRYPOINT writes its argument to stdout byte for byte."""
    base = python_base_image()
    if not image_exists(ARGV_ECHO_TAG):
        with tempfile.TemporaryDirectory() as tmp:
            context = Path(tmp)
            (context / "echo.py").write_text(ARGV_ECHO)
            build(
                context,
                ARGV_ECHO_TAG,
                f'FROM {base}\nCOPY echo.py /echo.py\nENTRYPOINT ["python3", "/echo.py"]\n',
            )
    return ARGV_ECHO_TAG


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client = docker.DockerClient()
    try:
        yield client
    finally:
        client.close()


def containers_of(client: Any, prefix: str) -> list[dict[str, Any]]:
    """Managed containers (any state) whose execution id starts with ``prefix``, as the engine
    lists them (``Id``, ``Names``, ``Labels``, ``State``, ...)."""
    found: list[dict[str, Any]] = client.api.containers(
        all=True, filters={"label": f"{MANAGED_LABEL}={MANAGED_VALUE}"}
    )
    return [c for c in found if (c.get("Labels") or {}).get(EXECUTION_LABEL, "").startswith(prefix)]


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """This test's execution id prefix; checks afterwards that none of its containers remain."""
    value = f"t{uuid.uuid4().hex[:10]}-"
    yield value
    if request.node.get_closest_marker("docker") is None:
        return
    client = docker.DockerClient()
    try:
        left = containers_of(client, value)
        for container in left:  # do not leak into other tests, then fail this one
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(container["Id"], force=True)
    finally:
        client.close()
    assert left == [], f"containers left behind: {[c['Names'] for c in left]}"


@pytest.fixture
async def make_runtime() -> AsyncIterator[Callable[..., DockerRuntime]]:
    runtimes: list[DockerRuntime] = []

    def factory(*, base_url: str | None = None, **overrides: Any) -> DockerRuntime:
        values: dict[str, Any] = {"max_containers": 4} | overrides
        runtime = DockerRuntime(SpawnerSettings(**values), base_url=base_url)
        runtimes.append(runtime)
        return runtime

    yield factory
    for runtime in runtimes:
        await runtime.close()


SpecFactory = Callable[..., RunSpec]


@pytest.fixture
def spec(prefix: str, busybox: str) -> SpecFactory:
    """``spec("echo hi", timeout_seconds=5, ...)``: a RunSpec on the busybox image (whose
    ENTRYPOINT is ``sh -c``, so the argument is a shell script) with this test's id prefix."""

    def factory(argument: str, **overrides: Any) -> RunSpec:
        values: dict[str, Any] = {
            "execution_id": f"{prefix}{uuid.uuid4().hex[:8]}",
            "image": busybox,
            "argument": argument,
            "env": {},
            "timeout_seconds": 20,
            "memory_mb": 64,
            "deadline": 0.0,
        } | overrides
        if not values["deadline"]:
            values["deadline"] = time.time() + values["timeout_seconds"]
        return RunSpec(**values)

    return factory


# --- NATS: a client with no EXECUTIONS stream before or after, and a records bucket per test ---


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await connect_nats([nats_url], name="spawner-test", connect_timeout=15)
    js = client.jetstream()
    await _delete_stream(js)
    try:
        yield client
    finally:
        await _delete_stream(js)
        await client.close()


async def _delete_stream(js: JetStreamContext) -> None:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(EXECUTIONS_STREAM)


@pytest.fixture
async def store(nc: NATS) -> AsyncIterator[ExecutionStore]:
    js = nc.jetstream()
    bucket = f"spawner_test_{uuid.uuid4().hex[:12]}"
    kv = await ensure_kv(js, bucket, ttl=timedelta(minutes=10))
    try:
        yield ExecutionStore(kv)
    finally:
        await js.delete_key_value(bucket)


@pytest.fixture
async def replies(nc: NATS) -> AsyncIterator[Replies]:
    collected = Replies()
    subscription = await nc.subscribe(f"faas.reply.{collected.instance}.*", cb=collected.handle)
    try:
        yield collected
    finally:
        await subscription.unsubscribe()
