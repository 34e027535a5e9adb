"""What happens to one job message: the record's transitions and the ack / nak / term policy.

``JobHandler.handle`` (unit tests drive it with fakes):

- unparseable → ``term`` (poison);
- the record is read first, but on a first delivery whose message carries the revision of the
  ``queued`` record its publisher wrote (``RECORD_REVISION_HEADER``): the job starts from that
  record; the ``running`` (or expiry) write is a compare-and-set at that revision, and a record
  found changed since in any other state than ``queued`` (an earlier delivery started the job: a
  recreated consumer counts deliveries from 1 again) sends the job through all of this again on
  a fresh read;
- record already final (the caller gave up on it, another delivery finished it) → ``term``;
- record ``running``: an earlier delivery started the job and its spawner died. If its container
  is still on this spawner's engine it is adopted (waited for, its output collected and stored
  like any result) instead of starting the function again; if it is not, and the start deadline
  has passed, the record fails as lost (``runtime_unavailable``), else the job runs again;
- its earlier deliveries used up ``SPAWNER_MAX_DELIVER`` without settling it (their spawners
  died or hung while holding it: delivered more often than that plus its fair-share
  deferrals) → not run again: the record fails (``runtime_unavailable``) and the job is
  terminated;
- start deadline passed → ``term`` without running; a ``queued`` record becomes ``timed_out``
  (``faas_common.executions.expired``) and is replied (the caller, if still there, hears why);
- its user already runs their fair share of the slots while another user's jobs wait
  (``spawner_service.fairness``) → ``nak`` with ``SPAWNER_FAIR_SHARE_DELAY_SECONDS``; such a
  delivery is not a failure: it does not count against ``SPAWNER_MAX_DELIVER``;
- otherwise the record is moved to ``running``, the container runs with ``in_progress``
  heartbeats, the final record is stored (never over a record another delivery made final),
  replied, and the job is acked; then the runtime is told the call is ``settled`` (the work it
  put off, such as parking a prewarmed container's replacement, starts). A record too large
  for a NATS message loses its result (``output_too_large``), never silently cut;
- the records bucket is full (its ``max_bytes``) when the job would start → not run: the reply
  says ``failed`` / ``storage_full`` and the job is terminated (a full bucket only empties as
  records expire: no retry);
- a transient failure before the function ran (records unavailable, Docker unreachable before
  the container started) → ``nak`` with a delay, or, on the last allowed delivery, ``term`` and
  a ``failed`` record with error ``runtime_unavailable``. A Docker failure after the container
  started ends the activation as ``failed`` (``runtime_unavailable``): it is never run again;
- a message handed back without running (more than the free slots, or the worker stopping) is
  ``nak``ed, or ``term``ed on its last allowed delivery (its record failed as above), so it
  never stays in the stream after its deliveries are used up. When its fair-share deferrals
  cannot be read, no delivery but the consumer's own last is taken for the last allowed one;
- a job acked or terminated on a redelivery has its deferral count deleted (best effort);
- every final record this spawner writes (a result, an expiry, a lost run, a give-up) is
  counted in the activation metrics (``faas_common.metrics``) as it is replied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Protocol

from pydantic import ValidationError

from faas_common.contract import (
    HEADER_ROOM,
    RECORD_REVISION_HEADER,
    REQUEST_ID_HEADER,
    ExecutionRecord,
    Job,
    function_key,
    is_request_id,
)
from faas_common.executions import (
    Change,
    RecordConflict,
    RecordStore,
    RecordTooLarge,
    StoreFull,
    StoreUnavailable,
    expired,
    finished,
    is_final,
    lost,
    queued,
    requeued,
    started,
    transition,
)
from faas_common.logging import request_id_var
from faas_common.metrics import ActivationMetrics
from faas_common.nats import NATS_ERRORS
from spawner_service.config import NATS_MAX_PAYLOAD, SpawnerSettings
from spawner_service.fairness import NoFairShare, Slots
from spawner_service.records import final_record, fit_record, record_size, unstorable_record
from spawner_service.runtime.base import ContainerRuntime, RunResult, RunSpec

logger = logging.getLogger("spawner.worker")

HANDED_BACK = "handed back without running (no free slot, or the spawner was stopping)"
EXHAUSTED = "its deliveries ended without a result (the spawner stopped or hung while holding it)"
RECORDS_FULL = "The execution records are full (their storage limit): the function was not run"

RECORD_ERRORS = (StoreUnavailable, RecordConflict)
"""Record store failures worth a retry of the whole job."""

Known = tuple[ExecutionRecord, int] | None
Publish = Callable[[str, bytes], Awaitable[None]]


class JobMessage(Protocol):
    """The part of a JetStream message a job handler uses (``nats.aio.msg.Msg`` has it)."""

    data: bytes

    @property
    def headers(self) -> dict[str, str] | None: ...

    @property
    def metadata(self) -> Any: ...

    async def ack(self) -> None: ...

    async def nak(self, delay: float | None = None) -> None: ...

    async def term(self) -> None: ...

    async def in_progress(self) -> None: ...


class JobLog(logging.LoggerAdapter[logging.Logger]):
    """Log lines about one job: its ids on every line, merged with each call's own ``extra``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def job_log(job: Job) -> JobLog:
    return JobLog(logger, {"execution_id": job.execution_id, "user_id": job.user_id})


