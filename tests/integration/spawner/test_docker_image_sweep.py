"""The opt-in image sweep against the real engine and a real ``image_use`` bucket: what counts as
used (a container the runtime created from the image, at the runtime's injected clock), what is
removed (recorded and unused for the given time), what never is (images the platform never ran,
images a container still uses, images other tags also name).

Each test builds images of its own (busybox plus a unique label, so a unique image id)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from faas_common.contract import IMAGE_USE_BUCKET
from faas_common.nats import connect_nats
from spawner_service.app import image_sweep
from spawner_service.config import SpawnerSettings
from spawner_service.runtime.docker import DockerRuntime
from spawner_service.runtime.image_sweep import DAY, KvImageUse
from tests.integration.spawner.conftest import SpecFactory, containers_of
from tests.support.images import build, docker, image_exists

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

DAY0 = 1_800_000_000.0
"""The injected clock's first day (epoch seconds)."""


class Clock:
    def __init__(self) -> None:
        self.now = DAY0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def image_use(nats_url: str) -> AsyncIterator[KvImageUse]:
    nc: NATS = await connect_nats([nats_url], name="image-sweep-test", connect_timeout=15)
    bucket = f"image_use_test_{uuid.uuid4().hex[:12]}"
    try:
        yield await KvImageUse.open(nc.jetstream(), bucket=bucket)
    finally:
        await nc.jetstream().delete_key_value(bucket)
        await nc.close()


@pytest.fixture
def make_image(busybox: str) -> Iterator[Callable[[], str]]:
    """``make_image()``: a new image (its own id) on the engine; all of them gone afterwards."""
    tags: list[str] = []

    def make() -> str:
        tag = f"faas-test/sweep-{uuid.uuid4().hex[:10]}:1"
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp), tag, f"FROM {busybox}\nLABEL faas.test.sweep={tag}\n")
        tags.append(tag)
        return tag

    yield make
    for tag in tags:
        with contextlib.suppress(RuntimeError):
            docker("rmi", "-f", tag)


@pytest.fixture
async def swept_runtime(image_use: KvImageUse) -> AsyncIterator[tuple[DockerRuntime, Clock]]:
    clock = Clock()
    runtime = DockerRuntime(
        SpawnerSettings(max_containers=2, image_sweep_days=2), image_use=image_use, clock=clock
    )
    try:
        yield runtime, clock
    finally:
        await runtime.close()


async def use(
    runtime: DockerRuntime, spec: SpecFactory, image: str, argument: str = "true"
) -> None:
    """Run a function on ``image``; return once its use is recorded."""
    result = await runtime.run(spec(argument, image=image))
    assert result.outcome == "succeeded", result
    await touched(runtime)


async def touched(runtime: DockerRuntime) -> None:
    """Once the uses being recorded are stored."""
    if runtime._touches:
        await asyncio.wait(set(runtime._touches))


async def recorded(image_use: KvImageUse, runtime: DockerRuntime) -> set[str]:
    engine = await runtime._engine(await runtime._connected())
    return {record.reference for record in await image_use.records(engine)}


async def test_only_images_unused_for_the_given_days_are_removed(
    swept_runtime: tuple[DockerRuntime, Clock],
    image_use: KvImageUse,
    spec: SpecFactory,
    make_image: Callable[[], str],
) -> None:
    runtime, clock = swept_runtime
    old, recent, never_run = [await asyncio.to_thread(make_image) for _ in range(3)]
    await use(runtime, spec, old)
    clock.now = DAY0 + 2 * DAY
    await use(runtime, spec, recent)
    assert await recorded(image_use, runtime) == {old, recent}

    # Day 3, 2 days: `old` (3 days unused) goes; `recent` (1 day) and the image the platform
    # never ran stay.
    assert await runtime.sweep_images(DAY0 + 3 * DAY, 2 * DAY) == 1
    assert not await asyncio.to_thread(image_exists, old)
    assert await asyncio.to_thread(image_exists, recent)
    assert await asyncio.to_thread(image_exists, never_run)
    assert await recorded(image_use, runtime) == {recent}

    # Used again on day 3: its clock starts over.
    clock.now = DAY0 + 3 * DAY
    await use(runtime, spec, recent)
    assert await runtime.sweep_images(DAY0 + 4.5 * DAY, 2 * DAY) == 0
    assert await asyncio.to_thread(image_exists, recent)
    assert await runtime.sweep_images(DAY0 + 5 * DAY, 2 * DAY) == 1
    assert not await asyncio.to_thread(image_exists, recent)
    assert await asyncio.to_thread(image_exists, never_run)


