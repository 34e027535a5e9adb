"""What the spawner does with one job message: record transitions, the final record's fields,
and the ack / nak / term decisions, with a fake runtime and an in-memory record store."""

from __future__ import annotations

import time
from typing import Any

import pytest

from faas_common.contract import ExecutionRecord, Job
from spawner_service.runtime.base import Outcome, RunResult
from spawner_service.worker import JobHandler, final_record, result_text
from tests.unit.spawner.fakes import (
    FakeMsg,
    FakeRuntime,
    FakeStore,
    Replies,
    make_job,
    make_settings,
    queued_record,
)


class Harness:
    def __init__(self, runtime: FakeRuntime | None = None, **settings: Any) -> None:
        self.settings = make_settings(**settings)
        self.runtime = runtime or FakeRuntime()
        self.store = FakeStore()
        self.runtime.store = self.store
        self.replies = Replies()
        self.handler = JobHandler(
            self.settings, runtime=self.runtime, store=self.store, publish=self.replies
        )

    async def handle(self, job: Job, *, delivered: int = 1, queued: bool = True) -> FakeMsg:
        if queued:
            self.store.seed(job.user_id, queued_record(job))
        msg = FakeMsg(job.model_dump_json().encode(), delivered=delivered)
        await self.handler.handle(msg)
        return msg

    def record(self, job: Job) -> ExecutionRecord:
        record = self.store.current(job.user_id, job.execution_id)
        assert record is not None
        return record


# --- pure helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (b"hello\n", "hello"),
        (b"hello", "hello"),
        (b"two\n\n", "two\n"),
        (b"crlf\r\n", "crlf\r"),
        (b"\n", ""),
        (b"", ""),
        (b"multi\nline\n", "multi\nline"),
    ],
)
def test_one_trailing_newline_is_removed(stdout: bytes, expected: str) -> None:
    assert result_text(stdout) == expected


def test_invalid_utf8_is_replaced() -> None:
    assert result_text(b"ok \xff\xfe end\n") == "ok \ufffd\ufffd end"
    assert result_text("é".encode()) == "é"


@pytest.mark.parametrize(
    ("outcome", "status", "error", "has_result"),
    [
        ("succeeded", "succeeded", None, True),
        ("function_failed", "failed", "function_failed", True),
        ("timed_out", "timed_out", "timed_out", False),
        ("output_too_large", "failed", "output_too_large", False),
        ("image_unavailable", "failed", "image_unavailable", False),
        ("runtime_unavailable", "failed", "runtime_unavailable", False),
    ],
)
def test_outcomes_map_to_status_and_error(
    outcome: Outcome, status: str, error: str | None, has_result: bool
) -> None:
    job = make_job()
    result = RunResult(
        outcome,
        exit_code=0 if outcome == "succeeded" else 3,
        stdout=b"out\n",
        stderr_tail=b"bad \xff\n",
        detail=None if outcome == "succeeded" else "why",
        timings={"pull": 1.0, "create": 2.0, "start": 3.0, "run": 4.0, "remove": 5.0},
    )
    record = final_record(
        job,
        result,
        created_at=job.enqueued_at,
        started_at=job.enqueued_at + 0.5,
        finished_at=job.enqueued_at + 2.0,
    )
    assert record.status == status
    assert record.error == error
    assert record.result == ("out" if has_result else None)
    assert record.logs == "bad \ufffd\n"
    assert record.detail == result.detail
    assert record.exit_code == result.exit_code
    assert record.duration_ms == 1500.0
    assert record.timings == {
        "queue": 500.0,
        "pull": 1.0,
        "create": 2.0,
        "start": 3.0,
        "run": 4.0,
        "remove": 5.0,
    }
    assert record.finished_at == job.enqueued_at + 2.0


# --- a job that runs --------------------------------------------------------------------------


async def test_a_job_runs_and_is_reported_then_acked() -> None:
    harness = Harness(FakeRuntime(RunResult("succeeded", exit_code=0, stdout=b"hello\n")))
    job = make_job()
    msg = await harness.handle(job)

    assert msg.actions == [("ack", None)]
    assert harness.store.history == ["running", "succeeded"]
    assert harness.runtime.statuses_seen == ["running"]  # running before the container starts
    record = harness.record(job)
    assert record.result == "hello"
    assert record.error is None
    assert record.created_at == job.enqueued_at
    assert record.timings["queue"] >= 250
    assert harness.replies.sent == [(job.reply_subject, record)]


