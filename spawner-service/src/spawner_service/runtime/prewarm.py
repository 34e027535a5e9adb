"""The prewarm pool's engine side: parked containers, the hand-off, and their removal.

A parked container is created with every option of a cold one (``DockerRuntime.hardened_options``)
except its command: its entrypoint is the static shim (``spawner-service/shim/shim.c``), mounted
read-only at ``/.faas``; stdin stays open; one more pid than the limit (the shim's own). The
spawner attaches to its stdin, stdout and stderr *before* starting it, then parks it: the shim
waits on stdin. A call of the same shape (``runtime/pool.py``) takes it:

1. rename it ``faas-<execution id>-<random>-<deadline>``: from then on it belongs to that
   execution, and a spawner that adopts the job after this one died finds it by name, with its
   deadline (a container's labels cannot change). The request is wholly with the engine before
   the next step, its answer is read off the call's path (``runtime/rename.py``);
2. write the frame (the image's ENTRYPOINT plus the argument; env and working directory are the
   container's own, as the engine made them from the image and the function) on its stdin;
3. read its output like a cold run's, the shim's records decoded (``ShimCapture``): the result is
   there the moment the shim reports the function's exit, without waiting for the engine's
   notice of the container's end; the timeout counts from the hand-off;
4. remove it off the request path, and park a new one in its place (``Prewarm.refill``), once
   the call is settled (its result stored and replied: ``settled``), so that their engine work
   does not slow that down; the parks count as under way from the call's end.

A call with no parked container to take (a miss) gets one started for it the same way
(``Prewarm._miss``), handed to it at once: its result, too, comes with the shim's end record and
its removal after the call. A miss whose image is not on the engine (it must be pulled), or whose
container the engine refuses, runs cold (``DockerRuntime.run``), and so does a call whose
container could not take it (gone, its stdin closed, the argv cannot be written): nothing ran
in it, it is removed.

The shim is the spawner's own file: bind-mounted from ``SPAWNER_POOL_SHIM``, or, for a spawner
in a container, copied into the named volume ``SPAWNER_POOL_SHIM_VOLUME`` that every function
container mounts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import os
import platform
import shutil
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from docker.errors import APIError, DockerException, NotFound
from docker.types import Mount

from spawner_service.config import SpawnerSettings
from spawner_service.runtime.base import RunResult, RunSpec
from spawner_service.runtime.docker import (
    API_TIMEOUT,
    DEADLINE_LABEL,
    KILL_GRACE,
    PARKED_BY_LABEL,
    POOL_LABEL,
    DockerRuntime,
    EngineUnavailable,
    _Activation,
    _close_attach,
    _finish,
    _ms,
    _outcome_of,
    _pump,
    _said,
    deadline_label,
    pooled_name,
)
from spawner_service.runtime.images import ImageUnavailable, declared_volumes
from spawner_service.runtime.pool import Parked, Pool, Shape
from spawner_service.runtime.rename import engine_socket, send_rename
from spawner_service.runtime.shim import ShimCapture, ShimStatus, encode_frame

logger = logging.getLogger("spawner.pool")

SHIM_DIR = "/.faas"
SHIM_NAME = "faas-shim"
SHIM_TARGET = f"{SHIM_DIR}/{SHIM_NAME}"
SHIM_LINGER = "--linger"
"""The shim's argument: after the end record it stays until its stdin ends (``shim/shim.c``)."""
SOURCE_BUILD = Path(__file__).resolve().parents[3] / "shim" / "build"
ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
PARK_MARGIN_SECONDS = 2 * API_TIMEOUT + 1
"""Room in a parked container's deadline label for its create and start (each within the API
timeout): it is never taken once its label says any spawner may reap it."""
SETTLE_SECONDS = 2.0
"""Longest the work a call leads to (its container's removal, the refill) waits for ``settled``."""
REPLY_GRACE_SECONDS = 0.02
"""After ``settled``, time for the reply to reach its caller before the engine work begins."""
PARK_YIELD_SECONDS = 2.0
"""Longest a park waits for the cold runs under way to end before it starts anyway."""


class NotOnEngine(LookupError):
    """The image is not on the engine (any more): a park is given up, a miss runs cold (which
    pulls it)."""


