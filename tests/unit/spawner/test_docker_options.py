"""``DockerRuntime`` without an engine: the container options it asks for, an unreachable engine
reported as ``runtime_unavailable`` (never an exception), and a hung one not holding up a ping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from faas_common.contract import MANAGED_LABEL
from spawner_service.config import SpawnerSettings
from spawner_service.runtime.base import RunSpec
from spawner_service.runtime.docker import (
    DEADLINE_LABEL,
    EXECUTION_LABEL,
    PING_TIMEOUT,
    DockerRuntime,
    container_name,
)

UNREACHABLE = "tcp://127.0.0.1:1"  # loopback, refused at once


@pytest.fixture
async def make_runtime() -> AsyncIterator[Callable[..., DockerRuntime]]:
    runtimes: list[DockerRuntime] = []

    def factory(**overrides: Any) -> DockerRuntime:
        runtime = DockerRuntime(SpawnerSettings(**overrides), base_url=UNREACHABLE)
        runtimes.append(runtime)
        return runtime

    yield factory
    for runtime in runtimes:
        await runtime.close()


def make_spec(**overrides: Any) -> RunSpec:
    values: dict[str, Any] = {
        "execution_id": "exec-1",
        "image": "hello-fn:1",
        "argument": "world",
        "env": {"A": "1"},
        "timeout_seconds": 5,
        "memory_mb": 128,
        "deadline": time.time() + 5,
    }
    return RunSpec(**(values | overrides))


def test_hardened_options(make_runtime: Callable[..., DockerRuntime]) -> None:
    runtime = make_runtime(pids_limit=32, cpus=0.5, tmpfs_mb=16, instance_id="sp-1")
    options = runtime._create_kwargs(make_spec(), deadline=1_000.4)
    assert options["command"] == ["world"]
    assert options["network_mode"] == "none"
    assert options["read_only"] is True
    assert options["tmpfs"] == {"/tmp": "rw,noexec,nosuid,size=16m,uid=65534,gid=65534,mode=1777"}
    assert options["shm_size"] == 16 * 1_048_576
    assert options["cap_drop"] == ["ALL"]
    assert options["security_opt"] == ["no-new-privileges"]
    assert options["pids_limit"] == 32
    assert options["mem_limit"] == options["memswap_limit"] == "128m"
    assert options["nano_cpus"] == 500_000_000
    assert options["user"] == "65534:65534"
    assert options["init"] is True
    assert options["log_config"]["Type"] == "json-file"  # kept (bounded) for adoption
    assert options["environment"] == {"A": "1"}
    assert options["labels"][MANAGED_LABEL] == "spawner"
    assert options["labels"][EXECUTION_LABEL] == "exec-1"
    assert options["labels"][DEADLINE_LABEL] == "1001"  # rounded up, never earlier


def test_declared_volumes_share_the_scratch_budget(
    make_runtime: Callable[..., DockerRuntime],
) -> None:
    runtime = make_runtime(tmpfs_mb=10, shm_bytes=4 * 1_048_576)
    options = runtime._create_kwargs(make_spec(), 0, ["/data", "/tmp", "/var/cache"])
    share = "rw,noexec,nosuid,size=3413k,uid=65534,gid=65534,mode=1777"  # 10 MiB / 3, in KiB
    assert options["tmpfs"] == {"/tmp": share, "/data": share, "/var/cache": share}
    assert options["shm_size"] == 4 * 1_048_576


def test_network_is_an_operator_opt_in(make_runtime: Callable[..., DockerRuntime]) -> None:
    assert make_runtime(network="functions")._create_kwargs(make_spec(), 0)["network_mode"] == (
        "none"
    )
    opted_in = make_runtime(allow_network=True, network="functions")
    assert opted_in._create_kwargs(make_spec(), 0)["network_mode"] == "functions"


def test_container_names_are_valid_and_unique() -> None:
    first, second = container_name("a/b c:d"), container_name("a/b c:d")
    assert first.startswith("faas-a-b-c-d-")
    assert first != second


async def test_an_unreachable_engine_is_runtime_unavailable(
    make_runtime: Callable[..., DockerRuntime],
) -> None:
    runtime = make_runtime()
    result = await runtime.run(make_spec())
    assert result.outcome == "runtime_unavailable"
    assert result.detail is not None
    assert result.detail == "cannot reach the Docker engine"  # no socket or address text
    assert await runtime.ping() is False
    assert await runtime.remove_stale(time.time()) == 0


async def test_adopting_without_an_engine_is_runtime_unavailable_and_started(
    make_runtime: Callable[..., DockerRuntime],
) -> None:
    # A previous delivery may have started the function: it must not be run again.
    result = await make_runtime().adopt(make_spec())
    assert result is not None
    assert result.outcome == "runtime_unavailable"
    assert result.started is True
    assert result.detail is not None


async def test_a_ping_of_a_hung_engine_returns_within_seconds() -> None:
    # An "engine" on loopback that accepts connections and never answers.
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    runtime = DockerRuntime(SpawnerSettings(), base_url=f"tcp://127.0.0.1:{port}")
    try:
        started = time.monotonic()
        assert await runtime.ping() is False
        assert time.monotonic() - started < 2 * PING_TIMEOUT + 1
    finally:
        await runtime.close()
        server.close()
        await server.wait_closed()