async def test_the_run_spec_comes_from_the_job() -> None:
    harness = Harness()
    job = make_job(argument="a 'quoted' $(arg)\n")
    before = time.time()
    await harness.handle(job)
    [spec] = harness.runtime.specs
    assert spec.execution_id == job.execution_id
    assert spec.image == "hello-fn:1"
    assert spec.argument == "a 'quoted' $(arg)\n"
    assert dict(spec.env) == {"GREETING": "hi"}
    assert spec.timeout_seconds == 7
    assert spec.memory_mb == 96
    assert before + 7 <= spec.deadline <= time.time() + 7


async def test_the_request_id_is_in_the_logging_context_while_running() -> None:
    harness = Harness()
    await harness.handle(make_job(request_id="req-abc"))
    assert harness.runtime.request_ids == ["req-abc"]


async def test_the_request_id_header_is_used_when_the_job_has_none() -> None:
    harness = Harness()
    job = make_job(request_id=None)
    harness.store.seed(job.user_id, queued_record(job))
    msg = FakeMsg(job.model_dump_json().encode(), headers={"X-Request-ID": "from-header"})
    await harness.handler.handle(msg)
    assert harness.runtime.request_ids == ["from-header"]


async def test_no_reply_without_a_reply_subject() -> None:
    harness = Harness()
    job = make_job(reply_subject=None)
    msg = await harness.handle(job)
    assert msg.actions == [("ack", None)]
    assert harness.record(job).status == "succeeded"
    assert harness.replies.sent == []


async def test_a_missing_record_is_created() -> None:
    harness = Harness()
    job = make_job()
    msg = await harness.handle(job, queued=False)
    assert msg.actions == [("ack", None)]
    assert harness.store.history == ["running", "succeeded"]
    assert harness.record(job).created_at == job.enqueued_at


async def test_a_failed_function_keeps_its_output_exit_code_and_logs() -> None:
    result = RunResult(
        "function_failed", exit_code=3, stdout=b"partial\n", stderr_tail=b"oops\n", detail="x"
    )
    harness = Harness(FakeRuntime(result))
    job = make_job()
    msg = await harness.handle(job)
    assert msg.actions == [("ack", None)]
    record = harness.record(job)
    assert (record.status, record.error, record.exit_code) == ("failed", "function_failed", 3)
    assert (record.result, record.logs) == ("partial", "oops\n")
    assert harness.replies.sent[0][1] == record


async def test_a_redelivered_running_job_runs_again() -> None:
    harness = Harness()
    job = make_job()
    harness.store.seed(job.user_id, queued_record(job).model_copy(update={"status": "running"}))
    msg = FakeMsg(job.model_dump_json().encode(), delivered=2)
    await harness.handler.handle(msg)
    assert msg.actions == [("ack", None)]
    assert harness.record(job).status == "succeeded"


async def test_heartbeats_while_the_function_runs() -> None:
    harness = Harness(FakeRuntime(delay=0.35), heartbeat_seconds=0.1)
    msg = await harness.handle(make_job())
    assert 2 <= msg.progress <= 4
    assert msg.actions == [("ack", None)]


# --- jobs that do not run ---------------------------------------------------------------------


async def test_a_poison_message_is_terminated() -> None:
    harness = Harness()
    msg = FakeMsg(b'{"not": "a job"')
    await harness.handler.handle(msg)
    assert msg.actions == [("term", None)]
    assert harness.runtime.specs == []
    assert harness.store.history == []
    assert harness.replies.sent == []


async def test_an_expired_queued_job_is_terminated_and_timed_out() -> None:
    harness = Harness()
    job = make_job(start_deadline=time.time() - 1)
    msg = await harness.handle(job)
    assert msg.actions == [("term", None)]
    assert harness.runtime.specs == []
    record = harness.record(job)
    assert (record.status, record.error) == ("timed_out", "timed_out")
    assert record.detail is not None
    assert "start deadline" in record.detail
    assert record.finished_at is not None
    assert harness.replies.sent == [(job.reply_subject, record)]


async def test_an_expired_job_whose_record_is_final_is_only_terminated() -> None:
    harness = Harness()
    job = make_job(start_deadline=time.time() - 1)
    done = queued_record(job).model_copy(update={"status": "succeeded", "result": "earlier"})
    harness.store.seed(job.user_id, done)
    msg = FakeMsg(job.model_dump_json().encode())
    await harness.handler.handle(msg)
    assert msg.actions == [("term", None)]
    assert harness.record(job) == done
    assert harness.replies.sent == []


