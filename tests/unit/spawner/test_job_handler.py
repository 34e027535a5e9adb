"""What the spawner does with one job message: record transitions, the final record's fields,
and the ack / nak / term decisions, with a fake runtime and an in-memory record store."""

from __future__ import annotations

import time
from typing import Any

import pytest

from faas_common.contract import HEADER_ROOM, RECORD_REVISION_HEADER, ExecutionRecord, Job
from faas_common.executions import StoreFull
from spawner_service.config import NATS_MAX_PAYLOAD
from spawner_service.handler import JobHandler
from spawner_service.records import final_record, fit_record, record_size, result_text
from spawner_service.runtime.base import Outcome, RunResult
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
    def __init__(
        self,
        runtime: FakeRuntime | None = None,
        *,
        max_payload: int = NATS_MAX_PAYLOAD,
        **settings: Any,
    ) -> None:
        self.settings = make_settings(**settings)
        self.runtime = runtime or FakeRuntime()
        self.store = FakeStore()
        self.runtime.store = self.store
        self.replies = Replies()
        self.handler = JobHandler(
            self.settings,
            runtime=self.runtime,
            store=self.store,
            publish=self.replies,
            max_payload=lambda: max_payload,
        )

    async def handle(
        self,
        job: Job,
        *,
        delivered: int = 1,
        queued: bool = True,
        headers: dict[str, str] | None = None,
    ) -> FakeMsg:
        if queued:
            self.store.seed(job.user_id, queued_record(job))
        msg = FakeMsg(job.model_dump_json().encode(), delivered=delivered, headers=headers)
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


async def test_a_first_delivery_starts_from_the_record_its_publisher_gave_the_revision_of() -> None:
    harness = Harness()
    job = make_job()
    harness.store.seed(job.user_id, queued_record(job))
    headers = {RECORD_REVISION_HEADER: str(harness.store.revision)}
    msg = await harness.handle(job, queued=False, headers=headers)

    assert harness.store.reads == 0
    assert msg.actions == [("ack", None)]
    assert harness.store.history == ["running", "succeeded"]
    assert harness.record(job).created_at == job.enqueued_at


@pytest.mark.parametrize("status", ["timed_out", "queued"])
async def test_a_record_changed_since_its_publisher_wrote_it_is_read_and_decided_on(
    status: str,
) -> None:
    harness = Harness()
    job = make_job()
    harness.store.seed(job.user_id, queued_record(job))
    headers = {RECORD_REVISION_HEADER: str(harness.store.revision)}
    changed = queued_record(job).model_copy(update={"status": status})
    harness.store.seed(job.user_id, changed)  # the caller gave up, or a resumed attempt
    msg = await harness.handle(job, queued=False, headers=headers)

    # A final record is decided on once more with a fresh read; a queued one is started.
    assert harness.store.reads == (2 if status == "timed_out" else 1)
    if status == "timed_out":
        assert (msg.actions, harness.runtime.specs) == ([("term", None)], [])
        assert harness.record(job) == changed
    else:
        assert msg.actions == [("ack", None)]
        assert harness.store.history == ["running", "succeeded"]


@pytest.mark.parametrize("late", [False, True], ids=["in-time", "past-its-start-deadline"])
async def test_a_first_delivery_of_a_job_an_earlier_delivery_started_adopts_its_container(
    late: bool,
) -> None:
    """A recreated consumer delivers a job as its first again while its record is ``running``:
    the revision the publisher gave is stale, and the job is decided on a fresh read (taken
    over), never started again nor dropped as expired."""
    adopted = RunResult("succeeded", exit_code=0, stdout=b"adopted\n", started=True)
    harness = Harness(FakeRuntime(adopted=adopted))
    now = time.time()
    job = make_job(start_deadline=now - 1 if late else now + 30)
    harness.store.seed(job.user_id, queued_record(job))
    headers = {RECORD_REVISION_HEADER: str(harness.store.revision)}
    running = queued_record(job).model_copy(update={"status": "running"})
    harness.store.seed(job.user_id, running)  # the earlier delivery's spawner died
    msg = await harness.handle(job, queued=False, headers=headers)

    assert len(harness.runtime.adoptions) == 1
    assert harness.runtime.specs == []  # not run again
    assert msg.actions == [("ack", None)]
    assert (harness.record(job).status, harness.record(job).result) == ("succeeded", "adopted")