PARK_ERRORS = (EngineUnavailable, ImageUnavailable, DockerException, OSError, LookupError)
"""What stops a container from being parked (or started for a miss: then the call runs cold)."""
SHIM_NOT_RUN = frozenset({1, 126, 127})
"""A container's exit statuses when its init could not execute the shim at all (tini's); the
shim never exits with them itself."""
REFUSED = frozenset(range(ShimStatus.TRUNCATED, ShimStatus.RELAY_FAILED))
"""The shim's own exit statuses: it refused the frame or could not set up; nothing ran."""


def shim_path(settings: SpawnerSettings) -> Path:
    """The shim binary this spawner hands to its containers."""
    if settings.pool_shim:
        return Path(settings.pool_shim)
    return SOURCE_BUILD / f"faas-shim-{ARCHES.get(platform.machine().lower(), 'x86_64')}"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install_shim(settings: SpawnerSettings) -> None:
    """For ``SPAWNER_POOL_SHIM_VOLUME``: put the shim into the volume's directory (replacing a
    different one atomically), where the function containers find it."""
    source = shim_path(settings)
    target = Path(settings.pool_shim_dir) / SHIM_NAME
    if target.exists() and _digest(target) == _digest(source):
        return
    # Every spawner of a host shares the volume (and may be pid 1 in its container): a name of
    # its own for the partial copy, then one atomic rename.
    partial = target.with_name(f".{SHIM_NAME}.{os.urandom(8).hex()}")
    shutil.copyfile(source, partial)
    partial.chmod(0o755)
    partial.replace(target)
    logger.info("shim installed", extra={"volume": settings.pool_shim_volume})


def shim_mount(settings: SpawnerSettings) -> Mount:
    if settings.pool_shim_volume:
        return Mount(SHIM_DIR, settings.pool_shim_volume, type="volume", read_only=True)
    return Mount(SHIM_TARGET, str(shim_path(settings)), type="bind", read_only=True)


def _send_blocking(sock: Any, data: bytes) -> None:
    getattr(sock, "_sock", sock).sendall(data)