async def test_an_expired_redelivery_of_a_running_job_fails_its_record() -> None:
    harness = Harness()
    job = make_job(start_deadline=time.time() - 1)
    harness.store.seed(job.user_id, queued_record(job).model_copy(update={"status": "running"}))
    msg = FakeMsg(job.model_dump_json().encode(), delivered=2)
    await harness.handler.handle(msg)
    assert msg.actions == [("term", None)]
    assert harness.runtime.specs == []
    record = harness.record(job)
    assert (record.status, record.error) == ("failed", "runtime_unavailable")


async def test_a_job_the_publisher_gave_up_on_is_terminated_without_running() -> None:
    harness = Harness()
    job = make_job()
    gave_up = queued_record(job).model_copy(update={"status": "timed_out", "error": "timed_out"})
    harness.store.seed(job.user_id, gave_up)
    msg = FakeMsg(job.model_dump_json().encode())
    await harness.handler.handle(msg)
    assert msg.actions == [("term", None)]
    assert harness.runtime.specs == []
    assert harness.record(job) == gave_up


async def test_losing_the_race_to_the_publisher_terminates_the_job() -> None:
    harness = Harness()
    job = make_job()

    def publisher_times_it_out(store: FakeStore) -> None:
        current = store.current(job.user_id, job.execution_id)
        assert current is not None
        store._write(job.user_id, current.model_copy(update={"status": "timed_out"}))

    harness.store.before_update = publisher_times_it_out
    msg = await harness.handle(job)
    assert msg.actions == [("term", None)]
    assert harness.runtime.specs == []
    assert harness.record(job).status == "timed_out"


async def test_a_concurrent_harmless_change_is_retried() -> None:
    harness = Harness()
    job = make_job()

    def someone_touches_it(store: FakeStore) -> None:
        current = store.current(job.user_id, job.execution_id)
        assert current is not None
        store._write(job.user_id, current)  # same content, new revision

    harness.store.before_update = someone_touches_it
    msg = await harness.handle(job)
    assert msg.actions == [("ack", None)]
    assert harness.record(job).status == "succeeded"


# --- transient failures -----------------------------------------------------------------------


async def test_records_unavailable_before_running_is_nakked_with_a_delay() -> None:
    harness = Harness(retry_delay_seconds=1.5)
    job = make_job()
    harness.store.seed(job.user_id, queued_record(job))
    harness.store.fail_reads = 1
    msg = FakeMsg(job.model_dump_json().encode(), delivered=1)
    await harness.handler.handle(msg)
    assert msg.actions == [("nak", 1.5)]
    assert harness.runtime.specs == []
    assert harness.record(job).status == "queued"


async def test_records_unavailable_on_the_last_delivery_fails_the_activation() -> None:
    harness = Harness(max_deliver=3)
    job = make_job()
    harness.store.seed(job.user_id, queued_record(job))
    harness.store.fail_reads = 1
    msg = FakeMsg(job.model_dump_json().encode(), delivered=3)
    await harness.handler.handle(msg)
    assert msg.actions == [("term", None)]
    assert harness.runtime.specs == []
    record = harness.record(job)
    assert (record.status, record.error) == ("failed", "runtime_unavailable")
    assert harness.replies.sent == [(job.reply_subject, record)]


async def test_runtime_unavailable_is_retried_and_the_record_queued_again() -> None:
    result = RunResult("runtime_unavailable", detail="cannot reach the Docker engine")
    harness = Harness(FakeRuntime(result), retry_delay_seconds=2.0)
    job = make_job()
    msg = await harness.handle(job, delivered=1)
    assert msg.actions == [("nak", 2.0)]
    assert harness.store.history == ["running", "queued"]
    record = harness.record(job)
    assert record.detail == "retrying: cannot reach the Docker engine"
    assert harness.replies.sent == []


async def test_runtime_unavailable_on_the_last_delivery_fails_the_activation() -> None:
    result = RunResult("runtime_unavailable", detail="cannot reach the Docker engine")
    harness = Harness(FakeRuntime(result), max_deliver=2)
    job = make_job()
    msg = await harness.handle(job, delivered=2)
    assert msg.actions == [("ack", None)]
    record = harness.record(job)
    assert (record.status, record.error) == ("failed", "runtime_unavailable")
    assert harness.replies.sent == [(job.reply_subject, record)]


async def test_an_expiry_after_retries_says_what_went_wrong() -> None:
    harness = Harness()
    job = make_job(start_deadline=time.time() - 1)
    retried = queued_record(job).model_copy(update={"detail": "retrying: engine down"})
    harness.store.seed(job.user_id, retried)
    msg = FakeMsg(job.model_dump_json().encode(), delivered=2)
    await harness.handler.handle(msg)
    assert msg.actions == [("term", None)]
    detail = harness.record(job).detail
    assert detail is not None
    assert "start deadline" in detail
    assert "engine down" in detail
