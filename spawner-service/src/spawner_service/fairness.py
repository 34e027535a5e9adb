"""Fair share of the running slots between users (tenants).

All spawners share one FIFO consumer, so without this a user who queues many long calls holds
every slot while another user's call waits behind them. Instead:

- every spawner rewrites its ``SpawnerLoad`` (its capacity and its running jobs per user) in the
  ``fair_share`` bucket every ``SPAWNER_LOAD_INTERVAL_SECONDS`` and whenever it changes, and
  watches the other spawners' entries (``LoadBoard``; one written more than 3 intervals ago,
  by the entry's own time, is ignored: that spawner is gone);
- before a job starts, its spawner reads how many jobs each user has in the ``EXECUTIONS``
  stream (queued or running: the stream's per-subject counts) and builds a ``View``. The
  **share** is ``max(1, capacity // users with jobs)``. A job of a user already running their
  share **waits** while another user with queued jobs runs fewer than the share: the message is
  ``nak``ed with ``SPAWNER_FAIR_SHARE_DELAY_SECONDS`` and the next one is fetched, so the freed
  slot goes to the other user. Otherwise it starts (a lone user, or every waiting user at their
  share: the slots are never left idle for fairness alone);
- a deferral is counted in the bucket (``deferred.<execution_id>``) before the ``nak``, and the
  job handler subtracts these from the message's delivery count: only failed deliveries count
  against ``SPAWNER_MAX_DELIVER``. The shared consumer's own ``max_deliver`` has room for every
  deferral a job can get (``SpawnerSettings.consumer_max_deliver``). The count is deleted once
  the job is settled (acked or terminated);
- a job is deferred at most ``SPAWNER_FAIR_SHARE_MAX_DEFER_SECONDS`` from its first deferral
  (by default the stream's duplicate window, longer than any queue timeout: in practice the
  job's own start deadline ends it first) and never on a delivery that would leave it fewer
  than ``SPAWNER_MAX_DELIVER`` deliveries of the consumer's ``max_deliver``; whenever the bucket
  or the stream cannot be read the job simply starts: fairness is never a reason for a job to
  fail. A waiting user's job
  that nobody can fetch for a while (held by a spawner that died, until its ack wait) holds
  the others back only that long.

Jobs already running are never stopped: a user who took every slot while alone keeps them until
their calls end; each slot freed then goes to the users below their share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from faas_common.contract import (
    EXEC_SUBJECT_PREFIX,
    EXECUTIONS_STREAM,
    FAIR_SHARE_BUCKET,
    Deferral,
    Job,
    SpawnerLoad,
    deferral_key,
    load_key,
)
from faas_common.kvwatch import BucketWatch
from faas_common.nats import NATS_ERRORS
from spawner_service.config import SpawnerSettings

logger = logging.getLogger("spawner.fairness")

STALE_INTERVALS = 3
"""A spawner's load not rewritten for this many intervals is ignored (the spawner is gone)."""
FORGET_TIMEOUT_SECONDS = 2.0
"""Longest a settled job waits for its deferral count to be deleted (best effort)."""


@dataclass(frozen=True, slots=True)
class View:
    """What a fair-share decision looks at."""

    capacity: int
    """Container slots of every live spawner."""
    in_flight: Mapping[str, int]
    """Jobs per user in the stream (queued or running)."""
    running: Mapping[str, int]
    """Jobs per user past the fair-share check on any spawner."""


