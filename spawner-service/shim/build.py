"""Build the spawner's static shim with the pinned Zig toolchain from PyPI (no system compiler).

    uv run --no-sync python spawner-service/shim/build.py [--out DIR] [--arch x86_64|aarch64]

Writes ``DIR/faas-shim-<arch>`` (default ``spawner-service/shim/build/``), a static musl binary,
and prints its path. The architecture defaults to this machine's.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "shim.c"
DEFAULT_OUT = HERE / "build"
ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
FLAGS = ["-static", "-Os", "-s", "-std=c11", "-D_POSIX_C_SOURCE=200809L"]
WARNINGS = ["-Wall", "-Wextra", "-Werror"]


def machine_arch() -> str:
    machine = platform.machine().lower()
    if machine not in ARCHES:
        raise SystemExit(f"unsupported machine {machine!r}: build with --arch")
    return ARCHES[machine]


def build(out: Path, arch: str, timeout: float = 600) -> Path:
    """Compile ``shim.c`` for ``arch`` into ``out``; return the binary's path."""
    out.mkdir(parents=True, exist_ok=True)
    binary = out / f"faas-shim-{arch}"
    command = [sys.executable, "-m", "ziglang", "cc", *FLAGS, *WARNINGS]
    command += ["-target", f"{arch}-linux-musl", "-o", str(binary), str(SOURCE)]
    subprocess.run(command, check=True, timeout=timeout)
    binary.chmod(0o755)
    return binary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--arch", choices=sorted(set(ARCHES.values())), default=None)
    args = parser.parse_args()
    print(build(args.out, args.arch or machine_arch()))


if __name__ == "__main__":
    main()
