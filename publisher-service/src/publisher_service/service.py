"""Domain logic of publisher-service: activations, their results and their records.

An activation (``Publisher.publish``), in order:

1. the argument's UTF-8 size is checked (413 ``argument_too_large``: nothing is queued);
2. the function ``<user_id>.<name>`` is resolved from the catalog (404 ``function_not_found``;
   another user's function is simply not under this user's id); its image is judged again for
   this user (``IMAGE_POLICY``, and a registry host that is an internal address unless
   ``IMAGE_REGISTRY_ALLOW`` lists it: 403 ``image_not_allowed``, nothing is queued) and the job
   carries the fully-qualified reference the engine is to run (``faas_common.images``), so the
   engine cannot resolve it to another image (an image-id prefix); the job's serialized size
   (argument, function snapshot with its environment) is checked against the largest message
   the queue takes (413 ``argument_too_large``: nothing is queued, no record is written);
3. an ``Idempotency-Key``, when given, is claimed atomically for this user: a key already
   claimed by the same request answers with that execution instead of running again, a key
   claimed by a different request is a 409;
4. the record is created ``queued`` (an unreachable store is a 503, a full one — the bucket's
   ``EXECUTIONS_MAX_BYTES`` — a 507 ``storage_full``: nothing is queued);
5. the job is published to ``faas.exec.<user_id>`` with the execution id as ``Nats-Msg-Id``. The
   ``EXECUTIONS`` stream's message limits are the concurrency limits, so a full stream is a 429
   (the record says ``rejected``); any other failure is a 503 (the record says ``failed``);
6. async: the execution id is the answer. Sync: the call waits for the reply on this instance's
   reply subject, reading the record now and then (a lost reply, a retry served by another
   instance). When the start deadline passes and the record is still ``queued``, the call takes
   it to ``timed_out`` (``faas_common.executions.expired``: exactly one of this call and a
   spawner starting the job wins) and drops the job from the stream; when the result deadline
   (start deadline + function timeout + grace) passes, the answer is the record as it is then.

Crash safety. A publisher may die anywhere between 3 and 5. A keyed retry (on any replica)
resumes the first attempt where it stopped: it finds the claim, writes the record if it is
missing, and publishes the same job again while the record is still ``queued`` and its start
deadline is ahead (the same ``Nats-Msg-Id``: if the first publish did land, the stream drops the
copy, its duplicate window covering every start deadline), then follows it. A ``queued`` record
whose job never reached the stream and that nobody retries is expired by whoever reads it
after its start deadline (``get_execution``, ``list_executions``): no record is ever seen
``queued`` past its start deadline.

The ports below are what this module needs from the outside world; the NATS adapters live in
``catalog.py``, ``jobs.py``, ``stores.py`` and ``replies.py``, and unit tests use small fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from faas_common.contract import ErrorCode, ExecutionRecord, FunctionSnapshot, Job, is_id
from faas_common.executions import (
    RecordConflict,
    RecordStore,
    StoreFull,
    StoreUnavailable,
    expired,
    expired_record,
    is_final,
    new_execution_id,
    queued_if_new,
    rejected,
    transition,
)
from faas_common.images import (
    ImagePolicy,
    ImageRefused,
    is_image_id,
    normalise_image,
    registry_host_verdict,
)
from faas_common.metrics import ActivationMetrics
from publisher_service.exceptions import (
    ActivationError,
    ActivationFailed,
    ActivationTimedOut,
    ArgumentTooLarge,
    ConcurrencyLimit,
    ExecutionNotFound,
    FunctionNotFound,
    IdempotencyKeyReused,
    ImageNotAllowed,
    RuntimeUnavailable,
    StorageFull,
)
from publisher_service.timing import PhaseTimer

logger = logging.getLogger("publisher.service")

FAILURE_DETAILS = {
    "function_failed": "The function exited with a non-zero status",
    "output_too_large": "The function's output exceeded the result size limit",
    "image_unavailable": "The function's image is unavailable (it could not be pulled)",
}
REJECTED_DETAIL = "Too many activations in flight (cluster-wide or for this user): retry later"
NOT_QUEUED_DETAIL = "The activation could not be queued (NATS JetStream unavailable)"
STILL_RUNNING_DETAIL = "The activation is still running after its deadline"
RECORDS_UNAVAILABLE = "The execution records (NATS) are unavailable"
INTERNAL_REGISTRY_DETAIL = (
    "The function's image names a registry host that is an internal address; it is not allowed"
)


# --- Ports ------------------------------------------------------------------------------------


class QueueFull(Exception):
    """The stream refused the job: the cluster-wide or the user's in-flight limit is reached
    (the server's description says which)."""

    @property
    def limit(self) -> str:
        """``user`` (``MAX_IN_FLIGHT_PER_USER``: the subject's limit) or ``cluster``
        (``MAX_IN_FLIGHT``, ``STREAM_MAX_BYTES``)."""
        return "user" if "per subject" in str(self) else "cluster"


class FunctionCatalog(Protocol):
    async def resolve(self, user_id: str, name: str) -> FunctionSnapshot | None:
        """The user's function called ``name``, or None. ``RuntimeUnavailable`` on failure."""


class JobQueue(Protocol):
    async def enqueue(self, job: Job, *, record_revision: int | None = None) -> int:
        """Queue ``job`` (at most once per execution id); its stream sequence.
        ``record_revision``: that of the job's ``queued`` record, when this call wrote it.

        ``QueueFull`` when a limit is reached, ``RuntimeUnavailable`` when it cannot be queued.
        """

    async def discard(self, sequence: int) -> None:
        """Drop a job nobody started (best effort: it may be gone already)."""

    def max_job_bytes(self) -> int:
        """The largest serialized job the queue takes (its message size limit)."""

    async def ready(self) -> None:
        """Raise unless jobs can be queued right now."""


class IdempotencyClaim(BaseModel):
    """What an ``Idempotency-Key`` stands for: the execution it started and the request's hash."""

    execution_id: str
    fingerprint: str
    start_deadline: float | None = None
    enqueued_at: float | None = None
    """When the first attempt made the job (a keyed retry rebuilds the same job from it)."""


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    won: bool
    """True: this request claimed the key. False: ``claim`` is the earlier request's."""
    claim: IdempotencyClaim
    revision: int


class IdempotencyStore(Protocol):
    async def claim(self, user_id: str, key: str, claim: IdempotencyClaim) -> ClaimOutcome:
        """Claim ``key`` for ``claim`` unless the user already claimed it (then: that claim)."""

    async def release(self, user_id: str, key: str, revision: int) -> None:
        """Give the key back if it is still at ``revision`` (the activation never ran)."""


class ReplyChannel(Protocol):
    """Where results come back to this instance (``replies.ReplyRegistry``)."""

    def subject(self, execution_id: str) -> str: ...

    def expect(self, execution_id: str) -> asyncio.Future[ExecutionRecord]: ...

    def forget(self, execution_id: str, future: asyncio.Future[ExecutionRecord]) -> None: ...


# --- Values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    max_argument_bytes: int
    queue_timeout: float
    async_queue_timeout: float
    reply_grace: float
    result_poll: float


@dataclass(frozen=True, slots=True)
class ActivationRequest:
    user_id: str
    username: str
    name: str
    argument: str
    is_async: bool = False
    idempotency_key: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Activation:
    """An accepted async activation (``record`` None) or a succeeded sync one."""

    execution_id: str
    record: ExecutionRecord | None = None


def fingerprint(name: str, argument: str, is_async: bool) -> str:
    """What makes two requests with one ``Idempotency-Key`` the same request."""
    canonical = json.dumps([name, argument, is_async], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def outcome_error(record: ExecutionRecord) -> ActivationError | None:
    """The error a finished, unsuccessful record answers with (None for a success); its
    ``detail`` is the record's own sentence when the spawner wrote one."""
    if record.status == "succeeded":
        return None
    if record.status == "rejected":
        return ConcurrencyLimit(record.detail, execution=record)
    if record.status == "timed_out" or record.error == "timed_out":
        return ActivationTimedOut(record.detail, execution=record)
    if record.error == "storage_full":
        return StorageFull(record.detail, execution=record)
    if record.error == "runtime_unavailable":
        return RuntimeUnavailable(
            record.detail or "No worker could run the activation", execution=record
        )
    code = record.error or "function_failed"
    detail = FAILURE_DETAILS.get(code, f"The activation failed ({code})")
    if code == "function_failed" and record.exit_code is not None:
        detail = f"The function exited with status {record.exit_code}"
    return ActivationFailed(record.detail or detail, code=code, execution=record)


@dataclass(slots=True)
class _HeldClaim:
    user_id: str
    key: str
    revision: int


class Publisher:
    def __init__(
        self,
        *,
        catalog: FunctionCatalog,
        records: RecordStore,
        queue: JobQueue,
        idempotency: IdempotencyStore,
        replies: ReplyChannel,
        limits: Limits,
        image_policy: ImagePolicy | None = None,
        registry_allow: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.time,
        metrics: ActivationMetrics | None = None,
    ) -> None:
        self.catalog = catalog
        self.records = records
        self.queue = queue
        self.idempotency = idempotency
        self.replies = replies
        self.limits = limits
        self.image_policy = image_policy or ImagePolicy()
        self.registry_allow = registry_allow
        self.clock = clock
        self.metrics = metrics or ActivationMetrics()
        """Counts the activations this publisher ends: refused, not queued, not started in time."""

    # --- activations --------------------------------------------------------------------------

    async def publish(self, request: ActivationRequest, *, timer: PhaseTimer) -> Activation:
        """Run one activation (see the module docstring); raises ``ServiceError`` subclasses."""
        size = len(request.argument.encode("utf-8"))
        if size > self.limits.max_argument_bytes:
            raise ArgumentTooLarge(
                f"The argument is {size} bytes; at most {self.limits.max_argument_bytes} bytes "
                "(UTF-8) can be passed to a function"
            )
        with timer.phase("resolve"):
            function = await self.catalog.resolve(request.user_id, request.name)
        if function is None:
            raise FunctionNotFound()
        function = self._admit(function, request.username)

        created_at = self.clock()
        queue_timeout = (
            self.limits.async_queue_timeout if request.is_async else self.limits.queue_timeout
        )
        execution_id = new_execution_id()
        job = self._job(
            request,
            function,
            execution_id,
            enqueued_at=created_at,
            start_deadline=created_at + queue_timeout,
        )
        job_bytes = len(job.model_dump_json().encode())
        if job_bytes > (max_job_bytes := self.queue.max_job_bytes()):
            raise ArgumentTooLarge(
                "The argument and the function's environment together are too large to queue "
                f"({job_bytes} bytes as a job; at most {max_job_bytes})"
            )

        held: _HeldClaim | None = None
        if request.idempotency_key is not None:
            claim = IdempotencyClaim(
                execution_id=execution_id,
                fingerprint=fingerprint(request.name, request.argument, request.is_async),
                start_deadline=job.start_deadline,
                enqueued_at=job.enqueued_at,
            )
            outcome = await self.idempotency.claim(request.user_id, request.idempotency_key, claim)
            if not outcome.won:
                if outcome.claim.fingerprint != claim.fingerprint:
                    raise IdempotencyKeyReused()
                return await self._replay(request, function, outcome.claim, timer=timer)
            held = _HeldClaim(request.user_id, request.idempotency_key, outcome.revision)
        return await self._run(job, request, held, timer=timer, fresh=True)

    def _admit(self, function: FunctionSnapshot, username: str) -> FunctionSnapshot:
        """``function`` with the reference the engine is given, if its image is allowed now."""
        try:
            reference = self.image_policy.engine_reference(function.image, username)
        except ImageRefused as exc:
            raise ImageNotAllowed(str(exc)) from exc
        if not is_image_id(reference):
            verdict = registry_host_verdict(normalise_image(reference), self.registry_allow)
            if verdict == "internal":
                raise ImageNotAllowed(INTERNAL_REGISTRY_DETAIL)
        return function.model_copy(update={"image": reference})

    def _job(
        self,
        request: ActivationRequest,
        function: FunctionSnapshot,
        execution_id: str,
        *,
        enqueued_at: float,
        start_deadline: float,
    ) -> Job:
        return Job(
            execution_id=execution_id,
            user_id=request.user_id,
            function=function,
            argument=request.argument,
            reply_subject=None if request.is_async else self.replies.subject(execution_id),
            enqueued_at=enqueued_at,
            start_deadline=start_deadline,
            request_id=request.request_id,
        )

    async def _run(
        self,
        job: Job,
        request: ActivationRequest,
        held: _HeldClaim | None,
        *,
        timer: PhaseTimer,
        fresh: bool = False,
    ) -> Activation:
        """Write the job's record, queue ``job``, then answer (async) or wait for its result.
        ``fresh``: the execution id is new (its record is created without being read first)."""
        future = None if request.is_async else self.replies.expect(job.execution_id)
        try:
            with timer.phase("enqueue"):
                revision = await self._record_queued(job, held, fresh=fresh)
                sequence = await self._enqueue(job, held, revision)
            logger.info(
                "activation queued",
                extra={"execution_id": job.execution_id, "function": request.name},
            )
            if future is None:
                return Activation(job.execution_id)
            final = await self._await_result(job, future, sequence=sequence)
        finally:
            if future is not None:
                self.replies.forget(job.execution_id, future)
        return self._settle(final)

    async def _enqueue(self, job: Job, held: _HeldClaim | None, revision: int | None) -> int | None:
        """The job's stream sequence (None when a spawner already has it: only the publish's
        answer was lost). A job that cannot be queued is recorded as such and answered."""
        try:
            return await self.queue.enqueue(job, record_revision=revision)
        except QueueFull as exc:
            self.metrics.rejected(exc.limit, job.function.name)
            record = await self._refuse(job, "concurrency_limit", REJECTED_DETAIL)
            await self._release(held)
            logger.info("activation rejected", extra={"execution_id": job.execution_id})
            raise ConcurrencyLimit(execution=record) from None
        except RuntimeUnavailable as exc:
            try:
                written = await transition(
                    self.records,
                    job.user_id,
                    job.execution_id,
                    rejected(
                        job, error="runtime_unavailable", detail=NOT_QUEUED_DETAIL, now=self.clock()
                    ),
                )
            except (StoreUnavailable, RecordConflict):
                written = None
            else:
                if written is None:
                    # A spawner moved the record: the job did land, only the publish's answer
                    # was lost. Follow it like any other activation.
                    return None
            await self._release(held)
            if written is not None:
                self.metrics.finished(written[0])
            logger.warning(
                "activation not queued",
                extra={"execution_id": job.execution_id, "cause": repr(exc.__cause__)},
            )
            raise RuntimeUnavailable(
                NOT_QUEUED_DETAIL, execution=written[0] if written else None
            ) from exc

    async def _refuse(self, job: Job, error: ErrorCode, detail: str) -> ExecutionRecord | None:
        """Best effort: the record of a job that was never queued."""
        try:
            written = await transition(
                self.records,
                job.user_id,
                job.execution_id,
                rejected(job, error=error, detail=detail, now=self.clock()),
            )
        except (StoreUnavailable, RecordConflict):
            return None
        return written[0] if written is not None else None

    async def _record_queued(self, job: Job, held: _HeldClaim | None, *, fresh: bool) -> int | None:
        """The ``queued`` record's revision (None: a record existed and was kept, a resumed
        attempt). A store that cannot take it is a 503 (a full one a 507) before anything is
        queued."""
        try:
            written = await transition(
                self.records, job.user_id, job.execution_id, queued_if_new(job), fresh=fresh
            )
        except StoreFull as exc:
            await self._release(held)
            raise StorageFull() from exc
        except (StoreUnavailable, RecordConflict) as exc:
            await self._release(held)
            raise RuntimeUnavailable(RECORDS_UNAVAILABLE) from exc
        return written[1] if written is not None else None

    async def _release(self, held: _HeldClaim | None) -> None:
        """An activation that never ran does not keep its Idempotency-Key: a retry runs anew."""
        if held is None:
            return
        with contextlib.suppress(RuntimeUnavailable):
            await self.idempotency.release(held.user_id, held.key, held.revision)

    async def _replay(
        self,
        request: ActivationRequest,
        function: FunctionSnapshot,
        claim: IdempotencyClaim,
        *,
        timer: PhaseTimer,
    ) -> Activation:
        """Answer a retried request with the execution its first attempt started, resuming it
        if its publisher died before queueing it (see the module docstring)."""
        execution_id = claim.execution_id
        logger.info("idempotent replay", extra={"execution_id": execution_id})
        current = await self._read(request.user_id, execution_id)
        if current is not None and is_final(current[0]):
            return Activation(execution_id) if request.is_async else self._settle(current[0])
        now = self.clock()
        enqueued_at = claim.enqueued_at or (current[0].created_at if current else now)
        start_deadline = claim.start_deadline or enqueued_at + self.limits.queue_timeout
        job = self._job(
            request,
            function,
            execution_id,
            enqueued_at=enqueued_at,
            start_deadline=start_deadline,
        )
        if now < start_deadline and (current is None or current[0].status == "queued"):
            return await self._run(job, request, None, timer=timer)
        if request.is_async:
            with contextlib.suppress(ActivationTimedOut):
                await self._expire(job, current, None)  # too late to run it: say so
            return Activation(execution_id)
        future = self.replies.expect(execution_id)
        try:
            final = await self._await_result(job, future, sequence=None)
        finally:
            self.replies.forget(execution_id, future)
        return self._settle(final)

    async def _await_result(
        self,
        job: Job,
        future: asyncio.Future[ExecutionRecord],
        *,
        sequence: int | None,
    ) -> ExecutionRecord:
        """The finished record: from the reply, else from the store once the deadline passed."""
        start_deadline = job.start_deadline
        deadline = start_deadline + job.function.timeout_seconds + self.limits.reply_grace
        while (now := self.clock()) < deadline:
            wake = min(deadline, now + self.limits.result_poll)
            if start_deadline > now:
                wake = min(wake, start_deadline)
            done, _ = await asyncio.wait({future}, timeout=max(wake - now, 0.0))
            if done:
                return future.result()
            try:
                current = await self.records.get(job.user_id, job.execution_id)
            except StoreUnavailable:
                continue  # keep waiting for the reply; the store may be back next time
            if current is not None and is_final(current[0]):
                return current[0]
            if self.clock() >= start_deadline:
                await self._expire(job, current, sequence)

        # The result deadline passed without a reply: answer with the record as it is now.
        await self._expire(job, None, sequence)
        current = await self._read(job.user_id, job.execution_id)
        if current is None:
            raise ActivationTimedOut("The activation timed out and its record is gone")
        if is_final(current[0]):
            return current[0]
        raise ActivationTimedOut(STILL_RUNNING_DETAIL, execution=current[0])

    async def _expire(
        self, job: Job, known: tuple[ExecutionRecord, int] | None, sequence: int | None
    ) -> None:
        """Time out a job nobody started (raises the 504); returns when a spawner has it."""
        try:
            written = await transition(
                self.records,
                job.user_id,
                job.execution_id,
                expired(job, self.clock()),
                known=known,
            )
        except (StoreUnavailable, RecordConflict):
            return  # try again at the next poll
        if written is None:
            return
        if sequence is not None:
            await self.queue.discard(sequence)
        self.metrics.finished(written[0])
        logger.info("activation not started in time", extra={"execution_id": job.execution_id})
        raise ActivationTimedOut(written[0].detail, execution=written[0])

    @staticmethod
    def _settle(record: ExecutionRecord) -> Activation:
        error = outcome_error(record)
        if error is not None:
            raise error
        return Activation(record.execution_id, record)

    async def _read(self, user_id: str, execution_id: str) -> tuple[ExecutionRecord, int] | None:
        try:
            return await self.records.get(user_id, execution_id)
        except StoreUnavailable as exc:
            raise RuntimeUnavailable(RECORDS_UNAVAILABLE) from exc

    # --- records ------------------------------------------------------------------------------

    async def get_execution(self, user_id: str, execution_id: str) -> ExecutionRecord:
        if not is_id(execution_id):
            raise ExecutionNotFound()
        current = await self._read(user_id, execution_id)
        if current is None:
            raise ExecutionNotFound()
        return await self._expired_if_due(user_id, current)

    async def list_executions(
        self, user_id: str, *, function: str | None, limit: int
    ) -> list[ExecutionRecord]:
        """The user's records, newest first, optionally of one function only."""
        try:
            records = await self.records.list_for_user(user_id, function=function, limit=limit)
        except StoreUnavailable as exc:
            raise RuntimeUnavailable(RECORDS_UNAVAILABLE) from exc
        return [
            await self._expired_if_due(user_id, (record, None))
            if record.status == "queued"
            else record
            for record in records
        ]

    async def _expired_if_due(
        self, user_id: str, current: tuple[ExecutionRecord, int | None]
    ) -> ExecutionRecord:
        """A ``queued`` record past its start deadline is expired as it is read: its publisher
        may have died before queueing the job, and then nothing else would ever finish it."""
        record, revision = current
        if record.status != "queued":
            return record
        known = (record, revision) if revision is not None else None
        with contextlib.suppress(StoreUnavailable, RecordConflict):
            written = await transition(
                self.records,
                user_id,
                record.execution_id,
                expired_record(self.clock()),
                known=known,
            )
            if written is not None:
                self.metrics.finished(written[0])
                logger.info("queued record expired", extra={"execution_id": record.execution_id})
                return written[0]
        return record
