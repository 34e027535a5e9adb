"""The prewarm pool against the real engine: one call per container, bursts beyond what is
parked, drains on function changes (also through the ``functions`` bucket's watch), adoption of
a taken container whose spawner died, and nothing left behind by ``close``.

The busybox image's ENTRYPOINT is ``sh -c``: the argument is a shell script.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from faas_common.contract import function_key
from faas_common.nats import ensure_kv
from spawner_service.app import make_runtime as app_runtime
from spawner_service.config import SpawnerSettings
from spawner_service.drain import FunctionChanges
from spawner_service.runtime import prewarm
from spawner_service.runtime.base import RunResult, RunSpec
from spawner_service.runtime.docker import (
    EXECUTION_LABEL,
    POOL_LABEL,
    DockerRuntime,
    _close_attach,
    _engine_time,
)
from spawner_service.runtime.pool import Shape
from spawner_service.runtime.prewarm import HandOff, PooledRuntime
from spawner_service.runtime.rename import RenameRefused
from tests.integration.spawner.conftest import (
    OnPath,
    SpecFactory,
    containers_of,
    containers_of_instance,
    engine_events,
)
from tests.integration.spawner.jobs import eventually

RuntimeFactory = Callable[..., DockerRuntime]
FRESH = "[ -e /tmp/marker ] && echo reused || echo fresh; touch /tmp/marker; hostname"


@pytest.fixture
def pooled(make_runtime: RuntimeFactory) -> Callable[..., PooledRuntime]:
    """``pooled(**settings)``: a ``PooledRuntime`` on the session's shim."""

    def factory(**overrides: Any) -> PooledRuntime:
        runtime = make_runtime(pool=True, **overrides)
        assert isinstance(runtime, PooledRuntime)
        return runtime

    return factory


def parked_ids(client: Any, runtime: DockerRuntime) -> set[str]:
    """The ids of the containers ``runtime`` has parked and no call has taken (a taken one keeps
    its labels, its name changes)."""
    found = containers_of_instance(client, runtime.settings.instance_id)
    return {
        c["Id"]
        for c in found
        if (c.get("Labels") or {}).get(POOL_LABEL) == "parked"
        and c["Names"][0].startswith("/faas-pool-")
    }


async def until(check: Callable[[], bool], within: float = 20.0) -> None:
    """``check()`` holds within ``within`` seconds (polled), or AssertionError."""

    async def holds() -> bool:
        return check()

    await eventually(holds, within)


async def engine_lists_none(client: Any, ids: set[str], within: float = 20.0) -> None:
    """The engine lists none of the containers ``ids`` within ``within`` seconds."""

    async def gone() -> bool:
        listed = await asyncio.to_thread(client.api.containers, all=True)
        return not {c["Id"] for c in listed} & ids

    await eventually(gone, within)


# --- one call per container -------------------------------------------------------------------


@pytest.mark.docker
async def test_a_pooled_container_serves_one_call_only(
    make_runtime: RuntimeFactory, spec: SpecFactory, docker_client: Any
) -> None:
    runtime = make_runtime(pool=True)
    assert isinstance(runtime, PooledRuntime)
    outputs, used = [], set()
    for _ in range(2):
        job = spec(FRESH)
        assert await runtime.prewarm.warm(job)
        [parked] = parked_ids(docker_client, runtime)
        result = await runtime.run(job)
        assert "pool" in result.timings
        outputs.append(result.stdout.split())
        assert outputs[-1][1] == parked[:12].encode()  # it ran in the parked container
        used.add(parked)
        await engine_lists_none(docker_client, {parked})  # removed after its call
    assert [seen for seen, _ in outputs] == [b"fresh", b"fresh"]
    assert len(used) == 2


@pytest.mark.docker
async def test_a_miss_runs_in_a_container_started_for_it_and_removed_after_the_call(
    pooled: Callable[..., PooledRuntime], spec: SpecFactory, docker_client: Any
) -> None:
    runtime = pooled()
    job = spec(FRESH)
    result = await runtime.run(job)
    assert result.outcome == "succeeded", result
    assert result.stdout.split()[0] == b"fresh"
    # No parked container took it, and its container's end and removal are not on its path.
    assert set(result.timings) == {"pull", "create", "start", "run"}
    assert (runtime.prewarm.hits, runtime.prewarm.misses) == (0, 1)
    # Named for the call (the rename's answer is read off the call's path).
    await until(lambda: len(containers_of(docker_client, job.execution_id)) == 1)
    [container] = containers_of(docker_client, job.execution_id)
    assert container["Labels"][POOL_LABEL] == "parked"  # started as a park is: the shim's
    assert result.stdout.split()[1] == container["Id"][:12].encode()
    runtime.settled(job.execution_id)
    await engine_lists_none(docker_client, {container["Id"]})
    assert parked_ids(docker_client, runtime) == set()  # a function called once: none parked


