"""``DockerRuntime`` against the real engine: results, limits, hardening, images, cleanup.

What a function sees and how its run ends is checked on both paths (``path``): a cold container,
and a container of the prewarm pool parked before the call (``PooledRuntime``). The engine's own
mechanics (pulls, the cold container's options, the reaper) are checked once, with pooled
variants where parked or taken containers differ.

The busybox image's ENTRYPOINT is ``sh -c``: the argument is a shell script. The argv-echo image
(Python) writes its argument back byte for byte. Pulls only ever name loopback registries.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from faas_common.contract import MANAGED_LABEL
from spawner_service.runtime.base import RunSpec
from spawner_service.runtime.docker import (
    DEADLINE_LABEL,
    EXECUTION_LABEL,
    INSTANCE_LABEL,
    MANAGED_VALUE,
    PARKED_BY_LABEL,
    POOL_LABEL,
    DockerRuntime,
    pooled_name,
)
from spawner_service.runtime.prewarm import SHIM_LINGER, SHIM_TARGET, PooledRuntime
from tests.integration.spawner.conftest import OnPath, SpecFactory, containers_of
from tests.integration.spawner.jobs import eventually

pytestmark = pytest.mark.docker

MISSING_IMAGE = "127.0.0.1:1/missing:1"
PHASES = {"cold": {"pull", "create", "start", "run", "remove"}, "pool": {"pool", "run"}}

RuntimeFactory = Callable[..., DockerRuntime]


@pytest.fixture
def runtime(make_runtime: RuntimeFactory) -> DockerRuntime:
    return make_runtime()


async def _wait_for_container(client: Any, prefix: str, within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(containers_of, client, prefix)
        if found:
            # The engine may list a container a moment before it can inspect it.
            with contextlib.suppress(docker.errors.NotFound):
                return await asyncio.to_thread(client.containers.get, found[0]["Id"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no container for {prefix} within {within} s")


# --- results ----------------------------------------------------------------------------------


async def test_echo(path: OnPath, spec: SpecFactory) -> None:
    result = await path.run(path.runtime(), spec('echo "hello $NAME"', env={"NAME": "world"}))
    assert result.outcome == "succeeded"
    assert result.exit_code == 0
    assert result.stdout == b"hello world\n"
    assert result.stderr_tail == b""
    assert set(result.timings) == PHASES[path.name]
    assert all(value >= 0 for value in result.timings.values())


ARGUMENTS = {
    "plain": "hello world",
    "unicode": "héllo wörld ✓ 日本語 🚀 Ωμέγα",
    "newlines": "line1\nline2\n\nline4\n",
    "quotes": 'it\'s "quoted" \\ back\\slash \'\' ""',
    "shell": "$(id) `whoami` ; ls | cat & echo $HOME > /tmp/x && true || false *",
    "spaces": "  leading and trailing  \t",
    "empty": "",
    "option-like": "--help",
    "100KB": "0123456789abcdé\n" * 6_000,
    "largest": "é\n" * 43_690 + "x",  # 131 071 bytes: the kernel's bound for one argv element
}


async def test_the_argument_arrives_byte_for_byte(
    path: OnPath, spec: SpecFactory, argv_echo_image: str
) -> None:
    runtime = path.runtime(max_containers=4)
    names = list(ARGUMENTS)
    results = await path.run_all(
        runtime, [spec(ARGUMENTS[name], image=argv_echo_image) for name in names]
    )
    for name, result in zip(names, results, strict=True):
        assert result.outcome == "succeeded", (name, result)
        assert result.stdout == ARGUMENTS[name].encode(), name
    assert len(ARGUMENTS["100KB"].encode()) == 102_000
    assert len(ARGUMENTS["largest"].encode()) == 131_071


async def test_non_zero_exit_is_a_function_failure(path: OnPath, spec: SpecFactory) -> None:
    result = await path.run(path.runtime(), spec("echo partial; echo oops >&2; exit 3"))
    assert result.outcome == "function_failed"
    assert result.exit_code == 3
    assert b"oops" in result.stderr_tail
    assert result.stdout == b"partial\n"
    assert result.detail == "exited with status 3"


async def test_an_image_without_entrypoint_fails_to_run_the_argument(
    path: OnPath, spec: SpecFactory, python_base: str
) -> None:
    # `docker run python:3.11-slim 'print(1)'` tries to execute a program named `print(1)`.
    result = await path.run(path.runtime(), spec("print(1)", image=python_base))
    assert result.outcome == "function_failed"
    assert result.exit_code == 127
    assert result.detail == "exited with status 127"


# --- limits -----------------------------------------------------------------------------------


async def test_timeout_kills_the_function(path: OnPath, spec: SpecFactory) -> None:
    started = time.monotonic()
    result = await path.run(path.runtime(), spec("echo started >&2; sleep 30", timeout_seconds=2))
    elapsed = time.monotonic() - started
    assert result.outcome == "timed_out"
    assert 2 <= elapsed < 8
    assert result.detail is not None
    assert "2 s timeout" in result.detail
    assert result.stderr_tail == b"started\n"
    assert result.stdout == b""
    assert result.timings["run"] >= 2000


async def test_endless_output_is_too_large_fast_and_memory_stays_bounded(
    path: OnPath, spec: SpecFactory
) -> None:
    runtime = path.runtime(output_limit_bytes=524_288)
    tracemalloc.start()
    try:
        started = time.monotonic()
        result = await path.run(runtime, spec("yes", timeout_seconds=60))
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.outcome == "output_too_large"
    assert result.stdout == b""
    assert elapsed < 10  # killed at the cap, not at the 60 s timeout
    assert peak < 8 * 1_048_576


async def test_output_at_the_cap_passes_and_one_byte_more_does_not(
    path: OnPath, spec: SpecFactory
) -> None:
    runtime = path.runtime(output_limit_bytes=200_000)
    sizes = (200_000, 200_001, 5_000_000)
    exact, over, finite = await path.run_all(
        runtime, [spec(f"head -c {size} /dev/zero") for size in sizes]
    )
    assert exact.outcome == "succeeded"
    assert exact.stdout == b"\0" * 200_000
    assert over.outcome == "output_too_large"
    assert finite.outcome == "output_too_large"


async def test_stderr_keeps_only_its_tail(path: OnPath, spec: SpecFactory) -> None:
    runtime = path.runtime(log_tail_bytes=1024)
    script = "head -c 3000000 /dev/zero >&2; echo THE-END >&2; echo ok"
    result = await path.run(runtime, spec(script))
    assert result.outcome == "succeeded"
    assert result.stdout == b"ok\n"
    assert len(result.stderr_tail) == 1024
    assert result.stderr_tail.endswith(b"\0THE-END\n")


async def test_a_memory_hog_is_killed(path: OnPath, spec: SpecFactory) -> None:
    started = time.monotonic()
    result = await path.run(
        path.runtime(),
        spec('x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo ${#x}', memory_mb=32),
    )
    assert time.monotonic() - started < 15
    assert result.outcome == "function_failed"
    assert result.exit_code == 137
    assert result.detail == "killed: out of memory (limit 32 MiB)"


async def test_a_fork_bomb_is_contained(path: OnPath, spec: SpecFactory) -> None:
    runtime = path.runtime()
    started = time.monotonic()
    bomb = spec("bomb() { bomb | bomb & }; bomb; sleep 10", timeout_seconds=4)
    result = await path.run(runtime, bomb)
    assert time.monotonic() - started < 12
    assert result.outcome in {"timed_out", "function_failed"}
    assert b"can't fork" in result.stderr_tail
    # The engine and this host are fine afterwards.
    after = await path.run(runtime, spec("echo still here"))
    assert after.outcome == "succeeded"
    assert after.stdout == b"still here\n"


# --- hardening --------------------------------------------------------------------------------


async def test_no_network(path: OnPath, spec: SpecFactory) -> None:
    # No interface but loopback: the connect fails in the container's kernel, no packet leaves.
    script = "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '; nc -w 2 1.1.1.1 80 </dev/null"
    result = await path.run(path.runtime(), spec(script))
    assert result.outcome == "function_failed"
    assert result.stdout == b"lo\n"
    assert b"Network is unreachable" in result.stderr_tail


async def test_root_is_read_only_and_tmp_is_a_small_noexec_tmpfs(
    path: OnPath, spec: SpecFactory
) -> None:
    runtime = path.runtime(tmpfs_mb=8)
    script = (
        "touch /written 2>&1 || echo root-read-only; "
        "echo data > /tmp/file && cat /tmp/file; "
        "cp /bin/busybox /tmp/bb && (/tmp/bb true 2>/dev/null || echo tmp-noexec); "
        "head -c 20000000 /dev/zero > /tmp/big 2>/dev/null || echo tmp-full"
    )
    result = await path.run(runtime, spec(script))
    lines = result.stdout.decode().splitlines()
    assert lines[0].endswith("Read-only file system")
    assert lines[1:] == ["root-read-only", "data", "tmp-noexec", "tmp-full"]


async def test_unprivileged_without_capabilities(path: OnPath, spec: SpecFactory) -> None:
    script = (
        "id -u; id -g; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status; "
        "cat /proc/1/comm"
    )
    result = await path.run(path.runtime(), spec(script))
    assert result.outcome == "succeeded"
    lines = result.stdout.decode().split("\n")
    assert lines[:2] == ["65534", "65534"]
    assert "CapPrm:\t0000000000000000" in lines
    assert "CapEff:\t0000000000000000" in lines
    assert "CapBnd:\t0000000000000000" in lines
    assert "NoNewPrivs:\t1" in lines
    assert lines[-2] in {"docker-init", "tini"}  # an init process reaps and forwards signals


async def test_container_configuration(
    runtime: DockerRuntime, spec: SpecFactory, docker_client: Any, prefix: str
) -> None:
    job = spec("sleep 1; echo done", memory_mb=96, env={"GREETING": "hi"}, timeout_seconds=20)
    running = asyncio.create_task(runtime.run(job))
    container = await _wait_for_container(docker_client, prefix)
    attrs = container.attrs
    host, config = attrs["HostConfig"], attrs["Config"]
    result = await running

    assert result.outcome == "succeeded"
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,size=64m,uid=65534,gid=65534,mode=1777"}
    assert host["ShmSize"] == 16 * 1_048_576
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["PidsLimit"] == 64
    assert host["Memory"] == host["MemorySwap"] == 96 * 1024 * 1024
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Init"] is True
    # Kept by the engine (bounded) for a spawner that may have to adopt the container.
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": str(8 * 1_048_576), "max-file": "2", "compress": "false"},
    }
    assert host["AutoRemove"] is False
    assert config["User"] == "65534:65534"
    assert config["Cmd"] == ["sleep 1; echo done"]
    assert config["Entrypoint"] == ["/bin/sh", "-c"]
    assert "GREETING=hi" in config["Env"]
    labels = config["Labels"]
    assert labels[MANAGED_LABEL] == MANAGED_VALUE
    assert labels[EXECUTION_LABEL] == job.execution_id
    assert float(labels[DEADLINE_LABEL]) >= job.deadline


def _parked(client: Any, runtime: DockerRuntime) -> list[dict[str, Any]]:
    """The containers ``runtime`` has parked, as the engine lists them."""
    found: list[dict[str, Any]] = client.api.containers(
        all=True,
        filters={
            "label": [f"{POOL_LABEL}=parked", f"{INSTANCE_LABEL}={runtime.settings.instance_id}"]
        },
    )
    return found


def _create_cold(client: Any, runtime: DockerRuntime, job: RunSpec) -> str:
    """A cold container of ``job`` created (not started) with the runtime's options."""
    container_id: str = client.containers.create(**runtime._create_kwargs(job, job.deadline)).id
    return container_id