@pytest.mark.parametrize(("delivered", "revision"), [(2, "1"), (1, "not-a-number"), (1, "0")])
async def test_a_redelivery_or_a_revision_that_is_none_reads_the_record(
    delivered: int, revision: str
) -> None:
    harness = Harness()
    job = make_job()
    msg = await harness.handle(job, delivered=delivered, headers={RECORD_REVISION_HEADER: revision})
    assert harness.store.reads >= 1
    assert msg.actions == [("ack", None)]
    assert harness.store.history == ["running", "succeeded"]


async def test_the_runtime_hears_the_call_is_settled_once_its_result_is_stored_and_replied() -> (
    None
):
    harness = Harness(FakeRuntime(RunResult("succeeded", exit_code=0, stdout=b"hi\n")))
    job = make_job()
    harness.store.seed(job.user_id, queued_record(job))
    msg = FakeMsg(job.model_dump_json().encode(), delivered=1)
    seen: list[tuple[str, str, int, list[tuple[str, float | None]]]] = []

    def settled(execution_id: str) -> None:
        seen.append(
            (execution_id, harness.store.history[-1], len(harness.replies.sent), list(msg.actions))
        )

    harness.runtime.settled = settled  # type: ignore[method-assign]
    await harness.handler.handle(msg)
    assert seen == [(job.execution_id, "succeeded", 1, [("ack", None)])]


async def test_a_run_retried_because_its_container_never_started_is_settled_too() -> None:
    result = RunResult("runtime_unavailable", detail="cannot reach the Docker engine")
    harness = Harness(FakeRuntime(result))
    job = make_job()
    msg = await harness.handle(job, delivered=1)
    assert msg.actions == [("nak", harness.settings.retry_delay_seconds)]
    assert harness.runtime.settled_ids == [job.execution_id]


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
    assert harness.record(job).request_id == "from-header"
    assert harness.replies.sent[0][1].request_id == "from-header"


async def test_the_request_id_is_kept_in_the_final_record() -> None:
    harness = Harness()
    job = make_job(request_id="abc-123")
    await harness.handle(job)
    assert harness.record(job).request_id == "abc-123"
    assert harness.replies.sent[0][1].request_id == "abc-123"


@pytest.mark.parametrize("header", ["has space", "x" * 129, "line\nbreak"])
async def test_a_request_id_header_that_is_not_one_is_ignored(header: str) -> None:
    harness = Harness()
    job = make_job(request_id=None)
    harness.store.seed(job.user_id, queued_record(job))
    msg = FakeMsg(job.model_dump_json().encode(), headers={"X-Request-ID": header})
    await harness.handler.handle(msg)
    assert harness.runtime.request_ids == [None]
    assert harness.record(job).request_id is None


async def test_a_record_failed_when_giving_up_keeps_the_request_id() -> None:
    harness = Harness(max_deliver=3)
    job = make_job(request_id="given-up")
    harness.store.seed(job.user_id, queued_record(job))
    await harness.handler.release(FakeMsg(job.model_dump_json().encode(), delivered=3))
    record = harness.record(job)
    assert (record.status, record.request_id) == ("failed", "given-up")


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


# --- records too large for a NATS message -----------------------------------------------------

RECORD_LIMIT = NATS_MAX_PAYLOAD - HEADER_ROOM


