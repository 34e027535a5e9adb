"""``DockerRuntime``: one fresh, hardened container per activation, through the Docker SDK.

Semantics are ``docker run IMAGE ARGUMENT``: the argument replaces the image's CMD and the
ENTRYPOINT is kept. One run:

1. image: inspect; if missing, pull it (one pull per image at a time, shared by every waiter);
   an invalid reference or a failed pull is ``image_unavailable``;
2. create the container with the hardening options (``_create_kwargs``) and its labels;
3. attach to its stdout and stderr *before* starting it, then start it; a thread reads the
   multiplexed stream incrementally into a bounded ``OutputCapture`` (stdout up to the cap, the
   tail of stderr). Going over the stdout cap stops the reader and the container is killed
   (``output_too_large``), so a function printing forever costs neither memory nor disk (the
   container's log driver is ``none``: nothing is written by the engine either);
4. wait for the end of the stream and the exit status, bounded by the timeout (killed at the
   timeout: ``timed_out``; once the stream has ended, the exit status gets ``EXIT_GRACE`` more
   seconds, so a function that exits right at its timeout is not reported as timed out); a
   non-zero status is ``function_failed``;
5. remove the container (forced), whatever happened, also when the run is cancelled.

Every blocking SDK call runs on the runtime's own thread pool (sized for ``max_containers``: the
stream readers hold a thread each for a whole run, so the loop's small default executor could
starve them). An engine that cannot be reached is ``runtime_unavailable``; no failure of a
function or of the engine escapes ``run`` as an exception. Once the container's start has been
requested the function may have run, so a later engine failure is still ``runtime_unavailable``
but with ``started`` set: the worker then fails the activation instead of running it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.types import LogConfig
from docker.utils import kwargs_from_env

from faas_common.contract import MANAGED_LABEL
from spawner_service.config import SpawnerSettings
from spawner_service.runtime.base import Outcome, RunResult, RunSpec
from spawner_service.runtime.output import FrameDemuxer, OutputCapture

logger = logging.getLogger("spawner.docker")

T = TypeVar("T")

MANAGED_VALUE = "spawner"
EXECUTION_LABEL = "faas.execution-id"
DEADLINE_LABEL = "faas.deadline"
INSTANCE_LABEL = "faas.spawner"
UNPRIVILEGED_USER = "65534:65534"
CONTAINER_TMP = "/tmp"  # noqa: S108 - the function container's /tmp (a private tmpfs)

API_TIMEOUT = 60
"""Seconds an ordinary Docker API call may take."""
READ_CHUNK = 65_536
POLL_INTERVAL_MS = 200
"""How often a stream reader waiting for output checks whether it was told to stop."""
KILL_GRACE = 10.0
"""Seconds to wait for the streams to close after a kill before abandoning the reader."""
EXIT_GRACE = 2.0
"""Seconds the exit status may take past the timeout once the output stream has ended."""


class EngineUnavailable(Exception):
    """The Docker engine did not answer."""


class ImageUnavailable(Exception):
    """The image is not present and cannot be pulled (or its reference is invalid)."""


def _explain(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def _engine_down(exc: BaseException) -> bool:
    """Connection-level failures (requests' errors are ``OSError``s; API errors are answers)."""
    return isinstance(exc, OSError) and not isinstance(exc, APIError)


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


def container_name(execution_id: str) -> str:
    """``faas-<execution id>-<random>``: readable in ``docker ps``, unique per attempt."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", execution_id)[:64]
    return f"faas-{safe}-{secrets.token_hex(3)}"


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


def _pump(sock: Any, capture: OutputCapture, stop: threading.Event) -> None:
    """Read the attach stream until it ends, stdout goes over its cap, or ``stop`` is set."""
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
            if capture.too_large:
                return
    except (OSError, ValueError) as exc:
        # The engine went away (or the socket was closed under us): the stream is over.
        logger.debug("attach stream ended: %s", exc)
    finally:
        _close_attach(sock)


class DockerRuntime:
    """``ContainerRuntime`` on a Docker engine (``DOCKER_HOST`` or the local socket)."""

    def __init__(self, settings: SpawnerSettings, *, base_url: str | None = None) -> None:
        self.settings = settings
        self.base_url = base_url
        self.pulls_started = 0
        """Pulls this runtime has started (one per image at a time, whatever the waiters)."""
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._pulls: dict[str, asyncio.Task[None]] = {}
        # Per running container: its stream reader, plus a wait, kill or remove at a time.
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_containers * 3 + 4, thread_name_prefix="docker"
        )
        self._closed = False

    # --- plumbing -------------------------------------------------------------------------

    def _thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        # Results abandoned after a timeout must not be reported as never retrieved.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    def _make_client(self) -> Any:
        kwargs = kwargs_from_env()
        if self.base_url is not None:
            kwargs["base_url"] = self.base_url
        return docker.DockerClient(
            **kwargs,
            timeout=API_TIMEOUT,
            max_pool_size=self.settings.max_containers * 2 + 4,
        )

    async def _connected(self) -> Any:
        if self._closed:
            raise EngineUnavailable("the runtime is closed")
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    try:
                        self._client = await self._thread(self._make_client)
                    except (DockerException, OSError) as exc:
                        raise EngineUnavailable(f"cannot reach the Docker engine: {exc}") from exc
        return self._client

    # --- images ---------------------------------------------------------------------------

    @staticmethod
    def _image_present(client: Any, image: str) -> bool:
        try:
            client.api.inspect_image(image)
        except NotFound:
            return False
        except APIError as exc:  # 400: not a valid reference
            raise ImageUnavailable(_explain(exc)) from exc
        except DockerException as exc:  # e.g. an empty reference
            raise ImageUnavailable(str(exc) or f"invalid image reference {image!r}") from exc
        return True

    def _pull_blocking(self, client: Any, image: str) -> None:
        last_error: str | None = None
        try:
            for event in client.api.pull(image, stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    last_error = str(event["error"])
        except APIError as exc:
            raise ImageUnavailable(_explain(exc)) from exc
        except DockerException as exc:
            raise ImageUnavailable(str(exc)) from exc
        if not self._image_present(client, image):
            raise ImageUnavailable(last_error or "the pull ended without the image")

    async def _pull(self, client: Any, image: str) -> None:
        started = time.monotonic()
        logger.info("pulling image", extra={"image": image})
        try:
            await self._thread(self._pull_blocking, client, image)
        except ImageUnavailable as exc:
            logger.warning("pull failed", extra={"image": image, "error": str(exc)})
            raise
        except OSError as exc:
            raise EngineUnavailable(f"the Docker engine failed during a pull: {exc}") from exc
        logger.info("pulled image", extra={"image": image, "pull_ms": _ms(started)})

    async def _ensure_image(self, client: Any, image: str) -> None:
        try:
            if await self._thread(self._image_present, client, image):
                return
        except OSError as exc:
            raise EngineUnavailable(f"cannot reach the Docker engine: {exc}") from exc
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
        try:
            # shield: a waiter that goes away (cancelled, timed out) leaves the pull to the others.
            await asyncio.wait_for(asyncio.shield(pull), self.settings.pull_timeout_seconds)
        except TimeoutError as exc:
            raise ImageUnavailable(
                f"the pull of {image} did not finish within "
                f"{self.settings.pull_timeout_seconds:g} s"
            ) from exc

    # --- containers -----------------------------------------------------------------------

    def _create_kwargs(self, spec: RunSpec, deadline: float) -> dict[str, Any]:
        s = self.settings
        return {
            "image": spec.image,
            "command": [spec.argument],
            "name": container_name(spec.execution_id),
            "environment": dict(spec.env),
            "labels": {
                MANAGED_LABEL: MANAGED_VALUE,
                EXECUTION_LABEL: spec.execution_id,
                DEADLINE_LABEL: str(int(deadline) + 1),
                INSTANCE_LABEL: s.instance_id,
            },
            "network_mode": s.network if s.allow_network else "none",
            "read_only": True,
            # A tmpfs over a directory of the image keeps that directory's mode: say it.
            "tmpfs": {
                CONTAINER_TMP: f"rw,noexec,nosuid,size={s.tmpfs_mb}m,uid=65534,gid=65534,mode=1777"
            },
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": s.pids_limit,
            "mem_limit": f"{spec.memory_mb}m",
            "memswap_limit": f"{spec.memory_mb}m",
            "nano_cpus": int(s.cpus * 1_000_000_000),
            "user": UNPRIVILEGED_USER,
            "init": True,
            "log_config": LogConfig(type=LogConfig.types.NONE),
            "detach": True,
        }

    @staticmethod
    def _create_blocking(client: Any, kwargs: dict[str, Any]) -> str:
        container_id: str = client.containers.create(**kwargs).id
        return container_id

    @staticmethod
    def _kill_blocking(client: Any, container_id: str) -> None:
        try:
            client.api.kill(container_id)
        except APIError as exc:  # 404 gone, 409 not running: nothing left to kill
            logger.debug("kill: %s", _explain(exc))

    @staticmethod
    def _remove_blocking(client: Any, container_id: str) -> None:
        with contextlib.suppress(NotFound):
            client.api.remove_container(container_id, force=True)

    @staticmethod
    def _exit_state(client: Any, container_id: str) -> dict[str, Any]:
        state: dict[str, Any] = client.api.inspect_container(container_id)["State"]
        return state

    async def _kill(self, client: Any, container_id: str) -> None:
        try:
            await self._thread(self._kill_blocking, client, container_id)
        except OSError as exc:
            logger.warning("kill failed", extra={"container": container_id, "error": str(exc)})

    async def _remove(self, client: Any, container_id: str) -> float | None:
        started = time.monotonic()
        try:
            await _finish(self._thread(self._remove_blocking, client, container_id))
        except (APIError, OSError) as exc:
            # The reaper of some spawner removes it once its deadline has passed.
            logger.warning("remove failed", extra={"container": container_id, "error": str(exc)})
            return None
        return _ms(started)

    async def run(self, spec: RunSpec) -> RunResult:
        timings: dict[str, float] = {}
        try:
            client = await self._connected()
            started = time.monotonic()
            await self._ensure_image(client, spec.image)
            timings["pull"] = _ms(started)
        except EngineUnavailable as exc:
            return RunResult("runtime_unavailable", detail=str(exc), timings=timings)
        except ImageUnavailable as exc:
            return RunResult(
                "image_unavailable",
                detail=f"image {spec.image} is unavailable: {exc}",
                timings=timings,
            )

        deadline = max(spec.deadline, time.time() + spec.timeout_seconds)
        started = time.monotonic()
        create = self._thread(self._create_blocking, client, self._create_kwargs(spec, deadline))
        try:
            try:
                container_id = await _finish(create)
            except NotFound as exc:  # the image went away since it was inspected
                return RunResult("image_unavailable", detail=_explain(exc), timings=timings)
            except APIError as exc:
                return RunResult(
                    "function_failed",
                    detail=f"the container could not be created: {_explain(exc)}",
                    timings=timings,
                )
            except (DockerException, OSError) as exc:
                return RunResult("runtime_unavailable", detail=str(exc), timings=timings)
            timings["create"] = _ms(started)
            result = await self._attach_start_wait(client, container_id, spec, timings)
        finally:
            # Also when cancelled: _finish saw the create through, so its container is known.
            created = _outcome_of(create)
            removal = await self._remove(client, created) if created is not None else None
        if removal is not None:
            timings["remove"] = removal
        return result

    async def _attach_start_wait(
        self, client: Any, container_id: str, spec: RunSpec, timings: dict[str, float]
    ) -> RunResult:
        capture = OutputCapture(
            stdout_limit=self.settings.output_limit_bytes,
            stderr_tail=self.settings.log_tail_bytes,
        )
        attach = self._thread(
            client.api.attach_socket, container_id, params={"stdout": 1, "stderr": 1, "stream": 1}
        )
        try:
            sock = await _finish(attach)
        except asyncio.CancelledError:
            if (attached := _outcome_of(attach)) is not None:
                _close_attach(attached)
            raise
        except APIError as exc:
            return RunResult("function_failed", detail=_explain(exc), timings=timings)
        except OSError as exc:
            return RunResult("runtime_unavailable", detail=str(exc), timings=timings)
        stop = threading.Event()
        reader = self._thread(_pump, sock, capture, stop)
        try:
            return await self._start_and_wait(client, container_id, spec, timings, capture, reader)
        finally:
            stop.set()  # the reader ends within one poll interval and closes the socket

    async def _start_and_wait(
        self,
        client: Any,
        container_id: str,
        spec: RunSpec,
        timings: dict[str, float],
        capture: OutputCapture,
        reader: asyncio.Future[None],
    ) -> RunResult:
        started = time.monotonic()
        try:
            await self._thread(client.api.start, container_id)
        except APIError as exc:
            # The engine could not start the entrypoint (e.g. no such executable).
            exit_code: int | None = None
            with contextlib.suppress(APIError, OSError):
                exit_code = (await self._thread(self._exit_state, client, container_id)).get(
                    "ExitCode"
                )
            return RunResult(
                "function_failed",
                exit_code=exit_code or None,
                detail=f"the container could not start: {_explain(exc)}",
                timings=timings,
            )
        except OSError as exc:
            # The request may have reached the engine: the function may be running. Not retried.
            return RunResult(
                "runtime_unavailable",
                detail=f"the Docker engine failed while starting the container: {exc}",
                timings=timings,
                started=True,
            )
        timings["start"] = _ms(started)

        running = time.monotonic()
        timeout = spec.timeout_seconds
        try:
            # The stream ends when the function exits (the init process takes every other
            # process of the container with it), or when stdout goes over its cap.
            await asyncio.wait_for(asyncio.shield(reader), timeout)
        except TimeoutError:
            return await self._stop(
                client,
                container_id,
                "timed_out",
                capture,
                reader,
                timings,
                running,
                detail=f"killed after the {timeout:g} s timeout",
            )
        if capture.too_large:
            return await self._stop(
                client,
                container_id,
                "output_too_large",
                capture,
                reader,
                timings,
                running,
                detail=f"stdout went over {self.settings.output_limit_bytes} bytes",
            )

        # The stream has ended: the function has exited, or is about to. Near the timeout, its
        # exit status may need a moment more than what is left: give it EXIT_GRACE.
        remaining = max(timeout - (time.monotonic() - running), 0.0) + EXIT_GRACE
        waiting = self._thread(client.api.wait, container_id, timeout=remaining + API_TIMEOUT)
        try:
            status = await asyncio.wait_for(asyncio.shield(waiting), remaining)
        except TimeoutError:
            return await self._stop(
                client,
                container_id,
                "timed_out",
                capture,
                reader,
                timings,
                running,
                detail=f"killed after the {timeout:g} s timeout",
            )
        except (APIError, OSError) as exc:
            # The function ran (maybe to its end): the activation fails, it is not run again.
            timings["run"] = _ms(running)
            return RunResult(
                "runtime_unavailable",
                stderr_tail=capture.stderr_tail,
                detail=f"the Docker engine failed while the function ran: {_explain(exc)}",
                timings=timings,
                started=True,
            )
        timings["run"] = _ms(running)

        exit_code = int(status.get("StatusCode", -1))
        if exit_code == 0:
            return RunResult(
                "succeeded",
                exit_code=0,
                stdout=capture.stdout,
                stderr_tail=capture.stderr_tail,
                timings=timings,
            )
        return RunResult(
            "function_failed",
            exit_code=exit_code,
            stdout=capture.stdout,
            stderr_tail=capture.stderr_tail,
            detail=await self._failure_detail(client, container_id, exit_code, spec),
            timings=timings,
        )

    async def _failure_detail(
        self, client: Any, container_id: str, exit_code: int, spec: RunSpec
    ) -> str:
        if exit_code == 137:  # SIGKILL: the kernel's OOM killer is the usual sender
            with contextlib.suppress(APIError, OSError):
                state = await self._thread(self._exit_state, client, container_id)
                if state.get("OOMKilled"):
                    return f"killed: out of memory (limit {spec.memory_mb} MiB)"
        if exit_code > 128:
            return f"exited with status {exit_code} (signal {exit_code - 128})"
        return f"exited with status {exit_code}"

    async def _stop(
        self,
        client: Any,
        container_id: str,
        outcome: Outcome,
        capture: OutputCapture,
        reader: asyncio.Future[None],
        timings: dict[str, float],
        running: float,
        *,
        detail: str,
    ) -> RunResult:
        await self._kill(client, container_id)
        # A killed container's streams close at once; the grace only guards against a stuck
        # engine (the reader is then told to stop by the caller).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), KILL_GRACE)
        timings["run"] = _ms(running)
        return RunResult(outcome, stderr_tail=capture.stderr_tail, detail=detail, timings=timings)

    # --- housekeeping ---------------------------------------------------------------------

    def _remove_stale_blocking(self, client: Any, now: float) -> int:
        containers = client.api.containers(
            all=True, filters={"label": f"{MANAGED_LABEL}={MANAGED_VALUE}"}
        )
        removed = 0
        for container in containers:
            labels = container.get("Labels") or {}
            try:
                deadline = float(labels[DEADLINE_LABEL])
            except (KeyError, ValueError):
                continue  # not labelled by a spawner of this kind: not ours to judge
            if deadline + self.settings.stale_after_seconds >= now:
                continue
            try:
                client.api.remove_container(container["Id"], force=True)
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

    async def remove_stale(self, now: float) -> int:
        try:
            client = await self._connected()
            return await self._thread(self._remove_stale_blocking, client, now)
        except (EngineUnavailable, APIError, OSError) as exc:
            logger.warning("stale container sweep failed", extra={"error": str(exc)})
            return 0

    async def ping(self) -> bool:
        try:
            client = await self._connected()
            return bool(await self._thread(client.ping))
        except (EngineUnavailable, DockerException, OSError):
            return False

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await self._thread(client.close)
        self._executor.shutdown(wait=False, cancel_futures=True)