@pytest.mark.docker
async def test_a_miss_whose_image_is_not_on_the_engine_runs_cold(
    pooled: Callable[..., PooledRuntime], spec: SpecFactory, docker_client: Any
) -> None:
    runtime = pooled(pull_timeout_seconds=5)
    result = await runtime.run(spec("echo never", image="127.0.0.1:1/missing:1"))
    # The cold path pulled, and says why it could not.
    assert (result.outcome, result.detail) == (
        "image_unavailable",
        "The image's registry could not be reached (registry_unreachable)",
    )
    assert (runtime.prewarm.hits, runtime.prewarm.misses) == (0, 1)
    assert containers_of_instance(docker_client, runtime.settings.instance_id) == []


def cold_runs_of(client: Any, execution_id: str, since: float) -> list[str]:
    """The engine's events of containers created for ``execution_id`` by the cold path (its
    label: a container of the pool's has none)."""
    events = engine_events(client, f"{EXECUTION_LABEL}={execution_id}", since)
    return [event["Action"] for event in events]


@pytest.mark.docker
async def test_a_miss_whose_container_dies_during_the_call_is_not_run_again(
    pooled: Callable[..., PooledRuntime], spec: SpecFactory, docker_client: Any
) -> None:
    since = time.time()
    runtime = pooled()
    job = spec("echo started; sleep 30")
    call = asyncio.create_task(runtime.run(job))
    await until(lambda: len(containers_of(docker_client, job.execution_id)) == 1)
    [container] = containers_of(docker_client, job.execution_id)
    await asyncio.to_thread(docker_client.api.kill, container["Id"])
    result = await call
    assert (result.outcome, result.started) == ("runtime_unavailable", True), result
    assert (runtime.prewarm.hits, runtime.prewarm.misses) == (0, 1)
    assert await asyncio.to_thread(cold_runs_of, docker_client, job.execution_id, since) == []


@pytest.mark.docker
async def test_a_shim_the_containers_cannot_execute_leaves_every_call_to_the_cold_path(
    pooled: Callable[..., PooledRuntime], spec: SpecFactory, tmp_path: Path, docker_client: Any
) -> None:
    shim = tmp_path / "faas-shim"
    shim.write_text("not a program\n")
    shim.chmod(0o644)
    runtime = pooled(pool_shim=str(shim))
    job = spec("echo ran")
    result = await runtime.run(job)
    assert (result.outcome, result.stdout) == ("succeeded", b"ran\n"), result
    assert "remove" in result.timings  # run cold, its removal on its path
    await runtime.close()
    assert containers_of_instance(docker_client, runtime.settings.instance_id) == []


@pytest.mark.docker
async def test_a_burst_beyond_the_parked_containers_starts_containers_for_the_rest(
    pooled: Callable[..., PooledRuntime], spec: SpecFactory, docker_client: Any
) -> None:
    runtime = pooled(max_containers=8, pool_max_per_function=3)
    shape = Shape.of(spec("echo"))
    # Three calls at once, none parked yet: the shape's peak is 3, so three get parked.
    warmup = await asyncio.gather(*(runtime.run(spec(f"echo {i}")) for i in range(3)))
    assert ["pool" in r.timings for r in warmup] == [False] * 3
    await until(lambda: runtime.prewarm.pool.parked_of(shape) == 3)
    hits_before = runtime.prewarm.hits

    calls = [spec(f"echo call-{i}; sleep 0.5") for i in range(8)]
    results = await asyncio.gather(*(runtime.run(call) for call in calls))
    for i, result in enumerate(results):
        assert result.outcome == "succeeded", result
        assert result.stdout == f"call-{i}\n".encode()
    hits = [r for r in results if "pool" in r.timings]
    assert len(hits) == runtime.prewarm.hits - hits_before == 3
    misses = [r for r in results if "pool" not in r.timings]
    # Each in a container started for it, removed after the call (not run cold).
    assert all({"create", "start"} <= r.timings.keys() for r in misses)
    assert not any("remove" in r.timings for r in misses)
    await runtime.close()
    assert containers_of_instance(docker_client, runtime.settings.instance_id) == []


# --- drains -----------------------------------------------------------------------------------