def _send_at_once(sock: Any, data: bytes) -> int:
    """Of ``data``, what the attach socket takes now without blocking (on the event loop: a
    frame usually fits in the socket's buffer, and a thread hop costs about a millisecond).
    ``OSError`` when the socket is broken."""
    raw = getattr(sock, "_sock", sock)
    if type(raw) is not socket.socket:
        return 0  # another transport (TLS, SSH): all of it on the thread pool
    try:
        return raw.send(data, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return 0


def _create_blocking(client: Any, options: dict[str, Any]) -> str:
    container_id: str = client.containers.create(**options).id
    return container_id


def _remove_blocking(client: Any, container_id: str) -> None:
    with contextlib.suppress(NotFound):
        client.api.remove_container(container_id, force=True, v=True)


class HandOff(_Activation):
    """One call on a parked container: rename, frame, read the shim's records. None from
    ``execute`` when the container could not take the call (nothing ran: run it cold)."""

    def __init__(
        self,
        runtime: DockerRuntime,
        client: Any,
        spec: RunSpec,
        parked: Parked,
        timings: dict[str, float],
        phase: str,
    ) -> None:
        super().__init__(runtime, client, spec, timings)
        self.parked = parked
        self.phase = phase
        """The phase the hand-off counts in: ``pool`` for a parked container (a hit, with the
        wait for its landing), ``start`` for one started for this call."""
        self.container_id = parked.container_id
        self.capture: ShimCapture = ShimCapture(
            stdout_limit=self.settings.output_limit_bytes, stderr_tail=self.settings.log_tail_bytes
        )
        self.renaming: asyncio.Task[None] | None = None
        """The engine's answer to the rename, when it is read off the call's path."""

    async def execute(self) -> RunResult | None:
        spec, parked = self.spec, self.parked
        argv = [*parked.entrypoint, spec.argument]
        if not argv[0]:
            return None  # no program to name: the cold path says how the engine fails it
        started = time.monotonic()
        name = pooled_name(spec.execution_id, time.time() + spec.timeout_seconds)
        try:
            await self._rename(name)
            frame = encode_frame(argv, {}, "")
            if (sent := _send_at_once(parked.sock, frame)) < len(frame):
                await self._thread(_send_blocking, parked.sock, frame[sent:])
        except (APIError, OSError) as exc:
            logger.warning(
                "parked container unusable",
                extra={"container": self.container_id[:12], "error": str(exc)},
            )
            _close_attach(parked.sock)
            return None
        self.timings[self.phase] = self.timings.get(self.phase, 0.0) + _ms(started)
        watch = None if self.renaming is None else asyncio.create_task(self._renamed_or_kill(name))
        stop = threading.Event()
        # The connection stays open after the end record: the shim lingers until it goes.
        reader = self._thread(_pump, parked.sock, self.capture, stop, keep_open=True)
        try:
            return await self._wait(reader)
        finally:
            stop.set()
            if watch is not None:
                watch.cancel()  # the call is over: its container goes next

    async def _rename(self, name: str) -> None:
        """Name the container for the call before its frame goes (``runtime/rename.py``): over
        the engine's unix socket the answer is left to ``renaming``, else it is awaited."""
        socket_path = engine_socket(self.client)
        if socket_path is None:
            await self._thread(self.client.api.rename, self.container_id, name)
            return
        api_version = str(self.client.api.api_version)
        self.renaming = await send_rename(socket_path, api_version, self.container_id, name)

    async def _renamed_or_kill(self, name: str) -> None:
        """While the call runs: if the engine refused the rename sent before the frame (or did
        not answer), rename through the SDK; if that fails too, a spawner adopting the job after
        a crash could not find the container, and the function would run twice: kill it (the
        call ends as ``runtime_unavailable``, never run again)."""
        assert self.renaming is not None
        if (error := await _outcome(self.renaming)) is None:
            return
        extra = {"container": self.container_id[:12], "error": str(error)}
        logger.warning("rename refused: retrying through the SDK", extra=extra)
        try:
            await self._thread(self.client.api.rename, self.container_id, name)
        except (APIError, OSError) as exc:
            extra["error"] = str(exc)
            logger.error("cannot rename the taken container: call stopped", extra=extra)
            await self._kill()

    async def _wait(self, reader: asyncio.Future[None]) -> RunResult | None:
        running = time.monotonic()
        timeout = self.spec.timeout_seconds
        try:
            await asyncio.wait_for(asyncio.shield(reader), timeout)
        except TimeoutError:
            return await self._stop(
                "timed_out", reader, running, f"killed after the {timeout:g} s timeout"
            )
        if not self._lingers():
            # The engine blocks a kill, and may hold the container's end, while the attach
            # stream is open and unread: only a shim that lingers keeps it until the removal.
            _close_attach(self.parked.sock)
        if self.capture.too_large:
            limit = self.settings.output_limit_bytes
            return await self._stop(
                "output_too_large", reader, running, f"stdout went over {limit} bytes"
            )
        self.timings["run"] = _ms(running)
        end = self.capture.end
        if end is None or self.capture.malformed:
            return await self._no_end()
        if end[1] == 137:
            await self._exited()  # the engine tells an OOM kill only once the container is over
        return await self._exit_result(end[1], started=True)

    def _lingers(self) -> bool:
        """The shim reported the function's end and waits for the spawner to hang up: an ``X``
        record other than a death by SIGKILL, the output within its cap."""
        end = self.capture.end
        return (
            end is not None
            and end[0] == b"X"
            and end[1] != 128 + signal.SIGKILL
            and not self.capture.too_large
            and not self.capture.malformed
        )

    async def _exited(self) -> None:
        """Wait (briefly: the shim exits right after its end record) for the container's end."""
        waiting = self._thread(self.client.api.wait, self.container_id, timeout=KILL_GRACE)
        with contextlib.suppress(TimeoutError, APIError, OSError):
            await asyncio.wait_for(asyncio.shield(waiting), KILL_GRACE)

    async def _no_end(self) -> RunResult | None:
        """The stream ended without the shim's end record."""
        await self._exited()
        try:
            state = (await self._thread(self.client.api.inspect_container, self.container_id))[
                "State"
            ]
        except (APIError, OSError, KeyError) as exc:
            state = {}
            _said("cannot inspect a prewarmed container", exc)
        if state.get("ExitCode") in REFUSED and not self.capture.stdout_total:
            return None  # the shim refused the frame: nothing ran
        if state.get("ExitCode") in SHIM_NOT_RUN and not self.capture.records:
            logger.error(
                "the container's init could not execute the pool's shim: the call runs cold",
                extra={
                    "container": self.container_id[:12],
                    "error": self.capture.stderr_tail.decode(errors="replace"),
                },
            )
            return None
        if state.get("OOMKilled"):  # the memory limit took the shim with the function
            return await self._exit_result(137, started=True)
        return RunResult(
            "runtime_unavailable",
            stderr_tail=self.capture.stderr_tail,
            detail="the prewarmed container ended without reporting the function's exit",
            timings=self.timings,
            started=True,
        )

    async def _stop(
        self, outcome: Any, reader: asyncio.Future[None], running: float, detail: str
    ) -> RunResult:
        await self._kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), KILL_GRACE)
        self.timings["run"] = _ms(running)
        return self._cut_short(outcome, detail, started=True)


