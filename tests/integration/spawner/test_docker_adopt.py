"""``DockerRuntime.adopt`` against the real engine: a spawner SIGKILLed while its function runs
leaves the container behind; a fresh runtime takes it over instead of starting a second one.

The dead spawner is a real one: a Python subprocess running ``DockerRuntime.run``, killed by its
PID once its container runs. Leftovers in other states (exited, past their deadline, OOM-killed)
are made with the runtime's own container options, so their log configuration is the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spawner_service.runtime.base import RunSpec
from spawner_service.runtime.docker import DockerRuntime
from tests.integration.spawner.conftest import SpecFactory, containers_of

pytestmark = [pytest.mark.docker, pytest.mark.timeout(90)]

RuntimeFactory = Callable[..., DockerRuntime]
Crash = Callable[[RunSpec], Awaitable[dict[str, Any]]]

CRASHING_SPAWNER = """\
import asyncio, json, sys
from spawner_service.config import SpawnerSettings
from spawner_service.runtime.base import RunSpec
from spawner_service.runtime.docker import DockerRuntime

async def main() -> None:
    runtime = DockerRuntime(SpawnerSettings(max_containers=1))
    print(await runtime.run(RunSpec(**json.loads(sys.argv[1]))), flush=True)

asyncio.run(main())
"""


async def _container(
    client: Any, execution_id: str, states: set[str], *, within: float = 20.0
) -> dict[str, Any]:
    """The container of ``execution_id`` once it is in one of ``states``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(containers_of, client, execution_id)
        if found and found[0]["State"] in states:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no container of {execution_id} in {states} within {within} s")


@pytest.fixture
def crashed_spawner(tmp_path: Path, docker_client: Any) -> Iterator[Crash]:
    """``await crashed_spawner(spec)``: a spawner process runs ``spec`` and is SIGKILLed by its
    PID as soon as the container runs; returns the container's listing, still running."""
    processes: list[asyncio.subprocess.Process] = []

    async def crash(spec: RunSpec) -> dict[str, Any]:
        errors = tmp_path / f"spawner-{len(processes)}.err"
        with errors.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CRASHING_SPAWNER,
                json.dumps(dataclasses.asdict(spec)),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        processes.append(process)
        try:
            return await _container(docker_client, spec.execution_id, {"running"})
        except AssertionError:
            raise AssertionError(f"the spawner did not start it: {errors.read_text()}") from None
        finally:
            os.kill(process.pid, signal.SIGKILL)
            assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL

    yield crash
    for process in processes:  # a failed wait above must not leave one running
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


async def _leave_behind(
    runtime: DockerRuntime,
    docker_client: Any,
    spec: RunSpec,
    *,
    deadline: float | None = None,
    start: bool = True,
) -> dict[str, Any]:
    """Create and start ``spec``'s container as a spawner would, then wait for it to exit (or,
    with ``start`` false, leave it created: a spawner that died between create and start)."""
    options = runtime._create_kwargs(spec, spec.deadline if deadline is None else deadline)
    container = await asyncio.to_thread(docker_client.containers.create, **options)
    if not start:
        return await _container(docker_client, spec.execution_id, {"created"})
    await asyncio.to_thread(container.start)
    return await _container(docker_client, spec.execution_id, {"exited"})


async def test_a_running_container_of_a_killed_spawner_is_adopted(
    make_runtime: RuntimeFactory, spec: SpecFactory, docker_client: Any, crashed_spawner: Crash
) -> None:
    job = spec("sleep 2; echo adopted-output; echo to-stderr >&2; exit 3", timeout_seconds=30)
    await crashed_spawner(job)
    leftovers = await asyncio.to_thread(containers_of, docker_client, job.execution_id)
    assert [c["State"] for c in leftovers] == ["running"]  # exactly one was ever created

    started = time.monotonic()
    result = await make_runtime().adopt(job)
    assert result is not None
    assert result.outcome == "function_failed", result
    assert result.exit_code == 3
    assert result.stdout == b"adopted-output\n"
    assert result.stderr_tail == b"to-stderr\n"
    assert result.detail == "exited with status 3"
    assert result.started is True
    assert {"run", "remove"} <= set(result.timings)
    assert 0.5 <= time.monotonic() - started < 10  # it waited for the function's end
    assert await asyncio.to_thread(containers_of, docker_client, job.execution_id) == []


async def test_an_adopted_function_that_succeeds(
    make_runtime: RuntimeFactory, spec: SpecFactory, docker_client: Any, crashed_spawner: Crash
) -> None:
    job = spec("sleep 1; echo done", timeout_seconds=30)
    await crashed_spawner(job)
    result = await make_runtime().adopt(job)
    assert result is not None
    assert result.outcome == "succeeded", result
    assert (result.exit_code, result.stdout, result.started) == (0, b"done\n", True)
    assert await asyncio.to_thread(containers_of, docker_client, job.execution_id) == []


async def test_an_unknown_execution_is_not_adopted(
    make_runtime: RuntimeFactory, spec: SpecFactory
) -> None:
    assert await make_runtime().adopt(spec("echo never")) is None


