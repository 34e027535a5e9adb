"""Fair share between tenants: the publisher app and a real worker (real nats-server, real Docker,
the local busybox image), with the contract's stream and buckets (cleaned around each test)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from faas_common.contract import (
    EXECUTIONS_BUCKET,
    EXECUTIONS_STREAM,
    FAIR_SHARE_BUCKET,
    FUNCTIONS_BUCKET,
    IDEMPOTENCY_BUCKET,
    Deferral,
    SpawnerLoad,
    deferral_key,
    load_key,
)
from faas_common.nats import ReconnectHook, connect_nats
from spawner_service.config import SpawnerSettings
from spawner_service.runtime.docker import DockerRuntime
from spawner_service.worker import Worker
from tests.integration.publisher.helpers import publisher, register
from tests.support.keys import RsaKeys
from tests.support.nats_server import NatsServer
from tests.unit.publisher.factories import PUBLISH, make_settings, publish_body, snapshot
from tests.unit.registry.factories import User, make_user, wait_until

SLOTS = 4
LONG = "sleep 4; echo a"
"""Tenant A's calls: long enough that B's call arrives while all of them are queued or running."""


async def _wipe(js: JetStreamContext) -> None:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(EXECUTIONS_STREAM)
    buckets = (EXECUTIONS_BUCKET, IDEMPOTENCY_BUCKET, FUNCTIONS_BUCKET, FAIR_SHARE_BUCKET)
    for bucket in buckets:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_key_value(bucket)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await connect_nats([nats_url], name="fair-share-test", connect_timeout=15)
    await _wipe(client.jetstream())
    try:
        yield client
    finally:
        await _wipe(client.jetstream())
        await client.close()


@pytest.fixture
async def worker(nc: NATS, nats_url: str, prefix: str) -> AsyncIterator[Worker]:
    """One spawner with 4 slots; ``max_deliver`` 1, so a hand-back counted as a failure (or a
    consumer without room for the hand-backs) would lose a job."""
    settings = SpawnerSettings(
        nats_url=nats_url,
        max_containers=SLOTS,
        max_deliver=1,
        max_in_flight=40,
        max_in_flight_per_user=20,
        fetch_timeout=0.5,
        heartbeat_seconds=1.0,
        ack_wait_seconds=10.0,
        instance_id=f"{prefix}spawner",
    )
    runtime = DockerRuntime(settings)
    spawner = Worker(settings, nc=nc, runtime=runtime)
    await spawner.setup()
    task = asyncio.create_task(spawner.run())
    try:
        yield spawner
    finally:
        spawner.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
        await runtime.close()


async def records(client: httpx.AsyncClient, user: User, ids: list[str]) -> list[dict[str, Any]]:
    found = []
    for execution_id in ids:
        response = await client.get(f"/publisher/executions/{execution_id}", headers=user.headers)
        assert response.status_code == 200, response.text
        found.append(response.json())
    return found


async def deferrals(js: JetStreamContext, execution_id: str) -> int | None:
    """The job's fair-share deferral count; None when it has none (never deferred, or gone)."""
    bucket = await js.key_value(FAIR_SHARE_BUCKET)
    try:
        entry = await bucket.get(deferral_key(execution_id))
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None
    assert entry.value is not None
    return Deferral.model_validate_json(entry.value).count


def picked_up_at(record: dict[str, Any]) -> float:
    """When a spawner took the job: its creation plus its time in the queue."""
    return float(record["created_at"]) + float(record["timings"]["queue"]) / 1000


