"""Small fakes for the job handler: a scripted runtime, an in-memory record store with revisions
(compare-and-set like the KV bucket), a JetStream message that records what was done with it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from faas_common.contract import ExecutionRecord, FunctionSnapshot, Job
from faas_common.executions import RecordConflict, RecordTooLarge, StoreUnavailable, queued
from faas_common.logging import request_id_var
from spawner_service.config import SpawnerSettings
from spawner_service.runtime.base import RunResult, RunSpec


def make_settings(**overrides: Any) -> SpawnerSettings:
    values: dict[str, Any] = {
        "max_containers": 2,
        "heartbeat_seconds": 30.0,
        "ack_wait_seconds": 90.0,
        "retry_delay_seconds": 1.5,
        "max_deliver": 3,
    }
    return SpawnerSettings(**(values | overrides))


def make_job(**overrides: Any) -> Job:
    now = time.time()
    function = FunctionSnapshot(
        id="f-1",
        owner_id="u-1",
        name="hello",
        image="hello-fn:1",
        timeout_seconds=7,
        memory_mb=96,
        env={"GREETING": "hi"},
        updated_at="2026-01-01T00:00:00Z",
    )
    values: dict[str, Any] = {
        "execution_id": uuid.uuid4().hex,
        "user_id": "u-1",
        "function": function,
        "argument": "world",
        "reply_subject": "faas.reply.p-1.x",
        "enqueued_at": now - 0.25,
        "start_deadline": now + 30,
        "request_id": "req-123",
    }
    return Job(**(values | overrides))


def queued_record(job: Job) -> ExecutionRecord:
    return queued(job)


class FakeRuntime:
    def __init__(
        self,
        result: RunResult | None = None,
        *,
        delay: float = 0.0,
        during: Callable[[FakeStore], None] | None = None,
        adopted: RunResult | None = None,
    ) -> None:
        self.result = result or RunResult("succeeded", exit_code=0, stdout=b"ok\n")
        self.adopted = adopted
        """What ``adopt`` returns: None (no container of an earlier delivery) unless set."""
        self.adoptions: list[RunSpec] = []
        """The specs ``adopt`` was called with."""
        self.delay = delay
        self.during = during
        """Runs while the function runs: what another delivery of the job does meanwhile."""
        self.specs: list[RunSpec] = []
        self.request_ids: list[str | None] = []
        self.statuses_seen: list[str] = []
        self.store: FakeStore | None = None
        self.settled_ids: list[str] = []

    async def run(self, spec: RunSpec) -> RunResult:
        self.specs.append(spec)
        self.request_ids.append(request_id_var.get())
        if self.store is not None:
            for (_, execution_id), (record, _) in self.store.records.items():
                if execution_id == spec.execution_id:
                    self.statuses_seen.append(record.status)
        if self.during is not None:
            assert self.store is not None
            self.during(self.store)
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.result

    async def adopt(self, spec: RunSpec) -> RunResult | None:
        self.adoptions.append(spec)
        return self.adopted

    def settled(self, execution_id: str) -> None:
        self.settled_ids.append(execution_id)

    async def remove_stale(self, now: float) -> int:
        return 0

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


@dataclass
class FakeStore:
    records: dict[tuple[str, str], tuple[ExecutionRecord, int]] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    fail_reads: int = 0
    """The next this many ``get`` calls fail as if the KV bucket were unreachable (past the
    real store's retry budget: ``StoreUnavailable``)."""
    before_update: Callable[[FakeStore], None] | None = None
    """Runs once, just before the next update: a concurrent writer."""
    max_value: int | None = None
    """Writes of a larger record fail like a NATS publish over ``max_payload``."""
    refused: int = 0
    """How many writes were refused as too large."""
    revision: int = 0
    reads: int = 0
    """``get`` calls so far."""

    def _check_size(self, record: ExecutionRecord) -> None:
        if self.max_value is not None and len(record.model_dump_json().encode()) > self.max_value:
            self.refused += 1
            raise RecordTooLarge(record.execution_id)

    def _write(self, user_id: str, record: ExecutionRecord) -> int:
        self.revision += 1
        self.records[(user_id, record.execution_id)] = (record, self.revision)
        self.history.append(record.status)
        return self.revision

    def seed(self, user_id: str, record: ExecutionRecord) -> None:
        """Arrange a record as an earlier step left it (the handler only writes through
        ``faas_common.executions.transition``)."""
        self._write(user_id, record)
        self.history.clear()

    def current(self, user_id: str, execution_id: str) -> ExecutionRecord | None:
        entry = self.records.get((user_id, execution_id))
        return entry[0] if entry else None

    async def get(self, user_id: str, execution_id: str) -> tuple[ExecutionRecord, int] | None:
        self.reads += 1
        if self.fail_reads:
            self.fail_reads -= 1
            raise StoreUnavailable("the execution records (NATS) are unavailable")
        return self.records.get((user_id, execution_id))

    async def create(self, user_id: str, record: ExecutionRecord) -> int:
        self._check_size(record)
        if (user_id, record.execution_id) in self.records:
            raise RecordConflict(record.execution_id)
        return self._write(user_id, record)

    async def update(self, user_id: str, record: ExecutionRecord, *, revision: int) -> int:
        hook, self.before_update = self.before_update, None
        if hook is not None:
            hook(self)
        self._check_size(record)
        entry = self.records.get((user_id, record.execution_id))
        if entry is None or entry[1] != revision:
            raise RecordConflict(record.execution_id)
        return self._write(user_id, record)

    async def list_for_user(
        self, user_id: str, *, function: str | None, limit: int
    ) -> list[ExecutionRecord]:
        mine = [record for (owner, _), (record, _) in self.records.items() if owner == user_id]
        return [r for r in mine if function is None or r.function == function][:limit]


class FakeMsg:
    def __init__(
        self, data: bytes, *, delivered: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        self.data = data
        self.headers = headers
        self.metadata = SimpleNamespace(num_delivered=delivered)
        self.actions: list[tuple[str, float | None]] = []
        self.progress = 0

    async def ack(self) -> None:
        self.actions.append(("ack", None))

    async def nak(self, delay: float | None = None) -> None:
        self.actions.append(("nak", delay))

    async def term(self) -> None:
        self.actions.append(("term", None))

    async def in_progress(self) -> None:
        self.progress += 1


class Replies:
    def __init__(self) -> None:
        self.sent: list[tuple[str, ExecutionRecord]] = []

    async def __call__(self, subject: str, payload: bytes) -> None:
        self.sent.append((subject, ExecutionRecord.model_validate_json(payload)))
