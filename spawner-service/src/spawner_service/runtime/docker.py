"""``DockerRuntime``: one fresh, hardened container per activation, through the Docker SDK.

Semantics are ``docker run IMAGE ARGUMENT``: the argument replaces the image's CMD and the
ENTRYPOINT is kept. One run (``_Run``, one object per activation carrying its state from phase to
phase):

1. image: inspect; if missing, pull it (one pull per image at a time, shared by every waiter,
   bounded: ``runtime/images.py``; a waiter waits no longer than its activation's deadline);
   an invalid reference or a failed pull is ``image_unavailable`` with one of the fixed
   sentences of ``runtime/images.py`` (the engine's text only in the log);
2. create the container with the hardening options (``_create_kwargs``) and its labels; each
   ``VOLUME`` the image declares gets a tmpfs out of the ``/tmp`` budget, never a host volume;
3. attach to its stdout and stderr *before* starting it, then start it; a thread reads the
   multiplexed stream incrementally into a bounded ``OutputCapture`` (stdout up to the cap, the
   tail of stderr). Going over the stdout cap stops the reader and the container is killed
   (``output_too_large``), so a function printing forever costs no memory; the engine keeps a
   bounded copy of the output on disk too (``json-file`` log driver, ``LOG_FILES`` files of
   ``LOG_FILE_BYTES``), only for a spawner that has to adopt the container (below);
4. wait for the end of the stream and the exit status, bounded by the timeout (killed at the
   timeout: ``timed_out``; once the stream has ended, the exit status gets ``EXIT_GRACE`` more
   seconds, so a function that exits right at its timeout is not reported as timed out); a
   non-zero status is ``function_failed``;
5. remove the container (forced, with its anonymous volumes), whatever happened, also when the
   run is cancelled.

Adoption (``adopt``, one ``_Adoption`` object): when a spawner dies while its function runs,
JetStream redelivers the job; the spawner that gets it finds the container by its execution-id
label, waits for it to exit (killed at its deadline label: ``timed_out``), reads stdout and stderr
back from the engine's logs with the same cap and tail as a run, and removes it. ``json-file``
keeps text exactly but turns each byte that is not UTF-8 into U+FFFD (the record's text does the
same); ``local`` would keep bytes but, on 20.10, drops the newline ending a line over 16 KiB. An
output that may have outgrown what the engine kept is ``output_too_large``, never a cut result.

Every blocking SDK call runs on the runtime's own thread pool (sized for ``max_containers``: the
stream readers hold a thread each for a whole run, so the loop's small default executor could
starve them). An engine that cannot be reached is ``runtime_unavailable``; no failure of a
function or of the engine escapes ``run`` or ``adopt`` as an exception. Once the container's start
has been requested the function may have run, so a later engine failure is still
``runtime_unavailable`` but with ``started`` set: the worker then fails the activation instead of
running it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import secrets
import select
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.types import LogConfig
from docker.utils import kwargs_from_env

from faas_common.contract import MANAGED_LABEL
from spawner_service.config import SpawnerSettings
from spawner_service.runtime.base import Outcome, RunResult, RunSpec
from spawner_service.runtime.image_sweep import TOUCH_INTERVAL, ImageUse, ImageUseRecord
from spawner_service.runtime.images import (
    IMAGE_NOT_FOUND,
    INVALID_REFERENCE,
    PULL_TIMED_OUT,
    ImageUnavailable,
    declared_volumes,
    pull_blocking,
    scratch_tmpfs,
)
from spawner_service.runtime.output import STDERR, STDOUT, FrameDemuxer, OutputCapture
from spawner_service.runtime.shim import ShimCapture

logger = logging.getLogger("spawner.docker")

T = TypeVar("T")

MANAGED_VALUE = "spawner"
EXECUTION_LABEL = "faas.execution-id"
DEADLINE_LABEL = "faas.deadline"
INSTANCE_LABEL = "faas.spawner"
POOL_LABEL = "faas.pool"
"""On the prewarmed containers of the pool (``runtime/prewarm.py``)."""
PARKED_BY_LABEL = "faas.parked-by"
"""On a parked container: the parking runtime's own random token (one per process)."""
UNPRIVILEGED_USER = "65534:65534"

API_TIMEOUT = 60
"""Seconds an ordinary Docker API call may take."""
PING_TIMEOUT = 2.0
"""Seconds a ping's connect, and then its answer, may take (its own client, so a hung engine
holds no thread for longer); ``ping`` returns within twice that."""
READ_CHUNK = 65_536
POLL_INTERVAL_MS = 200
"""How often a stream reader waiting for output checks whether it was told to stop."""
KILL_GRACE = 10.0
"""Seconds to wait for the streams to close after a kill before abandoning the reader."""
EXIT_GRACE = 2.0
"""Seconds the exit status may take past the timeout once the output stream has ended."""

