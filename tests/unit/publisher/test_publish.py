"""POST /publisher/publish: the sync and async paths, the job queued, the argument cap, function
lookup and authentication."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from faas_common.contract import FunctionSnapshot
from publisher_service.config import ARGV_ELEMENT_LIMIT
from tests.support.keys import RsaKeys
from tests.unit.publisher.factories import (
    PUBLISH,
    FakeBackends,
    client_for,
    make_settings,
    publish_body,
    running_app,
    snapshot,
)
from tests.unit.registry.factories import User


async def test_sync_call_answers_with_the_succeeded_record(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    response = await client.post(
        PUBLISH, json=publish_body(argument="world"), headers=alice.headers
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["result"] == "world"
    assert body["function"] == "hello"
    assert body["exit_code"] == 0
    stored = fakes.records.record(alice.id, body["execution_id"])
    assert stored.status == "succeeded"
    assert len(fakes.queue.published) == 1
    assert fakes.replies.waiting == 0


async def test_the_job_carries_the_snapshot_argument_reply_subject_and_deadline(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    response = await client.post(
        PUBLISH,
        json=publish_body(argument="a b  c"),
        headers={**alice.headers, "X-Request-ID": "req-42"},
    )

    assert response.status_code == 200
    [job] = fakes.queue.published
    assert job.execution_id == response.json()["execution_id"]
    assert job.user_id == alice.id
    # The snapshot, with the fully-qualified reference the engine is given.
    assert job.function == hello.model_copy(update={"image": "docker.io/library/hello:1.0"})
    assert job.argument == "a b  c"
    assert job.reply_subject == f"faas.reply.unit.{job.execution_id}"
    assert job.start_deadline == pytest.approx(job.enqueued_at + 30.0)
    assert job.request_id == "req-42"


async def test_the_record_keeps_the_calls_request_id(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.queue.worker = None  # the record stays queued: the publisher wrote it
    headers = {**alice.headers, "X-Request-ID": "abc-123"}
    response = await client.post(PUBLISH, json=publish_body(is_async=True), headers=headers)

    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == "abc-123"
    polled = await client.get(response.json()["status_url"], headers=alice.headers)
    assert polled.json()["status"] == "queued"
    assert polled.json()["request_id"] == "abc-123"


async def test_a_new_record_is_written_unread_and_its_revision_goes_with_the_job(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.queue.worker = None  # the record stays as the publisher wrote it
    response = await client.post(PUBLISH, json=publish_body(is_async=True), headers=alice.headers)

    assert response.status_code == 202, response.text
    assert fakes.records.reads == 0  # a fresh execution id: nothing to read
    record, revision = fakes.records.entries[(alice.id, response.json()["execution_id"])]
    assert record.status == "queued"
    assert fakes.queue.revisions == [revision]


async def test_async_call_is_accepted_with_a_status_url_then_polled(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.queue.worker = None  # nobody consumes yet

    response = await client.post(
        PUBLISH, json=publish_body(argument="later", is_async=True), headers=alice.headers
    )

    assert response.status_code == 202, response.text
    body = response.json()
    execution_id = body["execution_id"]
    assert body == {
        "execution_id": execution_id,
        "status_url": f"/publisher/executions/{execution_id}",
    }
    assert response.headers["location"] == body["status_url"]
    [job] = fakes.queue.published
    assert job.reply_subject is None
    assert job.start_deadline == pytest.approx(job.enqueued_at + 300.0)

    polled = await client.get(body["status_url"], headers=alice.headers)
    assert polled.status_code == 200
    assert polled.json()["status"] == "queued"

    await fakes.spawner(job)
    polled = await client.get(body["status_url"], headers=alice.headers)
    assert polled.json()["status"] == "succeeded"
    assert polled.json()["result"] == "later"


async def test_json_is_read_whatever_the_content_type(
    client: httpx.AsyncClient, alice: User, hello: FunctionSnapshot
) -> None:
    response = await client.post(
        PUBLISH,
        content=b'{"name": "hello", "argument": "form"}',
        headers={**alice.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["result"] == "form"


async def test_argument_at_the_argv_limit_is_queued(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.queue.worker = None
    argument = "x" * ARGV_ELEMENT_LIMIT

    response = await client.post(
        PUBLISH, json=publish_body(argument=argument, is_async=True), headers=alice.headers
    )

    assert response.status_code == 202
    assert fakes.queue.published[0].argument == argument


@pytest.mark.parametrize(
    "argument",
    ["x" * (ARGV_ELEMENT_LIMIT + 1), "é" * (ARGV_ELEMENT_LIMIT // 2 + 1)],
    ids=["ascii", "two-byte-characters"],
)
async def test_argument_over_the_argv_limit_is_413_before_anything_is_queued(
    client: httpx.AsyncClient,
    fakes: FakeBackends,
    alice: User,
    hello: FunctionSnapshot,
    argument: str,
) -> None:
    response = await client.post(
        PUBLISH, json=publish_body(argument=argument), headers=alice.headers
    )

    assert response.status_code == 413
    assert response.json()["code"] == "argument_too_large"
    assert str(ARGV_ELEMENT_LIMIT) in response.json()["detail"]
    assert fakes.queue.published == []
    assert fakes.records.entries == {}
    assert fakes.catalog.lookups == 0


async def test_a_smaller_configured_argument_cap_applies(
    rsa_keys: RsaKeys, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    settings = make_settings(rsa_keys.public_path, max_argument_bytes=10)
    async with running_app(settings, fakes.backends()) as app, client_for(app) as client:
        accepted = await client.post(
            PUBLISH, json=publish_body(argument="x" * 10), headers=alice.headers
        )
        refused = await client.post(
            PUBLISH, json=publish_body(argument="x" * 11), headers=alice.headers
        )

    assert accepted.status_code == 200
    assert refused.status_code == 413
    assert len(fakes.queue.published) == 1


BIG_ENV = {f"VAR_{index}": "é" * 4_000 for index in range(64)}
"""64 values of 8 000 UTF-8 bytes: 512 000 bytes of environment in every job of the function."""
CONTROL_ARGUMENT = "\x01" * 131_062
"""Under the argv limit, but six bytes each once escaped in the job's JSON."""


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_a_job_too_large_for_one_message_is_413_and_leaves_nothing_behind(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, is_async: bool
) -> None:
    fakes.catalog.add(snapshot(alice.id, "big-env", env=BIG_ENV))
    response = await client.post(
        PUBLISH,
        json=publish_body("big-env", CONTROL_ARGUMENT, is_async=is_async),
        headers={**alice.headers, "Idempotency-Key": "big-1"},
    )

    assert response.status_code == 413, response.text
    body = response.json()
    assert body["code"] == "argument_too_large"
    assert "the function's environment together are too large to queue" in body["detail"]
    assert "server-timing" in response.headers
    assert fakes.queue.published == []
    assert fakes.records.entries == {}
    assert fakes.idempotency.claims == {}


