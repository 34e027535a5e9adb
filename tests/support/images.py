"""Function images built locally for the tests: no registry is reachable from the test machines.

- ``busybox_image``: ``FROM scratch`` with the static busybox (Debian's ``busybox-static``).
- ``python_base_image``: a stand-in for ``python:3.11-slim`` made from this machine's own
  interpreter, its standard library and the shared libraries they load, so that a Dockerfile
  written for the official image (``FROM python:3.11-slim``) builds here unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
PYTHON_BASE_TAG = "python:3.11-slim"
_SKIP_STDLIB = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}


def docker(*args: str, cwd: Path | None = None, timeout: float = 300) -> str:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    result = subprocess.run(
        ["docker", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def image_exists(tag: str) -> bool:
    result = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, check=False, timeout=30
    )
    return result.returncode == 0


def build(context: Path, tag: str, dockerfile: str | None = None) -> None:
    if dockerfile is not None:
        (context / "Dockerfile").write_text(dockerfile)
    docker("build", "--network", "host", "-q", "-t", tag, ".", cwd=context)


def busybox_image(tag: str = "faas-test/busybox:1") -> str:
    """A scratch image holding only the static busybox, with the shell as ENTRYPOINT."""
    if not image_exists(tag):
        if not BUSYBOX.exists():
            raise RuntimeError("/bin/busybox is missing: apt-get install busybox-static")
        with tempfile.TemporaryDirectory() as tmp:
            context = Path(tmp)
            shutil.copy2(BUSYBOX, context / "busybox")
            build(
                context,
                tag,
                "FROM scratch\n"
                "COPY busybox /bin/busybox\n"
                'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                'ENTRYPOINT ["/bin/sh", "-c"]\n',
            )
    return tag


def _shared_libraries(path: Path) -> set[Path]:
    result = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
    libraries: set[Path] = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libraries.add(Path(parts[2]))
        elif parts and parts[0].startswith("/"):
            libraries.add(Path(parts[0]))
    return libraries


def python_base_image(tag: str = PYTHON_BASE_TAG) -> str:
    """This machine's Python in a scratch image, laid out like the official image (/usr/local)."""
    if image_exists(tag):
        return tag
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    executable = Path(sys.executable).resolve()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        (root / "usr/local/bin").mkdir(parents=True)
        (root / "tmp").mkdir(mode=0o1777)
        shutil.copy2(executable, root / "usr/local/bin" / version)
        for alias in ("python3", "python"):
            (root / "usr/local/bin" / alias).symlink_to(version)
        ignore = shutil.ignore_patterns("__pycache__", *_SKIP_STDLIB)
        shutil.copytree(stdlib, root / "usr/local/lib" / version, ignore=ignore)
        libraries = _shared_libraries(executable)
        for extension in (stdlib / "lib-dynload").glob("*.so"):
            libraries |= _shared_libraries(extension)
        for library in libraries:
            target = (
                root / ("lib64" if library.name.startswith("ld-linux") else "lib") / (library.name)
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(library.resolve(), target)
        (root / "etc").mkdir()
        (root / "etc/passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
        )
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        archive = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True)
        env = {"LD_LIBRARY_PATH": "/lib", "PATH": "/usr/local/bin:/bin", "LANG": "C.UTF-8"}
        changes: list[str] = []
        for key, value in env.items():
            changes += ["--change", f"ENV {key}={value}"]
        docker("import", *changes, "--change", 'CMD ["python3"]', str(archive), tag)
    return tag


if __name__ == "__main__":
    # ``python -m tests.support.images [TAG]``: make the python:3.11-slim stand-in by hand.
    print(python_base_image(sys.argv[1] if len(sys.argv) > 1 else PYTHON_BASE_TAG))