async def test_an_exited_leftover_is_collected(
    make_runtime: RuntimeFactory, spec: SpecFactory, docker_client: Any, crashed_spawner: Crash
) -> None:
    # Text comes back exactly, also a line longer than the engine's 16 KiB log entries; each
    # byte that is not UTF-8 comes back as U+FFFD (as the record's text would have it anyway).
    script = r"sleep 1; head -c 20000 /dev/zero | tr '\0' a; printf '\nnext é\x80\x00'; echo e >&2"
    job = spec(script, timeout_seconds=30)
    await crashed_spawner(job)
    await _container(docker_client, job.execution_id, {"exited"})
    result = await make_runtime().adopt(job)
    assert result is not None
    assert result.outcome == "succeeded", result
    assert result.stdout == b"a" * 20_000 + "\nnext é\ufffd\0".encode()
    assert result.stderr_tail == b"e\n"
    assert result.started is True
    assert await asyncio.to_thread(containers_of, docker_client, job.execution_id) == []


async def test_a_leftover_past_its_deadline_is_killed(
    make_runtime: RuntimeFactory, spec: SpecFactory, docker_client: Any, crashed_spawner: Crash
) -> None:
    job = spec("echo started >&2; sleep 60; echo never", timeout_seconds=2)
    await crashed_spawner(job)
    started = time.monotonic()
    result = await make_runtime().adopt(job)
    elapsed = time.monotonic() - started
    assert result is not None
    assert result.outcome == "timed_out", result
    assert result.stdout == b""
    assert result.stderr_tail == b"started\n"
    assert result.started is True
    assert elapsed < 10  # the container's deadline label, not the 60 s sleep
    assert await asyncio.to_thread(containers_of, docker_client, job.execution_id) == []


async def test_an_exited_leftover_that_ran_past_its_deadline_timed_out(
    make_runtime: RuntimeFactory, spec: SpecFactory, docker_client: Any
) -> None:
    runtime = make_runtime()
    # Nobody killed it at its deadline (its spawner was gone): it finished 20 s too late.
    job = spec("echo late", timeout_seconds=2)
    await _leave_behind(runtime, docker_client, job, deadline=time.time() - 20)
    result = await runtime.adopt(job)
    assert result is not None
    assert result.outcome == "timed_out", result
    assert result.stdout == b""


async def test_an_oom_killed_leftover_is_reported_like_a_run(
    make_runtime: RuntimeFactory, spec: SpecFactory, docker_client: Any
) -> None:
    runtime = make_runtime()
    job = spec('x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo ${#x}', memory_mb=32)
    await _leave_behind(runtime, docker_client, job)
    result = await runtime.adopt(job)
    assert result is not None
    assert result.outcome == "function_failed"
    assert result.exit_code == 137
    assert result.detail == "killed: out of memory (limit 32 MiB)"


async def test_an_adopted_output_keeps_the_cap_and_the_tail(
    make_runtime: RuntimeFactory, spec: SpecFactory, docker_client: Any
) -> None:
    runtime = make_runtime(output_limit_bytes=200_000, log_tail_bytes=1024)
    chatty = "head -c 3000000 /dev/zero | tr '\\0' x >&2; echo THE-END >&2"
    exact = spec(f"{chatty}; head -c 200000 /dev/zero")
    await _leave_behind(runtime, docker_client, exact)

    kept = await runtime.adopt(exact)
    assert kept is not None
    assert kept.outcome == "succeeded", kept
    assert kept.stdout == b"\0" * 200_000
    assert len(kept.stderr_tail) == 1024
    assert kept.stderr_tail.endswith(b"xTHE-END\n")


@pytest.mark.parametrize(
    ("settings", "script", "detail"),
    [
        ({"output_limit_bytes": 200_000}, "head -c 200001 /dev/zero", "went over 200000 bytes"),
        # 6 MB of stderr: more than the first log file holds, so the engine may have dropped
        # the start of the output (stdout included): no result is better than a cut one.
        ({}, "echo first; head -c 6000000 /dev/zero >&2", "may be incomplete"),
    ],
    ids=["over-the-cap", "over-what-the-engine-keeps"],
)
async def test_an_adopted_output_too_large_is_never_cut(
    make_runtime: RuntimeFactory,
    spec: SpecFactory,
    docker_client: Any,
    settings: dict[str, Any],
    script: str,
    detail: str,
) -> None:
    runtime = make_runtime(**settings)
    job = spec(script)
    await _leave_behind(runtime, docker_client, job)
    result = await runtime.adopt(job)
    assert result is not None
    assert result.outcome == "output_too_large"
    assert result.detail is not None
    assert detail in result.detail
    assert result.stdout == b""


async def test_the_sweep_leaves_an_exited_container_to_adopt_within_its_grace(
    make_runtime: RuntimeFactory, spec: SpecFactory, docker_client: Any
) -> None:
    runtime = make_runtime(stale_after_seconds=60)
    job = spec("echo kept")
    deadline = time.time()  # labelled as its next whole second
    await _leave_behind(runtime, docker_client, job, deadline=deadline)
    await asyncio.sleep(max(int(deadline) + 1.1 - time.time(), 0))
    await runtime.remove_stale(time.time())  # past its deadline, within its grace
    assert len(await asyncio.to_thread(containers_of, docker_client, job.execution_id)) == 1
    result = await runtime.adopt(job)
    assert result is not None
    assert result.outcome == "succeeded"
    assert result.stdout == b"kept\n"


async def test_a_container_that_never_started_is_removed_and_not_adopted(
    make_runtime: RuntimeFactory, spec: SpecFactory, docker_client: Any
) -> None:
    runtime = make_runtime()
    job = spec("echo never")
    await _leave_behind(runtime, docker_client, job, start=False)
    assert await runtime.adopt(job) is None  # nothing ran: the caller may run the job
    assert await asyncio.to_thread(containers_of, docker_client, job.execution_id) == []
