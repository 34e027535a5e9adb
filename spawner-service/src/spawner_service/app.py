"""A spawner's whole life in one context manager, for ``python -m spawner_service`` and for the
local stack, which runs one spawner inside its own process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from faas_common.nats import connect_nats, drain_nats
from spawner_service.config import SpawnerSettings
from spawner_service.runtime.docker import DockerRuntime
from spawner_service.worker import Worker


@dataclass(frozen=True)
class RunningWorker:
    worker: Worker
    task: asyncio.Task[None]
    """Ends when the worker has stopped (after ``worker.stop()``) or failed (its exception)."""


@asynccontextmanager
async def running_worker(settings: SpawnerSettings) -> AsyncIterator[RunningWorker]:
    """Docker checked, NATS connected, the worker consuming in a task.

    Leaving the block stops fetching, lets the worker finish the jobs it holds, drains NATS and
    closes the Docker client. ``NatsUnavailable`` when NATS cannot be reached at start-up.
    """
    runtime = DockerRuntime(settings)
    try:
        nc = await connect_nats(
            settings.nats_servers,
            name=f"spawner-service:{settings.instance_id}",
            connect_timeout=settings.nats_connect_timeout,
        )
        try:
            worker = Worker(settings, nc=nc, runtime=runtime)
            await worker.setup()
            task = asyncio.create_task(worker.run(), name="spawner-worker")
            try:
                yield RunningWorker(worker, task)
            finally:
                worker.stop()
                await asyncio.wait([task])
        finally:
            await drain_nats(nc)
    finally:
        await runtime.close()
