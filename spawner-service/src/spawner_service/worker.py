"""The consumer loop: jobs from the ``EXECUTIONS`` stream in, execution records and replies out.

``Worker`` owns the JetStream side: it ensures the stream and the shared durable pull consumer
``spawners``, fetches only as many jobs as it has free container slots (pull-based backpressure:
a job stays in the stream, counting against the in-flight limits, until it is acked), runs each
job in a task, reaps stale containers in the background and stops gracefully.

``JobHandler`` decides what happens to one message (unit tests drive it with fakes):

- unparseable → ``term`` (poison);
- start deadline passed → ``term`` without running; a still ``queued`` record becomes
  ``timed_out`` and is replied (the caller, if still there, hears why);
- record already terminal (the publisher gave up on it) → ``term`` without running;
- otherwise the record is moved to ``running`` (compare-and-set on its revision), the container
  runs with ``in_progress`` heartbeats, the final record is stored by compare-and-set against the
  revision this worker wrote (a record another delivery already made final is left alone) and
  replied, then the job is acked. A record too large for a NATS message loses its result
  (``output_too_large``), never silently cut;
- a transient failure before the function ran (KV unavailable, Docker unreachable before the
  container started) → ``nak`` with a delay, or, on the last allowed delivery, ``term`` and a
  ``failed`` record with error ``runtime_unavailable``. A Docker failure after the container
  started ends the activation as ``failed`` (``runtime_unavailable``): it is never run again;
- a message handed back without running (more than the free slots, or the worker stopping) is
  ``nak``ed, or ``term``ed on its last allowed delivery (its record failed as above), so it
  never stays in the stream after its deliveries are used up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from pydantic import ValidationError

from faas_common.contract import (
    EXEC_SUBJECT_PREFIX,
    EXECUTIONS_STREAM,
    SPAWNER_CONSUMER,
    TERMINAL_STATUSES,
    ExecutionRecord,
    ExecutionStatus,
    Job,
    executions_stream_config,
)
from faas_common.executions import ExecutionStore, RecordConflict
from faas_common.logging import request_id_var
from faas_common.nats import NatsUnavailable, ensure_stream
from spawner_service.config import NATS_MAX_PAYLOAD, SpawnerSettings
from spawner_service.runtime.base import ContainerRuntime, Outcome, RunResult, RunSpec

logger = logging.getLogger("spawner.worker")

REQUEST_ID_HEADER = "X-Request-ID"
CAS_ATTEMPTS = 5
HEADER_ROOM = 4_096
"""Bytes of a NATS message kept for headers (a KV update sends one): a record may use the
connection's ``max_payload`` minus this."""
HANDED_BACK = "handed back without running (no free slot, or the spawner was stopping)"

STATUS_OF: dict[Outcome, ExecutionStatus] = {
    "succeeded": "succeeded",
    "function_failed": "failed",
    "timed_out": "timed_out",
    "output_too_large": "failed",
    "image_unavailable": "failed",
    "runtime_unavailable": "failed",
}
"""Record status for each runtime outcome; the record's ``error`` is the outcome itself."""

TRANSIENT_ERRORS = (nats.errors.Error, TimeoutError, OSError, RecordConflict)
"""Failures of NATS (KV, publish) worth a retry of the whole job."""


class RecordStore(Protocol):
    """The part of ``faas_common.executions.ExecutionStore`` the spawner uses."""

    async def get(self, user_id: str, execution_id: str) -> tuple[ExecutionRecord, int] | None: ...

    async def create(self, user_id: str, record: ExecutionRecord) -> int: ...

    async def update(self, user_id: str, record: ExecutionRecord, *, revision: int) -> int: ...


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


Publish = Callable[[str, bytes], Awaitable[None]]


