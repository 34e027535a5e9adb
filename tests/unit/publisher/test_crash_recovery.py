"""What a publisher that died half-way through an activation leaves behind, and how any replica
finishes the job: a keyed retry resumes it, a reader expires what nobody will ever run."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from pydantic import ValidationError

from faas_common.contract import FunctionSnapshot, Job
from faas_common.executions import queued
from publisher_service.service import IdempotencyClaim, fingerprint
from tests.support.keys import RsaKeys
from tests.unit.publisher.factories import PUBLISH, FakeBackends, make_settings, publish_body
from tests.unit.registry.factories import User

KEY = "retry-me"


def orphan_job(alice: User, hello: FunctionSnapshot, *, start_in: float = 30.0) -> Job:
    """A job whose publisher died before publishing it."""
    now = time.time()
    return Job(
        execution_id="0000000000000000deadbeefdeadbeef",
        user_id=alice.id,
        function=hello,
        argument="world",
        enqueued_at=now - 1,
        start_deadline=now + start_in,
    )


def claim_for(job: Job, *, is_async: bool = False) -> IdempotencyClaim:
    return IdempotencyClaim(
        execution_id=job.execution_id,
        fingerprint=fingerprint(job.function.name, job.argument, is_async),
        start_deadline=job.start_deadline,
        enqueued_at=job.enqueued_at,
    )


def died_after_claiming(fakes: FakeBackends, job: Job, *, is_async: bool = False) -> None:
    fakes.idempotency.claims[(job.user_id, KEY)] = (claim_for(job, is_async=is_async), 1)


@pytest.mark.parametrize("with_record", [False, True], ids=["no-record", "queued-record"])
async def test_a_keyed_retry_runs_a_call_whose_job_never_reached_the_stream(
    client: httpx.AsyncClient,
    fakes: FakeBackends,
    alice: User,
    hello: FunctionSnapshot,
    with_record: bool,
) -> None:
    job = orphan_job(alice, hello)
    died_after_claiming(fakes, job)
    if with_record:
        await fakes.records.create(alice.id, queued(job))

    response = await client.post(
        PUBLISH, json=publish_body(), headers={**alice.headers, "Idempotency-Key": KEY}
    )

    assert response.status_code == 200, response.text
    assert response.json()["execution_id"] == job.execution_id
    assert response.json()["result"] == "world"
    assert [published.execution_id for published in fakes.queue.published] == [job.execution_id]
    assert fakes.spawner.started == [job.execution_id]
    assert fakes.records.record(alice.id, job.execution_id).status == "succeeded"


async def test_a_keyed_async_retry_queues_the_orphan_and_answers_its_id(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    job = orphan_job(alice, hello)
    died_after_claiming(fakes, job, is_async=True)

    response = await client.post(
        PUBLISH,
        json=publish_body(is_async=True),
        headers={**alice.headers, "Idempotency-Key": KEY},
    )
    for _ in range(100):
        if fakes.spawner.started:
            break
        await asyncio.sleep(0.01)

    assert response.status_code == 202
    assert response.json()["execution_id"] == job.execution_id
    assert fakes.spawner.started == [job.execution_id]


async def test_a_retry_of_an_orphan_past_its_start_deadline_times_out_without_running(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    job = orphan_job(alice, hello, start_in=-1.0)
    died_after_claiming(fakes, job, is_async=True)

    response = await client.post(
        PUBLISH,
        json=publish_body(is_async=True),
        headers={**alice.headers, "Idempotency-Key": KEY},
    )
    polled = await client.get(f"/publisher/executions/{job.execution_id}", headers=alice.headers)

    assert response.status_code == 202
    assert polled.json()["status"] == "timed_out"
    assert polled.json()["detail"].startswith("No worker started the activation")
    assert fakes.queue.published == []


async def test_a_queued_record_past_its_start_deadline_is_expired_when_read(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    stuck = orphan_job(alice, hello, start_in=-0.5)
    await fakes.records.create(alice.id, queued(stuck))
    pending = orphan_job(alice, hello).model_copy(
        update={"execution_id": "0000000000000001deadbeefdeadbeef"}
    )
    await fakes.records.create(alice.id, queued(pending))

    listed = await client.get("/publisher/executions", headers=alice.headers)
    got = await client.get(f"/publisher/executions/{stuck.execution_id}", headers=alice.headers)

    statuses = {item["execution_id"]: item["status"] for item in listed.json()["executions"]}
    assert statuses == {stuck.execution_id: "timed_out", pending.execution_id: "queued"}
    assert got.json()["status"] == "timed_out"
    assert fakes.records.record(alice.id, stuck.execution_id).status == "timed_out"


@pytest.mark.parametrize(
    "overrides",
    [
        {"async_queue_timeout_seconds": 901.0},
        {"job_max_age_seconds": 120, "async_queue_timeout_seconds": 300.0},
    ],
    ids=["over-900s", "over-max-age"],
)
def test_a_queue_timeout_beyond_the_duplicate_window_is_refused(
    rsa_keys: RsaKeys, overrides: dict[str, float]
) -> None:
    # A keyed retry may publish the job again until its start deadline: the stream must still
    # remember the first publish then, or the function could run twice.
    with pytest.raises(ValidationError, match="duplicate window"):
        make_settings(rsa_keys.public_path, **overrides)
