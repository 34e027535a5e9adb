"""Phase timings of one activation, rendered as a ``Server-Timing`` header.

The record's phases (measured by the spawner: queue, pull, create, start, run, remove) come
first, in that order, then the publisher's own: resolve (function lookup), enqueue (record +
JetStream publish) and total (the whole request as this service saw it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from faas_common.contract import PHASES, is_id

PUBLISHER_PHASES = ("resolve", "enqueue")


class PhaseTimer:
    """Measures named phases (milliseconds) of one request from its creation on."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started = clock()
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = self._clock()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + (self._clock() - started) * 1000

    def total_ms(self) -> float:
        return (self._clock() - self._started) * 1000

    def header(self, record_timings: Mapping[str, float] | None = None) -> str:
        """The ``Server-Timing`` value: the record's phases, then this service's, then total."""
        return server_timing(record_timings or {}, {**self.phases, "total": self.total_ms()})


def server_timing(record_timings: Mapping[str, float], own: Mapping[str, float]) -> str:
    """``queue;dur=1.2, run;dur=300.5, ..., total;dur=305.0`` (names a header may carry only)."""
    ordered: list[tuple[str, float]] = []
    extra = sorted(set(record_timings) - {*PHASES, *own})
    for name in (*PHASES, *extra):
        if name in record_timings:
            ordered.append((name, record_timings[name]))
    for name in (*PUBLISHER_PHASES, *sorted(set(own) - {*PUBLISHER_PHASES, "total"}), "total"):
        if name in own:
            ordered.append((name, own[name]))
    return ", ".join(
        f"{name};dur={value:.1f}"
        for name, value in ordered
        if is_id(name) and isinstance(value, int | float) and math.isfinite(value) and value >= 0
    )
