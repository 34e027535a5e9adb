"""The execution record's lifecycle, in one place: its store, its transitions, and the one
compare-and-set loop that applies them. The publisher, the spawner and the test doubles all
change records through ``transition`` and the functions below; nobody writes a record by hand.

Lifecycle (``ExecutionRecord.status``)::

    (none) ──queued──▶ queued ──started──▶ running ──finished──▶ succeeded | failed | timed_out
       │                 │  ▲                │ │
       │                 │  └───requeued─────┘ └──lost──▶ failed (runtime_unavailable)
       ├─────────────────┴──expired──▶ timed_out   (nobody started it before its start deadline)
       └─────────────────┴──rejected─▶ rejected (concurrency_limit) | failed (not queued)

A transition is a pure function of the current record (None: not written yet) that returns the
record to write, or None when the change no longer applies (the record moved on: a spawner
started the job the publisher was about to expire, another delivery finished it first). Every
final status is final: no transition leaves one.

Key ``<user_id>.<execution_id>``: a user only ever reads keys under their own id. The store
retries every NATS request across a leader election (``RetryBudget``) and raises
``StoreUnavailable`` after it (``RecordTooLarge`` for a record over the server's message size,
``StoreFull``, at once, for a write the full bucket refuses: its ``max_bytes``);
a compare-and-set that lost its race raises ``RecordConflict``, which ``transition`` answers by
reading again and re-deciding.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Protocol, TypeVar, cast

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import (
    APIError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from faas_common.contract import (
    EXECUTIONS_BUCKET,
    STREAM_FULL,
    TERMINAL_STATUSES,
    ErrorCode,
    ExecutionRecord,
    Job,
    execution_key,
)
from faas_common.nats import (
    DEFAULT_BUCKET_MAX_BYTES,
    NATS_ERRORS,
    RetryBudget,
    ensure_kv,
    retrying,
)

CAS_ATTEMPTS = 5
WATCH_INACTIVE_SECONDS = 5.0
"""A record watch's consumer is deleted by the server this long after its subscriber left."""

T = TypeVar("T")

NOT_STARTED_DETAIL = "No worker started the activation before its start deadline"
LOST_DETAIL = "The worker running the activation stopped before reporting a result"


class RecordConflict(Exception):
    """The record changed since it was read: someone else moved it first."""


class RecordTooLarge(Exception):
    """The server refused the record: larger than its ``max_payload``."""


class StoreUnavailable(Exception):
    """The ``executions`` bucket did not answer within the retry budget (NATS down, or an
    election longer than the budget). The caller decides: retry the job later, or a 503."""


class StoreFull(StoreUnavailable):
    """The ``executions`` bucket refused the write: it holds its ``max_bytes``. Not retried
    (only expiring records make room); whoever does not handle it treats it as unavailable."""


# --- The store ---


class RecordStore(Protocol):
    """Execution records: ``ExecutionStore`` over NATS, and the test doubles."""

    async def get(self, user_id: str, execution_id: str) -> tuple[ExecutionRecord, int] | None:
        """The record and its revision, or None when there is none (or it expired)."""

    async def create(self, user_id: str, record: ExecutionRecord) -> int:
        """Store a new record; ``RecordConflict`` if one with its id exists."""

    async def update(self, user_id: str, record: ExecutionRecord, *, revision: int) -> int:
        """Replace the record if it is still at ``revision``; else ``RecordConflict``."""

    async def list_for_user(
        self, user_id: str, *, function: str | None, limit: int
    ) -> list[ExecutionRecord]:
        """The user's newest records, optionally of one function only, at most ``limit``."""


class RecordWatch(Protocol):
    """Waiting for a record to become final: ``ExecutionStore`` over a KV watch, and the fakes."""

    async def until_final(
        self, user_id: str, execution_id: str, *, within: float
    ) -> ExecutionRecord | None:
        """The record as soon as it is final (at once if it is already), or None when
        ``within`` seconds passed first or the record was removed; ``StoreUnavailable`` when
        the watch cannot be set up."""


