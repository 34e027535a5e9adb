"""Build the spawner's static shim with the pinned Zig toolchain from PyPI (no system compiler).

    uv run --no-sync python spawner-service/shim/build.py [--out DIR] [--arch x86_64|aarch64]
                                                          [--if-stale]

Writes ``DIR/faas-shim-<arch>`` (default ``spawner-service/shim/build/``, where the spawner looks
for it outside its image), a static musl binary, and prints its path. The architecture defaults
to this machine's. ``--if-stale`` builds only when the binary is missing or older than ``shim.c``
or this script, and says so on stderr (the first build takes about 40 s: Zig compiles musl once
into its cache). The binary is written under a temporary name and renamed into place, so a
spawner or a build running at the same time never sees half a file.
"""

from __future__ import annotations

import argparse
import os
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


def binary_path(out: Path, arch: str) -> Path:
    return out / f"faas-shim-{arch}"


def build(out: Path, arch: str, timeout: float = 600) -> Path:
    """Compile ``shim.c`` for ``arch`` into ``out``; return the binary's path."""
    out.mkdir(parents=True, exist_ok=True)
    binary = binary_path(out, arch)
    partial = out / f".faas-shim-{arch}.{os.getpid()}"
    command = [sys.executable, "-m", "ziglang", "cc", *FLAGS, *WARNINGS]
    command += ["-target", f"{arch}-linux-musl", "-o", str(partial), str(SOURCE)]
    try:
        subprocess.run(command, check=True, timeout=timeout)
        partial.chmod(0o755)
        partial.replace(binary)
    finally:
        partial.unlink(missing_ok=True)
    return binary


def stale(binary: Path) -> bool:
    """Whether ``binary`` is missing or older than its sources (``shim.c``, this script)."""
    if not binary.is_file():
        return True
    built = binary.stat().st_mtime
    return any(source.stat().st_mtime > built for source in (SOURCE, Path(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--arch", choices=sorted(set(ARCHES.values())), default=None)
    parser.add_argument("--if-stale", action="store_true", help="build only when out of date")
    args = parser.parse_args()
    arch = args.arch or machine_arch()
    binary = binary_path(args.out, arch)
    if args.if_stale:
        if not stale(binary):
            print(binary)
            return
        print(f"building the pool's shim {binary} (about 40 s the first time)", file=sys.stderr)
    try:
        print(build(args.out, arch))
    except subprocess.CalledProcessError as exc:
        raise SystemExit(
            f"the shim did not compile: zig cc exited with status {exc.returncode}"
        ) from None


if __name__ == "__main__":
    main()
