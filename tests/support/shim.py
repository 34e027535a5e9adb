"""The spawner's static shim, built by ``spawner-service/shim/build.py`` (pinned Zig from PyPI)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

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
