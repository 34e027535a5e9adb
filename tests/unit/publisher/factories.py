"""Builders for publisher-service tests: settings, a running app, function snapshots, and small
in-memory fakes of the service's ports (catalog, record store, job queue, idempotency store) plus
a fake spawner that plays the consumer side against them.

Plain functions and classes (no fixtures) so unit and integration tests share them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from faas_common.contract import HEADER_ROOM, ExecutionRecord, FunctionSnapshot, Job, function_key
from faas_common.executions import (
    RecordConflict,
    StoreUnavailable,
    finished,
    is_final,
    started,
    transition,
)
from publisher_service.config import PublisherSettings
from publisher_service.exceptions import RuntimeUnavailable
from publisher_service.main import Backends, create_app
from publisher_service.replies import ReplyRegistry
from publisher_service.service import ClaimOutcome, IdempotencyClaim, QueueFull

BASE_URL = "http://publisher.test"
PUBLISH = "/publisher/publish"


def make_settings(public_key_file: Path, **overrides: Any) -> PublisherSettings:
    values: dict[str, Any] = {
        "environment": "local",
        "jwt_public_key_file": public_key_file,
        "jwt_jwks_url": None,
        "instance_id": "unit",
    }
    return PublisherSettings(**(values | overrides))


@asynccontextmanager
async def running_app(
    settings: PublisherSettings, backends: Backends | None = None
) -> AsyncIterator[FastAPI]:
    """The app with its lifespan entered."""
    app = create_app(settings, backends=backends)
    async with app.router.lifespan_context(app):
        yield app


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE_URL, timeout=30.0
    )


def snapshot(owner_id: str, name: str = "hello", **overrides: Any) -> FunctionSnapshot:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "owner_id": owner_id,
        "name": name,
        "image": "library/hello:1.0",
        "timeout_seconds": 5,
        "memory_mb": 128,
        "env": {},
        "updated_at": "2026-01-01T00:00:00+00:00",
    }
    return FunctionSnapshot(**(values | overrides))


# --- Fakes of the ports -----------------------------------------------------------------------


@dataclass
class FakeCatalog:
    functions: dict[str, FunctionSnapshot] = field(default_factory=dict)
    lookups: int = 0

    def add(self, function: FunctionSnapshot) -> FunctionSnapshot:
        self.functions[function_key(function.owner_id, function.name)] = function
        return function

    async def resolve(self, user_id: str, name: str) -> FunctionSnapshot | None:
        self.lookups += 1
        return self.functions.get(function_key(user_id, name))


@dataclass
class FakeRecords:
    """``RecordStore`` and ``RecordWatch`` in a dict, with revisions and compare-and-set like
    the KV bucket. ``failing``: every call raises ``StoreUnavailable`` (the bucket is down)."""

    entries: dict[tuple[str, str], tuple[ExecutionRecord, int]] = field(default_factory=dict)
    failing: bool = False
    watches: int = 0
    """Watches set up so far (``until_final`` calls)."""
    reads: int = 0
    """``get`` calls so far."""
    _revision: int = 0
    _written: asyncio.Condition = field(default_factory=asyncio.Condition)

    def _next(self) -> int:
        if self.failing:
            raise StoreUnavailable("down")
        self._revision += 1
        return self._revision

    async def create(self, user_id: str, record: ExecutionRecord) -> int:
        if (user_id, record.execution_id) in self.entries:
            raise RecordConflict(record.execution_id)
        revision = self._next()
        self.entries[(user_id, record.execution_id)] = (record, revision)
        await self._notify()
        return revision

    async def get(self, user_id: str, execution_id: str) -> tuple[ExecutionRecord, int] | None:
        self.reads += 1
        if self.failing:
            raise StoreUnavailable("down")
        return self.entries.get((user_id, execution_id))

    async def update(self, user_id: str, record: ExecutionRecord, *, revision: int) -> int:
        current = self.entries.get((user_id, record.execution_id))
        if current is None or current[1] != revision:
            raise RecordConflict(record.execution_id)
        new_revision = self._next()
        self.entries[(user_id, record.execution_id)] = (record, new_revision)
        await self._notify()
        return new_revision

    async def _notify(self) -> None:
        async with self._written:
            self._written.notify_all()

    async def until_final(
        self, user_id: str, execution_id: str, *, within: float
    ) -> ExecutionRecord | None:
        if self.failing:
            raise StoreUnavailable("down")
        self.watches += 1

        async def final() -> ExecutionRecord | None:
            async with self._written:
                while (current := self.entries.get((user_id, execution_id))) is not None:
                    if is_final(current[0]):
                        return current[0]
                    await self._written.wait()
            return None

        try:
            async with asyncio.timeout(within):
                return await final()
        except TimeoutError:
            return None

    async def list_for_user(
        self, user_id: str, *, function: str | None, limit: int
    ) -> list[ExecutionRecord]:
        if self.failing:
            raise StoreUnavailable("down")
        records = [
            record
            for (owner, _), (record, _) in self.entries.items()
            if owner == user_id and (function is None or record.function == function)
        ]
        records.sort(key=lambda record: record.created_at, reverse=True)
        return records[:limit]

    def record(self, user_id: str, execution_id: str) -> ExecutionRecord:
        return self.entries[(user_id, execution_id)][0]

    def all(self) -> list[ExecutionRecord]:
        return [record for record, _ in self.entries.values()]


@dataclass
class FakeQueue:
    """``JobQueue`` with the stream's semantics: limits on jobs in flight, dedup by execution id.

    ``worker`` (when set) is started for every accepted job, as a consumer would pull it.
    """

    max_in_flight: int = 100
    max_per_user: int = 20
    max_payload: int = 1_048_576
    """NATS's default largest message; a job must fit in it, headers included."""
    failing: bool = False
    worker: Callable[[Job], Coroutine[Any, Any, None]] | None = None
    in_flight: dict[int, Job] = field(default_factory=dict)
    published: list[Job] = field(default_factory=list)
    revisions: list[int | None] = field(default_factory=list)
    """Per published job, the revision of its ``queued`` record the publisher gave with it."""
    discarded: list[int] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _sequence: int = 0

    async def enqueue(self, job: Job, *, record_revision: int | None = None) -> int:
        if self.failing:
            raise RuntimeUnavailable("The activation queue did not answer")
        for sequence, queued in self.in_flight.items():
            if queued.execution_id == job.execution_id:
                return sequence
        if len(self.in_flight) >= self.max_in_flight:
            raise QueueFull("maximum messages exceeded")
        if sum(1 for queued in self.in_flight.values() if queued.user_id == job.user_id) >= (
            self.max_per_user
        ):
            raise QueueFull("maximum messages per subject exceeded")
        self._sequence += 1
        self.in_flight[self._sequence] = job
        self.published.append(job)
        self.revisions.append(record_revision)
        if self.worker is not None:
            task = asyncio.create_task(self.worker(job))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return self._sequence

    def ack(self, job: Job) -> None:
        for sequence, queued in list(self.in_flight.items()):
            if queued.execution_id == job.execution_id:
                del self.in_flight[sequence]

    def max_job_bytes(self) -> int:
        return self.max_payload - HEADER_ROOM

    async def discard(self, sequence: int) -> None:
        self.discarded.append(sequence)
        self.in_flight.pop(sequence, None)

    async def ready(self) -> None:
        if self.failing:
            raise RuntimeUnavailable()