async def test_a_parked_container_is_hardened_like_a_cold_one(
    make_runtime: RuntimeFactory, spec: SpecFactory, docker_client: Any, shim_binary: Path
) -> None:
    runtime = make_runtime(pool=True)
    assert isinstance(runtime, PooledRuntime)
    job = spec("echo unused", memory_mb=96, env={"GREETING": "hi"})
    assert await runtime.prewarm.warm(job)
    [parked] = await asyncio.to_thread(_parked, docker_client, runtime)
    cold_id = await asyncio.to_thread(_create_cold, docker_client, runtime, job)
    try:
        warm = await asyncio.to_thread(docker_client.api.inspect_container, parked["Id"])
        cold = await asyncio.to_thread(docker_client.api.inspect_container, cold_id)
    finally:
        await asyncio.to_thread(docker_client.api.remove_container, cold_id, force=True)

    assert warm["State"]["Running"] is True  # the shim waits for its frame
    assert warm["Image"] == cold["Image"]
    host, cold_host = warm["HostConfig"], cold["HostConfig"]
    assert {k for k in host.keys() | cold_host.keys() if host.get(k) != cold_host.get(k)} == {
        "PidsLimit",
        "Mounts",
    }
    assert host["PidsLimit"] == cold_host["PidsLimit"] + 1  # the shim's own
    assert host["Mounts"] == [
        {"Type": "bind", "Source": str(shim_binary), "Target": SHIM_TARGET, "ReadOnly": True}
    ]
    config, cold_config = warm["Config"], cold["Config"]
    assert config["Entrypoint"] == [SHIM_TARGET]
    assert config["Cmd"] == [SHIM_LINGER]
    # The end of the spawner's attach connection is the end of the shim's stdin.
    assert (config["OpenStdin"], config["StdinOnce"]) == (True, True)
    assert cold_config["OpenStdin"] is False
    assert config["Env"] == cold_config["Env"]
    assert "GREETING=hi" in config["Env"]
    assert config["User"] == cold_config["User"] == "65534:65534"
    labels = dict(config["Labels"])
    assert labels.pop(POOL_LABEL) == "parked"
    assert labels.pop(PARKED_BY_LABEL) == runtime.run_token
    assert float(labels.pop(DEADLINE_LABEL)) > time.time()
    cold_labels = dict(cold_config["Labels"])
    del cold_labels[EXECUTION_LABEL], cold_labels[DEADLINE_LABEL]
    assert labels == cold_labels