def request_id_of(job: Job, headers: Mapping[str, str]) -> str | None:
    """The call's request id: the job's, else its message's ``X-Request-ID`` header; a value
    that is not a request id (``is_request_id``) is none."""
    for candidate in (job.request_id, headers.get(REQUEST_ID_HEADER)):
        if is_request_id(candidate):
            return candidate
    return None


def attempt_of(msg: JobMessage) -> int | None:
    try:
        return int(msg.metadata.num_delivered)
    except (AttributeError, TypeError, ValueError):
        return None


def published_record(job: Job, msg: JobMessage) -> Known:
    """On a job's first delivery, the ``queued`` record its publisher wrote and the revision it
    gave with the job (``RECORD_REVISION_HEADER``): the job starts without reading the record
    (a record changed since fails the compare-and-set and is read then). None: read it."""
    if attempt_of(msg) != 1:
        return None
    try:
        revision = int((msg.headers or {})[RECORD_REVISION_HEADER])
    except (KeyError, ValueError):
        return None
    return (queued(job), revision) if revision > 0 else None


class RecordMoved(Exception):
    """A record taken to be as its publisher wrote it had moved on (an earlier delivery started
    the job, which a recreated consumer delivers as its first again): decide on a fresh read."""


def unless_moved(change: Change) -> Change:
    """``change``, for a record taken to be the ``queued`` one its publisher wrote: a record
    found in any other state when the compare-and-set reads it raises ``RecordMoved``."""

    def checked(current: ExecutionRecord | None) -> ExecutionRecord | None:
        if current is not None and current.status != "queued":
            raise RecordMoved(current.status)
        return change(current)

    return checked


def run_spec(job: Job) -> RunSpec:
    return RunSpec(
        execution_id=job.execution_id,
        image=job.function.image,
        argument=job.argument,
        env=job.function.env,
        timeout_seconds=job.function.timeout_seconds,
        memory_mb=job.function.memory_mb,
        deadline=time.time() + job.function.timeout_seconds,
        function=function_key(job.function.owner_id, job.function.name),
    )


def _default_max_payload() -> int:
    return NATS_MAX_PAYLOAD


