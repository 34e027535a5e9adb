"""NATS connection helper and idempotent JetStream setup.

Clients get the full server list. The first connection is bounded (services start in any order:
retry with capped exponential backoff for ``connect_timeout`` seconds, then fail loudly); once
connected, the client reconnects forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig, StreamInfo
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

logger = logging.getLogger("faas.nats")

FIRST_ATTEMPT_TIMEOUT = 5.0
MAX_BACKOFF = 5.0


class NatsUnavailable(RuntimeError):
    """No NATS server answered within the start-up budget."""


async def connect_nats(servers: list[str], *, name: str, connect_timeout: float = 60.0) -> NATS:
    """Connect to the first reachable server of ``servers`` (bounded), then reconnect forever."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_timeout
    backoff = 0.1
    last_error: BaseException | None = None

    async def _disconnected() -> None:
        logger.warning("nats disconnected", extra={"client": name})

    async def _reconnected() -> None:
        logger.info("nats reconnected", extra={"client": name})

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
) -> KeyValue:
    """Open ``bucket``, creating it the first time (safe when replicas race to create it)."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    config = KeyValueConfig(
        bucket=bucket,
        history=history,
        replicas=replicas,
        storage=StorageType.FILE,
        ttl=ttl.total_seconds() if ttl else None,
    )
    try:
        return await js.create_key_value(config=config)
    except nats.js.errors.BadRequestError:
        # Another replica created it in between.
        return await js.key_value(bucket)


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
    }
    if any(getattr(current, key) != value for key, value in wanted.items()):
        return await js.update_stream(config=config)
    return info
