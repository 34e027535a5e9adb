"""Fixtures of the spawner's integration tests: test images, a Docker client for looking at what
the runtime did, runtimes built from settings, a per-test execution id prefix, and the two paths
an activation takes (``path``: a cold container, or a parked one of the prewarm pool).

Every execution id a test uses starts with its prefix; after the test, no container labelled with
such an id (or a pooled one named after it) may remain, and no container of a runtime the test
made once that runtime is closed (other users of the engine are left alone).
"""

from __future__ import annotations

import asyncio
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
from spawner_service.runtime.base import RunResult, RunSpec
from spawner_service.runtime.docker import (
    EXECUTION_LABEL,
    INSTANCE_LABEL,
    MANAGED_VALUE,
    DockerRuntime,
    pooled_owner,
)
from spawner_service.runtime.prewarm import PooledRuntime
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


def execution_of(container: dict[str, Any]) -> str:
    """The execution id a container belongs to: its label, or a taken pooled container's name."""
    taken = pooled_owner(container)
    return taken[0] if taken else (container.get("Labels") or {}).get(EXECUTION_LABEL, "")


def engine_events(client: Any, label: str, since: float) -> list[dict[str, Any]]:
    """The engine's events, from ``since`` until now, of the containers labelled ``label``
    (``key=value``)."""
    return list(
        client.events(
            since=int(since) - 1,
            until=int(time.time()) + 1,
            filters={"type": "container", "label": label},
            decode=True,
        )
    )


def containers_of(client: Any, prefix: str) -> list[dict[str, Any]]:
    """Managed containers (any state) whose execution id starts with ``prefix``, as the engine
    lists them (``Id``, ``Names``, ``Labels``, ``State``, ...): cold ones by their label, taken
    pooled ones by their name."""
    found: list[dict[str, Any]] = client.api.containers(
        all=True, filters={"label": f"{MANAGED_LABEL}={MANAGED_VALUE}"}
    )
    return [c for c in found if execution_of(c).startswith(prefix)]


def containers_of_instance(client: Any, instance_id: str) -> list[dict[str, Any]]:
    """Every container (any state) the runtime of ``instance_id`` made: cold, parked or taken."""
    found: list[dict[str, Any]] = client.api.containers(
        all=True, filters={"label": f"{INSTANCE_LABEL}={instance_id}"}
    )
    return found


def _remove_all(client: Any, containers: list[dict[str, Any]]) -> None:
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(container["Id"], force=True, v=True)


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
        _remove_all(client, left)  # do not leak into other tests, then fail this one
    finally:
        client.close()
    assert left == [], f"containers left behind: {[c['Names'] for c in left]}"


@pytest.fixture
async def make_runtime(
    request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[Callable[..., DockerRuntime]]:
    """``make_runtime(pool=False, **settings)``: a runtime with an instance id of its own; with
    ``pool`` a ``PooledRuntime`` on the session's shim. Closed after the test (before ``prefix``
    looks for leftovers), then none of its containers may remain."""
    runtimes: list[DockerRuntime] = []

    def factory(
        *, base_url: str | None = None, pool: bool = False, **overrides: Any
    ) -> DockerRuntime:
        values: dict[str, Any] = {
            "max_containers": 4,
            "instance_id": f"{prefix}spawner{len(runtimes)}",
        } | overrides
        if not pool:
            runtime = DockerRuntime(SpawnerSettings(**values), base_url=base_url)
        else:
            shim = str(request.getfixturevalue("shim_binary"))
            settings = SpawnerSettings(**({"pool_shim": shim} | values))
            runtime = PooledRuntime(settings, base_url=base_url)
        runtimes.append(runtime)
        return runtime

    yield factory
    for runtime in runtimes:
        await runtime.close()
    if request.node.get_closest_marker("docker") is None:
        return
    client = docker.DockerClient()
    try:
        ids = [runtime.settings.instance_id for runtime in runtimes]
        left = [c for i in ids for c in containers_of_instance(client, i)]
        _remove_all(client, left)
    finally:
        client.close()
    assert left == [], f"containers left after close: {[c['Names'] for c in left]}"


PATHS = ("cold", "pool")


class OnPath:
    """Activations on one path: ``cold`` (``DockerRuntime``: a container per call) or ``pool``
    (``PooledRuntime``: each call takes a container parked for it beforehand)."""

    def __init__(self, name: str, make_runtime: Callable[..., DockerRuntime]) -> None:
        self.name = name
        self.pooled = name == "pool"
        self._make_runtime = make_runtime

    def runtime(self, **overrides: Any) -> DockerRuntime:
        return self._make_runtime(pool=self.pooled, **overrides)

    async def run(self, runtime: DockerRuntime, spec: RunSpec) -> RunResult:
        """``spec`` run on this path: on the pool's, a container of its shape is parked first
        and the call must take it (a hit); on the cold one, it must not. The call is settled
        then: the pool's engine work for it (removal, refill) does not wait ``SETTLE_SECONDS``."""
        if self.pooled:
            assert isinstance(runtime, PooledRuntime)
            assert await runtime.prewarm.warm(spec), "no container was parked"
        result = await runtime.run(spec)
        runtime.settled(spec.execution_id)  # as the handler does once the result is replied
        assert ("pool" in result.timings) is self.pooled, (self.name, result)
        return result

    async def run_all(self, runtime: DockerRuntime, specs: list[RunSpec]) -> list[RunResult]:
        """Each of ``specs`` run on this path: all at once cold, one hit after another pooled."""
        if not self.pooled:
            return list(await asyncio.gather(*(self.run(runtime, spec) for spec in specs)))
        return [await self.run(runtime, spec) for spec in specs]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, make_runtime: Callable[..., DockerRuntime]) -> OnPath:
    """The test once per path an activation takes (``cold``, ``pool``)."""
    return OnPath(request.param, make_runtime)


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
