"""Idempotency-Key: a retried call returns the same execution instead of running again."""

from __future__ import annotations

import asyncio

import httpx

from faas_common.contract import FunctionSnapshot
from tests.unit.publisher.factories import PUBLISH, FakeBackends, publish_body, snapshot
from tests.unit.registry.factories import User


def keyed(user: User, key: str) -> dict[str, str]:
    return {**user.headers, "Idempotency-Key": key}


async def test_same_key_twice_sync_runs_once_and_answers_the_same_record(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    first = await client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "order-1"))
    second = await client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "order-1"))

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert len(fakes.queue.published) == 1
    assert len(fakes.spawner.started) == 1
    assert "server-timing" in second.headers


async def test_a_keyed_retry_answers_the_first_calls_request_id(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    first = await client.post(
        PUBLISH, json=publish_body(), headers={**keyed(alice, "o-2"), "X-Request-ID": "first"}
    )
    second = await client.post(
        PUBLISH, json=publish_body(), headers={**keyed(alice, "o-2"), "X-Request-ID": "second"}
    )

    assert first.json()["request_id"] == second.json()["request_id"] == "first"
    assert second.headers["x-request-id"] == "second"  # this request's own id


async def test_same_key_twice_async_returns_the_same_execution_id(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.queue.worker = None
    body = publish_body(is_async=True)

    first = await client.post(PUBLISH, json=body, headers=keyed(alice, "k"))
    second = await client.post(PUBLISH, json=body, headers=keyed(alice, "k"))

    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers["location"] == first.headers["location"]
    assert len(fakes.queue.published) == 1
    assert len(fakes.records.entries) == 1


async def test_a_retry_while_the_first_call_still_waits_gets_the_same_result(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.spawner.run_time = 0.3

    first, second = await asyncio.gather(
        client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "same")),
        client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "same")),
    )

    assert first.status_code == second.status_code == 200
    assert first.json()["execution_id"] == second.json()["execution_id"]
    assert first.json()["result"] == second.json()["result"] == "world"
    assert len(fakes.queue.published) == 1


async def test_a_retry_served_without_the_reply_reads_the_record(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    # The first call's reply went to another instance: this one only sees the record.
    fakes.spawner.reply = False
    fakes.spawner.run_time = 0.2

    first, second = await asyncio.gather(
        client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "poll")),
        client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "poll")),
    )

    assert first.status_code == second.status_code == 200
    assert first.json()["execution_id"] == second.json()["execution_id"]
    assert len(fakes.queue.published) == 1


async def test_same_key_with_a_different_body_is_409(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.catalog.add(snapshot(alice.id, "other"))
    first = await client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "k"))

    for changed in (
        publish_body(argument="different"),
        publish_body(name="other"),
        publish_body(is_async=True),
    ):
        response = await client.post(PUBLISH, json=changed, headers=keyed(alice, "k"))
        assert response.status_code == 409, changed
        assert response.json()["code"] == "idempotency_key_reused"

    assert first.status_code == 200
    assert len(fakes.queue.published) == 1


async def test_keys_are_per_user(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, bob: User
) -> None:
    fakes.catalog.add(snapshot(alice.id, "hello"))
    fakes.catalog.add(snapshot(bob.id, "hello"))

    first = await client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "shared"))
    second = await client.post(PUBLISH, json=publish_body(), headers=keyed(bob, "shared"))

    assert first.status_code == second.status_code == 200
    assert first.json()["execution_id"] != second.json()["execution_id"]
    assert len(fakes.queue.published) == 2


async def test_without_a_key_every_call_runs(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    for _ in range(2):
        assert (await client.post(PUBLISH, json=publish_body(), headers=alice.headers)).is_success

    assert len(fakes.queue.published) == 2


async def test_a_rejected_call_does_not_keep_its_key(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.queue.max_in_flight = 0
    refused = await client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "retry-me"))
    assert refused.status_code == 429
    assert fakes.idempotency.claims == {}

    fakes.queue.max_in_flight = 10
    retried = await client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "retry-me"))

    assert retried.status_code == 200
    assert retried.json()["execution_id"] != refused.json()["execution"]["execution_id"]
    assert len(fakes.queue.published) == 1


async def test_a_call_that_could_not_be_queued_does_not_keep_its_key(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.queue.failing = True
    failed = await client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "k"))
    assert failed.status_code == 503

    fakes.queue.failing = False
    retried = await client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "k"))

    assert retried.status_code == 200
    assert len(fakes.queue.published) == 1


async def test_a_replayed_failure_answers_like_the_first_call(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.spawner.outcome = lambda job: {
        "status": "failed",
        "error": "function_failed",
        "exit_code": 3,
    }

    first = await client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "f"))
    second = await client.post(PUBLISH, json=publish_body(), headers=keyed(alice, "f"))

    assert first.status_code == second.status_code == 502
    assert first.json() == second.json()
    assert len(fakes.queue.published) == 1
