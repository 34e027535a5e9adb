"""The protocol of a prewarmed container's shim (``spawner-service/shim/shim.c``).

In: one frame on stdin. Every integer is an unsigned 32-bit big-endian number: the magic
``FSH\\x02``, the argv count and its length-prefixed elements, the env count and its ``KEY=VALUE``
elements (added to the container's own environment, replacing entries of the same key), then the
working directory as one length-prefixed element (empty: the image's). The bounds and exit
statuses mirror the C header.

Out: the shim's stdout is a sequence of records: ``D`` + length + bytes (the function's stdout),
``L`` + length + bytes (its stderr: relayed too, so none of it comes after the end), then one end
record, ``X`` + the function's exit status or ``E`` + 126/127 (it could not be
executed). ``ShimCapture`` decodes them into an ``OutputCapture``; the function's bytes are only
ever inside ``D`` and ``L`` records, so it cannot forge the end.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from enum import IntEnum

from spawner_service.runtime.output import STDERR, STDOUT, OutputCapture

MAGIC = b"FSH\x02"
MAX_ELEMENT = 131_071
MAX_COUNT = 4096
MAX_TOTAL = 1 << 20
MAX_CWD = 4095


class ShimStatus(IntEnum):
    """The shim's own exit statuses (nothing was executed), then the two exec failures (the
    status of an ``E`` record)."""

    TRUNCATED = 120
    BAD_MAGIC = 121
    OVER_BOUND = 122
    MALFORMED = 123
    SETUP_FAILED = 124
    RELAY_FAILED = 125
    CANNOT_EXECUTE = 126
    NOT_FOUND = 127


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def element(data: bytes) -> bytes:
    """One length-prefixed element."""
    return u32(len(data)) + data


def elements(items: Sequence[bytes]) -> bytes:
    """A count, then each item as an element."""
    return u32(len(items)) + b"".join(element(item) for item in items)


def encode_frame(argv: Sequence[str], env: Mapping[str, str], cwd: str) -> bytes:
    """The whole frame: argv (argument last), the complete environment, the working directory."""
    entries = [os.fsencode(f"{key}={value}") for key, value in env.items()]
    return (
        MAGIC
        + elements([os.fsencode(arg) for arg in argv])
        + elements(entries)
        + element(os.fsencode(cwd))
    )


DATA, LOG, EXITED, NOT_EXECUTED = b"D", b"L", b"X", b"E"
RECORD_HEAD = 5


class ShimCapture(OutputCapture):
    """An ``OutputCapture`` of a shim's container: stdout carries the shim's records, decoded
    as they come (never buffering more than one record's head), the function's bytes kept under
    the same cap. ``end`` is the end record (type and status) once it came."""

    def __init__(self, *, stdout_limit: int, stderr_tail: int) -> None:
        super().__init__(stdout_limit=stdout_limit, stderr_tail=stderr_tail)
        self.end: tuple[bytes, int] | None = None
        self.malformed = False
        """Bytes that are not a record, or bytes after the end record: not the shim's output."""
        self.records = 0
        """Records read so far: none when the shim never ran."""
        self._head = bytearray()
        self._remaining = 0
        self._stream = STDOUT
        """Where the current record's bytes go: stdout (``D``) or stderr (``L``)."""

    @property
    def finished(self) -> bool:
        return super().finished or self.end is not None or self.malformed

    def write(self, stream: int, data: bytes) -> None:
        if stream != STDOUT:
            super().write(stream, data)
            return
        view = memoryview(data)
        while len(view) and not self.finished:
            if self._remaining:
                take = min(self._remaining, len(view))
                super().write(self._stream, bytes(view[:take]))
                self._remaining -= take
                view = view[take:]
                continue
            needed = RECORD_HEAD - len(self._head)
            self._head += view[:needed]
            view = view[needed:]
            if len(self._head) == RECORD_HEAD:
                self._record(bytes(self._head[:1]), int.from_bytes(self._head[1:], "big"))
                self._head.clear()
        if len(view) and self.end is not None:
            self.malformed = True

    def _record(self, kind: bytes, value: int) -> None:
        self.records += 1
        if kind in (DATA, LOG):
            self._stream = STDOUT if kind == DATA else STDERR
            self._remaining = value
        elif kind in (EXITED, NOT_EXECUTED):
            self.end = (kind, value)
        else:
            self.malformed = True
