"""Long polls: ``GET /publisher/executions/{id}?wait=SECONDS`` answers once the record is final
or the wait is over, whichever comes first, with the record as it is then.

The record is read first (an unknown id is a 404 at once, a final record is the answer at once),
then a slot is taken and the record's key is watched (``RecordWatch``: a NATS KV watch, so the
server pushes the writes and nobody polls). A ``queued`` record whose start deadline falls
inside the wait is read again at that deadline, which expires it to ``timed_out`` if nobody
started it (``Publisher.get_execution``). Slots are bounded per instance (``MAX_WAITERS``: one
more is a 503 ``too_many_waiters``) and per user (``MAX_WAITERS_PER_USER``: a 429
``wait_limit``); a wait whose client disconnects is cancelled, its watch stopped and its slot
freed at once (``faas_common.http.unless_disconnected``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from faas_common.contract import ExecutionRecord
from faas_common.executions import RecordWatch, StoreUnavailable, is_final
from publisher_service.exceptions import RuntimeUnavailable, TooManyWaiters, WaitLimit
from publisher_service.service import RECORDS_UNAVAILABLE

Read = Callable[[str, str], Awaitable[ExecutionRecord]]
"""The record of ``(user_id, execution_id)``, expired if due; ``ExecutionNotFound`` if none."""


class WaitSlots:
    """How many long polls this instance holds, in all and per user."""

    def __init__(self, *, total: int, per_user: int) -> None:
        self.total = total
        self.per_user = per_user
        self._held: Counter[str] = Counter()

    @property
    def held(self) -> int:
        return self._held.total()

    @contextmanager
    def slot(self, user_id: str) -> Iterator[None]:
        if self.held >= self.total:
            raise TooManyWaiters()
        if self._held[user_id] >= self.per_user:
            raise WaitLimit()
        self._held[user_id] += 1
        try:
            yield
        finally:
            self._held[user_id] -= 1
            if self._held[user_id] <= 0:
                del self._held[user_id]


class Waiter:
    def __init__(
        self,
        *,
        read: Read,
        watch: RecordWatch,
        slots: WaitSlots,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.read = read
        self.watch = watch
        self.slots = slots
        self.clock = clock

    async def wait(self, user_id: str, execution_id: str, *, seconds: float) -> ExecutionRecord:
        """The record once it is final, or as it is after ``seconds``."""
        record = await self.read(user_id, execution_id)
        if is_final(record) or seconds <= 0:
            return record
        with self.slots.slot(user_id):
            deadline = self.clock() + seconds
            while not is_final(record) and (now := self.clock()) < deadline:
                final = await self._watch(user_id, execution_id, self._wake(record, now, deadline))
                if final is not None:
                    return final
                record = await self.read(user_id, execution_id)
        return record

    @staticmethod
    def _wake(record: ExecutionRecord, now: float, deadline: float) -> float:
        """Seconds to watch before reading again: up to the wait's end, or to a ``queued``
        record's start deadline when that comes first (the record expires then)."""
        start_deadline = record.start_deadline
        if record.status == "queued" and start_deadline is not None and now < start_deadline:
            return min(deadline, start_deadline) - now
        return deadline - now

    async def _watch(
        self, user_id: str, execution_id: str, seconds: float
    ) -> ExecutionRecord | None:
        try:
            return await self.watch.until_final(user_id, execution_id, within=seconds)
        except StoreUnavailable as exc:
            raise RuntimeUnavailable(RECORDS_UNAVAILABLE) from exc