@pytest.mark.parametrize(
    "stdout",
    [b"a" * 1_048_576 + b"\n", b"\x01" * 200_000],
    ids=["one-mebibyte-of-text", "control-characters-escaped-six-times"],
)
async def test_a_result_too_large_to_store_is_output_too_large(stdout: bytes) -> None:
    result = RunResult("succeeded", exit_code=0, stdout=stdout, stderr_tail=b"a log line\n")
    harness = Harness(FakeRuntime(result))
    job = make_job()
    msg = await harness.handle(job)

    assert msg.actions == [("ack", None)]
    record = harness.record(job)
    assert (record.status, record.error, record.result) == ("failed", "output_too_large", None)
    assert record.detail is not None
    assert "too large to store" in record.detail
    assert record.exit_code == 0
    assert record.logs == "a log line\n"
    assert record_size(record) <= RECORD_LIMIT
    assert harness.replies.sent == [(job.reply_subject, record)]


async def test_a_result_that_fits_is_kept_whole() -> None:
    stdout = b"\x01" * 100_000  # 600 000 bytes as JSON: fits
    harness = Harness(FakeRuntime(RunResult("succeeded", exit_code=0, stdout=stdout)))
    job = make_job()
    await harness.handle(job)
    record = harness.record(job)
    assert (record.status, record.result) == ("succeeded", "\x01" * 100_000)


def test_logs_are_cut_from_their_beginning_only_as_far_as_needed() -> None:
    job = make_job()
    result = RunResult(
        "function_failed", exit_code=1, stdout=b"small\n", stderr_tail=b"\x01" * 5_000 + b"END"
    )
    record = final_record(
        job, result, created_at=job.enqueued_at, started_at=job.enqueued_at, finished_at=0.0
    )
    limit = record_size(record) - 600
    fitted = fit_record(record, limit)
    assert fitted.result == "small"  # the result fits once the logs are cut: it is kept
    assert (fitted.status, fitted.error) == ("failed", "function_failed")
    assert fitted.logs is not None
    assert fitted.logs.endswith("\x01END")
    assert len(fitted.logs) >= 5_003 - 600  # at most as many characters as bytes were over
    assert record_size(fitted) <= limit


async def test_a_record_the_server_refuses_as_too_large_is_replaced_by_a_small_one() -> None:
    # The connection says it takes 8 MiB, but the server refuses anything over 1 MiB.
    result = RunResult("succeeded", exit_code=0, stdout=b"\x01" * 200_000, stderr_tail=b"log")
    harness = Harness(FakeRuntime(result), max_payload=8 * NATS_MAX_PAYLOAD)
    harness.store.max_value = NATS_MAX_PAYLOAD
    job = make_job()
    msg = await harness.handle(job)

    assert msg.actions == [("ack", None)]
    assert harness.store.refused == 1
    record = harness.record(job)  # never left "running"
    assert (record.status, record.error, record.result, record.logs) == (
        "failed",
        "output_too_large",
        None,
        None,
    )
    assert record.detail is not None
    assert "too large to store" in record.detail
    assert harness.replies.sent == [(job.reply_subject, record)]


# --- the final write is a compare-and-set -----------------------------------------------------


async def test_a_record_another_delivery_finished_is_not_overwritten() -> None:
    job = make_job()
    theirs = queued_record(job).model_copy(
        update={"status": "succeeded", "result": "the other delivery's result"}
    )

    def another_delivery_finishes(store: FakeStore) -> None:
        store._write(job.user_id, theirs)

    harness = Harness(FakeRuntime(during=another_delivery_finishes))
    msg = await harness.handle(job)

    assert msg.actions == [("ack", None)]
    assert harness.record(job) == theirs
    assert harness.replies.sent == []


async def test_a_record_another_delivery_failed_is_not_overwritten() -> None:
    job = make_job()
    theirs = queued_record(job).model_copy(
        update={"status": "failed", "error": "runtime_unavailable", "detail": "gave up"}
    )

    def another_delivery_gives_up(store: FakeStore) -> None:
        store._write(job.user_id, theirs)

    harness = Harness(FakeRuntime(during=another_delivery_gives_up))
    msg = await harness.handle(job)

    assert msg.actions == [("ack", None)]
    assert harness.record(job) == theirs