# --- images -----------------------------------------------------------------------------------


async def test_a_missing_image_that_cannot_be_pulled(
    runtime: DockerRuntime, spec: SpecFactory
) -> None:
    result = await runtime.run(spec("echo never", image=MISSING_IMAGE))
    assert result.outcome == "image_unavailable"
    assert result.detail == "The image's registry could not be reached (registry_unreachable)"
    assert runtime.pulls_started == 1


async def test_an_invalid_reference_is_image_unavailable(
    runtime: DockerRuntime, spec: SpecFactory
) -> None:
    result = await runtime.run(spec("echo never", image="UPPER/Case"))
    assert result.outcome == "image_unavailable"
    assert result.detail == "The image reference is not valid (invalid_reference)"
    assert runtime.pulls_started == 0


@contextlib.asynccontextmanager
async def slow_registry(hold: float) -> AsyncIterator[tuple[str, list[float]]]:
    """A loopback TCP server that accepts and says nothing for ``hold`` s: a slow, failing pull."""
    connections: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(time.monotonic())
        await asyncio.sleep(hold)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", connections
    finally:
        server.close()
        await server.wait_closed()


async def test_concurrent_waiters_share_one_pull(runtime: DockerRuntime, spec: SpecFactory) -> None:
    async with slow_registry(hold=1.0) as (registry, connections):
        image = f"{registry}/slow/missing:1"
        results = await asyncio.gather(
            *(runtime.run(spec("echo never", image=image)) for _ in range(5))
        )
    assert [r.outcome for r in results] == ["image_unavailable"] * 5
    assert runtime.pulls_started == 1
    assert connections  # the engine did try, through our loopback server
    # A later activation tries again (failures are not cached).
    again = await runtime.run(spec("echo never", image=MISSING_IMAGE))
    assert again.outcome == "image_unavailable"
    assert runtime.pulls_started == 2


