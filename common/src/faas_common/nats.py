"""NATS connection helper and idempotent JetStream setup.

Clients get the full server list. The first connection is bounded (services start in any order:
retry with capped exponential backoff for ``connect_timeout`` seconds, then fail loudly); once
connected, the client reconnects forever.

JetStream requests (a publish, a KV read or write) fail for a few seconds whenever a stream's
leader is elected (measured: 4-7.5 s). ``retrying`` repeats one within a ``RetryBudget`` sized
for a 10 s election; what is still failing after it is the caller's to turn into an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig, StreamInfo
from nats.js.errors import (
    BucketNotFoundError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

logger = logging.getLogger("faas.nats")

FIRST_ATTEMPT_TIMEOUT = 5.0
MAX_BACKOFF = 5.0
DEFAULT_BUCKET_MAX_BYTES = 64 * 1_048_576
"""``max_bytes`` of a KV bucket whose size has no setting of its own (``BUCKET_MAX_BYTES``)."""

T = TypeVar("T")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    NoStreamResponseError,
    ServiceUnavailableError,
    TimeoutError,
)
"""Failures of one JetStream request that the next attempt may not see (no leader yet, a
reconnect in progress): worth a retry within a ``RetryBudget``."""

NATS_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, TimeoutError, OSError)
"""Every way a NATS call can fail (what a caller maps to "unavailable")."""


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How long one JetStream operation is retried: long enough to span a leader election."""

    total: float = 12.0
    """Seconds from the first attempt after which no new attempt starts (elections take up to
    ~10 s)."""
    attempt: float = 2.5
    """Seconds one attempt may take (a request to a stream with no leader never answers)."""
    backoff: float = 0.25
    """Pause before the second attempt; it doubles up to one second."""