class ExecutionStore:
    """``RecordStore`` and ``RecordWatch`` over the ``executions`` KV bucket."""

    def __init__(
        self,
        kv: KeyValue,
        js: JetStreamContext | None = None,
        *,
        bucket: str = EXECUTIONS_BUCKET,
        budget: RetryBudget | None = None,
    ) -> None:
        self.kv = kv
        self._js = js  # needed only to list a user's records
        self._bucket = bucket
        self._budget = budget or RetryBudget()

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        replicas: int,
        ttl_seconds: int,
        budget: RetryBudget | None = None,
        max_bytes: int = DEFAULT_BUCKET_MAX_BYTES,
    ) -> ExecutionStore:
        kv = await ensure_kv(
            js,
            EXECUTIONS_BUCKET,
            replicas=replicas,
            ttl=timedelta(seconds=ttl_seconds),
            max_bytes=max_bytes,
        )
        return cls(kv, js, budget=budget)

    async def get(self, user_id: str, execution_id: str) -> tuple[ExecutionRecord, int] | None:
        key = execution_key(user_id, execution_id)
        return await self._retrying(lambda _: self._read(key), "get")

    async def create(self, user_id: str, record: ExecutionRecord) -> int:
        key, value = execution_key(user_id, record.execution_id), _encode(record)

        async def attempt(number: int) -> int:
            try:
                return await self.kv.create(key, value)
            except KeyWrongLastSequenceError as exc:
                return await self._own_write(key, value, number, exc)

        return await self._retrying(attempt, "create")

    async def update(self, user_id: str, record: ExecutionRecord, *, revision: int) -> int:
        key, value = execution_key(user_id, record.execution_id), _encode(record)

        async def attempt(number: int) -> int:
            try:
                return await self.kv.update(key, value, last=revision)
            except KeyWrongLastSequenceError as exc:
                return await self._own_write(key, value, number, exc)

        return await self._retrying(attempt, "update")

    async def execution_ids(self, user_id: str) -> list[str]:
        """Ids of the user's live records, from the bucket's subject index (no consumer)."""
        if self._js is None:
            raise RuntimeError("listing records needs the JetStream context")
        js = self._js
        prefix = f"$KV.{self._bucket}.{user_id}."  # a KV bucket is the stream KV_<bucket>
        info = await self._retrying(
            lambda _: js.stream_info(f"KV_{self._bucket}", subjects_filter=f"{prefix}*"), "list"
        )
        subjects = info.state.subjects or {}
        return [subject.removeprefix(prefix) for subject in subjects]

    async def list_for_user(
        self, user_id: str, *, function: str | None = None, limit: int = 20
    ) -> list[ExecutionRecord]:
        """Execution ids start with their creation time (``new_execution_id``), so the newest
        come first by id alone and only the records returned (plus those skipped by
        ``function``) are read."""
        records: list[ExecutionRecord] = []
        for execution_id in sorted(await self.execution_ids(user_id), reverse=True):
            found = await self.get(user_id, execution_id)
            if found is None:
                continue  # expired between the index and the read
            record = found[0]
            if function is None or record.function == function:
                records.append(record)
                if len(records) >= limit:
                    break
        records.sort(key=lambda record: record.created_at, reverse=True)
        return records

    async def until_final(
        self, user_id: str, execution_id: str, *, within: float
    ) -> ExecutionRecord | None:
        """A watch on the record's key alone (an ephemeral ordered consumer the server drops
        ``WATCH_INACTIVE_SECONDS`` after it is unsubscribed): its current value first, then
        every write, so a record that becomes final between a read and the watch is never
        missed. No polling."""
        key = execution_key(user_id, execution_id)
        try:
            watcher = await self.kv.watch(key, inactive_threshold=WATCH_INACTIVE_SECONDS)
        except NATS_ERRORS as exc:
            raise StoreUnavailable(f"the execution records watch failed: {exc!r}") from exc
        stop = cast(Callable[[], Awaitable[None]], watcher.stop)  # untyped in nats-py
        try:
            async with asyncio.timeout(within):
                async for entry in watcher:
                    if entry is None:
                        continue  # the end of the current values
                    if entry.operation in (KV_DEL, KV_PURGE):
                        return None
                    record = ExecutionRecord.model_validate_json(entry.value or b"")
                    if is_final(record):
                        return record
        except TimeoutError:
            return None
        finally:
            with contextlib.suppress(*NATS_ERRORS):
                await stop()
        return None

    async def _read(self, key: str) -> tuple[ExecutionRecord, int] | None:
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if entry.value is None or entry.revision is None:
            return None
        return ExecutionRecord.model_validate_json(entry.value), entry.revision

    async def _own_write(
        self, key: str, value: bytes, attempt: int, conflict: KeyWrongLastSequenceError
    ) -> int:
        """A retried write that finds the record moved: if the record now holds exactly what
        this write meant to store, an earlier attempt landed (only its answer was lost)."""
        if attempt > 1:
            try:
                entry = await self.kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):
                entry = None
            if entry is not None and entry.value == value and entry.revision is not None:
                return entry.revision
        raise RecordConflict(key) from conflict

    async def _retrying(self, operation: Callable[[int], Awaitable[T]], what: str) -> T:
        async def refused_if_full(attempt: int) -> T:
            try:
                return await operation(attempt)
            except APIError as exc:
                if exc.err_code == STREAM_FULL:
                    full = f"the execution records bucket is full: {exc.description}"
                    raise StoreFull(full) from exc
                raise

        try:
            return await retrying(refused_if_full, self._budget, what=f"execution record {what}")
        except nats.errors.MaxPayloadError as exc:
            raise RecordTooLarge(str(exc)) from exc
        except NATS_ERRORS as exc:
            raise StoreUnavailable(
                f"the execution records (NATS) are unavailable: {exc!r}"
            ) from exc


