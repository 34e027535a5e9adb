"""The job queue: the ``EXECUTIONS`` JetStream stream.

A job is published to ``faas.exec.<user_id>`` with its execution id as ``Nats-Msg-Id``, so a
retried publish (a timeout, no responders while a stream leader is elected) never enqueues it
twice: inside the stream's duplicate window the server answers with the first PubAck. The
stream's ``max_msgs`` / ``max_msgs_per_subject`` with ``discard: new`` are the concurrency
limits: a publish into a full stream fails with err_code ``STREAM_FULL`` (``QueueFull``). A job
must fit one NATS message: ``max_job_bytes`` is the connection's ``max_payload`` (from the
server) minus ``HEADER_ROOM``, and the publisher refuses a larger job before anything is
written.
"""

from __future__ import annotations

import contextlib
import logging

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck

from faas_common.contract import (
    EXECUTIONS_STREAM,
    HEADER_ROOM,
    MSG_ID_HEADER,
    RECORD_REVISION_HEADER,
    REQUEST_ID_HEADER,
    STREAM_FULL,
    Job,
    exec_subject,
)
from faas_common.nats import NATS_ERRORS, RetryBudget, retrying
from publisher_service.exceptions import RuntimeUnavailable
from publisher_service.service import QueueFull

logger = logging.getLogger("publisher.queue")


class NatsJobQueue:
    """``JobQueue`` over the ``EXECUTIONS`` stream."""

    def __init__(self, nc: NATS, js: JetStreamContext, *, budget: RetryBudget) -> None:
        self._nc = nc
        self._js = js
        self._budget = budget

    async def enqueue(self, job: Job, *, record_revision: int | None = None) -> int:
        """Publish ``job``, retried within the budget (a stream leader election answers with
        timeouts, no responders or 503s for several seconds)."""
        payload = job.model_dump_json().encode()
        headers = {MSG_ID_HEADER: job.execution_id}
        if job.request_id:
            headers[REQUEST_ID_HEADER] = job.request_id
        if record_revision is not None:
            headers[RECORD_REVISION_HEADER] = str(record_revision)

        async def publish(_: int) -> PubAck:
            try:
                return await self._js.publish(
                    exec_subject(job.user_id),
                    payload,
                    timeout=self._budget.attempt,
                    stream=EXECUTIONS_STREAM,
                    headers=headers,
                )
            except nats.js.errors.APIError as exc:
                if exc.err_code == STREAM_FULL:  # a 503 too, but no retry will make room
                    raise QueueFull(exc.description or "stream full") from exc
                raise

        try:
            ack = await retrying(publish, self._budget, what="job publish")
        except nats.js.errors.APIError as exc:
            raise RuntimeUnavailable("The activation queue refused the job") from exc
        except NATS_ERRORS as exc:
            raise RuntimeUnavailable("The activation queue did not answer") from exc
        if ack.duplicate:
            logger.info("job publish was a duplicate", extra={"execution_id": job.execution_id})
        return ack.seq

    def max_job_bytes(self) -> int:
        return self._nc.max_payload - HEADER_ROOM

    async def discard(self, sequence: int) -> None:
        with contextlib.suppress(*NATS_ERRORS):
            await self._js.delete_msg(EXECUTIONS_STREAM, sequence)

    async def ready(self) -> None:
        if not self._nc.is_connected:
            raise RuntimeError("not connected to NATS")
        await self._js.stream_info(EXECUTIONS_STREAM)

    async def jobs(self) -> float:
        """Jobs in the stream now (queued or running): one stream info request."""
        info = await self._js.stream_info(EXECUTIONS_STREAM)
        return float(info.state.messages)
