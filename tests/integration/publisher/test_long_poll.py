"""Long polls over a real nats-server: ``ExecutionStore.until_final`` watches one record's key,
and ``GET /publisher/executions/{id}?wait=`` answers once a spawner finished the activation."""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from faas_common.contract import EXECUTIONS_BUCKET, ExecutionRecord
from faas_common.executions import ExecutionStore, new_execution_id
from tests.integration.publisher.conftest import SettingsFactory
from tests.integration.publisher.helpers import open_store, publisher, register_new
from tests.integration.publisher.spawner import FakeSpawner
from tests.unit.publisher.factories import PUBLISH, publish_body
from tests.unit.registry.factories import User, wait_until

ANSWERED_WITHIN = 20.0
"""Far less than the waits asked for: an answer before it means the wait ended early."""


def queued(execution_id: str) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=execution_id, function="hello", status="queued", created_at=time.time()
    )


async def consumers(js: JetStreamContext) -> int:
    info = await js.stream_info(f"KV_{EXECUTIONS_BUCKET}")
    return info.state.consumer_count


async def test_until_final_sees_the_write_that_finishes_the_record(js: JetStreamContext) -> None:
    store = await open_store(js)
    record = queued(new_execution_id())
    revision = await store.create("alice", record)
    waiting = asyncio.create_task(store.until_final("alice", record.execution_id, within=60))
    await wait_until(lambda: consumers_seen(js, waiting), message="no watch was set up")

    running = record.model_copy(update={"status": "running"})
    revision = await store.update("alice", running, revision=revision)
    await asyncio.sleep(0.2)
    assert not waiting.done()  # running is not final
    done = running.model_copy(update={"status": "succeeded", "result": "hi", "exit_code": 0})
    await store.update("alice", done, revision=revision)

    assert await asyncio.wait_for(waiting, ANSWERED_WITHIN) == done


async def consumers_seen(js: JetStreamContext, waiting: asyncio.Task[object]) -> bool:
    assert not waiting.done()
    return await consumers(js) == 1


async def test_until_final_answers_a_final_record_at_once_and_none_after_the_wait(
    js: JetStreamContext,
) -> None:
    store = await open_store(js)
    record = queued(new_execution_id())
    revision = await store.create("alice", record)

    assert await store.until_final("alice", record.execution_id, within=0.3) is None
    done = record.model_copy(update={"status": "failed", "error": "function_failed"})
    await store.update("alice", done, revision=revision)
    found = await asyncio.wait_for(
        store.until_final("alice", record.execution_id, within=60), ANSWERED_WITHIN
    )
    assert found == done
    assert await store.until_final("bob", record.execution_id, within=0.3) is None


async def test_until_final_ends_when_the_record_is_removed(js: JetStreamContext) -> None:
    store = await ExecutionStore.open(js, replicas=1, ttl_seconds=3600)
    record = queued(new_execution_id())
    await store.create("alice", record)
    waiting = asyncio.create_task(store.until_final("alice", record.execution_id, within=60))
    await wait_until(lambda: consumers_seen(js, waiting), message="no watch was set up")

    await store.kv.delete(f"alice.{record.execution_id}")

    assert await asyncio.wait_for(waiting, ANSWERED_WITHIN) is None


async def test_a_long_poll_answers_when_the_spawner_finishes(
    nc: NATS, js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    async with publisher(settings_for()) as client:
        await register_new(js, alice.id)
        accepted = await client.post(
            PUBLISH, json=publish_body(argument="later", is_async=True), headers=alice.headers
        )
        assert accepted.status_code == 202, accepted.text
        status_url = accepted.json()["status_url"]
        poll = asyncio.create_task(
            client.get(status_url, params={"wait": 60}, headers=alice.headers)
        )
        await wait_until(lambda: consumers_seen(js, poll), message="no watch was set up")

        async with FakeSpawner(nc, js, await open_store(js)):
            response = await asyncio.wait_for(poll, ANSWERED_WITHIN)
        idle = await client.get(status_url, params={"wait": 0.5}, headers=alice.headers)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert response.json()["result"] == "later"
    assert idle.json() == response.json()


async def test_a_finished_watch_leaves_no_consumer_behind(js: JetStreamContext) -> None:
    store = await open_store(js)
    record = queued(new_execution_id())
    await store.create("alice", record)

    assert await store.until_final("alice", record.execution_id, within=0.2) is None

    await wait_until(lambda: no_consumers(js), within=30.0, message="the watch's consumer stayed")


async def no_consumers(js: JetStreamContext) -> bool:
    return await consumers(js) == 0
