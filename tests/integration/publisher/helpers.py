"""Helpers of publisher-service integration tests: functions in the bucket, the stream's depth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from nats.js import JetStreamContext

from faas_common.contract import EXECUTIONS_STREAM, FUNCTIONS_BUCKET, FunctionSnapshot, function_key
from faas_common.executions import ExecutionStore
from faas_common.nats import ensure_kv
from publisher_service.config import PublisherSettings
from tests.unit.publisher.factories import client_for, running_app, snapshot

TTL_SECONDS = 3600


async def register(js: JetStreamContext, function: FunctionSnapshot) -> FunctionSnapshot:
    """Write ``function`` to the ``functions`` bucket, as registry-service does."""
    kv = await ensure_kv(js, FUNCTIONS_BUCKET)
    await kv.put(
        function_key(function.owner_id, function.name), function.model_dump_json().encode()
    )
    return function


async def register_new(
    js: JetStreamContext, owner_id: str, name: str = "hello"
) -> FunctionSnapshot:
    return await register(js, snapshot(owner_id, name))


async def open_store(js: JetStreamContext) -> ExecutionStore:
    return await ExecutionStore.open(js, replicas=1, ttl_seconds=TTL_SECONDS)


async def stream_depth(js: JetStreamContext) -> int:
    info = await js.stream_info(EXECUTIONS_STREAM)
    return info.state.messages


async def wait_for_depth(js: JetStreamContext, depth: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while (current := await stream_depth(js)) != depth:
        if time.monotonic() > deadline:
            raise AssertionError(f"stream depth is {current}, expected {depth}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def publisher(settings: PublisherSettings) -> AsyncIterator[httpx.AsyncClient]:
    """A publisher app connected to the test's nats-server, and a client for it."""
    async with running_app(settings) as app, client_for(app) as client:
        yield client


async def poll_until(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    status: str,
    within: float = 10.0,
) -> dict[str, object]:
    deadline = time.monotonic() + within
    while True:
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        if body["status"] == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} is still {body['status']}, expected {status}")
        await asyncio.sleep(0.05)
