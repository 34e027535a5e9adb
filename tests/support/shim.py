"""The spawner's static shim, built by ``spawner-service/shim/build.py`` (pinned Zig from PyPI), and
runs of it: its stdout records read until the end record, decoded twice."""

from __future__ import annotations

import contextlib
import os
import select
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from spawner_service.runtime.output import STDOUT
from spawner_service.runtime.shim import ShimCapture

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "spawner-service" / "shim" / "build.py"
PT_INTERP = 3
PT_DYNAMIC = 2


def build_shim(out: Path | None = None) -> Path:
    """The shim for this machine, compiled into ``out``; without ``out``, where the spawner and
    the local stack look for it (``spawner-service/shim/build/``), built only when it is missing
    or older than its source. The binary's path."""
    options = ["--out", str(out)] if out is not None else ["--if-stale"]
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), *options],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"shim build failed:\n{result.stdout}\n{result.stderr}")
    return Path(result.stdout.strip())


def program_header_types(binary: Path) -> list[int]:
    """``p_type`` of every program header of a 64-bit little-endian ELF file."""
    data = binary.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{binary} is not a 64-bit little-endian ELF file")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]


# --- running a shim and reading its records -----------------------------------------------------

END_TYPES = (b"X", b"E")
DATA_TYPES = (b"D", b"L")
"""The function's stdout, and its stderr."""


def parse_records(data: bytes) -> tuple[list[tuple[bytes, bytes | int]], bytes]:
    """The shim's records at the start of ``data`` (``(b"D" or b"L", bytes)``, or an end record's
    type and status), up to the first end record or the first incomplete or unknown record, and
    the bytes after them. Written apart from ``ShimCapture``, to check it."""
    records: list[tuple[bytes, bytes | int]] = []
    at = 0
    while at + 5 <= len(data):
        kind, value = data[at : at + 1], int.from_bytes(data[at + 1 : at + 5], "big")
        if kind in DATA_TYPES and at + 5 + value <= len(data):
            records.append((kind, data[at + 5 : at + 5 + value]))
            at += 5 + value
            continue
        if kind in END_TYPES:
            records.append((kind, value))
            at += 5
        break
    return records, data[at:]


@dataclass(frozen=True)
class ShimRun:
    """A finished shim: its own exit status, its stdout (the records) and its stderr."""

    status: int
    out: bytes
    err: bytes

    @property
    def records(self) -> list[tuple[bytes, bytes | int]]:
        """The records, all of ``out`` (nothing may follow the end record)."""
        records, rest = parse_records(self.out)
        assert rest == b"", f"not records: {rest[:64]!r}"
        return records

    def _data(self, kind: bytes) -> bytes:
        return b"".join(v for k, v in self.records if k == kind and isinstance(v, bytes))

    @property
    def logs(self) -> bytes:
        """The function's stderr, from its ``L`` records."""
        return self._data(b"L")

    def decoded(self) -> tuple[bytes, tuple[bytes, int] | None]:
        """The function's stdout and the end record as ``ShimCapture`` decodes ``out`` (in one
        chunk), checked against ``records``."""
        capture = ShimCapture(stdout_limit=len(self.out), stderr_tail=len(self.out))
        capture.write(STDOUT, self.out)
        ends = [(kind, value) for kind, value in self.records if isinstance(value, int)]
        assert not capture.malformed
        assert (capture.stdout, capture.end) == (self._data(b"D"), ends[0] if ends else None)
        assert capture.stderr_tail == self.logs
        return capture.stdout, capture.end


def run_shim(
    command: Sequence[str],
    stdin: bytes,
    *,
    keep_stdin_open: bool = False,
    within: float = 20,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ShimRun:
    """Run ``command`` (the shim, or a container of it) with ``stdin``, read its stdout until the
    end record or its end, within ``within`` seconds, then wait for it to exit. Its stderr goes
    to a file: processes the function left behind may keep it open."""
    with (
        tempfile.TemporaryFile() as err,
        subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            cwd=cwd,
        ) as process,
    ):
        try:
            return _finish(process, stdin, keep_stdin_open, time.monotonic() + within, err)
        finally:
            if process.poll() is None:
                process.kill()


def _finish(
    process: subprocess.Popen[bytes],
    stdin: bytes,
    keep_stdin_open: bool,
    deadline: float,
    err: IO[bytes],
) -> ShimRun:
    assert process.stdin is not None
    assert process.stdout is not None
    with contextlib.suppress(BrokenPipeError):  # a refused frame is not read to its end
        process.stdin.write(stdin)
        process.stdin.flush()
        if not keep_stdin_open:
            process.stdin.close()
    out = read_until_end(process.stdout.fileno(), deadline)
    status = process.wait(timeout=max(deadline - time.monotonic(), 1))
    out += process.stdout.read()
    with contextlib.suppress(BrokenPipeError):
        process.stdin.close()
    err.seek(0)
    return ShimRun(status, out, err.read())


def read_until_end(fd: int, deadline: float, limit: int = 64 << 20) -> bytes:
    """What ``fd`` gives until a record other than ``D`` or ``L`` (the end), its end, or ``limit``
    bytes."""
    data = bytearray()
    at = 0  # where the next record starts
    while len(data) < limit:
        while at + 5 <= len(data) and data[at : at + 1] in DATA_TYPES:
            at += 5 + int.from_bytes(data[at + 1 : at + 5], "big")
        if at + 5 <= len(data):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no end record after {len(data)} bytes")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)  # slower than the shim writes: it waits on its stdout
        if not chunk:
            break
        data += chunk
    return bytes(data)