async def retrying(
    operation: Callable[[int], Awaitable[T]], budget: RetryBudget, *, what: str
) -> T:
    """``operation(attempt)`` (1, 2, ...) until it returns, repeated on ``TRANSIENT_ERRORS``
    within ``budget``; the last such error is raised when the budget is spent. ``attempt`` lets
    an operation recognise its own earlier write (it may have landed though its answer did not).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget.total
    pause = budget.backoff
    attempt = 1
    while True:
        remaining = deadline - loop.time()
        try:
            return await asyncio.wait_for(operation(attempt), min(budget.attempt, remaining))
        except TRANSIENT_ERRORS as exc:
            if loop.time() + pause >= deadline:
                logger.warning(
                    "nats operation failed for its whole retry budget",
                    extra={"operation": what, "attempts": attempt, "error": repr(exc)},
                )
                raise
            logger.info(
                "nats operation failed: retrying",
                extra={"operation": what, "attempt": attempt, "error": repr(exc)},
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)
        attempt += 1


class NatsUnavailable(RuntimeError):
    """No NATS server answered within the start-up budget."""


ReconnectHook = Callable[[], Awaitable[None]]


async def connect_nats(
    servers: list[str],
    *,
    name: str,
    connect_timeout: float = 60.0,
    on_reconnect: list[ReconnectHook] | None = None,
) -> NATS:
    """Connect to the first reachable server of ``servers`` (bounded), then reconnect forever.

    ``on_reconnect``: run after every reconnect (the list may be filled after this returns)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_timeout
    backoff = 0.1
    last_error: BaseException | None = None

    async def _disconnected() -> None:
        logger.warning("nats disconnected", extra={"client": name})

    async def _reconnected() -> None:
        logger.info("nats reconnected", extra={"client": name})
        for hook in on_reconnect or ():
            try:
                await hook()
            except Exception:
                logger.exception("reconnect hook failed", extra={"client": name})

    async def _error(exc: Exception) -> None:
        logger.debug("nats error: %s", exc, extra={"client": name})

    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise NatsUnavailable(f"cannot reach NATS at {', '.join(servers)}: {last_error}")
        try:
            # max_reconnect_attempts=-1 would make this very call wait forever with no server
            # up: bound each attempt and keep the infinite reconnects for after it succeeds.
            return await asyncio.wait_for(
                nats.connect(
                    servers=servers,
                    name=name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    disconnected_cb=_disconnected,
                    reconnected_cb=_reconnected,
                    error_cb=_error,
                ),
                timeout=min(FIRST_ATTEMPT_TIMEOUT, remaining),
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            last_error = exc
            logger.info("waiting for NATS", extra={"servers": servers, "error": str(exc)})
            await asyncio.sleep(min(backoff, max(deadline - loop.time(), 0)))
            backoff = min(backoff * 2, MAX_BACKOFF)


async def open_nats(
    stack: contextlib.AsyncExitStack[bool | None],
    servers: list[str],
    *,
    name: str,
    connect_timeout: float,
) -> tuple[NATS, list[ReconnectHook]]:
    """A service's connection for its lifespan (drained when ``stack`` closes) and the hooks it
    runs after every reconnect (append to the list)."""
    on_reconnect: list[ReconnectHook] = []
    nc = await connect_nats(
        servers, name=name, connect_timeout=connect_timeout, on_reconnect=on_reconnect
    )
    stack.push_async_callback(drain_nats, nc)
    return nc, on_reconnect


async def drain_nats(nc: NATS) -> None:
    """Drain ``nc`` (pending messages are handled, subscriptions end), then make sure it is closed.

    For an ``AsyncExitStack`` callback: never raises because the server is already gone.
    """
    if nc.is_closed:
        return
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        await nc.drain()
    if not nc.is_closed:
        await nc.close()


async def ensure_kv(
    js: JetStreamContext,
    bucket: str,
    *,
    replicas: int = 1,
    ttl: timedelta | None = None,
    history: int = 1,
    max_bytes: int = DEFAULT_BUCKET_MAX_BYTES,
) -> KeyValue:
    """Open ``bucket``, creating it the first time (safe when replicas race to create it), its
    ``max_bytes`` brought in line with ``max_bytes``. A full bucket refuses new writes (err_code
    10077, ``faas_common.contract.STREAM_FULL``); nothing already stored is dropped."""
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    else:
        await _bring_max_bytes_in_line(js, bucket, max_bytes)
        return kv
    config = KeyValueConfig(
        bucket=bucket,
        history=history,
        replicas=replicas,
        storage=StorageType.FILE,
        ttl=ttl.total_seconds() if ttl else None,
        max_bytes=max_bytes,
    )
    try:
        return await js.create_key_value(config=config)
    except nats.js.errors.BadRequestError:
        # Another replica created it in between.
        return await js.key_value(bucket)


async def _bring_max_bytes_in_line(js: JetStreamContext, bucket: str, max_bytes: int) -> None:
    info = await js.stream_info(f"KV_{bucket}")
    if info.config.max_bytes != max_bytes:
        logger.info(
            "bucket size limit updated",
            extra={"bucket": bucket, "current": info.config.max_bytes, "wanted": max_bytes},
        )
        info.config.max_bytes = max_bytes
        await js.update_stream(config=info.config)


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> StreamInfo:
    """Create the stream, or bring an existing one's limits in line with ``config``.

    Every replica of every service calls this at start-up; the last one to start wins, so all
    replicas must share the configuration (the limits come from the shared settings).
    """
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        try:
            return await js.add_stream(config=config)
        except nats.js.errors.BadRequestError:
            info = await js.stream_info(config.name)  # created by a replica in between
    current = info.config
    wanted = {
        "max_msgs": config.max_msgs,
        "max_msgs_per_subject": config.max_msgs_per_subject,
        "discard": config.discard,
        "discard_new_per_subject": config.discard_new_per_subject,
        "subjects": config.subjects,
        "duplicate_window": config.duplicate_window,
        "max_age": config.max_age,
        "max_bytes": config.max_bytes,
    }
    if any(getattr(current, key) != value for key, value in wanted.items()):
        return await js.update_stream(config=config)
    return info