class JobLog(logging.LoggerAdapter[logging.Logger]):
    """Log lines about one job: its ids on every line, merged with each call's own ``extra``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def result_text(stdout: bytes) -> str:
    """stdout as the record's ``result``: UTF-8 (invalid bytes replaced), one trailing newline
    removed (``echo`` and ``print`` add one)."""
    text = stdout.decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\n") else text


def final_record(
    job: Job,
    result: RunResult,
    *,
    created_at: float,
    started_at: float,
    finished_at: float,
) -> ExecutionRecord:
    """The record of a finished activation. ``result`` only when it succeeded or exited non-zero
    (never a cut or partial output); ``logs`` is the stderr tail."""
    timings = {"queue": round(max(started_at - job.enqueued_at, 0.0) * 1000, 1)}
    timings.update(result.timings)
    succeeded = result.outcome == "succeeded"
    with_output = succeeded or result.outcome == "function_failed"
    return ExecutionRecord(
        execution_id=job.execution_id,
        function=job.function.name,
        status=STATUS_OF[result.outcome],
        result=result_text(result.stdout) if with_output else None,
        exit_code=result.exit_code,
        logs=result.stderr_tail.decode("utf-8", errors="replace"),
        error=None if succeeded else result.outcome,
        detail=result.detail,
        duration_ms=round((finished_at - started_at) * 1000, 1),
        timings=timings,
        created_at=created_at,
        finished_at=finished_at,
    )


def record_size(record: ExecutionRecord) -> int:
    """Bytes of the record as stored and replied (JSON, UTF-8)."""
    return len(record.model_dump_json().encode())


def fit_record(record: ExecutionRecord, limit: int) -> ExecutionRecord:
    """``record`` if it fits in ``limit`` bytes. Otherwise its result, unless it would fit with
    the logs alone cut, is dropped (the outcome becomes ``output_too_large``: never a silently
    cut result), and its logs (a tail already) lose their beginning until it fits."""
    size = record_size(record)
    if size <= limit:
        return record
    fitted = record
    if record.result is not None and record_size(record.model_copy(update={"logs": ""})) > limit:
        fitted = record.model_copy(
            update={
                "status": STATUS_OF["output_too_large"],
                "error": "output_too_large",
                "result": None,
                "detail": f"the result is too large to store ({size} bytes as JSON; an "
                f"execution record holds at most {limit})",
            }
        )
    logs = fitted.logs or ""
    while (over := record_size(fitted) - limit) > 0 and logs:
        logs = logs[over:]  # every character takes at least one byte: one cut is enough
        fitted = fitted.model_copy(update={"logs": logs})
    return fitted


def unstorable_record(record: ExecutionRecord, limit: int) -> ExecutionRecord:
    """The small record stored instead of one the server refused as too large."""
    return record.model_copy(
        update={
            "status": STATUS_OF["output_too_large"],
            "error": "output_too_large",
            "result": None,
            "logs": None,
            "detail": f"the result is too large to store (more than {limit} bytes as JSON)",
        }
    )


def _default_max_payload() -> int:
    return NATS_MAX_PAYLOAD


def _last_delivery(msg: JobMessage, max_deliver: int) -> bool:
    delivered = _attempt(msg)
    return delivered is not None and delivered >= max_deliver


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
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.store = store
        self.publish = publish
        self.max_payload = max_payload
        """The connection's largest message (``nc.max_payload``, from the server)."""

    @property
    def record_limit(self) -> int:
        """The largest execution record that can be stored and replied."""
        return self.max_payload() - HEADER_ROOM

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
            except (nats.errors.Error, TimeoutError, OSError) as term_error:
                # Redelivered after ack_wait and terminated then.
                logger.warning("cannot terminate the message", extra={"error": repr(term_error)})
            return
        headers = msg.headers or {}
        request_id_var.set(job.request_id or headers.get(REQUEST_ID_HEADER))
        log = JobLog(logger, {"execution_id": job.execution_id, "user_id": job.user_id})
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        try:
            await self._process(job, msg, log)
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
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                logger.warning("in_progress failed", extra={"error": str(exc)})

    async def _process(self, job: Job, msg: JobMessage, log: JobLog) -> None:
        started_at = time.time()
        if started_at > job.start_deadline:
            await self._expire(job, msg, log)
            return
        try:
            marked = await self._mark_running(job, started_at)
        except TRANSIENT_ERRORS as exc:
            log.warning("cannot mark the job running", extra={"error": repr(exc)})
            await self._retry_or_give_up(job, msg, log, f"execution records unavailable: {exc}")
            return
        if marked is None:
            log.info("record already final: job dropped")
            await msg.term()
            return
        created_at, revision = marked

        log.info("running", extra={"image": job.function.image, "attempt": _attempt(msg)})
        result = await self.runtime.run(
            RunSpec(
                execution_id=job.execution_id,
                image=job.function.image,
                argument=job.argument,
                env=job.function.env,
                timeout_seconds=job.function.timeout_seconds,
                memory_mb=job.function.memory_mb,
                deadline=time.time() + job.function.timeout_seconds,
            )
        )
        if (
            result.outcome == "runtime_unavailable"
            and not result.started
            and not _last_delivery(msg, self.settings.max_deliver)
        ):
            # The container never started: nothing ran, another attempt is safe.
            log.warning("container runtime unavailable: retrying", extra={"error": result.detail})
            await self._requeue(job, result.detail or "container runtime unavailable")
            await msg.nak(delay=self.settings.retry_delay_seconds)
            return

        record = final_record(
            job, result, created_at=created_at, started_at=started_at, finished_at=time.time()
        )
        limit = self.record_limit
        fitted = fit_record(record, limit)
        if fitted is not record:
            log.warning(
                "record too large to store: result dropped",
                extra={"size": record_size(record), "limit": limit},
            )
            record = fitted
        stored = await self._finish(job, record, log, revision=revision)
        await msg.ack()
        if not stored:
            return
        log.info(
            "finished",
            extra={
                "status": record.status,
                "error": record.error,
                "exit_code": record.exit_code,
                "duration_ms": record.duration_ms,
                "timings": record.timings,
            },
        )

    async def _mark_running(self, job: Job, started_at: float) -> tuple[float, int] | None:
        """Move the record to ``running``; its ``created_at`` and the revision written, or None
        when it is final already."""
        queue_ms = round(max(started_at - job.enqueued_at, 0.0) * 1000, 1)
        for _ in range(CAS_ATTEMPTS):
            current = await self.store.get(job.user_id, job.execution_id)
            if current is None:
                record = ExecutionRecord(
                    execution_id=job.execution_id,
                    function=job.function.name,
                    status="running",
                    timings={"queue": queue_ms},
                    created_at=job.enqueued_at,
                )
                try:
                    written = await self.store.create(job.user_id, record)
                except RecordConflict:
                    continue
                return record.created_at, written
            record, revision = current
            if record.status in TERMINAL_STATUSES:
                return None
            running = record.model_copy(
                update={
                    "status": "running",
                    "detail": None,
                    "timings": {**record.timings, "queue": queue_ms},
                }
            )
            try:
                written = await self.store.update(job.user_id, running, revision=revision)
            except RecordConflict:
                continue
            return record.created_at, written
        raise RecordConflict(job.execution_id)

    async def _requeue(self, job: Job, reason: str) -> None:
        """Best effort: a job going back to the stream is ``queued`` again, not ``running``,
        and its record says why (an expiry later quotes it)."""
        with contextlib.suppress(*TRANSIENT_ERRORS):
            current = await self.store.get(job.user_id, job.execution_id)
            if current is not None and current[0].status == "running":
                queued = current[0].model_copy(
                    update={"status": "queued", "detail": f"retrying: {reason}"}
                )
                await self.store.update(job.user_id, queued, revision=current[1])

    async def _expire(self, job: Job, msg: JobMessage, log: JobLog) -> None:
        """The start deadline passed: nobody waits for this job any more. Never run it."""
        now = time.time()
        late_s = now - job.start_deadline
        record = ExecutionRecord(
            execution_id=job.execution_id,
            function=job.function.name,
            status="timed_out",
            error="timed_out",
            detail=f"no worker picked the job up before its start deadline ({late_s:.1f} s ago)",
            timings={"queue": round(max(now - job.enqueued_at, 0.0) * 1000, 1)},
            created_at=job.enqueued_at,
            finished_at=now,
        )
        try:
            changed = await self._settle_expired(job, record)
        except TRANSIENT_ERRORS as exc:
            log.warning("cannot record the expiry", extra={"error": repr(exc)})
            changed = None
        log.info("start deadline passed: job dropped", extra={"late_s": round(late_s, 3)})
        if changed is not None:
            await self._reply(job, changed, log)
        await msg.term()

    async def _settle_expired(self, job: Job, timed_out: ExecutionRecord) -> ExecutionRecord | None:
        for _ in range(CAS_ATTEMPTS):
            current = await self.store.get(job.user_id, job.execution_id)
            if current is None:
                try:
                    await self.store.create(job.user_id, timed_out)
                except RecordConflict:
                    continue
                return timed_out
            record, revision = current
            if record.status == "queued":
                detail = timed_out.detail
                if record.detail:  # an earlier attempt failed: say so
                    detail = f"{detail}; last attempt: {record.detail}"
                final = timed_out.model_copy(
                    update={"created_at": record.created_at, "detail": detail}
                )
            elif record.status == "running":
                # A redelivery of a job whose spawner stopped mid-run: no result will come.
                final = timed_out.model_copy(
                    update={
                        "status": "failed",
                        "error": "runtime_unavailable",
                        "detail": "the worker running the job stopped before reporting a result",
                        "created_at": record.created_at,
                    }
                )
            else:
                return None
            try:
                await self.store.update(job.user_id, final, revision=revision)
            except RecordConflict:
                continue
            return final
        return None

    async def release(self, msg: JobMessage) -> None:
        """Hand a fetched message back without running it (more than the free slots, or the
        worker is stopping): ``nak`` it for another spawner, unless this was its last allowed
        delivery: then it is terminated and its record, if still queued or running, failed."""
        try:
            if not _last_delivery(msg, self.settings.max_deliver):
                await msg.nak()
                return
            try:
                job = Job.model_validate_json(msg.data)
            except ValidationError:
                await msg.term()  # poison: handle() would terminate it too
                return
            log = JobLog(logger, {"execution_id": job.execution_id, "user_id": job.user_id})
            await self._give_up(job, msg, log, HANDED_BACK)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            # JetStream redelivers it after ack_wait (or drops it at the stream's max_age).
            logger.warning("cannot hand the message back", extra={"error": repr(exc)})

    async def _retry_or_give_up(self, job: Job, msg: JobMessage, log: JobLog, reason: str) -> None:
        """Transient trouble before the function ran: redeliver later, unless this was the last
        delivery: then the activation fails as ``runtime_unavailable`` and the job is dropped."""
        try:
            if not _last_delivery(msg, self.settings.max_deliver):
                await msg.nak(delay=self.settings.retry_delay_seconds)
                return
            await self._give_up(job, msg, log, reason)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
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
            finished_at=time.time(),
        )
        log.error("giving up on the job", extra={"reason": reason})
        await self._finish(job, record, log)
        await msg.term()

    async def _finish(
        self, job: Job, record: ExecutionRecord, log: JobLog, *, revision: int | None = None
    ) -> bool:
        """Store the final record by compare-and-set, then reply. ``revision``: the one this
        worker wrote when it set ``running`` (None: read the record first).

        False when another delivery of the job already made the record final: it is left as it
        is and nothing is replied. A record the server refuses as too large is replaced by a
        small ``output_too_large`` one. A store that keeps failing is logged and the reply goes
        out anyway: running the function again would be worse than a record left ``running``.
        """
        for attempt in range(1, CAS_ATTEMPTS + 1):
            try:
                if revision is None:
                    current = await self.store.get(job.user_id, job.execution_id)
                    if current is None:
                        await self.store.create(job.user_id, record)
                        break
                    existing, revision = current
                    if existing.status in TERMINAL_STATUSES:
                        if existing == record:
                            break  # an earlier attempt of ours landed; only its answer was lost
                        log.warning(
                            "record already final (another delivery finished the job): "
                            "not overwritten",
                            extra={"status": existing.status, "ours": record.status},
                        )
                        return False
                await self.store.update(job.user_id, record, revision=revision)
                break
            except RecordConflict:
                revision = None  # moved since: read it again and decide
            except nats.errors.MaxPayloadError:
                limit = self.record_limit
                log.error(
                    "record refused as too large: storing a small one",
                    extra={"size": record_size(record), "limit": limit},
                )
                record = unstorable_record(record, limit)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                log.warning(
                    "cannot store the record", extra={"error": repr(exc), "attempt": attempt}
                )
                revision = None  # the write may have landed: read before writing again
                if attempt < CAS_ATTEMPTS:
                    await asyncio.sleep(0.5 * attempt)
        await self._reply(job, record, log)
        return True

    async def _reply(self, job: Job, record: ExecutionRecord, log: JobLog) -> None:
        if not job.reply_subject:
            return
        try:
            await self.publish(job.reply_subject, record.model_dump_json().encode())
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            log.warning("cannot publish the reply", extra={"error": repr(exc)})