async def test_the_same_function_with_a_small_argument_runs(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User
) -> None:
    fakes.catalog.add(snapshot(alice.id, "big-env", env=BIG_ENV))
    response = await client.post(
        PUBLISH, json=publish_body("big-env", "\x01" * 1_000), headers=alice.headers
    )

    assert response.status_code == 200, response.text
    assert len(fakes.queue.published) == 1


async def test_unknown_function_is_404(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User
) -> None:
    response = await client.post(PUBLISH, json=publish_body(name="nope"), headers=alice.headers)

    assert response.status_code == 404
    assert response.json()["code"] == "function_not_found"
    assert fakes.queue.published == []
    assert fakes.records.entries == {}


async def test_another_users_function_is_404(
    client: httpx.AsyncClient, fakes: FakeBackends, bob: User, hello: FunctionSnapshot
) -> None:
    response = await client.post(PUBLISH, json=publish_body(name="hello"), headers=bob.headers)

    assert response.status_code == 404
    assert response.json()["code"] == "function_not_found"
    assert fakes.queue.published == []


async def test_each_user_runs_their_own_function_of_the_same_name(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, bob: User
) -> None:
    fakes.catalog.add(snapshot(alice.id, "same", image="alice/fn:1"))
    fakes.catalog.add(snapshot(bob.id, "same", image="bob/fn:1"))

    first, second = await asyncio.gather(
        client.post(PUBLISH, json=publish_body(name="same"), headers=alice.headers),
        client.post(PUBLISH, json=publish_body(name="same"), headers=bob.headers),
    )

    assert first.status_code == second.status_code == 200
    images = {job.user_id: job.function.image for job in fakes.queue.published}
    assert images == {alice.id: "docker.io/alice/fn:1", bob.id: "docker.io/bob/fn:1"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}],
    ids=["missing", "malformed", "not-bearer"],
)
async def test_every_route_needs_a_valid_token(
    client: httpx.AsyncClient, fakes: FakeBackends, headers: dict[str, str]
) -> None:
    for method, path in (
        ("POST", PUBLISH),
        ("GET", "/publisher/executions"),
        ("GET", "/publisher/executions/abc"),
    ):
        response = await client.request(method, path, json=publish_body(), headers=headers)
        assert response.status_code == 401, (method, path)
    assert fakes.queue.published == []


async def test_health_and_readiness(client: httpx.AsyncClient, fakes: FakeBackends) -> None:
    assert (await client.get("/publisher/health")).json() == {"status": "ok"}
    assert (await client.get("/publisher/ready")).status_code == 200

    fakes.queue.failing = True
    ready = await client.get("/publisher/ready")
    assert ready.status_code == 503
    assert ready.json()["code"] == "not_ready"
