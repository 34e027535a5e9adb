"""The sandbox's storage against the real engine: an image's ``VOLUME`` becomes a tmpfs out of the
scratch budget, never host storage; ``/dev/shm`` is capped; every removal takes the anonymous
volumes of a container along (runs, the stale-container sweep, adoption). What a function sees
is checked on both paths (``path``): a cold container and a parked one of the prewarm pool.

The volume image is ``FROM scratch`` with the static busybox and ``VOLUME /data``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from faas_common.contract import MANAGED_LABEL
from spawner_service.runtime.docker import (
    DEADLINE_LABEL,
    EXECUTION_LABEL,
    MANAGED_VALUE,
    DockerRuntime,
)
from tests.integration.spawner.conftest import OnPath, SpecFactory, containers_of
from tests.support.images import BUSYBOX, build, image_exists

pytestmark = pytest.mark.docker

RuntimeFactory = Callable[..., DockerRuntime]
VOLUME_IMAGE = "faas-test/busybox-volume:1"
NO_SPACE = "No space left on device"


@pytest.fixture(scope="session")
def volume_image() -> str:
    """Busybox with ``VOLUME /data`` (and the shell as ENTRYPOINT)."""
    if not image_exists(VOLUME_IMAGE):
        with tempfile.TemporaryDirectory() as tmp:
            context = Path(tmp)
            shutil.copy2(BUSYBOX, context / "busybox")
            build(
                context,
                VOLUME_IMAGE,
                "FROM scratch\n"
                "COPY busybox /bin/busybox\n"
                'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                "VOLUME /data\n"
                'ENTRYPOINT ["/bin/sh", "-c"]\n',
            )
    return VOLUME_IMAGE


def volume_names(client: Any) -> set[str]:
    return {volume["Name"] for volume in client.api.volumes()["Volumes"] or []}


def volumes_of(client: Any, container_id: str) -> set[str]:
    mounts = client.api.inspect_container(container_id)["Mounts"]
    return {mount["Name"] for mount in mounts if mount["Type"] == "volume"}


async def _running_container(client: Any, prefix: str, within: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(containers_of, client, prefix)
        if found and found[0]["State"] == "running":
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no running container for {prefix} within {within} s")


def write(path: str, kib: int) -> str:
    """A script writing ``kib`` KiB to ``path``: prints ``written`` or dd's error."""
    return (
        f"dd if=/dev/zero of={path} bs=1024 count={kib} 2>&1 | grep -o '{NO_SPACE}' || echo written"
    )


async def test_a_declared_volume_is_a_capped_tmpfs_and_no_host_volume(
    path: OnPath,
    spec: SpecFactory,
    volume_image: str,
    docker_client: Any,
    prefix: str,
) -> None:
    # An 8 MiB budget: /tmp and /data get 4 MiB each.
    runtime = path.runtime(tmpfs_mb=8)
    before = await asyncio.to_thread(volume_names, docker_client)
    script = f"{write('/data/big', 6000)}; {write('/tmp/small', 3000)}; sleep 1; ls -ln /data/big"
    running = asyncio.create_task(path.run(runtime, spec(script, image=volume_image)))
    container = await _running_container(docker_client, prefix, within=70)
    mounted = await asyncio.to_thread(volumes_of, docker_client, container["Id"])
    host = (await asyncio.to_thread(docker_client.api.inspect_container, container["Id"]))[
        "HostConfig"
    ]
    result = await running

    assert result.outcome == "succeeded", result
    lines = result.stdout.decode().splitlines()
    assert lines[:2] == [NO_SPACE, "written"]
    assert lines[2].split()[4] == str(4 * 1_048_576)  # the file stopped at the cap
    assert mounted == set()  # the engine made no volume for /data
    assert host["Tmpfs"] == {
        "/tmp": "rw,noexec,nosuid,size=4m,uid=65534,gid=65534,mode=1777",
        "/data": "rw,noexec,nosuid,size=4m,uid=65534,gid=65534,mode=1777",
    }
    assert await asyncio.to_thread(volume_names, docker_client) == before


async def test_dev_shm_is_capped(path: OnPath, spec: SpecFactory) -> None:
    runtime = path.runtime(shm_bytes=2 * 1_048_576)
    script = f"{write('/dev/shm/a', 1024)}; {write('/dev/shm/b', 2048)}"
    result = await path.run(runtime, spec(script))
    assert result.outcome == "succeeded", result
    assert result.stdout.decode().splitlines() == ["written", NO_SPACE]


async def test_the_default_dev_shm_is_16_mib(path: OnPath, spec: SpecFactory) -> None:
    result = await path.run(path.runtime(), spec("df -k /dev/shm | tail -n 1"))
    assert result.outcome == "succeeded", result
    assert result.stdout.split()[1] == b"16384"


def _create_leftover(client: Any, image: str, execution_id: str, deadline: float) -> str:
    """A managed container made without the runtime's options: its ``VOLUME`` becomes an
    anonymous host volume (what an older spawner, or a dead one mid-create, leaves behind)."""
    labels = {
        MANAGED_LABEL: MANAGED_VALUE,
        EXECUTION_LABEL: execution_id,
        DEADLINE_LABEL: str(int(deadline)),
    }
    container_id: str = client.api.create_container(
        image, command=["exit 0"], labels=labels, host_config=client.api.create_host_config()
    )["Id"]
    return container_id


async def test_the_stale_sweep_removes_the_volumes_of_a_container(
    make_runtime: RuntimeFactory, volume_image: str, docker_client: Any, prefix: str
) -> None:
    runtime = make_runtime(stale_after_seconds=60)
    container_id = await asyncio.to_thread(
        _create_leftover, docker_client, volume_image, f"{prefix}stale", time.time() - 3600
    )
    [volume] = await asyncio.to_thread(volumes_of, docker_client, container_id)
    assert await runtime.remove_stale(time.time()) >= 1
    assert await asyncio.to_thread(containers_of, docker_client, prefix) == []
    assert volume not in await asyncio.to_thread(volume_names, docker_client)


async def test_adoption_removes_the_volumes_of_a_container(
    make_runtime: RuntimeFactory,
    spec: SpecFactory,
    volume_image: str,
    docker_client: Any,
    prefix: str,
) -> None:
    runtime = make_runtime()
    job = spec("exit 0", image=volume_image)
    container_id = await asyncio.to_thread(
        _create_leftover, docker_client, volume_image, job.execution_id, job.deadline
    )
    [volume] = await asyncio.to_thread(volumes_of, docker_client, container_id)
    await asyncio.to_thread(docker_client.api.start, container_id)
    await asyncio.to_thread(docker_client.api.wait, container_id, timeout=20)
    result = await runtime.adopt(job)
    assert result is not None
    assert result.outcome == "succeeded", result
    assert await asyncio.to_thread(containers_of, docker_client, prefix) == []
    assert volume not in await asyncio.to_thread(volume_names, docker_client)