def _encode(record: ExecutionRecord) -> bytes:
    return record.model_dump_json().encode()


# --- The one compare-and-set loop ---

Change = Callable[[ExecutionRecord | None], ExecutionRecord | None]
"""A transition bound to its arguments: the current record (or None) in, the record to write
(or None: nothing to do) out."""


async def transition(
    store: RecordStore,
    user_id: str,
    execution_id: str,
    change: Change,
    *,
    known: tuple[ExecutionRecord, int] | None = None,
    fresh: bool = False,
) -> tuple[ExecutionRecord, int] | None:
    """Apply ``change`` by compare-and-set: read, decide, write at the revision read; on a lost
    race read again and decide again. The record written and its revision, or None when the
    change no longer applied. ``known``: a record and revision this caller wrote itself, to
    decide the first attempt without reading; ``fresh``: the execution id is new, so the first
    attempt takes the record to be absent without reading (creating it)."""
    current = known
    read = not fresh
    for _ in range(CAS_ATTEMPTS):
        if current is None and read:
            current = await store.get(user_id, execution_id)
        read = True
        wanted = change(current[0] if current is not None else None)
        if wanted is None:
            return None
        try:
            if current is None:
                return wanted, await store.create(user_id, wanted)
            return wanted, await store.update(user_id, wanted, revision=current[1])
        except RecordConflict:
            current = None
    raise RecordConflict(execution_id)


# --- Transitions ---


def is_final(record: ExecutionRecord | None) -> bool:
    return record is not None and record.status in TERMINAL_STATUSES


def queued(job: Job) -> ExecutionRecord:
    """The record of a job just accepted."""
    return ExecutionRecord(
        execution_id=job.execution_id,
        function=job.function.name,
        status="queued",
        created_at=job.enqueued_at,
        start_deadline=job.start_deadline,
        request_id=job.request_id,
    )