@pytest.mark.docker
async def test_a_drain_removes_the_parked_containers_of_the_function(
    pooled: Callable[..., PooledRuntime], spec: SpecFactory, docker_client: Any
) -> None:
    runtime = pooled()
    key = function_key("alice", "hello")
    job = spec("echo hi", function=key)
    assert await runtime.prewarm.warm(job)
    runtime.drain(function_key("bob", "other"))  # another function: nothing of alice's goes
    parked = parked_ids(docker_client, runtime)
    assert len(parked) == 1

    runtime.drain(key)
    assert runtime.prewarm.pool.parked_of(Shape.of(job)) == 0
    after = await runtime.run(spec("echo hi", function=key))
    assert after.stdout == b"hi\n"
    assert "pool" not in after.timings
    await engine_lists_none(docker_client, parked)


@pytest.fixture
async def functions_kv(nc: NATS) -> AsyncIterator[KeyValue]:
    """A functions bucket of this test's own."""
    js = nc.jetstream()
    bucket = f"functions_test_{uuid.uuid4().hex[:12]}"
    kv = await ensure_kv(js, bucket, ttl=timedelta(minutes=10))
    try:
        yield kv
    finally:
        await js.delete_key_value(bucket)


@pytest.mark.docker
async def test_a_new_value_in_the_functions_bucket_drains_the_function(
    pooled: Callable[..., PooledRuntime],
    spec: SpecFactory,
    docker_client: Any,
    functions_kv: KeyValue,
) -> None:
    runtime = pooled()
    key = function_key("alice", "hello")
    await functions_kv.put(key, b'{"version": 1}')
    changes = FunctionChanges(functions_kv, runtime.drain)
    await changes.start()
    try:
        job = spec("echo hi", function=key)
        assert await runtime.prewarm.warm(job)
        parked = parked_ids(docker_client, runtime)
        assert len(parked) == 1
        await functions_kv.put(key, b'{"version": 2}')
        await until(lambda: runtime.prewarm.pool.parked_of(Shape.of(job)) == 0)
        after = await runtime.run(spec("echo hi", function=key))
        assert "pool" not in after.timings
        await engine_lists_none(docker_client, parked)
    finally:
        await changes.stop()


# --- parks give way to cold runs --------------------------------------------------------------


def started_at(client: Any, container_id: str) -> float:
    """When the engine says the container's process started (epoch seconds; the engine runs on
    this machine, its clock is the test's)."""
    started = _engine_time(client.api.inspect_container(container_id)["State"]["StartedAt"])
    assert started is not None
    return started


COLD_SECONDS = 3


@dataclass
class HeldPark:
    """A park (``warming``) held after its create while a cold run of another shape
    (``running``, a ``sleep COLD_SECONDS``) gets under way."""

    warming: asyncio.Task[bool]
    running: asyncio.Task[RunResult]


Held = tuple[PooledRuntime, HeldPark, threading.Event]
"""The runtime, its held park, and the event that lets the park go on."""


@pytest.fixture
async def held_park(
    pooled: Callable[..., PooledRuntime],
    spec: SpecFactory,
    docker_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Held]:
    runtime = pooled()
    loop = asyncio.get_running_loop()
    created, go = asyncio.Event(), threading.Event()
    create = prewarm._create_blocking

    def create_then_hold(client: Any, options: dict[str, Any]) -> str:
        container_id = create(client, options)
        if not created.is_set():  # the park's, not the one the cold run starts for itself
            loop.call_soon_threadsafe(created.set)
            go.wait(30)
        return container_id

    monkeypatch.setattr(prewarm, "_create_blocking", create_then_hold)
    warm = spec("echo warm")
    warming = asyncio.create_task(runtime.prewarm.warm(warm))
    await asyncio.wait_for(created.wait(), 30)  # the park is under way: created, not started
    cold = spec(f"sleep {COLD_SECONDS}; echo cold", memory_mb=32)  # another shape: run cold
    running = asyncio.create_task(runtime.run(cold))
    await until(lambda: len(containers_of(docker_client, cold.execution_id)) == 1)
    try:
        yield runtime, HeldPark(warming, running), go
    finally:
        go.set()
        await asyncio.gather(warming, running, return_exceptions=True)


@pytest.mark.docker
async def test_a_park_under_way_starts_its_container_only_after_a_cold_run_ends(
    held_park: Held, docker_client: Any
) -> None:
    runtime, held, go = held_park
    go.set()
    result = await held.running
    cold_ended = time.time()
    assert result.stdout == b"cold\n"
    assert "pool" not in result.timings
    assert await held.warming
    [parked] = [
        container_id
        for container_id in parked_ids(docker_client, runtime)
        if docker_client.api.inspect_container(container_id)["HostConfig"]["Memory"] != 32 << 20
    ]
    # Started once the cold run was over, not while its container slept (seconds earlier).
    assert started_at(docker_client, parked) > cold_ended - COLD_SECONDS / 2


