"""The image sweep's loop: at once, then every interval, with the clock's time and the setting's
days; a failed sweep is logged and the next one still runs."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from spawner_service.runtime.image_sweep import DAY, sweep_forever


class Sweeps:
    def __init__(self, *, fail_first: bool) -> None:
        self.calls: list[tuple[float, float]] = []
        self.fail_first = fail_first
        self.third = asyncio.Event()

    async def sweep_images(self, now: float, unused_for: float) -> int:
        self.calls.append((now, unused_for))
        if len(self.calls) == 3:
            self.third.set()
        if self.fail_first and len(self.calls) == 1:
            raise RuntimeError("engine gone")
        return 1


@pytest.mark.timeout(10)
async def test_the_sweep_runs_at_once_then_every_interval_and_outlives_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sweeps = Sweeps(fail_first=True)
    times = iter([100.0, 200.0, 300.0, 400.0, 500.0])
    loop = asyncio.create_task(sweep_forever(sweeps, 1.5, clock=lambda: next(times), interval=0))
    try:
        await sweeps.third.wait()
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert sweeps.calls[:3] == [(100.0, 1.5 * DAY), (200.0, 1.5 * DAY), (300.0, 1.5 * DAY)]
    assert "image sweep failed" in caplog.text
