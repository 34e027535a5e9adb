"""A spawner's whole life in one context manager, for ``python -m spawner_service`` and for the
local stack, which runs one spawner inside its own process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from faas_common.contract import FUNCTIONS_BUCKET
from faas_common.metrics import SPAWNER_SLOTS
from faas_common.nats import ReconnectHook, connect_nats, drain_nats, ensure_kv
from spawner_service.config import SpawnerSettings
from spawner_service.drain import FunctionChanges
from spawner_service.runtime.docker import DockerRuntime
from spawner_service.runtime.image_sweep import KvImageUse, sweep_forever
from spawner_service.runtime.prewarm import PooledRuntime
from spawner_service.worker import Worker


@dataclass(frozen=True)
class RunningWorker:
    worker: Worker
    task: asyncio.Task[None]
    """Ends when the worker has stopped (after ``worker.stop()``) or failed (its exception)."""


def slots_of(worker: Worker) -> Callable[[], dict[tuple[str, ...], float]]:
    """The worker's slots as ``faas_spawner_slots`` counts them: busy (jobs held) and total."""
    return lambda: {
        ("busy",): worker.running_jobs,
        ("total",): worker.settings.max_containers,
    }


@asynccontextmanager
async def image_sweep(
    settings: SpawnerSettings, nc: NATS, runtime: DockerRuntime
) -> AsyncIterator[None]:
    """With ``SPAWNER_IMAGE_SWEEP_DAYS`` above 0: the runtime records its images' uses and a
    task sweeps unused ones (at once, then hourly) until the block is left."""
    if settings.image_sweep_days <= 0:
        yield
        return
    runtime.image_use = await KvImageUse.open(
        nc.jetstream(), replicas=settings.nats_replicas, max_bytes=settings.bucket_max_bytes
    )
    task = asyncio.create_task(
        sweep_forever(runtime, settings.image_sweep_days, clock=time.time), name="image-sweep"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def pool_drains(
    settings: SpawnerSettings, nc: NATS, runtime: DockerRuntime, hooks: list[ReconnectHook]
) -> AsyncIterator[None]:
    """With the pool on: the ``functions`` bucket watched, each change draining the changed
    function's prewarmed containers, until the block is left."""
    if not isinstance(runtime, PooledRuntime):
        yield
        return
    kv = await ensure_kv(
        nc.jetstream(),
        FUNCTIONS_BUCKET,
        replicas=settings.nats_replicas,
        max_bytes=settings.functions_max_bytes,
    )
    changes = FunctionChanges(kv, runtime.drain)
    hooks.append(changes.restart)
    await changes.start()
    try:
        yield
    finally:
        await changes.stop()


def make_runtime(settings: SpawnerSettings) -> DockerRuntime:
    """The pooled runtime, or with ``SPAWNER_POOL_MAX_PARKED=0`` the cold one."""
    return PooledRuntime(settings) if settings.pool else DockerRuntime(settings)


@asynccontextmanager
async def running_worker(settings: SpawnerSettings) -> AsyncIterator[RunningWorker]:
    """Docker checked, NATS connected, the worker consuming in a task.

    Leaving the block stops fetching, lets the worker finish the jobs it holds, drains NATS and
    closes the Docker client. ``NatsUnavailable`` when NATS cannot be reached at start-up.
    While the worker runs, its slots are counted in ``faas_spawner_slots``.
    """
    runtime = make_runtime(settings)
    on_reconnect: list[ReconnectHook] = []
    try:
        nc = await connect_nats(
            settings.nats_servers,
            name=f"spawner-service:{settings.instance_id}",
            connect_timeout=settings.nats_connect_timeout,
            on_reconnect=on_reconnect,
        )
        try:
            async with (
                image_sweep(settings, nc, runtime),
                pool_drains(settings, nc, runtime, on_reconnect),
            ):
                worker = Worker(settings, nc=nc, runtime=runtime, on_reconnect=on_reconnect)
                await worker.setup()
                task = asyncio.create_task(worker.run(), name="spawner-worker")
                try:
                    with SPAWNER_SLOTS.tracking(slots_of(worker)):
                        yield RunningWorker(worker, task)
                finally:
                    worker.stop()
                    await asyncio.wait([task])
        finally:
            await drain_nats(nc)
    finally:
        await runtime.close()
