"""Results coming back to this instance: one wildcard subscription, one future per waiting call.

Every publisher instance listens on ``faas.reply.<instance_id>.*`` (core NATS) and names
``faas.reply.<instance_id>.<execution_id>`` as the reply subject of the sync jobs it queues, so a
result only ever reaches the instance whose caller waits for it. Several calls may wait for the
same execution (an ``Idempotency-Key`` retry while the first call still waits): each gets it.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg
from pydantic import ValidationError

from faas_common.contract import REPLY_SUBJECT_PREFIX, ExecutionRecord, reply_subject
from publisher_service.exceptions import RuntimeUnavailable

logger = logging.getLogger("publisher.replies")


class ReplyRegistry:
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self._waiting: dict[str, set[asyncio.Future[ExecutionRecord]]] = {}
        self._closed = False

    @property
    def wildcard(self) -> str:
        """The subject this instance subscribes to."""
        return f"{REPLY_SUBJECT_PREFIX}.{self.instance_id}.*"

    def subject(self, execution_id: str) -> str:
        return reply_subject(self.instance_id, execution_id)

    @property
    def waiting(self) -> int:
        """Calls currently waiting for a reply."""
        return sum(len(futures) for futures in self._waiting.values())

    def expect(self, execution_id: str) -> asyncio.Future[ExecutionRecord]:
        """A future resolved by the reply for ``execution_id``; register it before queueing."""
        future: asyncio.Future[ExecutionRecord] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(RuntimeUnavailable("The publisher is shutting down"))
        else:
            self._waiting.setdefault(execution_id, set()).add(future)
        return future

    def forget(self, execution_id: str, future: asyncio.Future[ExecutionRecord]) -> None:
        futures = self._waiting.get(execution_id)
        if futures is None:
            return
        futures.discard(future)
        if not futures:
            del self._waiting[execution_id]

    def deliver(self, record: ExecutionRecord) -> int:
        """Resolve every call waiting for ``record``'s execution; how many there were."""
        futures = self._waiting.pop(record.execution_id, set())
        for future in futures:
            if not future.done():
                future.set_result(record)
        return len(futures)

    def close(self) -> None:
        """Fail every waiting call (shutdown); later ``expect`` calls fail at once."""
        self._closed = True
        waiting, self._waiting = self._waiting, {}
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(RuntimeUnavailable("The publisher is shutting down"))

    async def handle(self, msg: Msg) -> None:
        """Callback of the NATS subscription on ``wildcard``."""
        execution_id = msg.subject.rsplit(".", 1)[-1]
        try:
            record = ExecutionRecord.model_validate_json(msg.data)
        except ValidationError:
            logger.warning("malformed reply ignored", extra={"subject": msg.subject})
            return
        if record.execution_id != execution_id:
            logger.warning(
                "reply for another execution ignored",
                extra={"subject": msg.subject, "execution_id": record.execution_id},
            )
            return
        self.deliver(record)
