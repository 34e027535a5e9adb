"""Fair share of the running slots between users (tenants).

All spawners share one FIFO consumer, so without this a user who queues many long calls holds
every slot while another user's call waits behind them. Instead:

- every spawner rewrites its ``SpawnerLoad`` (its capacity and its running jobs per user) in the
  ``fair_share`` bucket every ``SPAWNER_LOAD_INTERVAL_SECONDS`` and whenever it changes, and
  watches the other spawners' entries (one not rewritten for 3 intervals is ignored: that
  spawner is gone);
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
  deferral a job can get (``SpawnerSettings.consumer_max_deliver``);
- a job is deferred at most ``SPAWNER_FAIR_SHARE_MAX_DEFER_SECONDS`` from its first deferral
  (by default the stream's duplicate window, longer than any queue timeout: in practice the
  job's own start deadline ends it first), and whenever the bucket or the stream cannot be read
  the job simply starts: fairness is never a reason for a job to fail. A waiting user's job
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
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from faas_common.contract import (
    EXEC_SUBJECT_PREFIX,
    EXECUTIONS_STREAM,
    Deferral,
    Job,
    SpawnerLoad,
    deferral_key,
    load_key,
)
from faas_common.nats import NATS_ERRORS
from spawner_service.config import SpawnerSettings

logger = logging.getLogger("spawner.fairness")

STALE_INTERVALS = 3
"""A spawner's load not rewritten for this many intervals is ignored (the spawner is gone)."""


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

    async def admit(self, job: Job) -> bool:
        """True: the job may start now and counts as running until ``release``. False: it must
        wait (its deferral is counted): hand it back."""

    def hold(self, user_id: str) -> None:
        """Count a job as running without a decision (a redelivery adopting its container)."""

    def release(self, user_id: str) -> None:
        """A job counted by ``admit`` or ``hold`` is over."""

    async def deferrals(self, execution_id: str) -> int:
        """How often the job was handed back for the fair share (0 when unknown)."""


class NoFairShare:
    """Jobs start in arrival order (``SPAWNER_FAIR_SHARE_MAX_DEFER_SECONDS=0``, unit tests)."""

    async def admit(self, job: Job) -> bool:
        return True

    def hold(self, user_id: str) -> None:
        return None

    def release(self, user_id: str) -> None:
        return None

    async def deferrals(self, execution_id: str) -> int:
        return 0


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
        self._others: dict[str, tuple[SpawnerLoad, float]] = {}
        """Other spawners' loads and when (monotonic) each was last heard of."""
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._key = load_key(settings.instance_id)

    # --- decisions ----------------------------------------------------------------------------

    async def admit(self, job: Job) -> bool:
        async with self._lock:  # one decision at a time: each sees the jobs admitted before it
            if await self._must_wait(job) and await self._count_deferral(job.execution_id):
                return False
            self.hold(job.user_id)
            return True

    def hold(self, user_id: str) -> None:
        self._running[user_id] += 1
        self._changed.set()

    def release(self, user_id: str) -> None:
        self._running[user_id] -= 1
        if self._running[user_id] <= 0:
            del self._running[user_id]
        self._changed.set()

    async def deferrals(self, execution_id: str) -> int:
        found = await self._deferral(execution_id)
        return found[0].count if found is not None else 0

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
        try:
            entry = await self._kv.get(deferral_key(execution_id))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        except NATS_ERRORS as exc:
            logger.warning("cannot read a deferral", extra={"error": repr(exc)})
            return None
        if entry.value is None or entry.revision is None:
            return None
        return Deferral.model_validate_json(entry.value), entry.revision

    async def _count_deferral(self, execution_id: str) -> bool:
        """Count one more deferral of the job; False when it may not (or cannot) be deferred:
        its deferral time is used up, or the bucket does not answer."""
        now = self._clock()
        found = await self._deferral(execution_id)
        if (
            found is not None
            and now - found[0].first_at > self.settings.fair_share_max_defer_seconds
        ):
            return False
        key = deferral_key(execution_id)
        try:
            if found is None:
                await self._kv.create(
                    key, Deferral(first_at=now, count=1).model_dump_json().encode()
                )
            else:
                counted = found[0].model_copy(update={"count": found[0].count + 1})
                await self._kv.update(key, counted.model_dump_json().encode(), last=found[1])
        except NATS_ERRORS as exc:
            logger.warning("cannot count a deferral: job starts", extra={"error": repr(exc)})
            return False
        return True

    # --- the load board -----------------------------------------------------------------------

    def _live_others(self) -> list[SpawnerLoad]:
        oldest = time.monotonic() - STALE_INTERVALS * self.settings.load_interval_seconds
        return [load for load, heard in self._others.values() if heard >= oldest]

    def own_load(self) -> SpawnerLoad:
        return SpawnerLoad(
            instance_id=self.settings.instance_id,
            capacity=self._capacity(),
            running=dict(self._running),
        )

    async def run(self) -> None:
        """Write this spawner's load and watch the others' until cancelled; then remove it."""
        watching = asyncio.create_task(self._watch_forever())
        try:
            await self._publish_forever()
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
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

    async def _watch_forever(self) -> None:
        while True:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken watch is set up again
                logger.warning("spawner load watch failed", extra={"error": repr(exc)})
            await asyncio.sleep(self.settings.load_interval_seconds)

    async def _watch(self) -> None:
        watcher = await self._kv.watch("load.>")
        try:
            async for entry in watcher:
                if entry is not None:
                    self._heard(entry.key, entry.value)
        finally:
            with contextlib.suppress(*NATS_ERRORS):
                await watcher.stop()  # type: ignore[no-untyped-call]

    def _heard(self, key: str, value: bytes | None) -> None:
        if key == self._key:
            return
        if not value:
            self._others.pop(key, None)
            return
        try:
            load = SpawnerLoad.model_validate_json(value)
        except ValueError:
            return
        self._others[key] = (load, time.monotonic())
