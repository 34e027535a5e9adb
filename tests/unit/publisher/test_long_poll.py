"""GET /publisher/executions/{id}?wait=SECONDS over the fakes: an answer once the record is final
or the wait is over, bounded values, bounded waiters, a wait cancelled when its client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from faas_common.contract import FunctionSnapshot
from tests.support.keys import RsaKeys
from tests.unit.publisher.factories import (
    PUBLISH,
    FakeBackends,
    client_for,
    fake_backends,
    make_settings,
    publish_body,
    running_app,
    snapshot,
)
from tests.unit.registry.factories import User, wait_until

EXECUTIONS = "/publisher/executions"
ANSWERED_WITHIN = 20.0
"""Far less than the 60 s waits asked for: an answer before it means the wait ended early."""

Stack = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
def idle() -> FakeBackends:
    """Fakes whose spawner runs only when a test calls it."""
    return fake_backends(spawner=False)


@pytest.fixture
def stack(rsa_keys: RsaKeys, idle: FakeBackends, alice: User, bob: User) -> Stack:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        for user in (alice, bob):
            idle.catalog.add(snapshot(user.id, "hello"))
        settings = make_settings(rsa_keys.public_path, **overrides)
        async with running_app(settings, idle.backends()) as app, client_for(app) as client:
            yield app, client

    return start


async def accepted(client: httpx.AsyncClient, user: User) -> str:
    response = await client.post(PUBLISH, json=publish_body(is_async=True), headers=user.headers)
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


def waiting(
    client: httpx.AsyncClient, user: User, execution_id: str, wait: str = "60"
) -> asyncio.Task[httpx.Response]:
    url = f"{EXECUTIONS}/{execution_id}"
    return asyncio.create_task(client.get(url, params={"wait": wait}, headers=user.headers))


async def test_a_wait_answers_as_soon_as_the_record_is_final(
    stack: Stack, idle: FakeBackends, alice: User
) -> None:
    async with stack() as (_, client):
        execution_id = await accepted(client, alice)
        poll = waiting(client, alice, execution_id)
        await wait_until(lambda: idle.records.watches == 1, message="the wait never started")
        assert not poll.done()
        [job] = idle.queue.published
        await idle.spawner(job)
        response = await asyncio.wait_for(poll, ANSWERED_WITHIN)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["execution_id"] == execution_id
    assert body["status"] == "succeeded"
    assert body["result"] == "world"


async def test_a_wait_over_answers_with_the_record_as_it_is(
    stack: Stack, idle: FakeBackends, alice: User
) -> None:
    async with stack() as (_, client):
        execution_id = await accepted(client, alice)
        response = await waiting(client, alice, execution_id, wait="0.3")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    assert idle.records.watches == 1


async def test_a_final_record_and_an_unknown_id_answer_without_waiting(
    stack: Stack, idle: FakeBackends, alice: User, bob: User
) -> None:
    async with stack() as (_, client):
        execution_id = await accepted(client, alice)
        await idle.spawner(idle.queue.published[0])
        final = await asyncio.wait_for(waiting(client, alice, execution_id), ANSWERED_WITHIN)
        unknown = await asyncio.wait_for(waiting(client, alice, "0" * 32), ANSWERED_WITHIN)
        not_yours = await asyncio.wait_for(waiting(client, bob, execution_id), ANSWERED_WITHIN)

    assert final.status_code == 200
    assert final.json()["status"] == "succeeded"
    for response in (unknown, not_yours):
        assert response.status_code == 404
        assert response.json()["code"] == "execution_not_found"
    assert idle.records.watches == 0


async def test_a_queued_record_expires_at_its_start_deadline_during_a_wait(
    stack: Stack, alice: User
) -> None:
    async with stack(async_queue_timeout_seconds=0.5) as (_, client):
        execution_id = await accepted(client, alice)
        response = await asyncio.wait_for(waiting(client, alice, execution_id), ANSWERED_WITHIN)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "timed_out"
    assert response.json()["error"] == "timed_out"


@pytest.mark.parametrize("wait", ["61", "60.5", "-1", "-0.1", "abc", "nan", "inf", ""])
async def test_wait_values_outside_0_to_60_are_422(
    client: httpx.AsyncClient, alice: User, hello: FunctionSnapshot, wait: str
) -> None:
    done = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)

    response = await client.get(
        f"{EXECUTIONS}/{done.json()['execution_id']}", params={"wait": wait}, headers=alice.headers
    )

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert response.json()["detail"][0]["loc"] == ["query", "wait"]


async def test_wait_values_from_0_to_60_are_accepted(
    client: httpx.AsyncClient, alice: User, hello: FunctionSnapshot
) -> None:
    done = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)
    url = f"{EXECUTIONS}/{done.json()['execution_id']}"

    for wait in ("0", "0.25", "1", "60", "60.0"):
        response = await client.get(url, params={"wait": wait}, headers=alice.headers)
        assert response.status_code == 200, (wait, response.text)
        assert response.json() == done.json()


async def test_waiters_are_bounded_per_user_and_per_instance(
    stack: Stack, idle: FakeBackends, alice: User, bob: User
) -> None:
    async with stack(max_waiters=2, max_waiters_per_user=1) as (app, client):
        alices, bobs = await accepted(client, alice), await accepted(client, bob)
        first = waiting(client, alice, alices)
        await wait_until(lambda: idle.records.watches == 1, message="alice's wait never started")
        per_user = await client.get(
            f"{EXECUTIONS}/{alices}", params={"wait": 5}, headers=alice.headers
        )
        second = waiting(client, bob, bobs)
        await wait_until(lambda: idle.records.watches == 2, message="bob's wait never started")
        per_instance = await client.get(
            f"{EXECUTIONS}/{alices}", params={"wait": 5}, headers=alice.headers
        )
        without_wait = await client.get(f"{EXECUTIONS}/{alices}", headers=alice.headers)
        for job in idle.queue.published:
            await idle.spawner(job)
        answers = await asyncio.wait_for(asyncio.gather(first, second), ANSWERED_WITHIN)
        assert app.state.waiter.slots.held == 0

    assert per_user.status_code == 429
    assert per_user.json()["code"] == "wait_limit"
    assert per_user.headers["retry-after"] == "1"
    assert per_instance.status_code == 503
    assert per_instance.json()["code"] == "too_many_waiters"
    assert per_instance.headers["retry-after"] == "2"
    assert without_wait.status_code == 200
    assert [answer.json()["status"] for answer in answers] == ["succeeded", "succeeded"]


async def test_a_wait_whose_client_leaves_is_cancelled_and_frees_its_slot(
    stack: Stack, idle: FakeBackends, alice: User
) -> None:
    async with stack() as (app, client):
        execution_id = await accepted(client, alice)
        leave = asyncio.Event()
        sent: list[Message] = []
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> Message:
            if messages:
                return messages.pop()
            await leave.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = get_scope(f"{EXECUTIONS}/{execution_id}", b"wait=60", alice)
        request = asyncio.create_task(app(scope, receive, send))
        await wait_until(lambda: app.state.waiter.slots.held == 1, message="no wait started")
        leave.set()
        await asyncio.wait_for(request, ANSWERED_WITHIN)

        assert app.state.waiter.slots.held == 0
        assert sent[0]["status"] == 499
        assert idle.queue.published  # the activation itself goes on
        still = await client.get(f"{EXECUTIONS}/{execution_id}", headers=alice.headers)
        assert still.json()["status"] == "queued"


def get_scope(path: str, query: bytes, user: User) -> dict[str, Any]:
    headers = [(b"host", b"publisher.test")]
    headers += [(name.lower().encode(), value.encode()) for name, value in user.headers.items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("publisher.test", 80),
    }