def queued_if_new(job: Job) -> Change:
    """Write the ``queued`` record unless a spawner already wrote one (it started first)."""
    return lambda current: queued(job) if current is None else None


def queue_ms(job: Job, now: float) -> float:
    return round(max(now - job.enqueued_at, 0.0) * 1000, 1)


def started(job: Job, now: float) -> Change:
    """A spawner starts the job (also a redelivery whose earlier run was lost)."""

    def change(current: ExecutionRecord | None) -> ExecutionRecord | None:
        if is_final(current):
            return None
        base = current or queued(job)
        return base.model_copy(
            update={
                "status": "running",
                "detail": None,
                "timings": {**base.timings, "queue": queue_ms(job, now)},
            }
        )

    return change


def requeued(reason: str) -> Change:
    """A started job goes back to the stream without having run (the engine was down)."""

    def change(current: ExecutionRecord | None) -> ExecutionRecord | None:
        if current is None or current.status != "running":
            return None
        return current.model_copy(update={"status": "queued", "detail": f"retrying: {reason}"})

    return change


def expired(job: Job, now: float) -> Change:
    """The start deadline passed and nobody started the job: it never runs. The one rule for
    "too late to start", whoever notices it (the waiting caller, a spawner)."""

    def change(current: ExecutionRecord | None) -> ExecutionRecord | None:
        if current is not None and current.status != "queued":
            return None
        base = current or queued(job)
        return _not_started(base, now, queue=queue_ms(job, now))

    return change


def expired_record(now: float) -> Change:
    """``expired`` for a reader that has the record but not the job (a poll of an async call
    whose publisher and spawners all died): a ``queued`` record past its start deadline."""

    def change(current: ExecutionRecord | None) -> ExecutionRecord | None:
        if current is None or current.status != "queued" or current.start_deadline is None:
            return None
        return None if now < current.start_deadline else _not_started(current, now)

    return change


def _not_started(base: ExecutionRecord, now: float, **timings: float) -> ExecutionRecord:
    detail = NOT_STARTED_DETAIL
    if base.detail:  # an earlier attempt failed: say how
        detail = f"{detail}; last attempt: {base.detail}"
    return base.model_copy(
        update={
            "status": "timed_out",
            "error": "timed_out",
            "detail": detail,
            "timings": {**base.timings, **timings},
            "finished_at": now,
        }
    )


def lost(now: float) -> Change:
    """A redelivered job whose earlier run cannot be found nor finished in time: no result
    will ever come for it."""

    def change(current: ExecutionRecord | None) -> ExecutionRecord | None:
        if current is None or current.status != "running":
            return None
        return current.model_copy(
            update={
                "status": "failed",
                "error": "runtime_unavailable",
                "detail": LOST_DETAIL,
                "finished_at": now,
            }
        )

    return change


def finished(final: ExecutionRecord) -> Change:
    """The activation's outcome, unless the record is final already (another delivery, or the
    caller gave up on it first): a final record is never overwritten."""

    def change(current: ExecutionRecord | None) -> ExecutionRecord | None:
        if is_final(current):
            return None
        if current is None:
            return final
        return final.model_copy(
            update={"created_at": current.created_at, "start_deadline": current.start_deadline}
        )

    return change


def rejected(job: Job, *, error: ErrorCode, detail: str, now: float) -> Change:
    """The job could not be queued: the stream is full (``concurrency_limit``: ``rejected``)
    or unavailable (``failed``). Only a record nobody started yet."""

    def change(current: ExecutionRecord | None) -> ExecutionRecord | None:
        if current is not None and current.status != "queued":
            return None
        base = current or queued(job)
        return base.model_copy(
            update={
                "status": "rejected" if error == "concurrency_limit" else "failed",
                "error": error,
                "detail": detail,
                "finished_at": now,
            }
        )

    return change


def new_execution_id() -> str:
    """32 hex digits: the creation time in nanoseconds, then 64 random bits (sortable by age)."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"
