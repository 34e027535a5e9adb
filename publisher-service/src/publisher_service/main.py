"""publisher-service app factory: ``create_app(settings)``; the lifespan owns every connection.

Start-up, in order: token verifier (fails at once without ``JWT_PUBLIC_KEY_FILE`` or
``JWT_JWKS_URL``), NATS, the ``EXECUTIONS`` stream (created, or its limits brought in line with
``MAX_IN_FLIGHT`` / ``MAX_IN_FLIGHT_PER_USER``), the ``executions`` and ``idempotency`` buckets,
the ``functions`` and ``revocations`` buckets watched into memory (the token verifier honours
the second), and the subscription to this instance's reply subject
``faas.reply.<instance_id>.*``, then the stream's jobs refreshed every few seconds into
``faas_executions_stream_jobs``. Shutdown runs it backwards: waiting calls are failed, the
watches stop, NATS drains.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from fastapi import FastAPI

from faas_common.contract import FUNCTIONS_BUCKET, IDEMPOTENCY_BUCKET, ensure_executions_stream
from faas_common.executions import ExecutionStore, RecordStore, RecordWatch
from faas_common.health import health_router
from faas_common.http import create_service_app
from faas_common.metrics import FUNCTIONS_CACHED, STREAM_JOBS, ActivationMetrics, refreshing
from faas_common.nats import ensure_kv, open_nats
from faas_common.revocation import open_revocations
from faas_common.security import RevocationCheck, open_token_verifier
from publisher_service.catalog import FunctionCache
from publisher_service.config import PublisherSettings
from publisher_service.jobs import NatsJobQueue
from publisher_service.replies import ReplyRegistry
from publisher_service.router import PREFIX, router
from publisher_service.service import (
    FunctionCatalog,
    IdempotencyStore,
    JobQueue,
    Limits,
    Publisher,
)
from publisher_service.stores import KvIdempotencyStore
from publisher_service.waits import Waiter, WaitSlots

SERVICE = "publisher-service"
STREAM_REFRESH_SECONDS = 5.0
"""How often ``faas_executions_stream_jobs`` is read from the stream (one request each time)."""

logger = logging.getLogger("publisher.main")


@dataclass
class Backends:
    """What the service talks to; ``create_app(settings, backends=...)`` replaces NATS."""

    catalog: FunctionCatalog
    records: RecordStore
    queue: JobQueue
    idempotency: IdempotencyStore
    replies: ReplyRegistry
    watch: RecordWatch
    """Long polls wait on it (``ExecutionStore``: a KV watch per waiting record)."""
    revocations: RevocationCheck | None = None
    """The ``revocations`` bucket watched into memory, honoured by the token verifier."""


def limits_from(settings: PublisherSettings) -> Limits:
    return Limits(
        max_argument_bytes=settings.max_argument_bytes,
        queue_timeout=settings.queue_timeout_seconds,
        async_queue_timeout=settings.async_queue_timeout_seconds,
        reply_grace=settings.reply_grace_seconds,
        result_poll=settings.result_poll_seconds,
    )


async def connect_backends(settings: PublisherSettings, stack: AsyncExitStack) -> Backends:
    """The NATS adapters, their clean-up pushed on ``stack``."""
    nc, on_reconnect = await open_nats(
        stack, settings.nats_servers, name=SERVICE, connect_timeout=settings.nats_connect_timeout
    )
    js = nc.jetstream(timeout=settings.nats_timeout)
    await ensure_executions_stream(js, settings)
    budget = settings.retry_budget
    ttl = timedelta(seconds=settings.execution_ttl_seconds)
    store = await ExecutionStore.open(
        js,
        replicas=settings.nats_replicas,
        ttl_seconds=settings.execution_ttl_seconds,
        budget=budget,
        max_bytes=settings.executions_max_bytes,
    )
    idempotency_kv = await ensure_kv(
        js,
        IDEMPOTENCY_BUCKET,
        replicas=settings.nats_replicas,
        ttl=ttl,
        max_bytes=settings.idempotency_max_bytes,
    )
    functions_kv = await ensure_kv(
        js,
        FUNCTIONS_BUCKET,
        replicas=settings.nats_replicas,
        max_bytes=settings.functions_max_bytes,
    )

    catalog = FunctionCache(functions_kv, budget=budget)
    await catalog.start(wait=settings.nats_timeout)
    stack.push_async_callback(catalog.stop)
    on_reconnect.append(catalog.rebuild)
    stack.enter_context(FUNCTIONS_CACHED.tracking(lambda: {(): len(catalog)}))
    revocations = await open_revocations(
        nc, js, stack, settings, on_reconnect=on_reconnect, wait=settings.nats_timeout
    )

    replies = ReplyRegistry(settings.instance_id)
    await nc.subscribe(replies.wildcard, cb=replies.handle)
    stack.callback(replies.close)
    queue = NatsJobQueue(nc, js, budget=budget)
    await stack.enter_async_context(
        refreshing(
            STREAM_JOBS,
            queue.jobs,
            interval=STREAM_REFRESH_SECONDS,
            read_seconds=settings.nats_timeout,
        )
    )
    logger.info(
        "publisher connected",
        extra={"instance_id": settings.instance_id, "reply_subject": replies.wildcard},
    )
    return Backends(
        catalog=catalog,
        records=store,
        queue=queue,
        idempotency=KvIdempotencyStore(idempotency_kv, budget=budget),
        replies=replies,
        watch=store,
        revocations=revocations,
    )


def create_app(
    settings: PublisherSettings | None = None, *, backends: Backends | None = None
) -> FastAPI:
    """The publisher app. ``backends`` replaces the NATS adapters (unit tests pass fakes)."""
    settings = settings or PublisherSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            verifier = await open_token_verifier(settings, stack, service=SERVICE)
            active = backends if backends is not None else await connect_backends(settings, stack)
            if active.revocations is not None:
                verifier.honour(active.revocations)
            app.state.settings = settings
            app.state.token_verifier = verifier
            app.state.backends = active
            app.state.publisher = Publisher(
                catalog=active.catalog,
                records=active.records,
                queue=active.queue,
                idempotency=active.idempotency,
                replies=active.replies,
                limits=limits_from(settings),
                image_policy=settings.images,
                registry_allow=settings.registry_allow,
                metrics=ActivationMetrics(function_labels=settings.metrics_function_labels),
            )
            app.state.waiter = Waiter(
                read=app.state.publisher.get_execution,
                watch=active.watch,
                slots=WaitSlots(total=settings.max_waiters, per_user=settings.max_waiters_per_user),
            )
            yield

    async def nats_ready() -> None:
        active: Backends = app.state.backends
        await active.queue.ready()

    app = create_service_app(
        title=SERVICE,
        prefix=PREFIX,
        lifespan=lifespan,
        routers=[router, health_router(PREFIX, {"nats": nats_ready})],
        max_body_bytes=settings.max_body_bytes,
    )
    return app