@dataclass
class FakeIdempotency:
    claims: dict[tuple[str, str], tuple[IdempotencyClaim, int]] = field(default_factory=dict)
    _revision: int = 0

    async def claim(self, user_id: str, key: str, claim: IdempotencyClaim) -> ClaimOutcome:
        existing = self.claims.get((user_id, key))
        if existing is not None:
            return ClaimOutcome(won=False, claim=existing[0], revision=existing[1])
        self._revision += 1
        self.claims[(user_id, key)] = (claim, self._revision)
        return ClaimOutcome(won=True, claim=claim, revision=self._revision)

    async def release(self, user_id: str, key: str, revision: int) -> None:
        existing = self.claims.get((user_id, key))
        if existing is not None and existing[1] == revision:
            del self.claims[(user_id, key)]


Outcome = Callable[[Job], dict[str, Any]]
"""What the fake spawner makes of a job: the final record's fields (status, result, ...)."""


def echo(job: Job) -> dict[str, Any]:
    return {"status": "succeeded", "result": job.argument, "exit_code": 0}


@dataclass
class FakeSpawner:
    """The consumer side against the fakes, through the same transitions as the real spawner:
    started (not when final already), finished, reply, ack."""

    records: FakeRecords
    queue: FakeQueue
    replies: ReplyRegistry
    outcome: Outcome = echo
    start_delay: float = 0.0
    run_time: float = 0.0
    reply: bool = True
    finish: bool = True
    started: list[str] = field(default_factory=list)

    async def __call__(self, job: Job) -> None:
        await asyncio.sleep(self.start_delay)
        now = time.time()
        if now > job.start_deadline:
            self.queue.ack(job)  # the real spawner expires it instead (its own tests)
            return
        marked = await transition(self.records, job.user_id, job.execution_id, started(job, now))
        if marked is None:
            self.queue.ack(job)
            return
        self.started.append(job.execution_id)
        await asyncio.sleep(self.run_time)
        if not self.finish:
            return
        final = marked[0].model_copy(
            update={"finished_at": time.time(), "duration_ms": 1.0, **self.outcome(job)}
        )
        written = await transition(
            self.records, job.user_id, job.execution_id, finished(final), known=marked
        )
        if written is not None and self.reply and job.reply_subject is not None:
            self.replies.deliver(written[0])
        self.queue.ack(job)


@dataclass
class FakeBackends:
    catalog: FakeCatalog
    records: FakeRecords
    queue: FakeQueue
    idempotency: FakeIdempotency
    replies: ReplyRegistry
    spawner: FakeSpawner

    def backends(self) -> Backends:
        return Backends(
            catalog=self.catalog,
            records=self.records,
            queue=self.queue,
            idempotency=self.idempotency,
            replies=self.replies,
            watch=self.records,
        )


def fake_backends(instance_id: str = "unit", *, spawner: bool = True) -> FakeBackends:
    records = FakeRecords()
    queue = FakeQueue()
    replies = ReplyRegistry(instance_id)
    fake_spawner = FakeSpawner(records, queue, replies)
    if spawner:
        queue.worker = fake_spawner
    return FakeBackends(
        catalog=FakeCatalog(),
        records=records,
        queue=queue,
        idempotency=FakeIdempotency(),
        replies=replies,
        spawner=fake_spawner,
    )


def publish_body(
    name: str = "hello", argument: str = "world", *, is_async: bool | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "argument": argument}
    if is_async is not None:
        body["async"] = is_async
    return body