async def test_an_image_a_container_still_uses_is_kept_until_it_is_free(
    swept_runtime: tuple[DockerRuntime, Clock],
    image_use: KvImageUse,
    spec: SpecFactory,
    make_image: Callable[[], str],
    docker_client: Any,
    prefix: str,
) -> None:
    runtime, _ = swept_runtime
    image = await asyncio.to_thread(make_image)
    running = asyncio.create_task(runtime.run(spec("sleep 3; echo done", image=image)))
    for _ in range(200):  # until its container exists (at most 10 s)
        if await asyncio.to_thread(containers_of, docker_client, prefix):
            break
        await asyncio.sleep(0.05)
    await touched(runtime)
    assert await runtime.sweep_images(DAY0 + 10 * DAY, 2 * DAY) == 0  # the engine refused
    assert await asyncio.to_thread(image_exists, image)
    assert await recorded(image_use, runtime) == {image}
    assert (await running).outcome == "succeeded"
    assert await runtime.sweep_images(DAY0 + 10 * DAY, 2 * DAY) == 1
    assert not await asyncio.to_thread(image_exists, image)


async def test_an_image_other_tags_also_name_is_kept(
    swept_runtime: tuple[DockerRuntime, Clock],
    image_use: KvImageUse,
    spec: SpecFactory,
    make_image: Callable[[], str],
) -> None:
    runtime, _ = swept_runtime
    image = await asyncio.to_thread(make_image)
    other = f"{image.rsplit(':', 1)[0]}-platform:1"
    await asyncio.to_thread(docker, "tag", image, other)
    try:
        await use(runtime, spec, image)
        assert await runtime.sweep_images(DAY0 + 10 * DAY, 2 * DAY) == 0
        assert await asyncio.to_thread(image_exists, image)
        assert await asyncio.to_thread(image_exists, other)
    finally:
        with contextlib.suppress(RuntimeError):
            await asyncio.to_thread(docker, "rmi", "-f", other)


async def test_without_a_use_record_nothing_is_swept(
    spec: SpecFactory, make_image: Callable[[], str]
) -> None:
    runtime = DockerRuntime(SpawnerSettings(max_containers=1))  # the sweep is off
    try:
        image = await asyncio.to_thread(make_image)
        result = await runtime.run(spec("true", image=image))
        assert result.outcome == "succeeded"
        assert runtime._touches == set()
        assert await runtime.sweep_images(DAY0 + 100 * DAY, 0) == 0
        assert await asyncio.to_thread(image_exists, image)
    finally:
        await runtime.close()


async def test_the_spawner_records_uses_only_with_the_sweep_on(nats_url: str) -> None:
    nc: NATS = await connect_nats([nats_url], name="image-sweep-wiring", connect_timeout=15)
    off = DockerRuntime(SpawnerSettings(image_sweep_days=0))
    on = DockerRuntime(SpawnerSettings(image_sweep_days=30))
    try:
        async with image_sweep(off.settings, nc, off):
            assert off.image_use is None
        async with image_sweep(on.settings, nc, on):
            assert isinstance(on.image_use, KvImageUse)
            assert on.image_use.kv._name == IMAGE_USE_BUCKET
    finally:
        await off.close()
        await on.close()
        await nc.close()