# --- cleanup ----------------------------------------------------------------------------------


async def test_a_cancelled_run_removes_its_container(
    path: OnPath, spec: SpecFactory, docker_client: Any, prefix: str
) -> None:
    runtime = path.runtime()
    running = asyncio.create_task(path.run(runtime, spec("sleep 30", timeout_seconds=60)))
    await _wait_for_container(docker_client, prefix, within=70)
    await asyncio.sleep(0.5)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    if path.pooled:  # a taken container is removed off the request path, even then

        async def removed() -> bool:
            return not await asyncio.to_thread(containers_of, docker_client, prefix)

        await eventually(removed)
    assert await asyncio.to_thread(containers_of, docker_client, prefix) == []


async def test_cancelling_at_any_phase_leaves_no_container(
    runtime: DockerRuntime, spec: SpecFactory, docker_client: Any, prefix: str
) -> None:
    # From "before the create returned" to "running": every phase of a run gets cancelled once.
    for delay in (0.0, 0.005, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5):
        running = asyncio.create_task(runtime.run(spec("sleep 30", timeout_seconds=60)))
        await asyncio.sleep(delay)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert await asyncio.to_thread(containers_of, docker_client, prefix) == [], delay


async def test_remove_stale_takes_only_long_dead_containers(
    make_runtime: RuntimeFactory, busybox: str, docker_client: Any, prefix: str
) -> None:
    runtime = make_runtime(stale_after_seconds=60)
    now = time.time()

    def create(name: str, deadline: float | None) -> Any:
        labels = {MANAGED_LABEL: MANAGED_VALUE, EXECUTION_LABEL: f"{prefix}{name}"}
        if deadline is not None:
            labels[DEADLINE_LABEL] = str(int(deadline))
        return docker_client.containers.create(
            busybox, command=["sleep 60"], network_mode="none", labels=labels
        )

    stale = await asyncio.to_thread(create, "stale", now - 3600)
    in_grace = await asyncio.to_thread(create, "in-grace", now - 10)
    live = await asyncio.to_thread(create, "live", now + 600)
    unlabelled = await asyncio.to_thread(create, "no-deadline", None)
    await asyncio.to_thread(live.start)
    try:
        removed = await runtime.remove_stale(time.time())
        assert removed >= 1
        left = {c["Labels"][EXECUTION_LABEL] for c in containers_of(docker_client, prefix)}
        assert left == {f"{prefix}in-grace", f"{prefix}live", f"{prefix}no-deadline"}
        live.reload()
        assert live.status == "running"  # live work is never touched
        assert stale.id not in {c["Id"] for c in containers_of(docker_client, prefix)}
    finally:
        for container in (stale, in_grace, live, unlabelled):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(container.remove, force=True)


