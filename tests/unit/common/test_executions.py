"""The execution record's lifecycle: the transitions, the compare-and-set loop, and the store's
retries across a leader election (a write whose answer was lost is recognised as its own)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import nats.errors
import pytest
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from faas_common.contract import ExecutionRecord, FunctionSnapshot, Job
from faas_common.executions import (
    LOST_DETAIL,
    NOT_STARTED_DETAIL,
    ExecutionStore,
    RecordConflict,
    RecordTooLarge,
    StoreUnavailable,
    expired,
    expired_record,
    finished,
    lost,
    queued,
    queued_if_new,
    rejected,
    requeued,
    started,
    transition,
)
from faas_common.nats import RetryBudget


def make_job(**overrides: Any) -> Job:
    now = time.time()
    function = FunctionSnapshot(
        id="f",
        owner_id="u",
        name="hello",
        image="hello:1",
        timeout_seconds=5,
        memory_mb=64,
        updated_at="2026-01-01T00:00:00Z",
    )
    values: dict[str, Any] = {
        "execution_id": "e1",
        "user_id": "u",
        "function": function,
        "argument": "x",
        "enqueued_at": now - 1,
        "start_deadline": now + 30,
    }
    return Job(**(values | overrides))


def with_status(record: ExecutionRecord, status: str, **extra: Any) -> ExecutionRecord:
    return record.model_copy(update={"status": status, **extra})


JOB = make_job()
QUEUED = queued(JOB)
RUNNING = with_status(QUEUED, "running")
SUCCEEDED = with_status(RUNNING, "succeeded", result="ok", finished_at=time.time())
FINAL_STATUSES = ("succeeded", "failed", "timed_out", "rejected")


# --- transitions ---


def test_started_from_nothing_or_queued_and_never_from_a_final_record() -> None:
    now = time.time()
    for current in (None, QUEUED, RUNNING):
        record = started(JOB, now)(current)
        assert record is not None
        assert record.status == "running"
        assert record.timings["queue"] >= 1000
    for status in FINAL_STATUSES:
        assert started(JOB, now)(with_status(QUEUED, status)) is None


def test_expired_only_applies_to_a_job_nobody_started_and_quotes_the_last_attempt() -> None:
    now = time.time()
    plain = expired(JOB, now)(None)
    retried = expired(JOB, now)(QUEUED.model_copy(update={"detail": "retrying: engine down"}))

    assert plain is not None
    assert (plain.status, plain.error, plain.detail) == (
        "timed_out",
        "timed_out",
        NOT_STARTED_DETAIL,
    )
    assert retried is not None
    assert retried.detail == f"{NOT_STARTED_DETAIL}; last attempt: retrying: engine down"
    assert expired(JOB, now)(RUNNING) is None
    assert expired(JOB, now)(SUCCEEDED) is None


def test_a_reader_expires_a_queued_record_only_after_its_start_deadline() -> None:
    assert expired_record(JOB.start_deadline - 1)(QUEUED) is None
    late = expired_record(JOB.start_deadline + 1)(QUEUED)
    assert late is not None
    assert late.status == "timed_out"
    assert expired_record(JOB.start_deadline + 1)(RUNNING) is None
    assert expired_record(JOB.start_deadline + 1)(None) is None


def test_requeued_and_lost_apply_to_running_records_only() -> None:
    back = requeued("engine down")(RUNNING)
    gone = lost(time.time())(RUNNING)

    assert back is not None
    assert (back.status, back.detail) == ("queued", "retrying: engine down")
    assert gone is not None
    assert (gone.status, gone.error, gone.detail) == ("failed", "runtime_unavailable", LOST_DETAIL)
    for change in (requeued("x"), lost(time.time())):
        assert change(QUEUED) is None
        assert change(None) is None
        assert change(SUCCEEDED) is None


def test_finished_never_overwrites_a_final_record_and_keeps_the_creation_time() -> None:
    ours = with_status(RUNNING, "failed", error="function_failed", created_at=0.0)

    written = finished(ours)(RUNNING)

    assert written is not None
    assert written.created_at == RUNNING.created_at
    for status in FINAL_STATUSES:
        assert finished(ours)(with_status(RUNNING, status)) is None


def test_rejected_is_rejected_for_the_limit_and_failed_when_not_queued() -> None:
    now = time.time()
    full = rejected(JOB, error="concurrency_limit", detail="full", now=now)(None)
    down = rejected(JOB, error="runtime_unavailable", detail="down", now=now)(QUEUED)

    assert full is not None
    assert full.status == "rejected"
    assert down is not None
    assert (down.status, down.error) == ("failed", "runtime_unavailable")
    assert rejected(JOB, error="concurrency_limit", detail="x", now=now)(RUNNING) is None


# --- the compare-and-set loop ---


@dataclass
class Store:
    """An in-memory ``RecordStore`` with a concurrent writer before the next update."""

    records: dict[str, tuple[ExecutionRecord, int]] = field(default_factory=dict)
    interfere: ExecutionRecord | None = None
    revision: int = 0
    reads: int = 0

    async def get(self, user_id: str, execution_id: str) -> tuple[ExecutionRecord, int] | None:
        self.reads += 1
        return self.records.get(execution_id)

    def _write(self, record: ExecutionRecord) -> int:
        self.revision += 1
        self.records[record.execution_id] = (record, self.revision)
        return self.revision

    async def create(self, user_id: str, record: ExecutionRecord) -> int:
        if record.execution_id in self.records:
            raise RecordConflict(record.execution_id)
        return self._write(record)

    async def update(self, user_id: str, record: ExecutionRecord, *, revision: int) -> int:
        if self.interfere is not None:
            self._write(self.interfere)
            self.interfere = None
        if self.records[record.execution_id][1] != revision:
            raise RecordConflict(record.execution_id)
        return self._write(record)

    async def list_for_user(
        self, user_id: str, *, function: str | None, limit: int
    ) -> list[ExecutionRecord]:
        return []


async def test_a_lost_race_is_decided_again_on_the_new_record() -> None:
    store = Store()
    await store.create("u", QUEUED)
    store.interfere = SUCCEEDED  # another delivery finished it meanwhile

    outcome = await transition(store, "u", "e1", started(JOB, time.time()))

    assert outcome is None
    assert store.records["e1"][0] == SUCCEEDED


async def test_a_transition_from_nothing_creates_the_record() -> None:
    store = Store()

    outcome = await transition(store, "u", "e1", started(JOB, time.time()))

    assert outcome is not None
    assert outcome[0].status == "running"
    assert store.records["e1"] == outcome


async def test_a_fresh_record_is_created_unread_and_one_that_exists_is_read_and_decided() -> None:
    store = Store()
    created = await transition(store, "u", "e1", queued_if_new(JOB), fresh=True)
    assert (created, store.reads) == (store.records["e1"], 0)
    # Not so fresh after all (a resumed attempt): the create fails, the record is read.
    kept = await transition(store, "u", "e1", queued_if_new(JOB), fresh=True)
    assert (kept, store.reads) == (None, 1)


# --- the store over a KV bucket ---


@dataclass
class ScriptedKv:
    """A KV bucket whose next writes fail as scripted; ``landed`` failures did write first (the
    answer was lost), like a timeout while a leader is elected."""

    failures: list[tuple[BaseException, bool]] = field(default_factory=list)
    values: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    calls: int = 0
    revision: int = 0

    def _write(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.values[key] = (value, self.revision)
        return self.revision

    def _attempt(self, key: str, value: bytes) -> None:
        self.calls += 1
        if self.failures:
            error, landed = self.failures.pop(0)
            if landed:
                self._write(key, value)
            raise error

    async def create(self, key: str, value: bytes) -> int:
        self._attempt(key, value)
        if key in self.values:
            raise KeyWrongLastSequenceError()
        return self._write(key, value)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        self._attempt(key, value)
        if key not in self.values or self.values[key][1] != last:
            raise KeyWrongLastSequenceError()
        return self._write(key, value)

    async def get(self, key: str) -> Any:
        if key not in self.values:
            raise KeyNotFoundError()
        value, revision = self.values[key]
        return SimpleNamespace(value=value, revision=revision)


def store_over(kv: ScriptedKv, total: float = 5.0) -> ExecutionStore:
    budget = RetryBudget(total=total, attempt=1.0, backoff=0.001)
    return ExecutionStore(cast(KeyValue, kv), budget=budget)


async def test_a_create_whose_answer_was_lost_is_recognised_as_its_own_write() -> None:
    kv = ScriptedKv(failures=[(nats.errors.TimeoutError(), True)])
    store = store_over(kv)

    revision = await store.create("u", QUEUED)

    assert kv.calls == 2
    assert await store.get("u", "e1") == (QUEUED, revision)


async def test_an_update_whose_answer_was_lost_is_recognised_as_its_own_write() -> None:
    kv = ScriptedKv()
    store = store_over(kv)
    first = await store.create("u", QUEUED)
    kv.failures = [(nats.errors.NoRespondersError(), True)]

    revision = await store.update("u", RUNNING, revision=first)

    assert await store.get("u", "e1") == (RUNNING, revision)


async def test_a_retry_that_finds_someone_elses_record_is_a_conflict() -> None:
    kv = ScriptedKv()
    store = store_over(kv)
    await store.create("u", SUCCEEDED)
    kv.failures = [(nats.errors.TimeoutError(), False)]

    with pytest.raises(RecordConflict):
        await store.create("u", QUEUED)


async def test_a_store_that_stays_down_past_the_budget_is_unavailable() -> None:
    kv = ScriptedKv(failures=[(nats.errors.TimeoutError(), False)] * 10_000)

    with pytest.raises(StoreUnavailable):
        await store_over(kv, total=0.2).create("u", QUEUED)

    assert 2 <= kv.calls < 10_000


async def test_a_record_over_the_message_size_is_too_large_at_once() -> None:
    kv = ScriptedKv(failures=[(nats.errors.MaxPayloadError(), False)])

    with pytest.raises(RecordTooLarge):
        await store_over(kv).create("u", QUEUED)

    assert kv.calls == 1