@pytest.mark.docker
async def test_a_park_a_call_waits_for_does_not_give_way_to_cold_runs(
    held_park: Held, spec: SpecFactory
) -> None:
    runtime, held, go = held_park
    go.set()
    result = await runtime.run(spec("echo hit"))  # the shape of the park held
    assert result.stdout == b"hit\n"
    assert "pool" in result.timings  # the park it waited for took it
    assert not held.running.done()  # while the cold run still sleeps
    assert (await held.running).stdout == b"cold\n"


async def waiting_for_the_held_park(
    runtime: PooledRuntime, job: RunSpec, docker_client: Any
) -> tuple[asyncio.Task[RunResult], str]:
    """``job`` (of the held park's shape) called, once it waits for that park; and the held
    park's container (created, not started)."""
    waiting = asyncio.create_task(runtime.run(job))
    await until(lambda: bool(runtime.prewarm._awaited))
    [held_container] = parked_ids(docker_client, runtime)
    return waiting, held_container


@pytest.mark.docker
async def test_a_park_under_way_is_waited_for_by_one_call_only(
    held_park: Held,
    spec: SpecFactory,
    docker_client: Any,
) -> None:
    runtime, _, go = held_park
    runtime.prewarm.pool.park_seconds = 30.0  # however long a park is thought to take
    waiter = spec("echo waited")
    waiting, held_container = await waiting_for_the_held_park(runtime, waiter, docker_client)
    # The park is this call's: the next one of the shape does not wait for it too (it would
    # only start its own after it), it gets a container started for it while the park is held.
    own = await asyncio.wait_for(runtime.run(spec("echo own")), 20)
    assert own.stdout == b"own\n"
    assert {"create", "start"} <= own.timings.keys()
    assert "pool" not in own.timings
    assert not waiting.done()
    go.set()
    waited = await waiting
    assert waited.stdout == b"waited\n"
    assert "pool" in waited.timings  # the wait counted in it
    # The park it waited for took it (its container is removed only once the call settles).
    assert [c["Id"] for c in containers_of(docker_client, waiter.execution_id)] == [held_container]


@pytest.mark.docker
async def test_a_call_waiting_for_a_park_that_fails_gets_a_container_started_for_it(
    held_park: Held,
    spec: SpecFactory,
    docker_client: Any,
) -> None:
    runtime, _, go = held_park
    waiting, held_container = await waiting_for_the_held_park(
        runtime, spec("echo waited"), docker_client
    )
    docker_client.api.remove_container(held_container, force=True)  # the park cannot start
    go.set()
    result = await asyncio.wait_for(waiting, 30)
    assert result.stdout == b"waited\n"
    assert {"create", "start"} <= result.timings.keys()
    assert "pool" not in result.timings


# --- a rename the engine refuses -------------------------------------------------------------