LOG_DRIVER = "json-file"
LOG_FILE_BYTES = 8 * 1_048_576
"""Size at which the engine starts a new log file for a container (``max-size``): room for the
largest stdout the settings allow (under 1 MiB) even if each byte took 6 once JSON-escaped, as
long as its lines are not mostly very short."""
LOG_FILES = 2
"""Log files the engine keeps per container (``max-file``): at most 16 MiB of disk each. Two,
so that a dropped start of the output shows (only a rotation drops it, and it leaves a full
first file behind)."""
LOG_ENTRY_OVERHEAD = 96
"""Most of what ``json-file`` stores beside one entry's escaped text (``{"log":...}``, stream,
time); one entry per line, long lines cut into ``LOG_ENTRY_MAX`` byte entries."""
LOG_ENTRY_MAX = 16_384
_JSON_SHORT_ESCAPES = b'"\\\n\r\t'
"""Bytes JSON-escaped in 2 bytes."""
_JSON_LONG_ESCAPES = bytes(c for c in range(0x20) if c not in b"\n\r\t") + b"<>&"
"""Bytes JSON-escaped in 6 bytes (``\\u00XX``)."""
_JSON_WIDE_ESCAPES = tuple(c.encode() for c in "\ufffd\u2028\u2029")
"""Characters (3 bytes) JSON-escaped in 6: U+FFFD also stands for each byte that was not UTF-8."""

EXITED_STATES = frozenset({"exited", "dead"})


class EngineUnavailable(Exception):
    """The Docker engine did not answer."""


def _explain(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def _said(sentence: str, exc: BaseException) -> str:
    """``sentence`` for the record; what the engine (or the connection to it) said goes to the
    log only: it can name hosts, sockets and whatever a registry host replied."""
    logger.warning(sentence, extra={"error": _explain(exc), "error_type": type(exc).__name__})
    return sentence


def _engine_down(exc: BaseException) -> bool:
    """Connection-level failures (requests' errors are ``OSError``s; API errors are answers)."""
    return isinstance(exc, OSError) and not isinstance(exc, APIError)


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


def deadline_label(deadline: float) -> str:
    """The deadline label's value: whole epoch seconds, never before ``deadline``."""
    return str(int(deadline) + 1)


def _name_safe(execution_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", execution_id)[:64]


def container_name(execution_id: str) -> str:
    """``faas-<execution id>-<random>``: readable in ``docker ps``, unique per attempt."""
    return f"faas-{_name_safe(execution_id)}-{secrets.token_hex(3)}"


def pooled_name(execution_id: str, deadline: float) -> str:
    """The name a prewarmed container takes when a call takes it: its execution id (adoption
    finds it by that) and its deadline (its labels still say when it was parked)."""
    return f"{container_name(execution_id)}-{deadline_label(deadline)}"


_POOLED_NAME = re.compile(r"/?faas-(.+)-[0-9a-f]{6}-(\d+)")


def pooled_owner(container: dict[str, Any]) -> tuple[str, float] | None:
    """The (name-safe) execution id and the deadline of a taken prewarmed container, as the
    engine lists it; None for any other container."""
    if POOL_LABEL not in (container.get("Labels") or {}):
        return None
    for name in container.get("Names") or []:
        if match := _POOLED_NAME.fullmatch(name):
            return match.group(1), float(match.group(2))
    return None


_ENGINE_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def _engine_time(value: object) -> float | None:
    """Epoch seconds of an engine timestamp (RFC 3339, nanoseconds); None for the zero time."""
    match = _ENGINE_TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    moment = datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]:0<6}{zone}")
    return moment.timestamp() if moment.year >= 1970 else None


def _stored_size_bound(data: bytes) -> int:
    """No less than what ``json-file`` stored for the output ``data`` read back from it: its
    JSON-escaped bytes plus the overhead of every entry it can have been cut into."""
    short = len(data) - len(data.translate(None, _JSON_SHORT_ESCAPES))
    long = len(data) - len(data.translate(None, _JSON_LONG_ESCAPES))
    wide = sum(data.count(character) for character in _JSON_WIDE_ESCAPES)
    entries = data.count(b"\n") + len(data) // LOG_ENTRY_MAX + 2
    return len(data) + short + 5 * long + 3 * wide + entries * LOG_ENTRY_OVERHEAD