class JobHandler:
    """Runs one job message to its end (see the module docstring for the decisions)."""

    def __init__(
        self,
        settings: SpawnerSettings,
        *,
        runtime: ContainerRuntime,
        store: RecordStore,
        publish: Publish,
        max_payload: Callable[[], int] = _default_max_payload,
        engine_failed: Callable[[], None] = lambda: None,
        slots: Slots | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.store = store
        self.publish = publish
        self.max_payload = max_payload
        """The connection's largest message (``nc.max_payload``, from the server)."""
        self.engine_failed = engine_failed
        """Told when the engine could not be reached (the worker stops fetching until it is)."""
        self.slots: Slots = slots or NoFairShare()
        self.metrics = ActivationMetrics(function_labels=settings.metrics_function_labels)

    @property
    def record_limit(self) -> int:
        """The largest execution record that can be stored and replied."""
        return self.max_payload() - HEADER_ROOM

    async def _last_delivery(self, msg: JobMessage, execution_id: str) -> bool:
        """Whether this delivery is the job's last allowed one: deliveries handed back for the
        fair share do not count. When they cannot be counted, only the consumer's own last
        delivery is."""
        delivered = attempt_of(msg)
        if delivered is None or delivered < self.settings.max_deliver:
            return False
        if delivered >= self.settings.consumer_max_deliver:
            return True
        deferred = await self.slots.deferrals(execution_id)
        return deferred is not None and delivered - deferred >= self.settings.max_deliver

    async def _exhausted(self, msg: JobMessage, execution_id: str) -> bool:
        """Whether the job's earlier deliveries used up ``SPAWNER_MAX_DELIVER`` without settling
        it (each one's spawner died or hung): this one must not run it again."""
        delivered = attempt_of(msg)
        if delivered is None or delivered <= self.settings.max_deliver:
            return False
        deferred = await self.slots.deferrals(execution_id)
        return deferred is not None and delivered - deferred > self.settings.max_deliver

    async def _settle(self, job: Job, msg: JobMessage, *, ack: bool) -> None:
        """Ack (``ack``) or terminate the job's message: it leaves the stream for good. Its
        deferral count, if it may have one (a redelivery), goes with it."""
        await (msg.ack() if ack else msg.term())
        delivered = attempt_of(msg)
        if delivered is None or delivered > 1:
            await self.slots.forget(job.execution_id)

    async def handle(self, msg: JobMessage) -> None:
        try:
            job = Job.model_validate_json(msg.data)
        except ValidationError as exc:
            logger.error(
                "poison message terminated",
                extra={"error": str(exc).splitlines()[0], "size": len(msg.data)},
            )
            try:
                await msg.term()
            except NATS_ERRORS as term_error:
                # Redelivered after ack_wait and terminated then.
                logger.warning("cannot terminate the message", extra={"error": repr(term_error)})
            return
        published = published_record(job, msg)  # the job as published: the record's fields
        # This task's own context: every line logged about the job carries its request id.
        job = job.model_copy(update={"request_id": request_id_of(job, msg.headers or {})})
        request_id_var.set(job.request_id)
        log = job_log(job)
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        try:
            await self._process(job, msg, log, published)
        except Exception:
            log.exception("job failed unexpectedly")
            await self._retry_or_give_up(job, msg, log, "the spawner failed unexpectedly")
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, msg: JobMessage) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await msg.in_progress()
            except NATS_ERRORS as exc:
                logger.warning("in_progress failed", extra={"error": str(exc)})

    async def _process(self, job: Job, msg: JobMessage, log: JobLog, published: Known) -> None:
        try:
            await self._decide(job, msg, log, published)
        except RecordMoved as moved:
            log.info(
                "record moved since it was published: read again", extra={"status": str(moved)}
            )
            await self._decide(job, msg, log, None)

    async def _decide(self, job: Job, msg: JobMessage, log: JobLog, published: Known) -> None:
        now = time.time()
        current = published
        try:
            if current is None:
                current = await self.store.get(job.user_id, job.execution_id)
        except StoreUnavailable as exc:
            log.warning("cannot read the record", extra={"error": repr(exc)})
            await self._retry_or_give_up(job, msg, log, f"execution records unavailable: {exc}")
            return
        record = current[0] if current is not None else None
        if is_final(record):
            log.info("record already final: job dropped")
            await self._settle(job, msg, ack=False)
            return
        if await self._exhausted(msg, job.execution_id):
            await self._give_up(job, msg, log, EXHAUSTED)
            return
        taking_over = record is not None and record.status == "running"
        assumed = current is published and published is not None
        if not taking_over and now > job.start_deadline:
            await self._expire(job, msg, log, current, assumed=assumed)
            return
        if taking_over:
            self.slots.hold(job.user_id)
        elif not await self.slots.admit(job, attempt_of(msg)):
            await self._defer(msg, log)
            return
        try:
            if taking_over and await self._take_over(job, msg, log, current):
                return
            await self._start(job, msg, log, current, assumed=assumed)
        finally:
            self.slots.release(job.user_id)

    async def _defer(self, msg: JobMessage, log: JobLog) -> None:
        """Hand the job back so that another user below their fair share goes first."""
        log.info("fair share: other users go first", extra={"attempt": attempt_of(msg)})
        try:
            await msg.nak(delay=self.settings.fair_share_delay_seconds)
        except NATS_ERRORS as exc:
            # Redelivered after ack_wait; the deferral is counted already.
            log.warning("cannot hand the job back", extra={"error": repr(exc)})

    async def _take_over(self, job: Job, msg: JobMessage, log: JobLog, current: Known) -> bool:
        """A redelivery of a job an earlier delivery started: adopt its container if it is on
        this engine, fail the record as lost if it is too late to run it again. False: run it."""
        started_at = time.time()
        adopted = await self.runtime.adopt(run_spec(job))
        if adopted is not None:
            log.info(
                "adopted the container of an earlier delivery", extra={"attempt": attempt_of(msg)}
            )
            await self._conclude(job, msg, log, adopted, started_at=started_at, known=current)
            return True
        if started_at <= job.start_deadline:
            log.warning("earlier delivery left no container on this engine: running it again")
            return False
        try:
            written = await transition(
                self.store, job.user_id, job.execution_id, lost(time.time()), known=current
            )
        except RECORD_ERRORS as exc:
            log.warning("cannot record the lost run", extra={"error": repr(exc)})
            written = None
        log.error("earlier delivery's run is lost and it is too late to run it again")
        if written is not None:
            await self._reply(job, written[0], log)
        await self._settle(job, msg, ack=False)
        return True

    async def _start(
        self, job: Job, msg: JobMessage, log: JobLog, current: Known, *, assumed: bool = False
    ) -> None:
        started_at = time.time()
        change = started(job, started_at)
        try:
            marked = await transition(
                self.store,
                job.user_id,
                job.execution_id,
                unless_moved(change) if assumed else change,
                known=current,
            )
        except StoreFull:
            await self._refuse_full(job, msg, log)
            return
        except RECORD_ERRORS as exc:
            log.warning("cannot mark the job running", extra={"error": repr(exc)})
            await self._retry_or_give_up(job, msg, log, f"execution records unavailable: {exc}")
            return
        if marked is None:
            log.info("record already final: job dropped")
            await self._settle(job, msg, ack=False)
            return

        log.info("running", extra={"image": job.function.image, "attempt": attempt_of(msg)})
        result = await self.runtime.run(run_spec(job))
        try:
            await self._ran(job, msg, log, result, started_at=started_at, known=marked)
        finally:
            self.runtime.settled(job.execution_id)

    async def _ran(
        self,
        job: Job,
        msg: JobMessage,
        log: JobLog,
        result: RunResult,
        *,
        started_at: float,
        known: Known,
    ) -> None:
        """After ``run``: retry a job whose container never started, else conclude it."""
        if result.outcome == "runtime_unavailable":
            self.engine_failed()
            if not result.started and not await self._last_delivery(msg, job.execution_id):
                # The container never started: nothing ran, another attempt is safe.
                log.warning(
                    "container runtime unavailable: retrying", extra={"error": result.detail}
                )
                await self._requeue(job, result.detail or "container runtime unavailable")
                await msg.nak(delay=self.settings.retry_delay_seconds)
                return
        await self._conclude(job, msg, log, result, started_at=started_at, known=known)

    async def _conclude(
        self,
        job: Job,
        msg: JobMessage,
        log: JobLog,
        result: RunResult,
        *,
        started_at: float,
        known: Known,
    ) -> None:
        """Store and reply the outcome of a run, then ack the job."""
        record = final_record(
            job, result, created_at=job.enqueued_at, started_at=started_at, finished_at=time.time()
        )
        limit = self.record_limit
        fitted = fit_record(record, limit)
        if fitted is not record:
            log.warning(
                "record too large to store: result dropped",
                extra={"size": record_size(record), "limit": limit},
            )
        stored = await self._finish(job, fitted, log, known=known)
        await self._settle(job, msg, ack=True)
        if stored is not None:
            log.info(
                "finished",
                extra={
                    "status": stored.status,
                    "error": stored.error,
                    "exit_code": stored.exit_code,
                    "duration_ms": stored.duration_ms,
                    "timings": stored.timings,
                },
            )

    async def _refuse_full(self, job: Job, msg: JobMessage, log: JobLog) -> None:
        """The records bucket cannot take the job's ``running`` record: do not run it."""
        log.error("execution records full: job not run")
        record = ExecutionRecord(
            execution_id=job.execution_id,
            function=job.function.name,
            status="failed",
            error="storage_full",
            detail=RECORDS_FULL,
            created_at=job.enqueued_at,
            start_deadline=job.start_deadline,
            finished_at=time.time(),
            request_id=job.request_id,
        )
        await self._finish(job, record, log, known=None)  # stored if it fits, replied anyway
        await self._settle(job, msg, ack=False)

    async def _requeue(self, job: Job, reason: str) -> None:
        """Best effort: a job going back to the stream is ``queued`` again, not ``running``,
        and its record says why (an expiry later quotes it)."""
        with contextlib.suppress(*RECORD_ERRORS):
            await transition(self.store, job.user_id, job.execution_id, requeued(reason))

    async def _expire(
        self, job: Job, msg: JobMessage, log: JobLog, current: Known, *, assumed: bool = False
    ) -> None:
        """The start deadline passed: nobody waits for this job any more. Never run it."""
        late_s = time.time() - job.start_deadline
        change = expired(job, time.time())
        try:
            written = await transition(
                self.store,
                job.user_id,
                job.execution_id,
                unless_moved(change) if assumed else change,
                known=current,
            )
        except RECORD_ERRORS as exc:
            log.warning("cannot record the expiry", extra={"error": repr(exc)})
            written = None
        log.info("start deadline passed: job dropped", extra={"late_s": round(late_s, 3)})
        if written is not None:
            await self._reply(job, written[0], log)
        await self._settle(job, msg, ack=False)

    async def release(self, msg: JobMessage) -> None:
        """Hand a fetched message back without running it (more than the free slots, or the
        worker is stopping): ``nak`` it for another spawner, unless this was its last allowed
        delivery: then it is terminated and its record, if not final yet, failed."""
        try:
            try:
                job = Job.model_validate_json(msg.data)
            except ValidationError:
                await msg.term()  # poison: handle() would terminate it too
                return
            if not await self._last_delivery(msg, job.execution_id):
                await msg.nak()
                return
            await self._give_up(job, msg, job_log(job), HANDED_BACK)
        except NATS_ERRORS as exc:
            # JetStream redelivers it after ack_wait (or drops it at the stream's max_age).
            logger.warning("cannot hand the message back", extra={"error": repr(exc)})

    async def _retry_or_give_up(self, job: Job, msg: JobMessage, log: JobLog, reason: str) -> None:
        """Transient trouble before the function ran: redeliver later, unless this was the last
        delivery: then the activation fails as ``runtime_unavailable`` and the job is dropped."""
        try:
            if not await self._last_delivery(msg, job.execution_id):
                await msg.nak(delay=self.settings.retry_delay_seconds)
                return
            await self._give_up(job, msg, log, reason)
        except NATS_ERRORS as exc:
            # Not even the nak got through: JetStream redelivers after ack_wait.
            log.warning("cannot settle the job", extra={"error": repr(exc)})

    async def _give_up(self, job: Job, msg: JobMessage, log: JobLog, reason: str) -> None:
        """The job's deliveries are used up: fail its record (unless it is final already) as
        ``runtime_unavailable``, then drop the job from the stream."""
        record = ExecutionRecord(
            execution_id=job.execution_id,
            function=job.function.name,
            status="failed",
            error="runtime_unavailable",
            detail=f"gave up after {self.settings.max_deliver} attempts: {reason}",
            created_at=job.enqueued_at,
            start_deadline=job.start_deadline,
            finished_at=time.time(),
            request_id=job.request_id,
        )
        log.error("giving up on the job", extra={"reason": reason})
        await self._finish(job, record, log, known=None)
        await self._settle(job, msg, ack=False)

    async def _finish(
        self, job: Job, record: ExecutionRecord, log: JobLog, *, known: Known
    ) -> ExecutionRecord | None:
        """Store the final record (``faas_common.executions.finished``), then reply. ``known``:
        the record and revision this worker wrote when it set ``running``.

        None when another delivery already made the record final: it is left as it is and
        nothing is replied. A record the server refuses as too large is replaced by a small
        ``output_too_large`` one. A store that keeps failing is logged and the reply goes out
        anyway: running the function again would be worse than a record left ``running``.
        """
        try:
            try:
                written = await self._store_final(job, record, known)
            except RecordTooLarge:
                limit = self.record_limit
                log.error(
                    "record refused as too large: storing a small one",
                    extra={"size": record_size(record), "limit": limit},
                )
                record = unstorable_record(record, limit)
                written = await self._store_final(job, record, None)
        except RECORD_ERRORS as exc:
            log.error("cannot store the final record", extra={"error": repr(exc)})
        else:
            if written is None:
                log.warning(
                    "record already final (another delivery finished the job): not overwritten",
                    extra={"ours": record.status},
                )
                return None
            record = written
        await self._reply(job, record, log)
        return record

    async def _store_final(
        self, job: Job, record: ExecutionRecord, known: Known
    ) -> ExecutionRecord | None:
        written = await transition(
            self.store, job.user_id, job.execution_id, finished(record), known=known
        )
        return written[0] if written is not None else None

    async def _reply(self, job: Job, record: ExecutionRecord, log: JobLog) -> None:
        """Count the final record this spawner wrote (``faas_common.metrics``), then reply it."""
        self.metrics.finished(record)
        if not job.reply_subject:
            return
        try:
            await self.publish(job.reply_subject, record.model_dump_json().encode())
        except NATS_ERRORS as exc:
            log.warning("cannot publish the reply", extra={"error": repr(exc)})