def _create_pooled(client: Any, image: str, name: str, parked_until: float) -> str:
    """A container labelled as parked until ``parked_until``, named ``name``."""
    labels = {MANAGED_LABEL: MANAGED_VALUE, POOL_LABEL: "parked"}
    labels[DEADLINE_LABEL] = str(int(parked_until))
    container_id: str = client.containers.create(
        image, command=["sleep 60"], network_mode="none", labels=labels, name=name
    ).id
    return container_id


async def test_remove_stale_judges_parked_containers_by_label_and_taken_ones_by_name(
    make_runtime: RuntimeFactory, busybox: str, docker_client: Any, prefix: str
) -> None:
    runtime = make_runtime(stale_after_seconds=60)
    now, tag = time.time(), prefix.rstrip("-")
    made = {
        "parked-stale": (f"faas-pool-{tag}-a", now - 3600),
        "parked-live": (f"faas-pool-{tag}-b", now + 600),
        # Taken: the deadline in the name is the call's, the label still says the park's.
        "taken-stale": (pooled_name(f"{prefix}taken-stale", now - 3600), now + 600),
        "taken-live": (pooled_name(f"{prefix}taken-live", now + 600), now - 3600),
    }
    ids = {
        key: await asyncio.to_thread(_create_pooled, docker_client, busybox, name, until)
        for key, (name, until) in made.items()
    }
    try:
        assert await runtime.remove_stale(time.time()) >= 2
        listed = await asyncio.to_thread(docker_client.api.containers, all=True)
        left = {
            key for key, container_id in ids.items() if container_id in {c["Id"] for c in listed}
        }
        assert left == {"parked-live", "taken-live"}
    finally:
        for container_id in ids.values():
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    docker_client.api.remove_container, container_id, force=True
                )


async def test_ping(runtime: DockerRuntime) -> None:
    assert await runtime.ping() is True
