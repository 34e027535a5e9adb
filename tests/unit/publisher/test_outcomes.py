"""How a sync activation ends: HTTP status per record status/error, the concurrency limits, the
queue and result deadlines, lost replies, and the Server-Timing header."""

from __future__ import annotations

import re
import time
from typing import Any, get_args

import httpx
import pytest
from pydantic import ValidationError

from faas_common.contract import ErrorCode, ExecutionRecord, ExecutionStatus, FunctionSnapshot
from publisher_service.config import PublisherSettings
from publisher_service.service import outcome_error
from publisher_service.timing import server_timing
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

TIMINGS = {"queue": 1.25, "pull": 0.5, "create": 12.0, "start": 230.0, "run": 300.55, "remove": 20}


@pytest.mark.parametrize(
    ("outcome", "http_status", "code"),
    [
        ({"status": "failed", "error": "function_failed", "exit_code": 2}, 502, "function_failed"),
        (
            {"status": "failed", "error": "output_too_large", "exit_code": 0},
            502,
            "output_too_large",
        ),
        ({"status": "failed", "error": "image_unavailable"}, 502, "image_unavailable"),
        ({"status": "timed_out", "error": "timed_out", "exit_code": 137}, 504, "timed_out"),
        ({"status": "failed", "error": "runtime_unavailable"}, 503, "runtime_unavailable"),
        ({"status": "rejected", "error": "concurrency_limit"}, 429, "concurrency_limit"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_a_terminal_non_success_maps_to_its_http_status(
    client: httpx.AsyncClient,
    fakes: FakeBackends,
    alice: User,
    hello: FunctionSnapshot,
    outcome: dict[str, Any],
    http_status: int,
    code: str,
) -> None:
    fakes.spawner.outcome = lambda job: {"logs": "oops", "timings": TIMINGS, **outcome}

    response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)

    assert response.status_code == http_status, response.text
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str)
    assert body["detail"]
    execution = body["execution"]
    assert execution["status"] == outcome["status"]
    assert execution["error"] == outcome["error"]
    assert execution["logs"] == "oops"
    assert execution["execution_id"] == fakes.queue.published[0].execution_id
    assert response.headers["server-timing"].startswith("queue;dur=")


async def test_function_failed_names_the_exit_status(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.spawner.outcome = lambda job: {
        "status": "failed",
        "error": "function_failed",
        "exit_code": 7,
    }

    response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)

    assert response.status_code == 502
    assert "7" in response.json()["detail"]


EXPECTED_STATUS: dict[str, int] = {
    "function_failed": 502,
    "output_too_large": 502,
    "image_unavailable": 502,
    "timed_out": 504,
    "runtime_unavailable": 503,
    "concurrency_limit": 429,
    "storage_full": 507,
}


@pytest.mark.parametrize("code", get_args(ErrorCode))
def test_every_error_code_of_the_contract_has_its_answer(code: ErrorCode) -> None:
    status: ExecutionStatus = "rejected" if code == "concurrency_limit" else "failed"
    record = ExecutionRecord(
        execution_id="e", function="f", status=status, error=code, created_at=time.time()
    )

    error = outcome_error(record)

    assert error is not None
    assert error.status_code == EXPECTED_STATUS[code]
    assert error.code == code
    assert error.body["execution"]["error"] == code
    assert outcome_error(record.model_copy(update={"status": "succeeded", "error": None})) is None


def test_a_record_with_an_error_code_outside_the_contract_is_refused() -> None:
    with pytest.raises(ValidationError):
        ExecutionRecord.model_validate(
            {
                "execution_id": "e",
                "function": "f",
                "status": "failed",
                "error": "disk_full",
                "created_at": time.time(),
            }
        )


def test_the_records_own_detail_is_the_answers_detail() -> None:
    record = ExecutionRecord(
        execution_id="e",
        function="f",
        status="failed",
        error="function_failed",
        detail="Killed: out of memory (128 MiB)",
        exit_code=137,
        created_at=time.time(),
    )

    error = outcome_error(record)

    assert error is not None
    assert error.detail == "Killed: out of memory (128 MiB)"
    assert error.status_code == 502


async def test_stream_full_is_429_with_retry_after_and_a_rejected_record(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.queue.worker = None
    fakes.queue.max_in_flight = 2
    body = publish_body(is_async=True)
    for _ in range(2):
        assert (await client.post(PUBLISH, json=body, headers=alice.headers)).status_code == 202

    response = await client.post(PUBLISH, json=body, headers=alice.headers)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    payload = response.json()
    assert payload["code"] == "concurrency_limit"
    execution_id = payload["execution"]["execution_id"]
    stored = fakes.records.record(alice.id, execution_id)
    assert stored.status == "rejected"
    assert stored.error == "concurrency_limit"
    assert stored.detail == payload["detail"]
    assert stored.finished_at is not None
    assert len(fakes.queue.published) == 2

    polled = await client.get(f"/publisher/executions/{execution_id}", headers=alice.headers)
    assert polled.json()["status"] == "rejected"


async def test_the_per_user_limit_leaves_other_users_alone(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, bob: User
) -> None:
    fakes.queue.worker = None
    fakes.queue.max_per_user = 1
    fakes.catalog.add(snapshot(alice.id, "hello"))
    fakes.catalog.add(snapshot(bob.id, "hello"))
    body = publish_body(is_async=True)

    assert (await client.post(PUBLISH, json=body, headers=alice.headers)).status_code == 202
    assert (await client.post(PUBLISH, json=body, headers=alice.headers)).status_code == 429
    assert (await client.post(PUBLISH, json=body, headers=bob.headers)).status_code == 202


async def test_capacity_returns_when_a_job_is_acked(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.queue.worker = None
    fakes.queue.max_in_flight = 1
    body = publish_body(is_async=True)
    assert (await client.post(PUBLISH, json=body, headers=alice.headers)).status_code == 202
    assert (await client.post(PUBLISH, json=body, headers=alice.headers)).status_code == 429

    await fakes.spawner(fakes.queue.published[0])

    assert (await client.post(PUBLISH, json=body, headers=alice.headers)).status_code == 202


async def test_a_queue_that_cannot_take_the_job_is_503_and_the_record_says_so(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.queue.failing = True

    response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)

    assert response.status_code == 503
    assert response.json()["code"] == "runtime_unavailable"
    [record] = fakes.records.all()
    assert record.status == "failed"
    assert record.error == "runtime_unavailable"
    assert fakes.replies.waiting == 0


async def test_an_unreachable_record_store_is_503_and_nothing_is_queued(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.records.failing = True

    response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)

    assert response.status_code == 503
    assert response.json()["code"] == "runtime_unavailable"
    assert fakes.queue.published == []


@pytest.fixture
def short_settings(rsa_keys: RsaKeys) -> PublisherSettings:
    return make_settings(
        rsa_keys.public_path,
        queue_timeout_seconds=0.3,
        reply_grace_seconds=0.2,
        result_poll_seconds=0.05,
    )


async def test_a_job_nobody_starts_times_out_at_its_start_deadline(
    short_settings: PublisherSettings, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.queue.worker = None
    async with running_app(short_settings, fakes.backends()) as app, client_for(app) as client:
        started = time.monotonic()
        response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)
        elapsed = time.monotonic() - started

    assert response.status_code == 504
    body = response.json()
    assert body["code"] == "timed_out"
    assert "No worker" in body["detail"]
    assert body["execution"]["status"] == "timed_out"
    # At the start deadline, not after the function's timeout on top of it.
    assert 0.25 <= elapsed < 2.0
    [record] = fakes.records.all()
    assert record.status == "timed_out"
    assert record.error == "timed_out"
    assert record.detail is not None
    assert "No worker" in record.detail
    # The dead job does not hold on to its slot of the stream.
    assert fakes.queue.discarded == [1]
    assert fakes.queue.in_flight == {}
    assert "server-timing" in response.headers


async def test_a_job_started_just_in_time_is_waited_for(
    short_settings: PublisherSettings, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.spawner.start_delay = 0.2
    fakes.spawner.run_time = 0.5  # ends after the start deadline: the call keeps waiting
    async with running_app(short_settings, fakes.backends()) as app, client_for(app) as client:
        response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)

    assert response.status_code == 200, response.text
    assert response.json()["result"] == "world"
    assert fakes.queue.discarded == []


async def test_a_job_started_late_loses_the_race_to_the_timeout(
    short_settings: PublisherSettings, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.spawner.start_delay = 0.6
    async with running_app(short_settings, fakes.backends()) as app, client_for(app) as client:
        response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)
        for task in list(fakes.queue.tasks):
            await task

    assert response.status_code == 504
    assert fakes.spawner.started == []  # its compare-and-set found the record timed out
    assert fakes.records.all()[0].status == "timed_out"


async def test_a_job_still_running_after_the_result_deadline_is_504_with_its_record(
    short_settings: PublisherSettings, fakes: FakeBackends, alice: User
) -> None:
    fakes.catalog.add(snapshot(alice.id, "hello", timeout_seconds=1))
    fakes.spawner.finish = False
    async with running_app(short_settings, fakes.backends()) as app, client_for(app) as client:
        started = time.monotonic()
        response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)
        elapsed = time.monotonic() - started

    assert response.status_code == 504
    body = response.json()
    assert body["code"] == "timed_out"
    assert body["execution"]["status"] == "running"
    # start deadline (0.3) + function timeout (1) + grace (0.2)
    assert 1.4 <= elapsed < 3.0


async def test_a_lost_reply_is_made_up_for_by_reading_the_record(
    short_settings: PublisherSettings, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.spawner.reply = False
    async with running_app(short_settings, fakes.backends()) as app, client_for(app) as client:
        started = time.monotonic()
        response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)
        elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.json()["result"] == "world"
    assert elapsed < 1.0


SERVER_TIMING = re.compile(r"^[a-z]+;dur=\d+\.\d(, [a-z]+;dur=\d+\.\d)*$")


async def test_server_timing_lists_the_record_phases_then_the_publishers(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    fakes.spawner.outcome = lambda job: {"status": "succeeded", "result": "", "timings": TIMINGS}

    response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)

    header = response.headers["server-timing"]
    assert SERVER_TIMING.match(header), header
    names = [part.split(";", 1)[0] for part in header.split(", ")]
    assert names == [
        "queue",
        "pull",
        "create",
        "start",
        "run",
        "remove",
        "resolve",
        "enqueue",
        "total",
    ]
    assert "run;dur=300.6" in header
    assert "remove;dur=20.0" in header


async def test_server_timing_on_errors_and_async_answers(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    missing = await client.post(PUBLISH, json=publish_body(name="nope"), headers=alice.headers)
    accepted = await client.post(PUBLISH, json=publish_body(is_async=True), headers=alice.headers)

    assert [part.split(";")[0] for part in missing.headers["server-timing"].split(", ")] == [
        "resolve",
        "total",
    ]
    assert [part.split(";")[0] for part in accepted.headers["server-timing"].split(", ")] == [
        "resolve",
        "enqueue",
        "total",
    ]


def test_server_timing_skips_what_a_header_cannot_carry() -> None:
    header = server_timing(
        {"run": 5.0, "bad name": 1.0, "nan": float("nan"), "neg": -1.0, "zeta": 2.0},
        {"resolve": 0.04, "total": 9.96},
    )

    assert header == "run;dur=5.0, zeta;dur=2.0, resolve;dur=0.0, total;dur=10.0"