def _attempt(msg: JobMessage) -> int | None:
    try:
        return int(msg.metadata.num_delivered)
    except (AttributeError, TypeError, ValueError):
        return None


CONSUMER_SETTINGS = ("ack_wait", "max_deliver", "filter_subject")
"""The shared consumer's settings that come from a spawner's configuration."""


def consumer_config(settings: SpawnerSettings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=SPAWNER_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_seconds,
        max_deliver=settings.max_deliver,
        filter_subject=f"{EXEC_SUBJECT_PREFIX}.>",
    )


class Worker:
    """Consumes jobs until ``stop()``; then finishes the jobs it holds and returns."""

    def __init__(
        self,
        settings: SpawnerSettings,
        *,
        nc: NATS,
        runtime: ContainerRuntime,
        store: RecordStore | None = None,
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.runtime = runtime
        self.js: JetStreamContext = nc.jetstream()
        self._store = store
        self._stopping = asyncio.Event()
        self._jobs: set[asyncio.Task[None]] = set()
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._handler: JobHandler | None = None

    @property
    def running_jobs(self) -> int:
        return len(self._jobs)

    def stop(self) -> None:
        """Stop fetching; ``run`` returns once the jobs held now are finished."""
        self._stopping.set()

    async def _ensure_consumer(self) -> None:
        s = self.settings
        await ensure_stream(
            self.js,
            executions_stream_config(
                max_in_flight=s.max_in_flight,
                max_in_flight_per_user=s.max_in_flight_per_user,
                replicas=s.nats_replicas,
                max_age=s.job_max_age_seconds,
            ),
        )
        await self._ensure_shared_consumer(consumer_config(s))

    async def _ensure_shared_consumer(self, wanted: ConsumerConfig) -> None:
        """Create the durable consumer every spawner shares, or bring it in line with this
        spawner's settings, saying so when they differ (all spawners must share them)."""
        try:
            info = await self.js.consumer_info(EXECUTIONS_STREAM, SPAWNER_CONSUMER)
        except nats.js.errors.NotFoundError:
            await self.js.add_consumer(EXECUTIONS_STREAM, config=wanted)
            return
        differences = {
            name: (getattr(info.config, name), getattr(wanted, name))
            for name in CONSUMER_SETTINGS
            if getattr(info.config, name) != getattr(wanted, name)
        }
        if not differences:
            return
        described = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in differences.items())
        logger.warning(
            f"the shared consumer {SPAWNER_CONSUMER!r} had other settings: updated ({described}); "
            "every spawner must share SPAWNER_ACK_WAIT_SECONDS and SPAWNER_MAX_DELIVER",
            extra={
                "consumer": SPAWNER_CONSUMER,
                "current": {name: old for name, (old, _) in differences.items()},
                "wanted": {name: new for name, (_, new) in differences.items()},
            },
        )
        await self.js.add_consumer(EXECUTIONS_STREAM, config=wanted)

    async def setup(self) -> None:
        """Idempotent: the stream (limits from the settings), the consumer, the records."""
        s = self.settings
        await self._ensure_consumer()
        if self._store is None:
            self._store = await ExecutionStore.open(
                self.js, replicas=s.nats_replicas, ttl_seconds=s.execution_ttl_seconds
            )
        self._subscription = await self.js.pull_subscribe_bind(
            durable=SPAWNER_CONSUMER, stream=EXECUTIONS_STREAM
        )
        self._handler = JobHandler(
            s,
            runtime=self.runtime,
            store=self._store,
            publish=self._publish,
            max_payload=lambda: self.nc.max_payload,
        )

    async def _publish(self, subject: str, payload: bytes) -> None:
        await self.nc.publish(subject, payload)

    async def run(self) -> None:
        """Consume until ``stop()``, then finish the held jobs. Raises ``NatsUnavailable`` when
        the connection is closed for good (the held jobs are finished first)."""
        if self._subscription is None:
            await self.setup()
        reaper = asyncio.create_task(self._reap_forever())
        logger.info(
            "consuming",
            extra={
                "max_containers": self.settings.max_containers,
                "instance_id": self.settings.instance_id,
            },
        )
        try:
            await self._consume()
        finally:
            if self._jobs:
                logger.info("finishing held jobs", extra={"jobs": len(self._jobs)})
                await asyncio.gather(*self._jobs, return_exceptions=True)
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            if self._subscription is not None:
                with contextlib.suppress(nats.errors.Error):
                    await self._subscription.unsubscribe()
            logger.info("stopped")

    async def _consume(self) -> None:
        assert self._subscription is not None
        backoff = 0.1
        while not self._stopping.is_set():
            free = self.settings.max_containers - len(self._jobs)
            if free <= 0:
                await self._wait_for_slot()
                continue
            try:
                msgs = await self._subscription.fetch(
                    batch=free, timeout=self.settings.fetch_timeout
                )
            except TimeoutError:  # nats.errors.TimeoutError is one too
                continue  # nothing to do right now
            except (nats.errors.Error, OSError) as exc:
                if self.nc.is_closed:
                    # Held jobs are still finished (their containers removed), then run raises.
                    raise NatsUnavailable("the NATS connection is closed") from exc
                logger.warning("fetch failed", extra={"error": repr(exc)})
                await self._sleep_unless_stopping(backoff)
                backoff = min(backoff * 2, 5.0)
                if isinstance(exc, nats.js.errors.APIError):
                    # The stream or the consumer is gone (deleted, or lost with a cluster's
                    # state): set them up again, the subscription keeps working after it.
                    await self._recover_consumer()
                continue
            backoff = 0.1
            # A fetch may hand over more than asked for (messages of an earlier request that
            # expired client-side); never hold more jobs than free slots, and none once stopping.
            keep = 0 if self._stopping.is_set() else free
            for msg in msgs[:keep]:
                self._start(msg)
            assert self._handler is not None
            for msg in msgs[keep:]:
                await self._handler.release(msg)

    async def _recover_consumer(self) -> None:
        try:
            await self._ensure_consumer()
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            logger.warning("cannot set the consumer up again", extra={"error": repr(exc)})
        else:
            logger.info("stream and consumer set up again")

    def _start(self, msg: Any) -> None:
        assert self._handler is not None
        task = asyncio.create_task(self._handler.handle(msg))
        self._jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # The message is redelivered after ack_wait; its container is removed either way.
            logger.error("job task failed", exc_info=error)

    async def _wait_for_slot(self) -> None:
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({stopping, *self._jobs}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _reap_forever(self) -> None:
        while True:
            try:
                removed = await self.runtime.remove_stale(time.time())
                if removed:
                    logger.info("stale containers removed", extra={"count": removed})
            except Exception:
                logger.exception("stale container sweep failed")
            await asyncio.sleep(self.settings.reap_interval_seconds)