class Prewarm:
    """The pool of one runtime: takes parked containers for calls, parks new ones, removes
    used and unwanted ones off the request path."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.pool = Pool(self.settings)
        self._parking_now = 0
        """Parks at the engine (past the gate of ``pool_parallel_parks``)."""
        self._claimed: collections.Counter[Shape] = collections.Counter()
        """Of those, the parks that passed the gate for a call waiting for one."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._landed = asyncio.Event()
        """Set each time a park lands (or fails)."""
        self._cold = 0
        """Cold runs (misses) under way."""
        self._engine_free = asyncio.Event()
        """Set when what a waiting park waits for may have changed: the last cold run under way
        ended, a park left the engine, or a call started waiting for a park."""
        self._awaited: collections.Counter[Shape] = collections.Counter()
        """Calls waiting for a park of their shape, each for one of its parks under way (a
        claim): such a park neither yields to cold runs nor waits for the other parks."""
        self._calls = 0
        self._no_calls = asyncio.Event()
        """Set when no call is under way (``close`` waits for it: a hit removes its container
        after it)."""
        self._no_calls.set()
        self._settling: dict[str, asyncio.Event] = {}
        """Per call, set once it is settled: the engine work it led to waits for that."""
        self._closed = False
        self.hits = 0
        self.misses = 0

    async def run(
        self, client: Any, spec: RunSpec, cold: Callable[[], Awaitable[RunResult]]
    ) -> RunResult:
        """The call on a parked container of its shape, or ``cold()`` when there is none or it
        could not take the call (a miss). Parks wait while cold runs are under way (up to
        ``PARK_YIELD_SECONDS``): a miss is not slowed down by the refills."""
        self._start_sweeper(client)
        shape = Shape.of(spec)
        began = time.monotonic()
        parked = self.pool.take(shape, spec.function)
        self._calls += 1
        self._no_calls.clear()
        try:
            if parked is None:
                parked = await self._next_landing(shape)
            if parked is None:
                self.misses += 1
                return await self._miss(client, spec, shape, cold)
            waited = {"pool": _ms(began)}  # the hand-off's own time is added to it
            if (result := await self._hand_off(client, spec, parked, waited, "pool")) is not None:
                self.hits += 1
                return result
            self.misses += 1  # the parked container could not take it: nothing ran
            with self._engine_busy():
                return await cold()
        finally:
            self.pool.done(shape)
            self.refill(client, after=self._settling_of(spec.execution_id))
            self._calls -= 1
            if not self._calls:
                self._no_calls.set()

    async def _miss(
        self, client: Any, spec: RunSpec, shape: Shape, cold: Callable[[], Awaitable[RunResult]]
    ) -> RunResult:
        """A call with no parked container: one started for it as a park is (its image on the
        engine already) and handed the call at once, so that its result comes with the
        function's exit and its removal after the call; else (the image must be pulled, the
        engine refused) ``cold()``, which says why. Parks yield to it as to a cold run."""
        with self._engine_busy():
            result = await self._started_for(client, spec, shape)
            return await cold() if result is None else result

    async def _started_for(self, client: Any, spec: RunSpec, shape: Shape) -> RunResult | None:
        """The call on a container started for it; None when none could be started, or it could
        not take the call (nothing ran)."""
        timings: dict[str, float] = {}
        try:
            parked, _ = await self._start_parked(client, shape, timings=timings)
        except PARK_ERRORS as exc:
            if not isinstance(exc, NotOnEngine):
                logger.warning(
                    "cannot start a container for a miss: it runs cold",
                    extra={"execution_id": spec.execution_id, "error": repr(exc)},
                )
            return None
        return await self._hand_off(client, spec, parked, timings, "start")

    @contextlib.contextmanager
    def _engine_busy(self) -> Iterator[None]:
        """A call's own container under way (a miss, a cold run): parks wait for its end."""
        self._cold += 1
        try:
            yield
        finally:
            self._cold -= 1
            if not self._cold:
                self._engine_free.set()

    async def _next_landing(self, shape: Shape) -> Parked | None:
        """With a park of ``shape`` under way that no other waiting call claimed: claim it and
        wait until one lands (a container started for the call would take as long, and cost the
        engine one container more). None when every park under way is claimed (the call would
        wait for one that another call takes, then start its own), or when the parks fail."""
        if self.pool.parking_of(shape) <= self._awaited[shape]:
            return None
        self._awaited[shape] += 1
        self._engine_free.set()  # the claimed park goes to the engine now

        def claimed() -> bool:  # none parked yet, and every claim still has its park
            return not self.pool.parked_of(shape) and (
                self.pool.parking_of(shape) >= self._awaited[shape]
            )

        try:  # the park lands or fails by itself: its engine calls have the client's timeout
            await _wait_while(self._landed, claimed, None)
        finally:
            _count_down(self._awaited, shape)
        return self.pool.pop(shape)

    async def _landing(self, shape: Shape, within: float) -> None:
        """Wait (up to ``within`` seconds) while none of ``shape`` is parked but a park of it is
        under way."""

        def waiting() -> bool:
            return not self.pool.parked_of(shape) and self.pool.parking_of(shape) > 0

        await _wait_while(self._landed, waiting, within)

    async def _hand_off(
        self,
        client: Any,
        spec: RunSpec,
        parked: Parked,
        timings: dict[str, float],
        phase: str,
    ) -> RunResult | None:
        hand_off = HandOff(self.runtime, client, spec, parked, timings, phase)
        result: RunResult | None = None
        try:
            result = await hand_off.execute()
        finally:
            # A container that could not take the call goes at once: the call runs cold.
            after = self._settling_of(spec.execution_id) if result is not None else None
            self._background(self._remove(client, parked, hand_off.renaming, after))
        if result is not None:
            self.runtime._note_use(client, parked.image_id, spec.image)
        return result

    def _settling_of(self, execution_id: str) -> asyncio.Event:
        """Set once the call is ``settled``, or ``SETTLE_SECONDS`` after it ended: the removal
        and the parks it leads to wait for it (their engine calls would slow the storing and
        replying of its result), while counting as under way."""
        event = self._settling.get(execution_id)
        if event is None:
            event = self._settling[execution_id] = asyncio.Event()
            asyncio.get_running_loop().call_later(SETTLE_SECONDS, self._resume, execution_id)
        return event

    def settled(self, execution_id: str) -> None:
        """The call's result is stored and replied: the work it led to starts once the reply
        has had ``REPLY_GRACE_SECONDS`` to reach its caller."""
        if execution_id in self._settling:
            asyncio.get_running_loop().call_later(REPLY_GRACE_SECONDS, self._resume, execution_id)

    def _resume(self, execution_id: str) -> None:
        if (event := self._settling.pop(execution_id, None)) is not None:
            event.set()

    async def warm(self, spec: RunSpec, within: float = 60.0) -> bool:
        """Park a container of ``spec``'s shape as if it had just been called often enough
        (``SPAWNER_POOL_PARK_AFTER_CALLS``), and wait (up to ``within`` seconds) until one is
        parked; whether one is."""
        client = await self.runtime._connected()
        shape = Shape.of(spec)
        for _ in range(self.settings.pool_park_after_calls):
            self.pool.called(shape, spec.function)
            self.pool.done(shape)
        self.refill(client)
        await self._landing(shape, within)
        return self.pool.parked_of(shape) > 0

    def refill(self, client: Any, *, after: asyncio.Event | None = None) -> None:
        """Start the parks the pool wants now (their engine work once ``after`` is set);
        remove what it evicts for them."""
        if self._closed:
            return
        parks, evicted = self.pool.wanted()
        for parked in evicted:
            self._background(self._remove(client, parked, after=after))
        for shape, generation in parks:
            self._background(self._park(client, shape, generation, after))

    async def _park(
        self, client: Any, shape: Shape, generation: int, after: asyncio.Event | None
    ) -> None:
        try:
            await self._park_once(client, shape, generation, after)
        finally:  # landed, failed, discarded or cancelled: the calls waiting for one look again
            self._landed.set()

    async def _park_once(
        self, client: Any, shape: Shape, generation: int, after: asyncio.Event | None
    ) -> None:
        try:
            if after is not None:
                await after.wait()
            if self._closed:
                self.pool.failed(shape, generation)
                return
            await self._yield_to_cold_runs(shape)
            async with self._park_gate(shape):
                began = time.monotonic()
                parked, yielded = await self._start_parked(client, shape)
        except PARK_ERRORS as exc:
            self.pool.failed(shape, generation)
            logger.warning(
                "cannot park a container", extra={"image": shape.image, "error": str(exc)}
            )
            return
        except BaseException:
            self.pool.failed(shape, generation)
            raise
        took = time.monotonic() - began - yielded  # the engine's time, not the wait for it
        if self._closed:
            self.pool.failed(shape, generation)
        kept = not self._closed and self.pool.landed(parked, generation, took)
        self._landed.set()
        if not kept:
            await self._remove(client, parked)

    @contextlib.asynccontextmanager
    async def _park_gate(self, shape: Shape) -> AsyncIterator[None]:
        """At most ``pool_parallel_parks`` parks at the engine at once, besides one per call
        waiting for a park of its shape (``_next_landing``): those pass at once."""
        limit = self.settings.pool_parallel_parks

        def full() -> bool:
            return self._parking_now >= limit and self._claimed[shape] >= self._awaited[shape]

        await _wait_while(self._engine_free, full, None)
        claimed = self._parking_now >= limit  # passing for a waiting call
        self._parking_now += 1
        if claimed:
            self._claimed[shape] += 1
        try:
            yield
        finally:
            self._parking_now -= 1
            if claimed:
                _count_down(self._claimed, shape)
            self._engine_free.set()

    async def _yield_to_cold_runs(self, shape: Shape) -> float:
        """Wait while cold runs are under way and no call waits for a park of ``shape`` (up to
        ``PARK_YIELD_SECONDS``); seconds waited."""
        began = time.monotonic()

        def yielding() -> bool:
            return self._cold > 0 and not self._awaited[shape]

        await _wait_while(self._engine_free, yielding, PARK_YIELD_SECONDS)
        return time.monotonic() - began

    async def _start_parked(
        self, client: Any, shape: Shape, *, timings: dict[str, float] | None = None
    ) -> tuple[Parked, float]:
        """A container of ``shape`` created, attached and started; and the seconds it waited
        for cold runs before its start. With ``timings``, it is a call's own (a miss's): it
        does not wait for cold runs, and its phases (pull, create, start) go in ``timings``."""
        runtime = self.runtime
        phases: dict[str, float] = {} if timings is None else timings
        began = time.monotonic()
        attrs = await runtime._inspect(client, shape.image)
        if attrs is None:
            raise NotOnEngine("the image is not on this engine")
        phases["pull"] = _ms(began)
        image_id = str(attrs["Id"])
        options = runtime.hardened_options(
            image_id, dict(shape.env), shape.memory_mb, declared_volumes(attrs)
        )
        # Taken no later than its idle window after it is ready; the margin covers the park.
        parked_until = time.time() + self.settings.pool_idle_seconds + PARK_MARGIN_SECONDS
        options["labels"] |= {
            POOL_LABEL: "parked",
            PARKED_BY_LABEL: runtime.run_token,
            DEADLINE_LABEL: deadline_label(parked_until),
        }
        options |= {
            "name": f"faas-pool-{os.urandom(6).hex()}",
            "entrypoint": [SHIM_TARGET],
            # After the end record the shim stays until its stdin ends: the container's end (and
            # the engine's work on it) comes with its removal, off the call's path. Attached
            # (not detached), the engine ends the container's stdin when the spawner hangs up.
            "command": [SHIM_LINGER],
            "detach": False,
            "stdin_open": True,
            "pids_limit": self.settings.pids_limit + 1,  # the shim's own
            "mounts": [shim_mount(self.settings)],
        }
        began = time.monotonic()
        create = runtime._thread(_create_blocking, client, options)
        try:
            container_id = await _finish(create)
        except asyncio.CancelledError:
            if (created := _outcome_of(create)) is not None:
                await _finish_removal(runtime, client, created)
            raise
        attach = runtime._thread(
            client.api.attach_socket,
            container_id,
            params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1},
        )
        try:
            sock = await _finish(attach)  # its socket known, to be closed, even if cancelled
            phases["create"] = _ms(began)
            yielded = 0.0
            if timings is None:  # the start: most of a park's cost
                yielded = await self._yield_to_cold_runs(shape)
            began = time.monotonic()
            await runtime._thread(client.api.start, container_id)
            phases["start"] = _ms(began)
        except BaseException:
            if (attached := _outcome_of(attach)) is not None:
                _close_attach(attached)
            await _finish_removal(runtime, client, container_id)
            raise
        entrypoint = list((attrs.get("Config") or {}).get("Entrypoint") or [])
        return Parked(container_id, shape, sock, entrypoint, image_id, time.monotonic()), yielded

    def drain(self, function: str) -> None:
        """``function`` changed or went: its shapes' parked containers go."""
        self._remove_all(self.pool.drain(function))

    def _remove_all(self, parked: list[Parked]) -> None:
        client = self.runtime._client
        for one in parked:
            if client is None:
                _close_attach(one.sock)
            else:
                self._background(self._remove(client, one))

    def _start_sweeper(self, client: Any) -> None:
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.create_task(self._sweep(client), name="pool-sweep")

    async def _sweep(self, client: Any) -> None:
        interval = min(self.settings.pool_idle_seconds / 4, 5.0)
        while True:
            await asyncio.sleep(interval)
            self._remove_all(self.pool.expired())
            self.refill(client)

    async def _remove(
        self,
        client: Any,
        parked: Parked,
        renaming: asyncio.Task[None] | None = None,
        after: asyncio.Event | None = None,
    ) -> None:
        if after is not None:
            await after.wait()
        _close_attach(parked.sock)
        if renaming is not None:  # never removed before its rename is done: one or the other
            await _outcome(renaming)  # a refusal was dealt with during the call
        await _finish_removal(self.runtime, client, parked.container_id)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Remove every parked container, after the calls, parks and removals under way."""
        self._closed = True
        await self._no_calls.wait()
        for execution_id in list(self._settling):
            self._resume(execution_id)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        client = self.runtime._client
        for parked in self.pool.drain_all():
            if client is None:
                _close_attach(parked.sock)
            else:
                await self._remove(client, parked)


def _count_down(counter: collections.Counter[Shape], shape: Shape) -> None:
    """One less of ``shape`` in ``counter``; a count that reaches 0 goes."""
    counter[shape] -= 1
    if not counter[shape]:
        del counter[shape]


async def _wait_while(event: asyncio.Event, busy: Callable[[], bool], within: float | None) -> None:
    """Wait while ``busy()``, re-checking each time ``event`` is set, up to ``within`` seconds
    (None: as long as it takes)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while busy():
                event.clear()
                await event.wait()


