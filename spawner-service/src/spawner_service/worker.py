"""The consumer loop: jobs from the ``EXECUTIONS`` stream in, execution records and replies out.

``Worker`` owns the JetStream side: it ensures the stream and the shared durable pull consumer
``spawners``, fetches only as many jobs as it has free container slots (pull-based backpressure:
a job stays in the stream, counting against the in-flight limits, until it is acked), runs each
job in a task (``handler.JobHandler`` decides what happens to it), reaps stale containers in the
background and stops gracefully.

Before a job starts, ``fairness.FairShare`` decides whether its user must let other users go
first (their fair share of the running slots); the worker keeps this spawner's load written to
the ``fair_share`` bucket and the other spawners' loads watched.

A spawner whose Docker engine does not answer fetches nothing (``EngineGate``) until it answers
again: a job it took would only be handed back, using up one of the job's deliveries, while a
healthy spawner could run it. It says so in its log and in ``Worker.ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.kv import KeyValue

from faas_common.contract import (
    EXEC_SUBJECT_PREFIX,
    EXECUTIONS_STREAM,
    FAIR_SHARE_BUCKET,
    SPAWNER_CONSUMER,
    ensure_executions_stream,
)
from faas_common.executions import ExecutionStore, RecordStore
from faas_common.nats import NATS_ERRORS, NatsUnavailable, ReconnectHook, ensure_kv
from spawner_service.config import SpawnerSettings
from spawner_service.fairness import FairShare
from spawner_service.handler import JobHandler
from spawner_service.runtime.base import ContainerRuntime

logger = logging.getLogger("spawner.worker")


class EngineGate:
    """Whether the Docker engine answers. While it does not, ``wait_until_up`` pings it every
    ``interval`` seconds; while it does, a ping is repeated at most every ``interval`` seconds
    (or at once after a run could not reach it: ``suspect``)."""

    def __init__(self, runtime: ContainerRuntime, *, interval: float) -> None:
        self._runtime = runtime
        self._interval = interval
        self.up = True
        self._checked = 0.0

    def suspect(self) -> None:
        self._checked = 0.0

    async def check(self) -> bool:
        now = time.monotonic()
        if now - self._checked < self._interval:
            return self.up
        self._checked = now
        up = await self._runtime.ping()
        if up != self.up:
            if up:
                logger.info("Docker engine reachable again: fetching jobs")
            else:
                logger.warning(
                    "Docker engine unreachable (DOCKER_HOST or /var/run/docker.sock): "
                    "not fetching jobs until it answers"
                )
        self.up = up
        return up


CONSUMER_SETTINGS = ("ack_wait", "max_deliver", "filter_subject")
"""The shared consumer's settings that come from a spawner's configuration."""


def consumer_config(settings: SpawnerSettings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=SPAWNER_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_seconds,
        max_deliver=settings.consumer_max_deliver,
        filter_subject=f"{EXEC_SUBJECT_PREFIX}.>",
    )


class Worker:
    """Consumes jobs until ``stop()``; then finishes the jobs it holds and returns."""

    def __init__(
        self,
        settings: SpawnerSettings,
        *,
        nc: NATS,
        runtime: ContainerRuntime,
        store: RecordStore | None = None,
        on_reconnect: list[ReconnectHook] | None = None,
    ) -> None:
        """``on_reconnect``: the connection's reconnect hooks (``connect_nats``); the worker adds
        what it must redo after a reconnect (watch the other spawners' loads anew)."""
        self.settings = settings
        self._on_reconnect = on_reconnect
        self.nc = nc
        self.runtime = runtime
        self.js: JetStreamContext = nc.jetstream()
        self.engine = EngineGate(runtime, interval=settings.engine_check_seconds)
        self._store = store
        self._stopping = asyncio.Event()
        self._jobs: set[asyncio.Task[None]] = set()
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._handler: JobHandler | None = None
        self._fair: FairShare | None = None

    @property
    def running_jobs(self) -> int:
        return len(self._jobs)

    @property
    def fair_share(self) -> FairShare | None:
        """The fair share of the slots (after ``setup``; None when it is off)."""
        return self._fair

    @property
    def ready(self) -> bool:
        """Consuming, and the Docker engine answered its last check."""
        return self._handler is not None and self.engine.up and not self._stopping.is_set()

    def stop(self) -> None:
        """Stop fetching; ``run`` returns once the jobs held now are finished."""
        self._stopping.set()

    async def _ensure_consumer(self) -> None:
        await ensure_executions_stream(self.js, self.settings)
        await self._ensure_shared_consumer(consumer_config(self.settings))

    async def _ensure_shared_consumer(self, wanted: ConsumerConfig) -> None:
        """Create the durable consumer every spawner shares, or bring it in line with this
        spawner's settings, saying so when they differ (all spawners must share them)."""
        try:
            info = await self.js.consumer_info(EXECUTIONS_STREAM, SPAWNER_CONSUMER)
        except nats.js.errors.NotFoundError:
            await self.js.add_consumer(EXECUTIONS_STREAM, config=wanted)
            return
        differences = {
            name: (getattr(info.config, name), getattr(wanted, name))
            for name in CONSUMER_SETTINGS
            if getattr(info.config, name) != getattr(wanted, name)
        }
        if not differences:
            return
        described = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in differences.items())
        logger.warning(
            f"the shared consumer {SPAWNER_CONSUMER!r} had other settings: updated ({described}); "
            "every spawner must share SPAWNER_ACK_WAIT_SECONDS, SPAWNER_MAX_DELIVER and the "
            "SPAWNER_FAIR_SHARE_* settings",
            extra={
                "consumer": SPAWNER_CONSUMER,
                "current": {name: old for name, (old, _) in differences.items()},
                "wanted": {name: new for name, (_, new) in differences.items()},
            },
        )
        await self.js.add_consumer(EXECUTIONS_STREAM, config=wanted)

    async def setup(self) -> None:
        """Idempotent: the stream (limits from the settings), the consumer, the records."""
        s = self.settings
        await self._ensure_consumer()
        if self._store is None:
            self._store = await ExecutionStore.open(
                self.js,
                replicas=s.nats_replicas,
                ttl_seconds=s.execution_ttl_seconds,
                budget=s.retry_budget,
                max_bytes=s.executions_max_bytes,
            )
        self._subscription = await self.js.pull_subscribe_bind(
            durable=SPAWNER_CONSUMER, stream=EXECUTIONS_STREAM
        )
        if s.fair_share and self._fair is None:
            self._fair = FairShare(
                s, js=self.js, kv=await self._fair_share_bucket(), capacity=self._capacity
            )
            if self._on_reconnect is not None:
                self._on_reconnect.append(self._fair.rewatch)
        self._handler = JobHandler(
            s,
            runtime=self.runtime,
            store=self._store,
            publish=self._publish,
            max_payload=lambda: self.nc.max_payload,
            engine_failed=self.engine.suspect,
            slots=self._fair,
        )

    async def _fair_share_bucket(self) -> KeyValue:
        s = self.settings
        return await ensure_kv(
            self.js,
            FAIR_SHARE_BUCKET,
            replicas=s.nats_replicas,
            ttl=timedelta(seconds=s.job_max_age_seconds),
            max_bytes=s.bucket_max_bytes,
        )

    def _capacity(self) -> int:
        """The slots this spawner fills: none while its engine is down or it is stopping."""
        return self.settings.max_containers if self.ready else 0

    async def _publish(self, subject: str, payload: bytes) -> None:
        await self.nc.publish(subject, payload)

    async def run(self) -> None:
        """Consume until ``stop()``, then finish the held jobs. Raises ``NatsUnavailable`` when
        the connection is closed for good (the held jobs are finished first)."""
        if self._subscription is None:
            await self.setup()
        reaper = asyncio.create_task(self._reap_forever())
        board = asyncio.create_task(self._fair.run()) if self._fair is not None else None
        logger.info(
            "consuming",
            extra={
                "max_containers": self.settings.max_containers,
                "instance_id": self.settings.instance_id,
            },
        )
        try:
            await self._consume()
        finally:
            if self._jobs:
                logger.info("finishing held jobs", extra={"jobs": len(self._jobs)})
                await asyncio.gather(*self._jobs, return_exceptions=True)
            for task in (reaper, board):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self._subscription is not None:
                with contextlib.suppress(nats.errors.Error):
                    await self._subscription.unsubscribe()
            logger.info("stopped")

    async def _consume(self) -> None:
        assert self._subscription is not None
        backoff = 0.1
        while not self._stopping.is_set():
            free = self.settings.max_containers - len(self._jobs)
            if free <= 0:
                await self._wait_for_slot()
                continue
            if not await self.engine.check():
                await self._sleep_unless_stopping(self.settings.engine_check_seconds)
                continue
            try:
                msgs = await self._subscription.fetch(
                    batch=free, timeout=self.settings.fetch_timeout
                )
            except TimeoutError:  # nats.errors.TimeoutError is one too
                continue  # nothing to do right now
            except NATS_ERRORS as exc:
                if self.nc.is_closed:
                    # Held jobs are still finished (their containers removed), then run raises.
                    raise NatsUnavailable("the NATS connection is closed") from exc
                logger.warning("fetch failed", extra={"error": repr(exc)})
                await self._sleep_unless_stopping(backoff)
                backoff = min(backoff * 2, 5.0)
                if isinstance(exc, nats.js.errors.APIError):
                    # The stream or the consumer is gone (deleted, or lost with a cluster's
                    # state): set them up again, the subscription keeps working after it.
                    await self._recover_consumer()
                continue
            backoff = 0.1
            # A fetch may hand over more than asked for (messages of an earlier request that
            # expired client-side); never hold more jobs than free slots, and none once stopping.
            keep = 0 if self._stopping.is_set() else free
            for msg in msgs[:keep]:
                self._start(msg)
            assert self._handler is not None
            for msg in msgs[keep:]:
                await self._handler.release(msg)

    async def _recover_consumer(self) -> None:
        try:
            await self._ensure_consumer()
        except NATS_ERRORS as exc:
            logger.warning("cannot set the consumer up again", extra={"error": repr(exc)})
        else:
            logger.info("stream and consumer set up again")

    def _start(self, msg: Any) -> None:
        assert self._handler is not None
        task = asyncio.create_task(self._handler.handle(msg))
        self._jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # The message is redelivered after ack_wait; its container is removed either way.
            logger.error("job task failed", exc_info=error)

    async def _wait_for_slot(self) -> None:
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({stopping, *self._jobs}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _reap_forever(self) -> None:
        while True:
            try:
                removed = await self.runtime.remove_stale(time.time())
                if removed:
                    logger.info("stale containers removed", extra={"count": removed})
            except Exception:
                logger.exception("stale container sweep failed")
            await asyncio.sleep(self.settings.reap_interval_seconds)
