"""The frame a prewarmed container's shim (``spawner-service/shim/shim.c``) reads on stdin.

Every integer is an unsigned 32-bit big-endian number: the magic ``FSH\\x01``, the argv count and
its length-prefixed elements, the env count and its ``KEY=VALUE`` elements, then the working
directory as one length-prefixed element. The bounds and exit statuses mirror the C header.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from enum import IntEnum

MAGIC = b"FSH\x01"
MAX_ELEMENT = 131_071
MAX_COUNT = 4096
MAX_TOTAL = 1 << 20
MAX_CWD = 4095


class ShimStatus(IntEnum):
    """The shim's own exit statuses (nothing was executed), then the two exec failures."""

    TRUNCATED = 120
    BAD_MAGIC = 121
    OVER_BOUND = 122
    MALFORMED = 123
    SETUP_FAILED = 124
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
