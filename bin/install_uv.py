"""Install uv without pip: download its wheel from PyPI and unpack the ``uv`` binary.

Used by ``bin/ensure-uv.sh`` when uv is missing and pip cannot install it (no pip at all, or an
"externally managed" system Python). Standard library only; checks the wheel's SHA-256 against
the digest PyPI publishes. Prints the directory the binary was written to.

    python3 bin/install_uv.py [TARGET_DIR]      (default: ~/.local/bin)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import stat
import sys
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

INDEX = "https://pypi.org/pypi/uv/json"


def wheel_markers() -> tuple[str, str]:
    """(platform tag fragment, architecture) of the wheel that runs here."""
    system = sys.platform
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64" if system.startswith("linux") else "arm64"}.get(
        machine, machine
    )
    if system.startswith("linux"):
        libc = platform.libc_ver()[0]
        return ("manylinux" if libc == "glibc" else "musllinux"), arch
    if system == "darwin":
        return "macosx", arch
    raise SystemExit(
        f"no uv wheel for {system}/{machine}: install uv by hand (https://docs.astral.sh/uv/)"
    )


def choose(files: list[dict[str, object]]) -> dict[str, object]:
    family, arch = wheel_markers()
    for candidate in files:
        name = str(candidate["filename"])
        if name.endswith(".whl") and family in name and arch in name:
            return candidate
    raise SystemExit(f"PyPI lists no uv wheel for {family}/{arch}")


def main() -> int:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else Path.home() / ".local" / "bin")
    with urllib.request.urlopen(INDEX, timeout=60) as response:
        release = json.load(response)
    wheel = choose(release["urls"])
    url = urllib.parse.urljoin(INDEX, str(wheel["url"]))
    if not url.startswith("https://"):
        raise SystemExit(f"refusing a non-https download: {url}")
    with urllib.request.urlopen(url, timeout=300) as response:  # noqa: S310 - https checked
        payload = response.read()
    digest = hashlib.sha256(payload).hexdigest()
    expected = wheel["digests"]["sha256"]  # type: ignore[index]
    if digest != expected:
        raise SystemExit(f"uv wheel digest mismatch: {digest} != {expected}")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        for member in archive.namelist():
            if member.endswith(("/scripts/uv", "/scripts/uvx")):
                destination = target / Path(member).name
                destination.write_bytes(archive.read(member))
                destination.chmod(
                    destination.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
                )
    if not (target / "uv").exists():
        raise SystemExit("the uv wheel holds no uv binary")
    print(os.fspath(target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