async def _finish(future: asyncio.Future[T]) -> T:
    """Await a blocking call's future to its end even through cancellation, then re-raise the
    cancellation: the call's effect (a created container) must be known to be cleaned up."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return future.result()


async def _daemon_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` on a daemon thread of its own (the process never waits for it at exit)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def target() -> None:
        error: BaseException | None = None
        try:
            fn()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=target, name="docker-pull", daemon=True).start()
    await done


def _outcome_of(future: asyncio.Future[T]) -> T | None:
    if future.done() and not future.cancelled() and future.exception() is None:
        return future.result()
    return None


def _close_attach(sock: Any) -> None:
    """Close the attach connection for real. The engine blocks a kill while an attached client
    holds the stream open without reading it, so this comes before any kill."""
    # attach_socket keeps the HTTP response on the socket object. Closing it first closes the
    # connection; closing the socket-like object first would make the response's close fail
    # and leave the connection open.
    response = getattr(sock, "_response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()
    with contextlib.suppress(Exception):
        sock.close()


def _pump(
    sock: Any, capture: OutputCapture, stop: threading.Event, *, keep_open: bool = False
) -> None:
    """Read the attach stream until it ends, stdout goes over its cap, or ``stop`` is set; then
    close it (``keep_open``: not when the capture is finished, the caller closes it later)."""
    demuxer = FrameDemuxer(capture)
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
        while not stop.is_set():
            if not poller.poll(POLL_INTERVAL_MS):
                continue
            chunk = sock.read(READ_CHUNK)
            if not chunk:
                return
            demuxer.feed(chunk)
            if capture.finished:
                return
    except (OSError, ValueError) as exc:
        # The engine went away (or the socket was closed under us): the stream is over.
        logger.debug("attach stream ended: %s", exc)
    finally:
        if not (keep_open and capture.finished):
            _close_attach(sock)


# --- blocking SDK calls (run on the runtime's thread pool) ------------------------------------


def _create_blocking(client: Any, kwargs: dict[str, Any]) -> str:
    container_id: str = client.containers.create(**kwargs).id
    return container_id


def _kill_blocking(client: Any, container_id: str) -> None:
    try:
        client.api.kill(container_id)
    except APIError as exc:  # 404 gone, 409 not running: nothing left to kill
        logger.debug("kill: %s", _explain(exc))


def _remove_blocking(client: Any, container_id: str) -> None:
    with contextlib.suppress(NotFound):
        # v: the anonymous volumes of the image's VOLUMEs go with it.
        client.api.remove_container(container_id, force=True, v=True)


def _exit_state(client: Any, container_id: str) -> dict[str, Any]:
    state: dict[str, Any] = client.api.inspect_container(container_id)["State"]
    return state


def _find_blocking(client: Any, execution_id: str) -> dict[str, Any] | None:
    """The newest managed container of ``execution_id`` (by its label, or by its name for a
    prewarmed one), as the engine lists it."""
    found: list[dict[str, Any]] = client.api.containers(
        all=True, filters={"label": f"{MANAGED_LABEL}={MANAGED_VALUE}"}
    )
    safe = _name_safe(execution_id)
    ours = [
        c
        for c in found
        if (c.get("Labels") or {}).get(EXECUTION_LABEL) == execution_id
        or (pooled_owner(c) or ("",))[0] == safe
    ]
    if len(ours) > 1:
        logger.warning(
            "several containers for one execution, adopting the newest",
            extra={"execution_id": execution_id, "containers": [c["Id"][:12] for c in ours]},
        )
    return max(ours, key=lambda c: c.get("Created", 0), default=None)


def _logs_blocking(client: Any, container_id: str) -> tuple[bytes, bytes]:
    """The stdout and the stderr the engine kept for a container (two calls: two streams)."""
    stdout: bytes = client.api.logs(container_id, stdout=True, stderr=False)
    stderr: bytes = client.api.logs(container_id, stdout=False, stderr=True)
    return stdout, stderr


class _Activation:
    """What every phase of one activation's container needs: the client, the spec, the timings
    so far, the container (once known) and the capture of its output."""

    def __init__(
        self, runtime: DockerRuntime, client: Any, spec: RunSpec, timings: dict[str, float]
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.client = client
        self.spec = spec
        self.timings = timings
        self.container_id = ""
        self.capture = OutputCapture(
            stdout_limit=self.settings.output_limit_bytes,
            stderr_tail=self.settings.log_tail_bytes,
        )

    def _thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        return self.runtime._thread(fn, *args, **kwargs)

    async def _kill(self) -> None:
        try:
            await self._thread(_kill_blocking, self.client, self.container_id)
        except OSError as exc:
            logger.warning("kill failed", extra={"container": self.container_id, "error": str(exc)})

    async def _remove(self) -> None:
        started = time.monotonic()
        try:
            await _finish(self._thread(_remove_blocking, self.client, self.container_id))
        except (APIError, OSError) as exc:
            # The reaper of some spawner removes it once its deadline has passed.
            logger.warning(
                "remove failed", extra={"container": self.container_id, "error": str(exc)}
            )
            return
        self.timings["remove"] = _ms(started)

    async def _failure_detail(self, exit_code: int) -> str:
        if exit_code == 137:  # SIGKILL: the kernel's OOM killer is the usual sender
            with contextlib.suppress(APIError, OSError):
                state = await self._thread(_exit_state, self.client, self.container_id)
                if state.get("OOMKilled"):
                    return f"killed: out of memory (limit {self.spec.memory_mb} MiB)"
        if exit_code > 128:
            return f"exited with status {exit_code} (signal {exit_code - 128})"
        return f"exited with status {exit_code}"

    async def _exit_result(self, exit_code: int, *, started: bool) -> RunResult:
        """The function ran to its end within the cap: its status decides."""
        if exit_code == 0:
            return RunResult(
                "succeeded",
                exit_code=0,
                stdout=self.capture.stdout,
                stderr_tail=self.capture.stderr_tail,
                timings=self.timings,
                started=started,
            )
        return RunResult(
            "function_failed",
            exit_code=exit_code,
            stdout=self.capture.stdout,
            stderr_tail=self.capture.stderr_tail,
            detail=await self._failure_detail(exit_code),
            timings=self.timings,
            started=started,
        )

    def _cut_short(self, outcome: Outcome, detail: str, *, started: bool) -> RunResult:
        """Killed (timeout, output cap): no result, only the end of stderr."""
        return RunResult(
            outcome,
            stderr_tail=self.capture.stderr_tail,
            detail=detail,
            timings=self.timings,
            started=started,
        )


class _Run(_Activation):
    """One activation through ``DockerRuntime.run``: create, attach, start, wait, remove."""

    def __init__(
        self,
        runtime: DockerRuntime,
        client: Any,
        spec: RunSpec,
        timings: dict[str, float],
        volumes: list[str],
    ) -> None:
        super().__init__(runtime, client, spec, timings)
        self.volumes = volumes
        """The paths the image declares as volumes (each gets a tmpfs)."""

    async def execute(self) -> RunResult:
        spec = self.spec
        deadline = max(spec.deadline, time.time() + spec.timeout_seconds)
        started = time.monotonic()
        options = self.runtime._create_kwargs(spec, deadline, self.volumes)
        create = self._thread(_create_blocking, self.client, options)
        try:
            try:
                self.container_id = await _finish(create)
            except NotFound as exc:  # the image went away since it was inspected
                logger.warning("image gone before the create", extra={"error": _explain(exc)})
                return RunResult(
                    "image_unavailable", detail=IMAGE_NOT_FOUND.detail, timings=self.timings
                )
            except APIError as exc:
                return RunResult(
                    "function_failed",
                    detail=_said("the container could not be created", exc),
                    timings=self.timings,
                )
            except (DockerException, OSError) as exc:
                detail = _said("the Docker engine failed while creating the container", exc)
                return RunResult("runtime_unavailable", detail=detail, timings=self.timings)
            self.timings["create"] = _ms(started)
            return await self._attach_start_wait()
        finally:
            # Also when cancelled: _finish saw the create through, so its container is known.
            created = _outcome_of(create)
            if created is not None:
                self.container_id = created
                await self._remove()

    async def _attach_start_wait(self) -> RunResult:
        attach = self._thread(
            self.client.api.attach_socket,
            self.container_id,
            params={"stdout": 1, "stderr": 1, "stream": 1},
        )
        try:
            sock = await _finish(attach)
        except asyncio.CancelledError:
            if (attached := _outcome_of(attach)) is not None:
                _close_attach(attached)
            raise
        except APIError as exc:
            detail = _said("the engine could not attach to the container's output", exc)
            return RunResult("function_failed", detail=detail, timings=self.timings)
        except OSError as exc:
            detail = _said("the Docker engine failed while attaching to the container", exc)
            return RunResult("runtime_unavailable", detail=detail, timings=self.timings)
        stop = threading.Event()
        reader = self._thread(_pump, sock, self.capture, stop)
        try:
            failed = await self._start()
            return failed if failed is not None else await self._wait(reader)
        finally:
            stop.set()  # the reader ends within one poll interval and closes the socket

    async def _start(self) -> RunResult | None:
        """Start the container; a result only when it could not be started."""
        started = time.monotonic()
        try:
            await self._thread(self.client.api.start, self.container_id)
        except APIError as exc:
            # The engine could not start the entrypoint (e.g. no such executable).
            exit_code: int | None = None
            with contextlib.suppress(APIError, OSError):
                state = await self._thread(_exit_state, self.client, self.container_id)
                exit_code = state.get("ExitCode")
            return RunResult(
                "function_failed",
                exit_code=exit_code or None,
                detail=_said(
                    "the container could not start (its entrypoint cannot be executed, or the "
                    "engine refused it)",
                    exc,
                ),
                timings=self.timings,
            )
        except OSError as exc:
            # The request may have reached the engine: the function may be running. Not retried.
            return RunResult(
                "runtime_unavailable",
                detail=_said("the Docker engine failed while starting the container", exc),
                timings=self.timings,
                started=True,
            )
        self.timings["start"] = _ms(started)
        return None

    async def _wait(self, reader: asyncio.Future[None]) -> RunResult:
        running = time.monotonic()
        timeout = self.spec.timeout_seconds
        timed_out = f"killed after the {timeout:g} s timeout"
        try:
            # The stream ends when the function exits (the init process takes every other
            # process of the container with it), or when stdout goes over its cap.
            await asyncio.wait_for(asyncio.shield(reader), timeout)
        except TimeoutError:
            return await self._stop("timed_out", reader, running, detail=timed_out)
        if self.capture.too_large:
            return await self._stop(
                "output_too_large",
                reader,
                running,
                detail=f"stdout went over {self.settings.output_limit_bytes} bytes",
            )

        # The stream has ended: the function has exited, or is about to. Near the timeout, its
        # exit status may need a moment more than what is left: give it EXIT_GRACE.
        remaining = max(timeout - (time.monotonic() - running), 0.0) + EXIT_GRACE
        waiting = self._thread(
            self.client.api.wait, self.container_id, timeout=remaining + API_TIMEOUT
        )
        try:
            status = await asyncio.wait_for(asyncio.shield(waiting), remaining)
        except TimeoutError:
            return await self._stop("timed_out", reader, running, detail=timed_out)
        except (APIError, OSError) as exc:
            # The function ran (maybe to its end): the activation fails, it is not run again.
            self.timings["run"] = _ms(running)
            return RunResult(
                "runtime_unavailable",
                stderr_tail=self.capture.stderr_tail,
                detail=_said("the Docker engine failed while the function ran", exc),
                timings=self.timings,
                started=True,
            )
        self.timings["run"] = _ms(running)
        return await self._exit_result(int(status.get("StatusCode", -1)), started=False)

    async def _stop(
        self, outcome: Outcome, reader: asyncio.Future[None], running: float, *, detail: str
    ) -> RunResult:
        await self._kill()
        # A killed container's streams close at once; the grace only guards against a stuck
        # engine (the reader is then told to stop by the caller).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), KILL_GRACE)
        self.timings["run"] = _ms(running)
        return self._cut_short(outcome, detail, started=False)


class _Adoption(_Activation):
    """The container a previous delivery started, taken over: wait (up to its deadline), read
    its logs, remove it. Every result is ``started``: the function ran, or may have."""

    def __init__(
        self, runtime: DockerRuntime, client: Any, spec: RunSpec, found: dict[str, Any]
    ) -> None:
        super().__init__(runtime, client, spec, {})
        self.container_id = str(found["Id"])
        self.state = str(found.get("State", ""))
        pooled = pooled_owner(found)
        self.pooled = pooled is not None
        """A prewarmed container: its stdout holds the shim's records, its deadline is in its
        name, the function's exit status in the shim's end record."""
        if pooled is not None:
            self.deadline = pooled[1]
            self.capture = ShimCapture(
                stdout_limit=self.settings.output_limit_bytes,
                stderr_tail=self.settings.log_tail_bytes,
            )
            return
        try:
            self.deadline = float((found.get("Labels") or {})[DEADLINE_LABEL])
        except (KeyError, ValueError):
            self.deadline = spec.deadline

    async def execute(self) -> RunResult | None:
        try:
            if self.state == "created":
                # Never started (its spawner died between create and start): nothing ran, so
                # the caller may run the job; the container goes.
                logger.info("removing a container that never started", extra=self._log_extra())
                return None
            logger.info("adopting a container", extra=self._log_extra())
            return await self._collect()
        except NotFound:
            return self._lost("the container disappeared before its result was collected")
        except (APIError, OSError) as exc:
            return self._lost(_said("the Docker engine failed while adopting the container", exc))
        finally:
            await self._remove()

    def _log_extra(self) -> dict[str, Any]:
        return {
            "execution_id": self.spec.execution_id,
            "container": self.container_id[:12],
            "state": self.state,
        }

    def _lost(self, detail: str) -> RunResult:
        return RunResult(
            "runtime_unavailable",
            stderr_tail=self.capture.stderr_tail,
            detail=detail,
            timings=self.timings,
            started=True,
        )

    async def _collect(self) -> RunResult:
        running = time.monotonic()
        if self.state not in EXITED_STATES and not await self._exited_by_deadline():
            self.timings["run"] = _ms(running)
            with contextlib.suppress(APIError, OSError):
                await self._read_logs()  # for the end of stderr
            return self._cut_short(
                "timed_out",
                f"killed at its deadline (timeout {self.spec.timeout_seconds:g} s) after its "
                "spawner was lost",
                started=True,
            )
        self.timings["run"] = _ms(running)
        state = await self._thread(_exit_state, self.client, self.container_id)
        complete = await self._read_logs()
        if self.state in EXITED_STATES:
            finished = _engine_time(state.get("FinishedAt"))
            if finished is not None and finished > self.deadline + EXIT_GRACE:
                return self._cut_short(
                    "timed_out",
                    f"ran past its deadline (timeout {self.spec.timeout_seconds:g} s) after its "
                    "spawner was lost",
                    started=True,
                )
        if self.capture.too_large:
            return self._cut_short(
                "output_too_large",
                f"stdout went over {self.settings.output_limit_bytes} bytes",
                started=True,
            )
        if not complete:
            return self._cut_short(
                "output_too_large",
                "the output went over what the engine keeps of an unattended container "
                f"({LOG_FILE_BYTES} bytes): it may be incomplete",
                started=True,
            )
        if not isinstance(self.capture, ShimCapture):
            return await self._exit_result(int(state.get("ExitCode", -1)), started=True)
        if self.capture.end is None or self.capture.malformed:
            return self._lost("the prewarmed container ended without reporting the function's exit")
        return await self._exit_result(self.capture.end[1], started=True)

    async def _exited_by_deadline(self) -> bool:
        """Wait for the container to exit, up to its deadline; killed past it (False)."""
        remaining = self.deadline - time.time()
        if remaining > 0:
            waiting = self._thread(
                self.client.api.wait, self.container_id, timeout=remaining + API_TIMEOUT
            )
            try:
                await asyncio.wait_for(asyncio.shield(waiting), remaining)
            except TimeoutError:
                pass
            else:
                return True
        await self._kill()
        # Let the engine finish writing its logs before they are read.
        with contextlib.suppress(TimeoutError, APIError, OSError):
            stopped = self._thread(self.client.api.wait, self.container_id, timeout=KILL_GRACE)
            await asyncio.wait_for(asyncio.shield(stopped), KILL_GRACE)
        return False

    async def _read_logs(self) -> bool:
        """Feed the logs into the capture; whether they are known to be whole (nothing was
        dropped by the log driver's rotation, which needs a full first file)."""
        stdout, stderr = await self._thread(_logs_blocking, self.client, self.container_id)
        self.capture.write(STDOUT, stdout)
        self.capture.write(STDERR, stderr)
        return _stored_size_bound(stdout) + _stored_size_bound(stderr) < LOG_FILE_BYTES


class DockerRuntime:
    """``ContainerRuntime`` on a Docker engine (``DOCKER_HOST`` or the local socket)."""

    def __init__(
        self,
        settings: SpawnerSettings,
        *,
        base_url: str | None = None,
        image_use: ImageUse | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.base_url = base_url
        self.image_use = image_use
        """Where the images' uses are recorded (for the image sweep); None: not recorded."""
        self.clock = clock
        """Epoch seconds of an image's use."""
        self._touched: dict[str, float] = {}
        self._touches: set[asyncio.Task[None]] = set()
        self._engine_id: str | None = None
        self.pulls_started = 0
        """Pulls this runtime has started (one per image at a time, whatever the waiters)."""
        self._client: Any = None
        self._ping_client: Any = None
        self._ping_lock = threading.Lock()
        self._client_lock = asyncio.Lock()
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self._pull_threads = asyncio.Semaphore(settings.max_containers)
        """Pulls at once, each on a daemon thread of its own: slow registries never starve the
        runs of threads, and a stopping spawner does not wait for a pull (its connection goes
        with the process, which cancels the pull in the engine)."""
        # Per running container: its stream reader, plus a wait, kill or remove at a time.
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_containers * 3 + 4, thread_name_prefix="docker"
        )
        self._closed = False
        self.run_token = os.urandom(8).hex()
        """Labels the containers this runtime parks (``PARKED_BY_LABEL``): a parked container of
        its instance id with another token was parked by an earlier process of that id (a
        restarted spawner), which is gone. No clock is compared: the engine's may differ."""

    # --- plumbing -------------------------------------------------------------------------

    def _thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        # Results abandoned after a timeout must not be reported as never retrieved.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = kwargs_from_env()
        if self.base_url is not None:
            kwargs["base_url"] = self.base_url
        return kwargs

    def _make_client(self) -> Any:
        return docker.DockerClient(
            **self._client_kwargs(),
            timeout=API_TIMEOUT,
            max_pool_size=self.settings.max_containers * 2 + 4,
        )

    def _make_ping_client(self) -> Any:
        return docker.APIClient(**self._client_kwargs(), timeout=PING_TIMEOUT, max_pool_size=2)

    async def _connected(self) -> Any:
        if self._closed:
            raise EngineUnavailable("the runtime is closed")
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    try:
                        self._client = await self._thread(self._make_client)
                    except (DockerException, OSError) as exc:
                        raise EngineUnavailable(
                            _said("cannot reach the Docker engine", exc)
                        ) from exc
        return self._client

    # --- images ---------------------------------------------------------------------------

    @staticmethod
    def _inspect_image(client: Any, image: str) -> dict[str, Any] | None:
        """The image's attributes, or None when it is not on the engine."""
        try:
            attrs: dict[str, Any] = client.api.inspect_image(image)
        except NotFound:
            return None
        except APIError as exc:  # 400: not a valid reference
            raise ImageUnavailable(INVALID_REFERENCE, _explain(exc)) from exc
        except DockerException as exc:  # e.g. an empty reference
            raise ImageUnavailable(INVALID_REFERENCE, str(exc)) from exc
        return attrs

    async def _inspect(self, client: Any, image: str) -> dict[str, Any] | None:
        try:
            return await self._thread(self._inspect_image, client, image)
        except OSError as exc:
            raise EngineUnavailable(_said("cannot reach the Docker engine", exc)) from exc

    def _pull_blocking(self, client: Any, image: str) -> None:
        s = self.settings
        pull_blocking(
            client.api, image, connect=s.pull_connect_seconds, total=s.pull_timeout_seconds
        )

    async def _pull(self, client: Any, image: str) -> None:
        started = time.monotonic()
        logger.info("pulling image", extra={"image": image})
        try:
            async with self._pull_threads:
                await _daemon_thread(functools.partial(self._pull_blocking, client, image))
        except OSError as exc:
            sentence = _said("the Docker engine failed during a pull", exc)
            raise EngineUnavailable(sentence) from exc
        logger.info("pulled image", extra={"image": image, "pull_ms": _ms(started)})

    def _shared_pull(self, client: Any, image: str) -> asyncio.Task[None]:
        """The pull of ``image`` under way, or a new one (one per image at a time)."""
        pull = self._pulls.get(image)
        if pull is None:
            self.pulls_started += 1
            pull = asyncio.create_task(self._pull(client, image))
            self._pulls[image] = pull

            def _forget(task: asyncio.Task[None]) -> None:
                if self._pulls.get(image) is task:
                    del self._pulls[image]
                if not task.cancelled():
                    task.exception()  # retrieved: waiters may all have gone

            pull.add_done_callback(_forget)
        return pull

    async def _ensure_image(self, client: Any, spec: RunSpec) -> dict[str, Any]:
        """The image's attributes, pulled first when missing. A waiter waits for the shared pull
        no longer than its activation's deadline: a slow pull never holds a slot past it."""
        attrs = await self._inspect(client, spec.image)
        if attrs is not None:
            return attrs
        pull = self._shared_pull(client, spec.image)
        wait = min(self.settings.pull_timeout_seconds, max(spec.deadline - time.time(), 0.0))
        try:
            # shield: a waiter that goes away (cancelled, timed out) leaves the pull to the others.
            await asyncio.wait_for(asyncio.shield(pull), wait)
        except TimeoutError as exc:
            raise ImageUnavailable(
                PULL_TIMED_OUT, f"waited {wait:.1f} s, up to the activation's deadline"
            ) from exc
        attrs = await self._inspect(client, spec.image)
        if attrs is None:
            raise ImageUnavailable(IMAGE_NOT_FOUND, "the pull ended without the image")
        return attrs

    # --- containers -----------------------------------------------------------------------

    def _create_kwargs(
        self, spec: RunSpec, deadline: float, volumes: list[str] | None = None
    ) -> dict[str, Any]:
        """Every option of the container; ``volumes``: the paths the image declares."""
        options = self.hardened_options(spec.image, spec.env, spec.memory_mb, volumes or [])
        options["labels"] |= {
            EXECUTION_LABEL: spec.execution_id,
            DEADLINE_LABEL: deadline_label(deadline),
        }
        return options | {"command": [spec.argument], "name": container_name(spec.execution_id)}

    def hardened_options(
        self, image: str, env: Mapping[str, str], memory_mb: int, volumes: list[str]
    ) -> dict[str, Any]:
        """The options every function container gets, whatever runs in it."""
        s = self.settings
        return {
            "image": image,
            "environment": dict(env),
            "labels": {MANAGED_LABEL: MANAGED_VALUE, INSTANCE_LABEL: s.instance_id},
            "network_mode": s.network if s.allow_network else "none",
            "read_only": True,
            # /tmp and every declared volume: the scratch budget, never host storage.
            "tmpfs": scratch_tmpfs(s.tmpfs_mb, volumes),
            "shm_size": s.shm_bytes,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": s.pids_limit,
            "mem_limit": f"{memory_mb}m",
            "memswap_limit": f"{memory_mb}m",
            "nano_cpus": int(s.cpus * 1_000_000_000),
            "user": UNPRIVILEGED_USER,
            "init": True,
            # Kept by the engine (bounded) only so that another spawner can adopt the container.
            "log_config": LogConfig(
                type=LOG_DRIVER,
                config={
                    "max-size": str(LOG_FILE_BYTES),
                    "max-file": str(LOG_FILES),
                    "compress": "false",
                },
            ),
            "detach": True,
        }

    async def run(self, spec: RunSpec) -> RunResult:
        timings: dict[str, float] = {}
        try:
            client = await self._connected()
            started = time.monotonic()
            attrs = await self._ensure_image(client, spec)
            volumes = declared_volumes(attrs)
            timings["pull"] = _ms(started)
        except EngineUnavailable as exc:
            return RunResult("runtime_unavailable", detail=str(exc), timings=timings)
        except ImageUnavailable as exc:
            logger.warning(
                "image unavailable",
                extra={
                    "execution_id": spec.execution_id,
                    "image": spec.image,
                    "code": exc.problem.code,
                    "error": exc.engine_text,
                },
            )
            return RunResult("image_unavailable", detail=exc.problem.detail, timings=timings)
        self._note_use(client, str(attrs.get("Id", "")), spec.image)
        return await _Run(self, client, spec, timings, volumes).execute()

    async def adopt(self, spec: RunSpec) -> RunResult | None:
        try:
            client = await self._connected()
            found = await self._thread(_find_blocking, client, spec.execution_id)
        except (EngineUnavailable, DockerException, OSError) as exc:
            # A previous delivery may have started the function: it is not run again.
            return RunResult(
                "runtime_unavailable",
                detail=_said("cannot look for the container of a previous delivery", exc),
                started=True,
            )
        if found is None:
            return None
        return await _Adoption(self, client, spec, found).execute()

    def settled(self, execution_id: str) -> None:
        """A cold run puts nothing off: its container is removed before ``run`` returns."""

    # --- housekeeping ---------------------------------------------------------------------

    def _remove_stale_blocking(self, client: Any, now: float) -> int:
        containers = client.api.containers(
            all=True, filters={"label": f"{MANAGED_LABEL}={MANAGED_VALUE}"}
        )
        removed = 0
        for container in containers:
            labels = container.get("Labels") or {}
            taken = pooled_owner(container)
            try:
                deadline = taken[1] if taken else float(labels[DEADLINE_LABEL])
            except (KeyError, ValueError):
                continue  # not labelled by a spawner of this kind: not ours to judge
            # Within the grace, even an exited container stays: another spawner may adopt it.
            if deadline + self.settings.stale_after_seconds >= now and not self._left_parked(
                container
            ):
                continue
            try:
                client.api.remove_container(container["Id"], force=True, v=True)
            except NotFound:
                continue  # another spawner got it first
            except APIError as exc:
                logger.warning(
                    "stale container not removed",
                    extra={"container": container["Id"], "error": _explain(exc)},
                )
                continue
            removed += 1
            logger.info(
                "removed stale container",
                extra={
                    "container": container["Id"][:12],
                    "execution_id": labels.get(EXECUTION_LABEL),
                    "deadline": deadline,
                },
            )
        return removed

    def _left_parked(self, container: dict[str, Any]) -> bool:
        """Parked (no call took it) by an earlier process of this instance id: nothing will
        ever take it, and nothing ran in it."""
        labels = container.get("Labels") or {}
        return (
            labels.get(POOL_LABEL) == "parked"
            and pooled_owner(container) is None
            and labels.get(INSTANCE_LABEL) == self.settings.instance_id
            and labels.get(PARKED_BY_LABEL) != self.run_token
        )

    async def remove_stale(self, now: float) -> int:
        try:
            client = await self._connected()
            return await self._thread(self._remove_stale_blocking, client, now)
        except (EngineUnavailable, APIError, OSError) as exc:
            logger.warning("stale container sweep failed", extra={"error": str(exc)})
            return 0

    def _ping_blocking(self) -> bool:
        with self._ping_lock:
            if self._ping_client is None:
                self._ping_client = self._make_ping_client()
            client = self._ping_client
        return bool(client.ping())

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            # The client's own timeout frees the thread; wait_for bounds the caller regardless.
            return await asyncio.wait_for(self._thread(self._ping_blocking), 2 * PING_TIMEOUT)
        except (TimeoutError, DockerException, OSError):
            return False

    # --- image uses and the image sweep ----------------------------------------------------

    async def _engine(self, client: Any) -> str:
        """The engine's id (``docker info``): image uses are recorded per engine."""
        if self._engine_id is None:
            info = await self._thread(client.api.info)
            self._engine_id = str(info["ID"])
        return self._engine_id

    def _note_use(self, client: Any, image_id: str, reference: str) -> None:
        """Record, off the activation's path, that ``image_id`` is used (at most once per
        ``TOUCH_INTERVAL``)."""
        now = self.clock()
        last = self._touched.get(image_id)
        if self.image_use is None or not image_id or (last and now - last < TOUCH_INTERVAL):
            return
        self._touched[image_id] = now
        record = ImageUseRecord(image_id=image_id, reference=reference, last_used=now)
        task = asyncio.create_task(self._touch(client, self.image_use, record))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _touch(self, client: Any, image_use: ImageUse, record: ImageUseRecord) -> None:
        try:
            await image_use.touch(await self._engine(client), record)
        except Exception as exc:
            self._touched.pop(record.image_id, None)  # the next use tries again
            logger.warning(
                "cannot record an image's use",
                extra={"image": record.reference, "error": repr(exc)},
            )

    async def sweep_images(self, now: float, unused_for: float) -> int:
        """Remove the images recorded as used on this engine whose last use is more than
        ``unused_for`` seconds before ``now``; how many were removed."""
        if self.image_use is None:
            return 0
        client = await self._connected()
        engine = await self._engine(client)
        removed = 0
        for record in await self.image_use.records(engine):
            if record.last_used <= now - unused_for:
                removed += await self._remove_image(client, engine, self.image_use, record)
        return removed

    async def _remove_image(
        self, client: Any, engine: str, image_use: ImageUse, record: ImageUseRecord
    ) -> bool:
        extra = {"image": record.reference, "image_id": record.image_id}
        try:
            await self._thread(client.api.remove_image, record.image_id, force=False)
        except NotFound:
            removed = False  # gone already (another spawner, an operator): forgotten
        except APIError as exc:  # 409: a container uses it, or other tags name it
            logger.info("unused image kept", extra={**extra, "error": _explain(exc)})
            return False
        else:
            removed = True
            logger.info("removed unused image", extra={**extra, "last_used": record.last_used})
        self._touched.pop(record.image_id, None)
        await image_use.forget(engine, record.image_id)
        return removed

    async def close(self) -> None:
        if self._touches:  # uses being recorded: a moment to finish
            await asyncio.wait(set(self._touches), timeout=PING_TIMEOUT)
        self._closed = True
        clients = (self._client, self._ping_client)
        self._client = self._ping_client = None
        for client in clients:
            if client is not None:
                with contextlib.suppress(Exception):
                    await self._thread(client.close)
        self._executor.shutdown(wait=False, cancel_futures=True)
