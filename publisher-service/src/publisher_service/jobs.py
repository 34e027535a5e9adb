"""The job queue: the ``EXECUTIONS`` JetStream stream.

A job is published to ``faas.exec.<user_id>`` with its execution id as ``Nats-Msg-Id``, so a
retried publish (a timeout, no responders while a stream leader is elected) never enqueues it
twice: inside the stream's duplicate window the server answers with the first PubAck. The
stream's ``max_msgs`` / ``max_msgs_per_subject`` with ``discard: new`` are the concurrency
limits: a publish into a full stream fails with err_code 10077 (``QueueFull``). A job must fit
one NATS message: ``max_job_bytes`` is the connection's ``max_payload`` (from the server) minus
room for the headers, and the publisher refuses a larger job before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck

from faas_common.contract import EXECUTIONS_STREAM, Job, exec_subject
from publisher_service.exceptions import RuntimeUnavailable
from publisher_service.service import QueueFull

logger = logging.getLogger("publisher.queue")

STREAM_FULL = 10077
"""JetStream err_code of a publish refused by the stream's limits (total or per subject)."""
HEADER_ROOM = 4_096
"""Bytes of a message kept for its headers (``Nats-Msg-Id``, ``X-Request-ID``, the expected
stream): the server counts them in ``max_payload``."""


class _Transient(Exception):
    """A publish attempt failed in a way the next attempt may not (the cause says how)."""


_TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    TimeoutError,
)


class NatsJobQueue:
    """``JobQueue`` over the ``EXECUTIONS`` stream."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        *,
        timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 0.25,
    ) -> None:
        self._nc = nc
        self._js = js
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff

    async def enqueue(self, job: Job) -> int:
        payload = job.model_dump_json().encode()
        last_error: BaseException | None = None
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._backoff * attempt)
            try:
                ack = await self._publish(job, payload)
            except _Transient as exc:
                last_error = exc.__cause__
                logger.warning(
                    "job publish attempt failed",
                    extra={
                        "execution_id": job.execution_id,
                        "attempt": attempt + 1,
                        "error": repr(last_error),
                    },
                )
                continue
            if ack.duplicate:
                logger.info("job publish was a duplicate", extra={"execution_id": job.execution_id})
            return ack.seq
        raise RuntimeUnavailable("The activation queue did not answer") from last_error

    async def _publish(self, job: Job, payload: bytes) -> PubAck:
        """One publish attempt; ``_Transient`` when another attempt may succeed."""
        headers = {"Nats-Msg-Id": job.execution_id}
        if job.request_id:
            headers["X-Request-ID"] = job.request_id
        try:
            return await self._js.publish(
                exec_subject(job.user_id),
                payload,
                timeout=self._timeout,
                stream=EXECUTIONS_STREAM,
                headers=headers,
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code == STREAM_FULL:
                raise QueueFull(exc.description or "stream full") from exc
            if isinstance(exc, nats.js.errors.ServiceUnavailableError):
                # JetStream temporarily unavailable (no stream leader yet, ...).
                raise _Transient() from exc
            raise RuntimeUnavailable("The activation queue refused the job") from exc
        except _TRANSIENT as exc:
            raise _Transient() from exc
        except (nats.errors.Error, OSError) as exc:
            raise RuntimeUnavailable("The activation queue is unavailable") from exc

    def max_job_bytes(self) -> int:
        return self._nc.max_payload - HEADER_ROOM

    async def discard(self, sequence: int) -> None:
        with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
            await self._js.delete_msg(EXECUTIONS_STREAM, sequence)

    async def ready(self) -> None:
        if not self._nc.is_connected:
            raise RuntimeError("not connected to NATS")
        await self._js.stream_info(EXECUTIONS_STREAM)