async def test_a_record_another_delivery_set_running_again_gets_this_result() -> None:
    job = make_job()

    def another_delivery_starts(store: FakeStore) -> None:
        current = store.current(job.user_id, job.execution_id)
        assert current is not None
        store._write(job.user_id, current)  # running again, new revision

    harness = Harness(FakeRuntime(during=another_delivery_starts))
    msg = await harness.handle(job)

    assert msg.actions == [("ack", None)]
    assert (harness.record(job).status, harness.record(job).result) == ("succeeded", "ok")
    assert len(harness.replies.sent) == 1


# --- no second run once the container started -------------------------------------------------


async def test_a_docker_failure_after_the_start_fails_the_activation_without_retry() -> None:
    result = RunResult(
        "runtime_unavailable",
        detail="the Docker engine failed while the function ran: connection reset",
        started=True,
    )
    harness = Harness(FakeRuntime(result), max_deliver=3)
    job = make_job()
    msg = await harness.handle(job, delivered=1)

    assert msg.actions == [("ack", None)]
    record = harness.record(job)
    assert (record.status, record.error) == ("failed", "runtime_unavailable")
    assert record.detail == result.detail
    assert harness.store.history == ["running", "failed"]
    assert harness.replies.sent == [(job.reply_subject, record)]


# --- messages handed back without running -----------------------------------------------------


async def test_a_message_handed_back_is_nakked_for_another_spawner() -> None:
    harness = Harness(max_deliver=3)
    job = make_job()
    harness.store.seed(job.user_id, queued_record(job))
    msg = FakeMsg(job.model_dump_json().encode(), delivered=2)
    await harness.handler.release(msg)

    assert msg.actions == [("nak", None)]
    assert harness.record(job).status == "queued"
    assert harness.replies.sent == []


@pytest.mark.parametrize("status", ["queued", "running"])
async def test_a_message_handed_back_on_its_last_delivery_is_terminated_and_failed(
    status: str,
) -> None:
    harness = Harness(max_deliver=3)
    job = make_job()
    harness.store.seed(job.user_id, queued_record(job).model_copy(update={"status": status}))
    msg = FakeMsg(job.model_dump_json().encode(), delivered=3)
    await harness.handler.release(msg)

    assert msg.actions == [("term", None)]
    assert harness.runtime.specs == []
    record = harness.record(job)
    assert (record.status, record.error) == ("failed", "runtime_unavailable")
    assert record.detail is not None
    assert "gave up after 3 attempts" in record.detail
    assert harness.replies.sent == [(job.reply_subject, record)]


async def test_a_final_record_is_left_alone_when_its_message_is_terminated() -> None:
    harness = Harness(max_deliver=2)
    job = make_job()
    done = queued_record(job).model_copy(update={"status": "succeeded", "result": "done"})
    harness.store.seed(job.user_id, done)
    msg = FakeMsg(job.model_dump_json().encode(), delivered=2)
    await harness.handler.release(msg)

    assert msg.actions == [("term", None)]
    assert harness.record(job) == done
    assert harness.replies.sent == []


async def test_a_poison_message_handed_back_on_its_last_delivery_is_terminated() -> None:
    harness = Harness(max_deliver=1)
    msg = FakeMsg(b"not a job", delivered=1)
    await harness.handler.release(msg)
    assert msg.actions == [("term", None)]


class FullStore(FakeStore):
    """A records bucket at its ``max_bytes``: reads work, every write is refused."""

    async def create(self, user_id: str, record: ExecutionRecord) -> int:
        raise StoreFull("the execution records bucket is full: maximum bytes exceeded")

    async def update(self, user_id: str, record: ExecutionRecord, *, revision: int) -> int:
        raise StoreFull("the execution records bucket is full: maximum bytes exceeded")


async def test_a_full_records_bucket_fails_the_job_as_storage_full_without_running_it() -> None:
    harness = Harness()
    harness.store = FullStore()
    harness.handler.store = harness.store
    job = make_job()
    msg = await harness.handle(job)
    assert msg.actions == [("term", None)]  # not retried: only expiring records make room
    assert harness.runtime.specs == []  # never run
    [(subject, reply)] = harness.replies.sent
    assert subject == job.reply_subject
    assert (reply.status, reply.error) == ("failed", "storage_full")
    assert reply.detail is not None
    assert "full" in reply.detail
