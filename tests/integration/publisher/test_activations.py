"""Activations through a real nats-server with a stand-in spawner: the sync path, the async path
and polling, outcomes, idempotency, JetStream dedup, the queue deadline and readiness."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from faas_common.contract import EXECUTIONS_STREAM, ExecutionRecord, Job
from faas_common.nats import RetryBudget
from publisher_service.jobs import NatsJobQueue
from tests.integration.publisher.conftest import SettingsFactory
from tests.integration.publisher.helpers import (
    open_store,
    poll_until,
    publisher,
    register,
    register_new,
    stream_depth,
    wait_for_depth,
)
from tests.integration.publisher.spawner import FakeSpawner
from tests.unit.publisher.factories import PUBLISH, publish_body, snapshot
from tests.unit.registry.factories import User


async def test_sync_call_runs_and_answers_with_the_record(
    nc: NATS, js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    async with publisher(settings_for()) as client:
        await register_new(js, alice.id)
        async with FakeSpawner(nc, js, await open_store(js)) as spawner:
            response = await client.post(
                PUBLISH, json=publish_body(argument="hi there"), headers=alice.headers
            )
            polled = await client.get(
                f"/publisher/executions/{response.json()['execution_id']}", headers=alice.headers
            )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["result"] == "hi there"
    assert polled.json() == body
    [job] = spawner.finished
    assert job.execution_id == body["execution_id"]
    assert job.reply_subject == f"faas.reply.pub-a.{job.execution_id}"
    timing = response.headers["server-timing"]
    assert timing.startswith("queue;dur=2.0, pull;dur=0.5, create;dur=10.0, start;dur=200.0")
    assert "total;dur=" in timing
    assert await stream_depth(js) == 0


async def test_async_call_is_accepted_then_polled_to_its_result(
    nc: NATS, js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    async with publisher(settings_for()) as client:
        await register_new(js, alice.id)
        accepted = await client.post(
            PUBLISH, json=publish_body(argument="bg", is_async=True), headers=alice.headers
        )
        assert accepted.status_code == 202, accepted.text
        status_url = accepted.json()["status_url"]
        assert accepted.headers["location"] == status_url
        assert (await client.get(status_url, headers=alice.headers)).json()["status"] == "queued"

        async with FakeSpawner(nc, js, await open_store(js)):
            done = await poll_until(client, status_url, alice.headers, "succeeded")

    assert done["result"] == "bg"
    assert done["execution_id"] == accepted.json()["execution_id"]


async def test_a_failed_function_is_502_with_its_record(
    nc: NATS, js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    def fail(job: Job) -> dict[str, object]:
        return {"status": "failed", "error": "function_failed", "exit_code": 1, "logs": "boom"}

    async with publisher(settings_for()) as client:
        await register_new(js, alice.id)
        async with FakeSpawner(nc, js, await open_store(js), outcome=fail):
            response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)

    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "function_failed"
    assert body["execution"]["logs"] == "boom"
    assert body["execution"]["exit_code"] == 1


async def test_history_is_the_callers_newest_first(
    nc: NATS, js: JetStreamContext, settings_for: SettingsFactory, alice: User, bob: User
) -> None:
    async with publisher(settings_for()) as client:
        await register_new(js, alice.id, "one")
        await register_new(js, alice.id, "two")
        await register_new(js, bob.id, "one")
        ids = []
        async with FakeSpawner(nc, js, await open_store(js)):
            for name in ("one", "two", "one"):
                response = await client.post(
                    PUBLISH, json=publish_body(name=name), headers=alice.headers
                )
                ids.append(response.json()["execution_id"])
            await client.post(PUBLISH, json=publish_body(name="one"), headers=bob.headers)
        everything = await client.get("/publisher/executions", headers=alice.headers)
        ones = await client.get("/publisher/executions?function=one", headers=alice.headers)
        latest = await client.get("/publisher/executions?limit=1", headers=alice.headers)

    assert [item["execution_id"] for item in everything.json()["executions"]] == ids[::-1]
    assert [item["execution_id"] for item in ones.json()["executions"]] == [ids[2], ids[0]]
    assert [item["execution_id"] for item in latest.json()["executions"]] == [ids[2]]


async def test_an_execution_of_another_user_is_404(
    nc: NATS, js: JetStreamContext, settings_for: SettingsFactory, alice: User, bob: User
) -> None:
    async with publisher(settings_for()) as client:
        await register_new(js, alice.id)
        accepted = await client.post(
            PUBLISH, json=publish_body(is_async=True), headers=alice.headers
        )
        status_url = accepted.json()["status_url"]

        assert (await client.get(status_url, headers=alice.headers)).status_code == 200
        response = await client.get(status_url, headers=bob.headers)

    assert response.status_code == 404
    assert response.json()["code"] == "execution_not_found"


async def test_an_idempotency_key_runs_the_activation_once(
    nc: NATS, js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "payment 17"}
    async with publisher(settings_for()) as client:
        await register_new(js, alice.id)
        async with FakeSpawner(nc, js, await open_store(js)) as spawner:
            first = await client.post(PUBLISH, json=publish_body(), headers=headers)
            second = await client.post(PUBLISH, json=publish_body(), headers=headers)
            reused = await client.post(
                PUBLISH, json=publish_body(argument="other"), headers=headers
            )

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert reused.status_code == 409
    assert reused.json()["code"] == "idempotency_key_reused"
    assert len(spawner.finished) == 1


async def test_concurrent_requests_with_one_key_queue_one_job(
    js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "race"}
    async with publisher(settings_for()) as client:
        await register_new(js, alice.id)
        responses = await asyncio.gather(
            *(
                client.post(PUBLISH, json=publish_body(is_async=True), headers=headers)
                for _ in range(5)
            )
        )

    assert {response.status_code for response in responses} == {202}
    assert len({response.json()["execution_id"] for response in responses}) == 1
    assert await stream_depth(js) == 1


async def test_a_republished_job_is_deduplicated_by_its_execution_id(
    nc: NATS, js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    async with publisher(settings_for()):
        queue = NatsJobQueue(nc, js, budget=RetryBudget())
        now = time.time()
        job = Job(
            execution_id="dedup1",
            user_id=alice.id,
            function=snapshot(alice.id),
            argument="x",
            enqueued_at=now,
            start_deadline=now + 30,
        )
        first = await queue.enqueue(job)
        second = await queue.enqueue(job)

    assert first == second
    assert await stream_depth(js) == 1


async def test_a_job_nobody_picks_up_times_out_and_frees_its_slot(
    js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    settings = settings_for(queue_timeout_seconds=1.0, max_in_flight=1)
    async with publisher(settings) as client:
        await register_new(js, alice.id)
        started = time.monotonic()
        response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)
        elapsed = time.monotonic() - started
        polled = await client.get(
            f"/publisher/executions/{response.json()['execution']['execution_id']}",
            headers=alice.headers,
        )
        depth = await stream_depth(js)
        # The slot is free again: the next activation is accepted, not 429.
        accepted = await client.post(
            PUBLISH, json=publish_body(is_async=True), headers=alice.headers
        )

    assert response.status_code == 504
    assert response.json()["code"] == "timed_out"
    assert 0.9 <= elapsed < 4.0
    record = ExecutionRecord.model_validate(polled.json())
    assert record.status == "timed_out"
    assert record.error == "timed_out"
    assert depth == 0
    assert accepted.status_code == 202


async def test_an_async_job_carries_its_own_deadline_on_the_wire(
    nc: NATS, js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    settings = settings_for(async_queue_timeout_seconds=0.3)
    async with publisher(settings) as client:
        await register_new(js, alice.id)
        accepted = await client.post(
            PUBLISH, json=publish_body(is_async=True), headers=alice.headers
        )
        await asyncio.sleep(0.5)
        # A spawner that comes after the deadline drops the job instead of running it.
        async with FakeSpawner(nc, js, await open_store(js)) as spawner:
            await wait_for_depth(js, 0)

    assert accepted.status_code == 202
    [job] = spawner.terminated
    assert job.execution_id == accepted.json()["execution_id"]
    assert job.start_deadline - job.enqueued_at == pytest.approx(0.3)
    assert job.reply_subject is None
    assert spawner.finished == []


async def test_readiness_follows_the_stream(
    js: JetStreamContext, settings_for: SettingsFactory
) -> None:
    async with publisher(settings_for()) as client:
        ready = await client.get("/publisher/ready")
        await js.delete_stream(EXECUTIONS_STREAM)
        not_ready = await client.get("/publisher/ready")

    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats": "ok"}
    assert not_ready.status_code == 503


async def test_without_the_stream_an_activation_is_503_and_its_record_says_so(
    js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    async with publisher(settings_for(nats_retry_seconds=1.0)) as client:
        await register_new(js, alice.id)
        await js.delete_stream(EXECUTIONS_STREAM)
        response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)
        execution = response.json()["execution"]
        polled = await client.get(
            f"/publisher/executions/{execution['execution_id']}", headers=alice.headers
        )

    assert response.status_code == 503
    assert response.json()["code"] == "runtime_unavailable"
    assert polled.json()["status"] == "failed"
    assert polled.json()["error"] == "runtime_unavailable"


async def test_a_job_larger_than_a_nats_message_is_413_and_leaves_nothing_behind(
    js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    # Each part is within its own limit; the job carrying both is over NATS's 1 MiB max_payload.
    env = {f"VAR_{index}": "é" * 4_000 for index in range(64)}
    argument = "\x01" * 131_062
    headers = {**alice.headers, "Idempotency-Key": "big"}
    async with publisher(settings_for()) as client:
        await register(js, snapshot(alice.id, "big-env", env=env))
        refused = [
            await client.post(
                PUBLISH, json=publish_body("big-env", argument, is_async=True), headers=headers
            )
            for _ in range(2)  # the same again: still 413 (not a 503 that a retry could fix)
        ]
        history = await client.get("/publisher/executions", headers=alice.headers)
        small = await client.post(
            PUBLISH, json=publish_body("big-env", "fits", is_async=True), headers=headers
        )

    for response in refused:
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "argument_too_large"
        assert "environment" in response.json()["detail"]
    assert history.json() == {"executions": []}  # no record left behind
    assert small.status_code == 202  # the key was not kept by the refused calls
    assert await stream_depth(js) == 1