@pytest.mark.docker
async def test_a_tenant_filling_every_slot_does_not_make_another_tenant_wait_for_its_queue(
    nc: NATS, worker: Worker, rsa_keys: RsaKeys, busybox: str
) -> None:
    js = nc.jetstream()
    alice = make_user(rsa_keys.private_pem, "alice")
    bob = make_user(rsa_keys.private_pem, "bob")
    for user in (alice, bob):
        await register(js, snapshot(user.id, image=busybox, timeout_seconds=30, memory_mb=64))
    settings = make_settings(
        rsa_keys.public_path,
        nats_url=worker.settings.nats_url,
        max_in_flight=40,
        queue_timeout_seconds=60.0,
        result_poll_seconds=0.2,
        instance_id="pub-fair",
    )
    async with publisher(settings) as client:
        # Alice fills the 4 slots and queues 4 more calls behind them.
        accepted = [
            await client.post(
                PUBLISH,
                json=publish_body(argument=f"{LONG}{n}", is_async=True),
                headers=alice.headers,
            )
            for n in range(2 * SLOTS)
        ]
        assert [r.status_code for r in accepted] == [202] * (2 * SLOTS)
        ids = [r.json()["execution_id"] for r in accepted]

        async def slots_full() -> bool:
            statuses = [r["status"] for r in await records(client, alice, ids)]
            return statuses.count("running") == SLOTS

        await wait_until(slots_full, within=60, message="alice never filled the slots")
        waiting = [
            r["execution_id"] for r in await records(client, alice, ids) if r["status"] == "queued"
        ]
        assert len(waiting) == SLOTS

        # Bob's short sync call gets the first slot that frees up, ahead of Alice's queue.
        answer = await client.post(
            PUBLISH, json=publish_body(argument="echo b"), headers=bob.headers
        )
        alice_then = await records(client, alice, waiting)
        deferred_then = [await deferrals(js, execution_id) for execution_id in waiting]

        async def alice_done() -> bool:
            return all(r["status"] == "succeeded" for r in await records(client, alice, ids))

        await wait_until(alice_done, within=90, message="alice's calls did not all succeed")
        alice_after = await records(client, alice, waiting)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["result"]) == ("succeeded", "b")
    # When Bob had his answer, Alice's queued calls had not all started yet...
    assert "queued" in [r["status"] for r in alice_then]
    # ...and every one of them still waiting when Bob called was picked up after Bob's, though
    # all were queued before it. (One may have taken a slot freed before Bob's call arrived:
    # Alice was alone then, and fair share never keeps a slot idle.)
    assert all(float(r["created_at"]) < float(body["created_at"]) for r in alice_after)
    behind_bob = [r for r in alice_after if picked_up_at(r) > float(body["created_at"])]
    assert behind_bob, "no call of Alice's was still waiting when Bob called"
    assert all(picked_up_at(body) < picked_up_at(r) for r in behind_bob)
    # They were handed back (not failed, not lost: max_deliver is 1) until Bob's call had run,
    # and once they were done their deferral counts went.
    assert any(count >= 1 for count in deferred_then if count is not None)
    assert [await deferrals(js, execution_id) for execution_id in waiting] == [None] * SLOTS


async def test_the_other_spawners_loads_are_watched_again_after_a_nats_restart(
    nc: NATS, nats_server: NatsServer, nats_url: str, prefix: str
) -> None:
    hooks: list[ReconnectHook] = []
    client = await connect_nats([nats_url], name="fair-share-rewatch", on_reconnect=hooks)
    settings = SpawnerSettings(
        nats_url=nats_url, max_containers=SLOTS, fetch_timeout=0.5, instance_id=f"{prefix}me"
    )
    runtime = DockerRuntime(settings)
    spawner = Worker(settings, nc=client, runtime=runtime, on_reconnect=hooks)
    await spawner.setup()
    task = asyncio.create_task(spawner.run())
    fair = spawner.fair_share
    assert fair is not None
    assert hooks == [fair.rewatch]  # a reconnect watches anew at once
    board = await nc.jetstream().key_value(FAIR_SHARE_BUCKET)
    other = SpawnerLoad(instance_id="other", capacity=3)
    try:
        await board.put(load_key("other"), other.model_dump_json().encode())
        await wait_until(lambda: fair.capacity() == SLOTS + 3, message="other spawner unseen")

        nats_server.restart()  # the server forgets the watch's consumer
        await wait_until(lambda: client.is_connected and nc.is_connected, within=30)
        bigger = other.model_copy(update={"capacity": 5})
        await wait_until(lambda: fair.capacity() != SLOTS + 3, within=30)  # stale by now...

        async def seen() -> bool:
            await board.put(load_key("other"), bigger.model_dump_json().encode())
            return fair.capacity() == SLOTS + 5

        # ...and the load it writes after the restart is seen again.
        await wait_until(seen, within=30, message="the load board was not watched again")
    finally:
        spawner.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await runtime.close()
        await client.close()
