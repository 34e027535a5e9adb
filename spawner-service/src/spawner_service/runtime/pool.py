"""The prewarm pool's bookkeeping: which containers are parked, and how many each shape wants.

A *shape* is what a container is created with before its argument is known: the image reference,
the function's env and its memory limit (every other option is the spawner's). Containers of one
shape are interchangeable; each serves exactly one call and is then removed.

Sizing follows demand, per shape:

- a shape is parked for only once it had ``pool_park_after_calls`` calls within
  ``pool_idle_seconds`` of each other (a function called once would only have its park compete
  with the cold starts of other calls);
- such a shape, called within the last ``pool_idle_seconds``, wants as many parked containers
  as it had calls in flight at its peak over that window, or as its recent call rate uses up
  while one container is being parked (calls per second over the last ``RATE_WINDOW`` seconds
  times the time a park takes), whichever is more, at least one and at most
  ``pool_max_per_function``; a shape not called for that long wants none (its parked
  containers are evicted), so nothing stays parked for functions nobody calls;
- all shapes together hold at most ``pool_max_parked`` containers and ``pool_max_memory_mb`` of
  memory limits; a shape that wants one more when the pool is full takes the place of a parked
  container of the shape called least recently, if that shape was called before it;
- a parked container older than the idle window is replaced (its deadline label, which lets any
  spawner reap it, counts from its creation);
- a change of a function (its entry in the ``functions`` bucket) drains the shapes it was called
  with: their parked containers go, parks under way for them are discarded when they land, and
  they want none until they are called again.

Everything here is synchronous and engine-free; ``runtime/prewarm.py`` does the engine's part.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from spawner_service.config import SpawnerSettings
from spawner_service.runtime.base import RunSpec

RATE_WINDOW = 10.0
"""Seconds of calls a shape's call rate is measured over."""
PARK_SECONDS = 0.3
"""What a park is assumed to take until one was measured (create and start on an idle engine)."""


@dataclass(frozen=True)
class Shape:
    image: str
    env: tuple[tuple[str, str], ...]
    memory_mb: int

    @classmethod
    def of(cls, spec: RunSpec) -> Shape:
        return cls(spec.image, tuple(sorted(spec.env.items())), spec.memory_mb)


@dataclass
class Parked:
    """A started container of ``shape`` whose shim waits for its frame on ``sock``."""

    container_id: str
    shape: Shape
    sock: Any
    """The attach socket (stdin, stdout, stderr), opened before the start."""
    entrypoint: list[str]
    """The image's ENTRYPOINT: the function's argv is it plus the argument."""
    image_id: str
    parked_at: float
    """``time.monotonic()`` when it was ready."""


@dataclass
class _ShapeState:
    parked: deque[Parked] = field(default_factory=deque)
    parking: int = 0
    stale: int = 0
    """Parks under way from before a drain: removed when they land, never waited for."""
    in_use: int = 0
    peak: int = 0
    peak_at: float = 0.0
    last_call: float = -math.inf
    recent: deque[float] = field(default_factory=deque)
    """When its last ``pool_park_after_calls`` calls started."""
    generation: int = 0
    functions: set[str] = field(default_factory=set)
    calls: deque[float] = field(default_factory=deque)
    """When its calls of the last ``RATE_WINDOW`` seconds started."""


