"""Stand-ins for the pinned base image of the service Dockerfiles, made from this machine.

No registry is reachable from the test machines, so the deploy tests cannot pull the official
``python:3.11.x-slim-bookworm`` the Dockerfiles are pinned to. ``python_slim_stand_in(tag)``
makes an image under that tag from this machine's own interpreter, laid out like the official
one:

- ``/usr/local/bin/python3.11`` (and ``python3``, ``python``), its standard library under
  ``/usr/local/lib/python3.11`` and ``libpython`` under ``/usr/local/lib``;
- ``pip`` where the interpreter finds packages (the builder stages install uv with it), from the
  wheel ``ensurepip`` bundles, Debian's ``python3-pip-whl`` or else PyPI;
- every shared library the interpreter, its extension modules and manylinux wheels load, at the
  paths they have on this machine, plus the dynamic loader;
- a POSIX shell and the usual commands (Debian's static busybox) for ``RUN`` steps, without the
  network clients the official slim image lacks (no wget, no nc);
- ``/etc/passwd``, ``/etc/group`` and the CA bundle of this machine (the official image ships
  ``ca-certificates``), also where OpenSSL looks for it (``/usr/lib/ssl``).

Every stand-in carries the label ``STAND_IN_LABEL``, so that it is never confused with (or removed
instead of) a real image that holds the same tag.

``dockerfile_base_image(path)`` reads the pinned reference out of a Dockerfile, so that the stand-in
and the Dockerfile cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

from tests.support.images import BUSYBOX, docker, image_exists

STAND_IN_LABEL = "faas.test.stand-in"
BASE_IMAGE_ARG = "PYTHON_IMAGE"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The system libraries manylinux wheels (uv's among them) may load besides the interpreter's own:
# glibc's, libgcc and libstdc++. Debian's slim images have them all.
_EXTRA_LIBRARIES = (
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libutil.so.1",
    "libresolv.so.2",
    "libcrypt.so.1",
    "libz.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
)
# busybox applets the official slim image has no counterpart for: a stand-in with them would hide
# an image that relies on them (a healthcheck with wget, say).
_NOT_IN_SLIM = frozenset({"wget", "nc", "telnet", "ftpget", "ftpput", "tftp", "ssl_client"})
_LIBRARY_DIRS = (Path("/lib/x86_64-linux-gnu"), Path("/usr/lib/x86_64-linux-gnu"), Path("/lib64"))
# EXTERNALLY-MANAGED: Debian marks its interpreter so; the official image's is not.
_SKIP_STDLIB = (
    "site-packages",
    "dist-packages",
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "lib2to3",
    "EXTERNALLY-MANAGED",
)
_ARG_RE = re.compile(rf"^\s*ARG\s+{BASE_IMAGE_ARG}=(\S+)\s*$", re.MULTILINE)


def dockerfile_base_image(dockerfile: Path) -> str:
    """The default of ``ARG PYTHON_IMAGE=...`` in ``dockerfile`` (tag and digest, as pinned)."""
    match = _ARG_RE.search(dockerfile.read_text())
    if match is None:
        raise ValueError(f"{dockerfile}: no `ARG {BASE_IMAGE_ARG}=<image>` line")
    return match.group(1)


def without_digest(reference: str) -> str:
    """``python:3.11.17-slim-bookworm@sha256:...`` -> ``python:3.11.17-slim-bookworm``."""
    return reference.split("@", 1)[0]


def python_version_of(tag: str) -> tuple[int, int]:
    """The major and minor Python version an official ``python:X.Y.Z-...`` tag names."""
    match = re.match(r"^(?:.*/)?python:(\d+)\.(\d+)", tag)
    if match is None:
        raise ValueError(f"{tag!r} is not an official python image tag")
    return int(match.group(1)), int(match.group(2))


def is_stand_in(tag: str) -> bool:
    """Whether ``tag`` names an image made by ``python_slim_stand_in`` (not a pulled one)."""
    try:
        out = docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag, timeout=30)
    except RuntimeError:
        return False
    labels = json.loads(out) or {}
    return STAND_IN_LABEL in labels


def python_slim_stand_in(tag: str) -> bool:
    """Make the stand-in under ``tag`` unless an image with that tag exists already.

    Returns True when this call created it. ``remove_stand_in(tag)`` removes it.
    """
    if image_exists(tag):
        return False
    wanted = python_version_of(tag)
    if sys.version_info[:2] != wanted:
        raise RuntimeError(
            f"the stand-in for {tag} is made from this interpreter, Python "
            f"{sys.version_info.major}.{sys.version_info.minor}: run the tests with Python "
            f"{wanted[0]}.{wanted[1]} (wheels in uv.lock are chosen for it)"
        )
    if not BUSYBOX.exists():
        raise RuntimeError("/bin/busybox is missing: apt-get install busybox-static")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        _lay_out(root)
        archive = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True)
        version = ".".join(str(part) for part in sys.version_info[:3])
        changes = [
            "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"ENV PYTHON_VERSION={version}",
            # libpython is in /usr/local/lib, where the official image's ld.so.cache finds it.
            "ENV LD_LIBRARY_PATH=/usr/local/lib",
            # The copied pip may predate the one in the official image, which reads the system
            # CA store by itself; this one needs to be told.
            f"ENV PIP_CERT={CA_BUNDLE}",
            # Debian's own interpreter would install scripts under /usr/local/local/bin; this
            # makes it use /usr/local/bin like the official image (others ignore the variable).
            "ENV DEB_PYTHON_INSTALL_LAYOUT=deb_system",
            f"LABEL {STAND_IN_LABEL}={tag}",
            'CMD ["python3"]',
        ]
        args: list[str] = []
        for change in changes:
            args += ["--change", change]
        docker("import", *args, str(archive), tag, timeout=300)
    return True


def remove_stand_in(tag: str) -> None:
    """Remove ``tag`` if it is a stand-in (a real image under the same tag is left alone)."""
    if is_stand_in(tag):
        docker("image", "rm", tag, timeout=120)


def _lay_out(root: Path) -> None:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    executable = Path(sys.executable).resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    local = root / "usr/local"

    (local / "bin").mkdir(parents=True)
    shutil.copy2(executable, local / "bin" / version)
    for alias in ("python3", "python"):
        (local / "bin" / alias).symlink_to(version)
    shutil.copytree(
        stdlib, local / "lib" / version, ignore=shutil.ignore_patterns("__pycache__", *_SKIP_STDLIB)
    )
    _install_pip(root / _site_packages(executable, version).relative_to("/"))

    libraries = _shared_libraries(executable)
    for extension in (stdlib / "lib-dynload").glob("*.so"):
        libraries |= _shared_libraries(extension)
    for name in _EXTRA_LIBRARIES:
        found = next((d / name for d in _LIBRARY_DIRS if (d / name).exists()), None)
        if found is not None:
            libraries.add(found)
    for library in libraries:
        if library.name.startswith("libpython"):
            target = local / "lib" / library.name
        else:
            target = root / library.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library.resolve(), target)

    (root / "bin").mkdir()
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if applet not in _NOT_IN_SLIM and not link.exists():
            link.symlink_to("busybox")

    etc = root / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    if CA_BUNDLE.exists():
        (root / CA_BUNDLE.relative_to("/")).parent.mkdir(parents=True)
        shutil.copy2(CA_BUNDLE, root / CA_BUNDLE.relative_to("/"))
        (root / "usr/lib/ssl").mkdir(parents=True)
        (root / "usr/lib/ssl/cert.pem").symlink_to(CA_BUNDLE)
        (root / "usr/lib/ssl/certs").symlink_to(CA_BUNDLE.parent)
    (root / "tmp").mkdir(mode=0o1777)
    (root / "tmp").chmod(0o1777)
    (root / "root").mkdir(mode=0o700)
    subprocess.run(["chmod", "-R", "a+rX", str(root / "usr"), str(root / "bin")], check=True)


def _site_packages(executable: Path, version: str) -> Path:
    """Where the copied interpreter, run from ``/usr/local``, finds installed packages.

    ``site-packages`` for an upstream build (the official image's); ``dist-packages`` for
    Debian's own ``python3``, whose ``site`` module is patched. Asked of the interpreter itself,
    outside any virtualenv (a virtualenv's ``site`` answers for the virtualenv).
    """
    out = subprocess.run(
        [
            str(executable),
            "-c",
            "import json, site; print(json.dumps(site.getsitepackages(['/usr/local'])))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for directory in json.loads(out):
        if directory.startswith(f"/usr/local/lib/{version}/"):
            return Path(directory)
    return Path(f"/usr/local/lib/{version}/site-packages")


def _install_pip(target: Path) -> None:
    """pip, from a wheel on this machine (a wheel is installed by unpacking it), else PyPI."""
    target.mkdir(parents=True, exist_ok=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    wheels = [
        *sorted((stdlib / "ensurepip" / "_bundled").glob("pip-*.whl")),  # upstream builds
        *sorted(Path("/usr/share/python-wheels").glob("pip-*.whl")),  # Debian's python3-pip-whl
    ]
    if wheels:
        with zipfile.ZipFile(wheels[-1]) as wheel:
            wheel.extractall(target)
        return
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        raise RuntimeError("no pip wheel on this machine and no uv to fetch one")
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target), "pip"],
        check=True,
        timeout=300,
    )


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


if __name__ == "__main__":
    # ``python -m tests.support.base_images [DOCKERFILE]``: make the stand-in by hand.
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "auth-service/Dockerfile")
    stand_in = without_digest(dockerfile_base_image(source))
    print(stand_in, "created" if python_slim_stand_in(stand_in) else "exists already")