async def _outcome(task: asyncio.Task[None]) -> BaseException | None:
    """Wait for ``task`` (never cancelling it); what it raised, if anything (cancelled: that)."""
    await asyncio.wait({task})
    return asyncio.CancelledError() if task.cancelled() else task.exception()


async def _finish_removal(runtime: DockerRuntime, client: Any, container_id: str) -> None:
    try:
        await runtime._thread(_remove_blocking, client, container_id)
    except (APIError, OSError, RuntimeError) as exc:
        # Its deadline label (or name, once taken) lets any spawner's reaper remove it later.
        logger.warning("remove failed", extra={"container": container_id[:12], "error": str(exc)})


class PooledRuntime(DockerRuntime):
    """``DockerRuntime`` with the prewarm pool: a call takes a parked container of its shape
    (``timings`` has a ``pool`` phase), or one started for it (a miss; then its shape may be
    parked for the next calls), or runs cold as ``DockerRuntime`` does when neither can take
    it."""

    def __init__(self, settings: SpawnerSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        if settings.pool_shim_volume:
            install_shim(settings)
        elif not shim_path(settings).is_file():
            raise FileNotFoundError(
                f"the pool's shim {shim_path(settings)} is missing: build it with "
                "`uv run python spawner-service/shim/build.py`, or set SPAWNER_POOL_MAX_PARKED=0"
            )
        self.prewarm = Prewarm(self)

    async def run(self, spec: RunSpec) -> RunResult:
        try:
            client = await self._connected()
        except EngineUnavailable:
            return await super().run(spec)
        return await self.prewarm.run(client, spec, functools.partial(super().run, spec))

    def drain(self, function: str) -> None:
        self.prewarm.drain(function)

    def settled(self, execution_id: str) -> None:
        self.prewarm.settled(execution_id)

    async def close(self) -> None:
        await self.prewarm.close()
        await super().close()
