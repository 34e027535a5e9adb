"""Service processes for tests: ``python -m <package>`` as OS processes of their own.

``ServiceProcess`` runs one service with its environment, its stdout and stderr appended to
``<name>.stdout.log`` / ``<name>.stderr.log`` in its directory (a harness line marks each start),
and is stopped by PID only: SIGTERM, then SIGKILL when it has not exited within a bound. It starts
with the interpreter running the tests, never through a wrapper such as ``uv run``, so its PID is
the service's own and a SIGKILL is a crash of the service itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

STOP_TIMEOUT = 15.0
"""Seconds a service gets to exit after SIGTERM before it is killed."""
READY_POLL = 0.1

ENVIRONMENT_PREFIXES = ("AUTH_", "REGISTRY_", "PUBLISHER_", "SPAWNER_")
INHERITED_SETTINGS = frozenset(
    {
        "ENVIRONMENT",
        "LOG_LEVEL",
        "DATABASE_URL",
        "DATABASE_PASSWORD_FILE",
        "NATS_URL",
        "NATS_CONNECT_TIMEOUT",
        "NATS_REPLICAS",
        "JWT_PUBLIC_KEY_FILE",
        "JWT_JWKS_URL",
        "JWT_ISSUER",
        "JWT_CONSUMER_KEY",
        "MAX_BODY_BYTES",
        "MAX_HEADER_BYTES",
        "REQUEST_TIMEOUT_SECONDS",
        "MAX_CONNECTIONS",
        "FORWARDED_ALLOW_IPS",
        "MAX_IN_FLIGHT",
        "MAX_IN_FLIGHT_PER_USER",
        "EXECUTION_TTL_SECONDS",
        "JOB_MAX_AGE_SECONDS",
        "DOCKER_HOST",
    }
)
"""Variables of the caller's environment a service must not inherit: a test gives its own."""


def no_metrics_port(env: Mapping[str, str]) -> dict[str, str]:
    """``METRICS_PORT=0`` unless ``env`` sets a metrics port: services started side by side on
    one machine would all take their default metrics port."""
    return {} if any(key.endswith("METRICS_PORT") for key in env) else {"METRICS_PORT": "0"}


def clean_environment() -> dict[str, str]:
    """This process's environment without any service setting (``DATABASE_URL``, ``AUTH_*``)."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in INHERITED_SETTINGS and not key.startswith(ENVIRONMENT_PREFIXES)
    }


@dataclass
class LogMark:
    """Where a process's log files ended at some moment (to show only what came after)."""

    stdout: int
    stderr: int


class OwnProcess:
    """A child process of the tests, stopped by its PID only: SIGTERM, then SIGKILL after a bound.

    ``wanted`` is true from a start until a stop or kill on purpose: an exit meanwhile is a crash.
    """

    process: subprocess.Popen[bytes] | None
    wanted: bool

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID, as a crash would; waits until the process is gone."""
        self.wanted = False
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)

    def terminate(self) -> None:
        """SIGTERM by PID without waiting (``stop`` waits and kills after a bound)."""
        self.wanted = False
        process = self.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM by PID, then SIGKILL when it has not exited within ``timeout``."""
        self.wanted = False
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)

    def crashed(self) -> bool:
        """Exited although nobody stopped it."""
        return self.wanted and self.process is not None and self.process.poll() is not None


@dataclass
class ServiceProcess(OwnProcess):
    name: str
    module: str
    env: dict[str, str]
    directory: Path
    health_url: str | None = None
    """An HTTP URL answering 200 once the service is ready (None: ``ready_line`` instead)."""
    ready_line: str | None = None
    """A fragment of a stderr line that says the service is ready (a worker without HTTP)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)
    wanted: bool = field(default=False, init=False)
    """Started and not stopped or killed on purpose since: an exit is a crash."""
    _start_offset: int = field(default=0, init=False)

    @property
    def stdout_path(self) -> Path:
        return self.directory / f"{self.name}.stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.directory / f"{self.name}.stderr.log"

    def start(self) -> None:
        """Start the process (no-op while it runs); does not wait for it to be ready."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.wanted = True
        banner = f"\n=== harness: start #{self.starts} of {self.name} at {time.time():.3f}\n"
        with self.stdout_path.open("ab") as stdout, self.stderr_path.open("ab") as stderr:
            stdout.write(banner.encode())
            stderr.write(banner.encode())
            stdout.flush()
            stderr.flush()
            self._start_offset = stderr.tell()
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env={**clean_environment(), **no_metrics_port(self.env), **self.env},
                cwd=self.directory,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the service is ready; ``RuntimeError`` (with its log) if it exits or is not
        ready within ``timeout``."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            for _ in range(int(timeout / READY_POLL) + 2):  # bounded in count and in time
                process = self.process
                if process is None or process.poll() is not None:
                    code = process.returncode if process is not None else None
                    raise RuntimeError(f"{self.name} exited with {code}:\n{self.log_tail()}")
                if self._is_ready(client):
                    return
                if time.monotonic() > deadline:
                    break
                time.sleep(READY_POLL)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def _is_ready(self, client: httpx.Client) -> bool:
        if self.health_url is not None:
            try:
                return client.get(self.health_url).status_code == 200
            except httpx.HTTPError:
                return False
        if self.ready_line is not None:
            return self.ready_line in self.stderr_since_start()
        return True

    # --- logs ---------------------------------------------------------------------------------

    def mark(self) -> LogMark:
        return LogMark(file_size(self.stdout_path), file_size(self.stderr_path))

    def stderr_since_start(self) -> str:
        return read_from(self.stderr_path, self._start_offset)

    def stderr_since(self, mark: LogMark) -> str:
        return read_from(self.stderr_path, mark.stderr)

    def logs_since(self, mark: LogMark, characters: int = 6000) -> str:
        """What the process wrote since ``mark``, for a failure report: its warnings and errors
        (and lines that are not JSON log lines, such as tracebacks), then its last lines."""
        stdout = read_from(self.stdout_path, mark.stdout)[-characters:]
        stderr = read_from(self.stderr_path, mark.stderr)
        parts = [f"--- {self.name} (pid {self.pid}) stderr {self.stderr_path}:"]
        notable = [line[:600] for line in stderr.splitlines() if _notable(line)]
        if notable:
            shown = "\n".join(notable[-NOTABLE_LINES:])[-characters:]
            parts.append(f"  warnings and errors ({len(notable)}, the last shown):\n{shown}")
        last = "\n".join(line[:300] for line in stderr.splitlines()[-TAIL_LINES:])
        parts.append(f"  last lines:\n{last}")
        if stdout.strip():
            parts.append(f"--- {self.name} stdout {self.stdout_path}:\n{stdout}")
        return "\n".join(parts)

    def log_tail(self, characters: int = 4000) -> str:
        return self.logs_since(LogMark(0, 0), characters)


NOTABLE_LINES = 40
TAIL_LINES = 12
_QUIET_LEVELS = frozenset({"debug", "info"})


def _notable(line: str) -> bool:
    """A log line worth showing in a failure report: level warning or worse, or not JSON."""
    if not line.strip() or line.startswith("=== harness:"):
        return False
    try:
        entry = json.loads(line)
    except ValueError:
        return True
    return not isinstance(entry, dict) or entry.get("level") not in _QUIET_LEVELS


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds passed; whether it held."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):  # bounded in count and in time
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return condition()


def env_of(values: Mapping[str, object]) -> dict[str, str]:
    """Settings as environment strings (booleans as ``true``/``false``)."""
    rendered: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            rendered[key] = "true" if value else "false"
        else:
            rendered[key] = str(value)
    return rendered
