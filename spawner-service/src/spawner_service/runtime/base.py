"""The container runtime seam: what the worker needs from whatever runs function containers.

One call runs one activation to its end and reports how it ended; another takes over the
container of an earlier delivery whose spawner died. Everything engine-specific (pulling,
hardening, output capture, kill on timeout, removal) stays behind them. The spec carries
what is known before the argument (image, env, limits) apart from the argument itself, so a
prewarm pool (a container created and started early, the argument written to a shim over stdin)
can implement the same protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from faas_common.contract import PHASES

Outcome = Literal[
    "succeeded",
    "function_failed",
    "timed_out",
    "output_too_large",
    "image_unavailable",
    "runtime_unavailable",
]
"""How an activation ended:

- ``succeeded``: the function exited 0 and its stdout fit the cap;
- ``function_failed``: non-zero exit (also OOM kill, failed start: no such executable);
- ``timed_out``: still running at its timeout, killed;
- ``output_too_large``: stdout went over the cap, killed (no partial result is returned);
- ``image_unavailable``: the image is missing and cannot be pulled, or its reference is invalid;
- ``runtime_unavailable``: the engine could not be reached or failed. Retried (the job is
  redelivered) only when the container was never started (``RunResult.started`` false).
"""

RUN_PHASES = PHASES[1:]
"""Keys of ``RunResult.timings`` (milliseconds): the contract's ``PHASES`` after ``queue``; a
phase that did not happen is absent."""


@dataclass(frozen=True)
class RunSpec:
    execution_id: str
    image: str
    argument: str
    """The container's last argv element (``docker run IMAGE ARGUMENT``)."""
    env: Mapping[str, str]
    timeout_seconds: float
    memory_mb: int
    deadline: float
    """Epoch seconds by which the activation should be over; containers are labelled with it
    (never earlier than their creation plus the timeout) so any spawner can reap leftovers."""
    function: str = ""
    """The function's key in the ``functions`` bucket: a change of it drains its prewarmed
    containers."""


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    exit_code: int | None = None
    stdout: bytes = b""
    """The whole stdout; empty unless the function ran to its end within the cap."""
    stderr_tail: bytes = b""
    """The last bytes of stderr (at most the configured tail)."""
    detail: str | None = None
    """A sentence for people: why it failed (timeout, OOM kill, pull error, ...)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Milliseconds per phase (see ``RUN_PHASES``)."""
    started: bool = False
    """Whether the container's start was requested: from then on the function may have run (and
    had its effects), so an activation that failed afterwards is never run again."""


class ContainerRuntime(Protocol):
    async def run(self, spec: RunSpec) -> RunResult:
        """Run one activation to its end; never raises for a function's or an engine's failure
        (those are outcomes). The container is gone when this returns, even when cancelled, or
        (a prewarmed container's) on its way out: removed off the request path once the call is
        ``settled`` (or a few seconds later), before ``close`` returns."""

    async def adopt(self, spec: RunSpec) -> RunResult | None:
        """Take over the container a previous delivery of ``spec.execution_id`` started on this
        engine (its spawner died): wait for it to exit, no later than its deadline (then it is
        killed: ``timed_out``), collect its stdout and stderr with the same cap, tail and outcomes
        as ``run``, and remove it. Every result has ``started`` set, also ``runtime_unavailable``
        when the engine fails or cannot be reached (the function may have run: never run it
        again). None when there is no such container, or only one that never started (it is
        removed): nothing ran here, the caller may run the job. Never raises for an engine's
        failure; the container is gone when this returns, even when cancelled."""

    def settled(self, execution_id: str) -> None:
        """The activation's final record is stored and replied: the work ``run`` put off so as
        not to slow that down (a prewarmed container's removal, the parking of its
        replacement) starts now. A runtime that puts nothing off does nothing."""

    async def remove_stale(self, now: float) -> int:
        """Remove leftover managed containers whose deadline passed long before ``now``
        (epoch seconds); return how many were removed. Live work is never touched, and an
        exited container stays through the grace, so that a redelivery can adopt it."""

    async def ping(self) -> bool:
        """Whether the engine answers right now; returns within a few seconds, whatever the
        engine does (hung or gone)."""

    async def close(self) -> None:
        """Release connections; runs no longer start afterwards."""