class Pool:
    """Parked containers per shape, and the decisions of what to park or evict next."""

    def __init__(
        self, settings: SpawnerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._shapes: dict[Shape, _ShapeState] = {}
        self.park_seconds = PARK_SECONDS
        """How long a park takes, a moving average of the measured ones."""

    # --- calls ---------------------------------------------------------------------------

    def called(self, shape: Shape, function: str = "") -> _ShapeState:
        """A call of ``shape`` starts (``function``: the function's key, for draining); ``done``
        must follow."""
        now = self.clock()
        state = self._shapes.setdefault(shape, _ShapeState())
        state.last_call = now
        state.calls.append(now)
        state.recent.append(now)
        while len(state.recent) > self.settings.pool_park_after_calls:
            state.recent.popleft()
        state.in_use += 1
        if function:
            state.functions.add(function)
        if state.in_use >= state.peak or now - state.peak_at > self.settings.pool_idle_seconds:
            state.peak, state.peak_at = state.in_use, now
        return state

    def take(self, shape: Shape, function: str = "") -> Parked | None:
        """A call of ``shape`` starts (``called``): its freshest parked container if any."""
        self.called(shape, function)
        return self.pop(shape)

    def pop(self, shape: Shape) -> Parked | None:
        """The freshest parked container of ``shape`` (for a call already ``called``), if any."""
        state = self._shapes.get(shape)
        if state is None or not state.parked:
            return None
        if self._too_old(state.parked[-1], self.clock()):
            return None  # all are: the next sweep evicts them
        return state.parked.pop()

    def parking_of(self, shape: Shape) -> int:
        """Parks of ``shape`` under way (none from before a drain: those are not kept)."""
        state = self._shapes.get(shape)
        return state.parking if state is not None else 0

    def done(self, shape: Shape) -> None:
        state = self._shapes.get(shape)
        if state is not None and state.in_use > 0:
            state.in_use -= 1

    # --- parks ---------------------------------------------------------------------------

    def wanted(self) -> tuple[list[tuple[Shape, int]], list[Parked]]:
        """Parks to start now, as ``(shape, generation)`` (each counted as under way), and the
        parked containers to remove to make room for them."""
        now = self.clock()
        parks: list[tuple[Shape, int]] = []
        evicted: list[Parked] = []
        for shape, state in sorted(self._shapes.items(), key=lambda i: -i[1].last_call):
            while len(state.parked) + state.parking < self._target(state, now):
                if not self._room(shape, evicted):
                    break  # a less recent shape may still fit (a smaller memory limit)
                state.parking += 1
                parks.append((shape, state.generation))
        return parks, evicted

    def landed(self, parked: Parked, generation: int, took: float) -> bool:
        """A park started by ``wanted`` is ready after ``took`` seconds; False when it is no
        longer wanted (its shape was drained, or went idle, or the pool is full): the caller
        removes it."""
        self.park_seconds += (took - self.park_seconds) / 8
        state = self._shapes.get(parked.shape)
        if state is None or not self._park_ended(state, generation):
            return False
        if not self._target(state, self.clock()):
            return False
        if not self._fits(parked.shape):
            return False
        state.parked.append(parked)
        return True

    def failed(self, shape: Shape, generation: int) -> None:
        """A park started by ``wanted`` did not land."""
        state = self._shapes.get(shape)
        if state is not None:
            self._park_ended(state, generation)

    @staticmethod
    def _park_ended(state: _ShapeState, generation: int) -> bool:
        """A park of ``generation`` is no longer under way; whether it was of the current one."""
        if generation != state.generation:
            state.stale -= 1
            return False
        state.parking -= 1
        return True

    # --- removals ------------------------------------------------------------------------

    def expired(self) -> list[Parked]:
        """Parked containers to remove now: of idle shapes, or older than the idle window; idle
        shapes with nothing in flight are forgotten."""
        now = self.clock()
        gone: list[Parked] = []
        for shape, state in list(self._shapes.items()):
            idle = now - state.last_call > self.settings.pool_idle_seconds
            keep = [p for p in state.parked if not idle and not self._too_old(p, now)]
            gone += [p for p in state.parked if p not in keep]
            state.parked = deque(keep)
            if idle and not state.in_use and not state.parking and not state.stale:
                del self._shapes[shape]
        return gone

    def drain(self, function: str) -> list[Parked]:
        """``function`` changed: remove the parked containers of the shapes it was called with."""
        gone: list[Parked] = []
        for state in self._shapes.values():
            if function in state.functions:
                gone += self._drain(state)
        return gone

    def drain_all(self) -> list[Parked]:
        return [p for state in self._shapes.values() for p in self._drain(state)]

    @staticmethod
    def _drain(state: _ShapeState) -> list[Parked]:
        """The shape's parked containers, out; its demand forgotten (it wants none until it is
        called again: a changed function's calls have another shape)."""
        state.generation += 1
        state.stale, state.parking = state.stale + state.parking, 0
        state.last_call, state.peak = -math.inf, 0
        state.calls.clear()
        state.recent.clear()
        gone = list(state.parked)
        state.parked.clear()
        return gone

    # --- views ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Parked]:
        for state in self._shapes.values():
            yield from state.parked

    def __len__(self) -> int:
        return self._count()

    def parked_of(self, shape: Shape) -> int:
        state = self._shapes.get(shape)
        return len(state.parked) if state is not None else 0

    # --- rules ---------------------------------------------------------------------------

    def _target(self, state: _ShapeState, now: float) -> int:
        idle = self.settings.pool_idle_seconds
        if now - state.last_call > idle or not self._repeated(state):
            return 0
        while state.calls and state.calls[0] < now - RATE_WINDOW:
            state.calls.popleft()
        rate = len(state.calls) / RATE_WINDOW
        wanted = max(1, state.peak, math.ceil(rate * self.park_seconds))
        return min(self.settings.pool_max_per_function, wanted)

    def _repeated(self, state: _ShapeState) -> bool:
        """Whether the shape had ``pool_park_after_calls`` calls within the idle window."""
        recent, enough = state.recent, self.settings.pool_park_after_calls
        return len(recent) >= enough and recent[-1] - recent[0] <= self.settings.pool_idle_seconds

    def _too_old(self, parked: Parked, now: float) -> bool:
        return now - parked.parked_at > self.settings.pool_idle_seconds

    def _count(self) -> int:
        return sum(len(s.parked) + s.parking + s.stale for s in self._shapes.values())

    def _memory(self) -> int:
        return sum(
            (len(s.parked) + s.parking + s.stale) * shape.memory_mb
            for shape, s in self._shapes.items()
        )

    def _memory_cap(self) -> int:
        return self.settings.pool_max_memory_mb

    def _fits(self, shape: Shape) -> bool:
        return (
            self._count() < self.settings.pool_max_parked
            and self._memory() + shape.memory_mb <= self._memory_cap()
        )

    def _room(self, shape: Shape, evicted: list[Parked]) -> bool:
        """Whether one more container of ``shape`` fits, evicting for it from shapes called
        less recently (into ``evicted``) when the pool is full; nothing is evicted when it
        would not fit even then."""
        if shape.memory_mb > self._memory_cap():
            return False
        mine = self._shapes[shape].last_call
        taken: list[Parked] = []
        while not self._fits(shape):
            victims = [
                (s.last_call, other)
                for other, s in self._shapes.items()
                if other != shape and s.parked and s.last_call < mine
            ]
            if not victims:
                for parked in reversed(taken):  # back where they were, oldest first
                    self._shapes[parked.shape].parked.appendleft(parked)
                return False
            _, coldest = min(victims, key=lambda v: v[0])
            taken.append(self._shapes[coldest].parked.popleft())
        evicted += taken
        return True
