"""The functions bucket as the publisher sees it: watched into memory, read directly on a miss,
deletes and purges honoured."""

from __future__ import annotations

import asyncio
import time

import httpx
from nats.js import JetStreamContext

from faas_common.contract import FUNCTIONS_BUCKET, function_key
from faas_common.nats import ensure_kv
from publisher_service.catalog import FunctionCache
from tests.integration.publisher.conftest import SettingsFactory
from tests.integration.publisher.helpers import publisher, register, register_new
from tests.unit.publisher.factories import PUBLISH, publish_body, snapshot
from tests.unit.registry.factories import User


async def eventually_status(
    client: httpx.AsyncClient, user: User, name: str, status: int, within: float = 5.0
) -> None:
    deadline = time.monotonic() + within
    while True:
        response = await client.post(
            PUBLISH, json=publish_body(name=name, is_async=True), headers=user.headers
        )
        if response.status_code == status:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: still {response.status_code}, expected {status}")
        await asyncio.sleep(0.05)


async def test_a_function_is_callable_right_after_it_is_written_and_404_once_deleted(
    js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    async with publisher(settings_for()) as client:
        kv = await ensure_kv(js, FUNCTIONS_BUCKET)
        await register_new(js, alice.id, "fresh")
        right_away = await client.post(
            PUBLISH, json=publish_body(name="fresh", is_async=True), headers=alice.headers
        )

        await kv.delete(function_key(alice.id, "fresh"))
        await eventually_status(client, alice, "fresh", 404)

        await register_new(js, alice.id, "purged")
        await eventually_status(client, alice, "purged", 202)
        await kv.purge(function_key(alice.id, "purged"))
        await eventually_status(client, alice, "purged", 404)

    assert right_away.status_code == 202, right_away.text


async def test_a_miss_reads_the_bucket_directly(js: JetStreamContext, alice: User) -> None:
    kv = await ensure_kv(js, FUNCTIONS_BUCKET)
    cache = FunctionCache(kv)  # never started: every lookup is a direct read
    function = await register(js, snapshot(alice.id, "direct", image="direct/fn:1"))

    found = await cache.resolve(alice.id, "direct")
    missing = await cache.resolve(alice.id, "nope")
    await kv.delete(function_key(alice.id, "direct"))
    deleted = await cache.resolve(alice.id, "direct")

    assert found == function
    assert missing is None
    assert deleted is None
    assert len(cache) == 0


async def test_the_watch_loads_existing_functions_then_follows_changes(
    js: JetStreamContext, alice: User, bob: User
) -> None:
    kv = await ensure_kv(js, FUNCTIONS_BUCKET)
    await register(js, snapshot(alice.id, "old"))
    await register(js, snapshot(bob.id, "old"))
    await kv.put(function_key(alice.id, "broken"), b"not a snapshot")
    cache = FunctionCache(kv)
    await cache.start(wait=5.0)
    try:
        assert cache.loaded
        assert len(cache) == 2

        updated = await register(js, snapshot(alice.id, "old", image="new/image:2"))
        await register(js, snapshot(alice.id, "added"))
        await kv.delete(function_key(bob.id, "old"))

        deadline = time.monotonic() + 5
        while len(cache) != 2 or (await cache.resolve(alice.id, "old")) != updated:
            assert time.monotonic() < deadline, "the watch did not follow the changes"
            await asyncio.sleep(0.02)
        # Served from memory now: the bucket is no longer asked.
        await js.delete_key_value(FUNCTIONS_BUCKET)
        assert await cache.resolve(alice.id, "old") == updated
        assert await cache.resolve(alice.id, "added") is not None
    finally:
        await cache.stop()