async def parked_refusing_renames(
    runtime: PooledRuntime, job: RunSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container of ``job``'s shape parked; from then on, every rename sent before a frame is
    answered with a refusal (and not carried out)."""
    assert await runtime.prewarm.warm(job)

    async def refused(*_: Any) -> asyncio.Task[None]:
        async def answer() -> None:
            raise RenameRefused('{"message":"refused by the test"}')

        return asyncio.create_task(answer())

    monkeypatch.setattr(prewarm, "send_rename", refused)


@pytest.mark.docker
async def test_a_refused_rename_is_done_again_through_the_sdk_while_the_call_runs(
    pooled: Callable[..., PooledRuntime],
    spec: SpecFactory,
    docker_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = pooled()
    job = spec("sleep 2; echo done")
    await parked_refusing_renames(runtime, job, monkeypatch)
    call = asyncio.create_task(runtime.run(job))
    # Named for its execution while the function runs: an adoption after a crash finds it.
    await until(lambda: len(containers_of(docker_client, job.execution_id)) == 1)
    assert not call.done()
    result = await call
    assert (result.outcome, result.stdout) == ("succeeded", b"done\n")
    assert "pool" in result.timings


@pytest.mark.docker
async def test_a_call_whose_container_cannot_be_renamed_at_all_is_stopped(
    pooled: Callable[..., PooledRuntime], spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = pooled()
    job = spec("sleep 5; echo done")
    await parked_refusing_renames(runtime, job, monkeypatch)
    client = await runtime._connected()

    def rename(*_: Any) -> None:
        raise docker.errors.APIError("refused by the test")

    monkeypatch.setattr(client.api, "rename", rename)
    began = time.monotonic()
    result = await runtime.run(job)
    # Killed, never left running where no adoption would find it; never to be run again.
    assert time.monotonic() - began < 5
    assert result.outcome == "runtime_unavailable"
    assert result.started is True
    assert result.stdout == b""


# --- adoption ---------------------------------------------------------------------------------


@pytest.mark.docker
async def test_a_taken_container_of_a_dead_spawner_is_adopted(
    pooled: Callable[..., PooledRuntime],
    make_runtime: RuntimeFactory,
    spec: SpecFactory,
    docker_client: Any,
) -> None:
    dead = pooled()
    job = spec("sleep 2; echo done; echo to-stderr >&2; exit 3", timeout_seconds=30)
    assert await dead.prewarm.warm(job)
    parked = dead.prewarm.pool.take(Shape.of(job), job.function)
    assert parked is not None
    handoff = HandOff(dead, await dead._connected(), job, parked, {}, "pool")
    call = asyncio.create_task(handoff.execute())
    await until(lambda: "pool" in handoff.timings)  # rename sent, frame written
    # The spawner dies: its call stops, its connections go (the rename's before its answer),
    # nothing removes the container. The engine still renames it for the execution.
    call.cancel()
    renaming = [handoff.renaming] if handoff.renaming is not None else []
    for task in renaming:
        task.cancel()
    await asyncio.gather(call, *renaming, return_exceptions=True)
    _close_attach(parked.sock)
    await until(lambda: len(containers_of(docker_client, job.execution_id)) == 1)
    [taken] = await asyncio.to_thread(containers_of, docker_client, job.execution_id)
    assert taken["State"] == "running"

    result = await make_runtime().adopt(job)
    assert result is not None
    assert result.outcome == "function_failed", result
    assert result.exit_code == 3  # the function's status, from the shim's records
    assert result.stdout == b"done\n"
    assert result.stderr_tail == b"to-stderr\n"
    assert result.started is True
    assert await asyncio.to_thread(containers_of, docker_client, job.execution_id) == []


@pytest.mark.docker
async def test_the_parked_containers_of_an_earlier_process_of_the_instance_go_at_once(
    pooled: Callable[..., PooledRuntime], spec: SpecFactory, docker_client: Any
) -> None:
    earlier = pooled()
    assert await earlier.prewarm.warm(spec("echo parked"))
    left = parked_ids(docker_client, earlier)
    assert len(left) == 1
    assert await earlier.remove_stale(time.time()) == 0  # its own process's: kept
    assert parked_ids(docker_client, earlier) == left
    # The process dies: its parked container stays (its deadline is minutes away).
    for parked in earlier.prewarm.pool.drain_all():
        _close_attach(parked.sock)
    assert await pooled().remove_stale(time.time()) == 0  # another spawner's: not yet
    assert parked_ids(docker_client, earlier) == left
    restarted = pooled(instance_id=earlier.settings.instance_id)
    assert await restarted.remove_stale(time.time()) == 1
    await engine_lists_none(docker_client, left)


# --- closing and settings ---------------------------------------------------------------------


@pytest.mark.docker
async def test_close_leaves_no_parked_or_used_container(
    pooled: Callable[..., PooledRuntime], spec: SpecFactory, docker_client: Any
) -> None:
    runtime = pooled()
    path = OnPath("pool", lambda **_: runtime)
    other = spec("echo other", memory_mb=32)
    assert await runtime.prewarm.warm(other)
    result = await path.run(runtime, spec("echo hit"))
    assert result.stdout == b"hit\n"
    assert containers_of_instance(docker_client, runtime.settings.instance_id)
    await runtime.close()
    assert containers_of_instance(docker_client, runtime.settings.instance_id) == []


async def test_no_parked_containers_means_the_cold_runtime(
    monkeypatch: pytest.MonkeyPatch, shim_binary: Path
) -> None:
    monkeypatch.setenv("SPAWNER_POOL_SHIM", str(shim_binary))
    pooled = app_runtime(SpawnerSettings())
    monkeypatch.setenv("SPAWNER_POOL_MAX_PARKED", "0")
    cold = app_runtime(SpawnerSettings())
    try:
        assert isinstance(pooled, PooledRuntime)
        assert type(cold) is DockerRuntime
    finally:
        await pooled.close()
        await cold.close()


def test_a_missing_shim_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="SPAWNER_POOL_MAX_PARKED=0"):
        PooledRuntime(SpawnerSettings(pool_shim=str(tmp_path / "no-shim")))