def share_of(capacity: int, users: int) -> int:
    return max(1, capacity // max(users, 1))


def must_wait(user: str, view: View) -> bool:
    """Whether a job of ``user`` must let another user's job go first."""
    active = {u for u, n in view.in_flight.items() if n > 0}
    active |= {u for u, n in view.running.items() if n > 0}
    active.add(user)
    share = share_of(view.capacity, len(active))
    if view.running.get(user, 0) < share:
        return False
    return any(
        other != user
        and view.in_flight.get(other, 0) > view.running.get(other, 0)
        and view.running.get(other, 0) < share
        for other in active
    )


class Slots(Protocol):
    """The job handler's side of the fair share (``FairShare``, or ``NoFairShare``)."""

    async def admit(self, job: Job, delivered: int | None) -> bool:
        """True: the job may start now and counts as running until ``release``. False: it must
        wait (its deferral is counted): hand it back. ``delivered``: the message's delivery
        count (the last deliveries a consumer allows are never deferred)."""

    def hold(self, user_id: str) -> None:
        """Count a job as running without a decision (a redelivery adopting its container)."""

    def release(self, user_id: str) -> None:
        """A job counted by ``admit`` or ``hold`` is over."""

    async def deferrals(self, execution_id: str) -> int | None:
        """How often the job was handed back for the fair share (None: it cannot be read)."""

    async def forget(self, execution_id: str) -> None:
        """The job is settled: its deferral count may go (best effort, never raises)."""


class NoFairShare:
    """Jobs start in arrival order (``SPAWNER_FAIR_SHARE_MAX_DEFER_SECONDS=0``, unit tests)."""

    async def admit(self, job: Job, delivered: int | None) -> bool:
        return True

    def hold(self, user_id: str) -> None:
        return None

    def release(self, user_id: str) -> None:
        return None

    async def deferrals(self, execution_id: str) -> int | None:
        return 0

    async def forget(self, execution_id: str) -> None:
        return None


Board = dict[str, tuple[SpawnerLoad, float]]
"""Other spawners' loads by key, each with when (epoch seconds) it was written."""


class LoadBoard(BucketWatch[Board]):
    """The other spawners' ``load.*`` entries of the ``fair_share`` bucket, watched."""

    bucket = FAIR_SHARE_BUCKET
    keys = "load.>"

    def __init__(
        self,
        kv: KeyValue,
        *,
        own_key: str,
        clock: Callable[[], float] = time.time,
        restart_delay: float = 1.0,
    ) -> None:
        super().__init__(kv, restart_delay=restart_delay)
        self._own_key = own_key
        self._clock = clock

    def empty(self) -> Board:
        return {}

    def apply_entry(self, snapshot: Board, entry: KeyValue.Entry) -> None:
        created: object = entry.created  # a datetime, though nats-py types it as an int
        if not isinstance(created, datetime) or entry.operation is not None:
            super().apply_entry(snapshot, entry)
            return
        self._record(snapshot, entry.key, entry.value, created.timestamp())

    def apply(self, snapshot: Board, key: str, value: bytes | None) -> None:
        """An entry without its write time (or a removal) counts as written now."""
        self._record(snapshot, key, value, self._clock())

    def _record(self, snapshot: Board, key: str, value: bytes | None, written_at: float) -> None:
        if key == self._own_key:
            return
        if not value:
            snapshot.pop(key, None)
            return
        try:
            load = SpawnerLoad.model_validate_json(value)
        except ValueError:
            return
        snapshot[key] = (load, written_at)

    def live(self, max_age: float) -> list[SpawnerLoad]:
        """The loads written at most ``max_age`` seconds ago."""
        oldest = self._clock() - max_age
        return [load for load, written in self.snapshot.values() if written >= oldest]


class FairShare:
    """``Slots`` over the ``fair_share`` bucket and the stream's per-user counts. ``run`` keeps
    this spawner's load written and the others' watched; ``capacity`` is this spawner's own."""

    def __init__(
        self,
        settings: SpawnerSettings,
        *,
        js: JetStreamContext,
        kv: KeyValue,
        capacity: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._js = js
        self._kv = kv
        self._capacity = capacity
        self._clock = clock
        self._running: Counter[str] = Counter()
        self._key = load_key(settings.instance_id)
        self.board = LoadBoard(
            kv, own_key=self._key, clock=clock, restart_delay=settings.load_interval_seconds
        )
        self._watching = False
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()

    # --- decisions ----------------------------------------------------------------------------

    async def admit(self, job: Job, delivered: int | None) -> bool:
        async with self._lock:  # one decision at a time: each sees the jobs admitted before it
            if (
                self._may_defer(delivered)
                and await self._must_wait(job)
                and await self._count_deferral(job.execution_id)
            ):
                return False
            self.hold(job.user_id)
            return True

    def _may_defer(self, delivered: int | None) -> bool:
        """Whether a deferral leaves the job its ``SPAWNER_MAX_DELIVER`` deliveries within the
        consumer's ``max_deliver``."""
        s = self.settings
        return delivered is not None and delivered + s.max_deliver < s.consumer_max_deliver

    def hold(self, user_id: str) -> None:
        self._running[user_id] += 1
        self._changed.set()

    def release(self, user_id: str) -> None:
        self._running[user_id] -= 1
        if self._running[user_id] <= 0:
            del self._running[user_id]
        self._changed.set()

    async def deferrals(self, execution_id: str) -> int | None:
        try:
            found = await self._deferral(execution_id)
        except NATS_ERRORS as exc:
            logger.warning("cannot read a deferral", extra={"error": repr(exc)})
            return None
        return found[0].count if found is not None else 0

    async def forget(self, execution_id: str) -> None:
        try:
            await asyncio.wait_for(
                self._kv.purge(deferral_key(execution_id)), FORGET_TIMEOUT_SECONDS
            )
        except NATS_ERRORS as exc:
            logger.warning("cannot delete a deferral count", extra={"error": repr(exc)})

    def running(self) -> Counter[str]:
        """Jobs per user past the check on every live spawner, this one included."""
        total = Counter(self._running)
        for load in self._live_others():
            total.update(load.running)
        return total

    def capacity(self) -> int:
        return self._capacity() + sum(load.capacity for load in self._live_others())

    async def _must_wait(self, job: Job) -> bool:
        running = self.running()
        capacity = self.capacity()
        if running[job.user_id] < share_of(capacity, 2):
            return False  # below the share even with one other user: no need to look
        try:
            in_flight = await self._in_flight()
        except NATS_ERRORS as exc:
            logger.warning("cannot read the queue for the fair share", extra={"error": repr(exc)})
            return False
        return must_wait(job.user_id, View(capacity, in_flight, running))

    async def _in_flight(self) -> dict[str, int]:
        prefix = f"{EXEC_SUBJECT_PREFIX}."
        info = await self._js.stream_info(EXECUTIONS_STREAM, subjects_filter=f"{prefix}>")
        subjects = info.state.subjects or {}
        return {subject.removeprefix(prefix): count for subject, count in subjects.items()}

    async def _deferral(self, execution_id: str) -> tuple[Deferral, int] | None:
        """The job's deferral count and its revision; None when it has none. Raises what a
        NATS call raises."""
        try:
            entry = await self._kv.get(deferral_key(execution_id))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if entry.value is None or entry.revision is None:
            return None
        return Deferral.model_validate_json(entry.value), entry.revision

    async def _count_deferral(self, execution_id: str) -> bool:
        """Count one more deferral of the job; False when it may not (or cannot) be deferred:
        its deferral time is used up, or the bucket does not answer."""
        now = self._clock()
        key = deferral_key(execution_id)
        try:
            found = await self._deferral(execution_id)
            if found is None:
                await self._kv.create(
                    key, Deferral(first_at=now, count=1).model_dump_json().encode()
                )
            elif now - found[0].first_at > self.settings.fair_share_max_defer_seconds:
                return False
            else:
                counted = found[0].model_copy(update={"count": found[0].count + 1})
                await self._kv.update(key, counted.model_dump_json().encode(), last=found[1])
        except NATS_ERRORS as exc:
            logger.warning("cannot count a deferral: job starts", extra={"error": repr(exc)})
            return False
        return True

    # --- the load board -----------------------------------------------------------------------

    def _live_others(self) -> list[SpawnerLoad]:
        return self.board.live(STALE_INTERVALS * self.settings.load_interval_seconds)

    def own_load(self) -> SpawnerLoad:
        return SpawnerLoad(
            instance_id=self.settings.instance_id,
            capacity=self._capacity(),
            running=dict(self._running),
        )

    async def rewatch(self) -> None:
        """After a NATS reconnect: watch the other spawners' loads anew (while ``run`` runs)."""
        if self._watching:
            await self.board.restart()

    async def run(self) -> None:
        """Write this spawner's load and watch the others' until cancelled; then remove it."""
        self._watching = True
        await self.board.start(wait=0)
        try:
            await self._publish_forever()
        finally:
            self._watching = False
            await self.board.stop()
            with contextlib.suppress(*NATS_ERRORS):
                await asyncio.wait_for(self._kv.delete(self._key), 2.0)

    async def _publish_forever(self) -> None:
        interval = self.settings.load_interval_seconds
        while True:
            self._changed.clear()
            try:
                await self._kv.put(self._key, self.own_load().model_dump_json().encode())
            except NATS_ERRORS as exc:
                logger.warning("cannot write this spawner's load", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), interval)
