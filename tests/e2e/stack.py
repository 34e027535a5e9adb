"""The local stack (``./bin/run.sh``) started by end-to-end tests, and a small client for its API.

``running_stack(tmp_path, **env)`` starts ``./bin/run.sh`` on free ports with its data under
``tmp_path``, waits until it says it is ready and stops it (SIGTERM, then SIGKILL) when the block
ends. A thread keeps reading the stack's output the whole time, so its logs never fill the pipe
and block it, however long the stack runs; the last lines are kept for failure messages.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]

START_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
READY_LINE = "FaaS platform ready on"
OUTPUT_LINES_KEPT = 2000
START_ATTEMPTS = 3
"""A free port can be taken between choosing it and the stack binding it: start again."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc: children of children too)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


@dataclass
class Stack:
    process: subprocess.Popen[str]
    port: int
    nats_port: int
    data_dir: Path
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES_KEPT))
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 60) -> str:
        return "".join(list(self.output)[-lines:])

    def log(self) -> str:
        """Everything the stack printed that is still kept."""
        return "".join(self.output)


def _read_output(stack: Stack) -> None:
    assert stack.process.stdout is not None
    with contextlib.suppress(OSError, ValueError):  # the pipe closed under us: nothing to read
        for line in stack.process.stdout:
            stack.output.append(line)
            if READY_LINE in line:
                stack.ready.set()


def _start(data_dir: Path, env: dict[str, str]) -> Stack:
    port, nats_port = free_port(), free_port()
    process = subprocess.Popen(
        [str(ROOT / "bin" / "run.sh")],
        cwd=ROOT,
        env={
            **os.environ,
            "FAAS_PORT": str(port),
            "FAAS_NATS_PORT": str(nats_port),
            "FAAS_DATA_DIR": str(data_dir),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group, like a shell job
    )
    stack = Stack(process, port, nats_port, data_dir)
    stack.reader = threading.Thread(target=_read_output, args=(stack,), daemon=True)
    stack.reader.start()
    return stack


def _wait_ready(stack: Stack) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if stack.ready.wait(0.1):
            return True
        if stack.process.poll() is not None:
            return stack.ready.is_set()
    return False


def _stop(stack: Stack) -> None:
    process = stack.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            for pid in descendants(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()
            process.wait()
    if stack.reader is not None:
        stack.reader.join(5)  # the rest of the output, up to the end of the pipe
    if process.stdout is not None:
        process.stdout.close()


@contextlib.contextmanager
def running_stack(tmp_path: Path, **env: str) -> Iterator[Stack]:
    """``./bin/run.sh`` with ``env`` on top of this environment, until the block ends."""
    stack: Stack | None = None
    for attempt in range(START_ATTEMPTS):
        stack = _start(tmp_path / f"data-{attempt}", env)
        if _wait_ready(stack):
            break
        _stop(stack)
        if "already in use" not in stack.tail():
            pytest.fail("the local stack did not start:\n" + stack.tail())
    else:
        assert stack is not None
        pytest.fail("the local stack did not start:\n" + stack.tail())
    try:
        yield stack
    finally:
        _stop(stack)


# --- the API as a user calls it ---------------------------------------------------------------


@dataclass
class User:
    """A registered, logged-in user of a running stack."""

    username: str
    token: str
    client: httpx.Client

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(
            path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs
        )

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(
            path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs
        )

    def create_function(self, name: str, image: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "description": f"e2e: {name}", "image": image, **fields}
        response = self.post("/registry/functions", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


def register(client: httpx.Client, username: str, password: str) -> User:
    """Register ``username`` on the stack ``client`` talks to and log in."""
    credentials = {"username": username, "password": password}
    response = client.post("/auth/register", json=credentials)
    assert response.status_code == 201, response.text
    response = client.post("/auth/login", json=credentials)
    assert response.status_code == 200, response.text
    return User(username, response.json()["access_token"], client)
