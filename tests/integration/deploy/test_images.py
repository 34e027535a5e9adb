"""The four service images, built the way deployments build them and checked from the outside.

Each ``<service>/Dockerfile`` is built from the repository root with the classic builder
(``DOCKER_BUILDKIT=0 docker build --network host``: the builder stage downloads the locked wheels
from PyPI). No registry is reachable from the test machines, so the pinned base image is replaced
by a local stand-in made from this machine's interpreter (``tests.support.base_images``) under the
tag the Dockerfiles pin, read from the Dockerfiles themselves; the builds get it through
``--build-arg PYTHON_IMAGE``.

Then, with no network: the service and ``faas_common`` import; the image runs as an unprivileged
user that cannot change its own code; no uv, pip, pytest, ruff or mypy is left in it; the
healthcheck is a Python command (no curl) that tells a healthy service from a failing one;
auth-service starts for real (SQLite, generated keys, read-only root filesystem) and turns healthy;
the spawner's healthcheck passes only when the Docker socket and its group are granted; the
spawner image holds the pool's static shim, compiled in its build with the locked Zig, and copies
it into a named volume that a hardened function container runs it from.

Everything built here carries a per-run label and is removed at the end, stand-in included.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spawner_service.runtime.output import STDOUT
from spawner_service.runtime.shim import ShimCapture, encode_frame
from tests.support.base_images import (
    dockerfile_base_image,
    python_slim_stand_in,
    remove_stand_in,
    without_digest,
)
from tests.support.images import docker, image_exists
from tests.support.nats_server import find_nats_server
from tests.support.shim import PT_DYNAMIC, PT_INTERP, program_header_types

ROOT = Path(__file__).resolve().parents[3]
RUN_LABEL = "faas.test.deploy-run"
BUILD_TIMEOUT = 900.0
RUN_TIMEOUT = 120.0


@dataclass(frozen=True)
class Service:
    name: str
    package: str
    health_path: str | None = None  # None: no HTTP API
    port_env: str | None = None

    @property
    def dockerfile(self) -> Path:
        return ROOT / self.name / "Dockerfile"


SERVICES = {
    service.name: service
    for service in (
        Service("auth-service", "auth_service", "/auth/health", "AUTH_PORT"),
        Service("registry-service", "registry_service", "/registry/health", "REGISTRY_PORT"),
        Service("publisher-service", "publisher_service", "/publisher/health", "PUBLISHER_PORT"),
        Service("spawner-service", "spawner_service"),
    )
}
HTTP_SERVICES = [name for name, service in SERVICES.items() if service.health_path]
# curl and wget too: nothing (the healthcheck least of all) may need them.
UNWANTED_COMMANDS = ("uv", "uvx", "pip", "pip3", "pytest", "ruff", "mypy", "curl", "wget")
DEV_DISTRIBUTIONS = (
    *("uv", "pip", "pytest", "pytest-asyncio", "pytest-timeout", "ruff", "mypy"),
    "ziglang",  # the shim's compiler stays in its build stage
)
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$")


# --- building ---------------------------------------------------------------------------------


class Images:
    """Builds each service image once per test module and removes everything at the end."""

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:10]
        self.stand_in = ""
        self.base = f"faas-test/deploy-base:{self.run}"
        self.tags: dict[str, str] = {}
        self.build_seconds: dict[str, float] = {}
        self.failures: dict[str, str] = {}  # a failed build is not retried by every test

    def prepare(self) -> None:
        pins = {name: dockerfile_base_image(s.dockerfile) for name, s in SERVICES.items()}
        self.stand_in = without_digest(pins["auth-service"])
        python_slim_stand_in(self.stand_in)  # unless the tag exists (a real image, say)
        # A labelled layer over the stand-in: every image built from it, intermediate ones of the
        # builder stages included, inherits the label, so the clean-up finds exactly those.
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "Dockerfile").write_text(
                f"FROM {self.stand_in}\nLABEL {RUN_LABEL}={self.run}\n"
            )
            docker("build", "--network", "none", "-q", "-t", self.base, tmp, timeout=120)

    def get(self, name: str) -> str:
        if name in self.failures:
            pytest.fail(self.failures[name], pytrace=False)
        if name not in self.tags:
            tag = f"faas-test/deploy-{name}:{self.run}"
            started = time.monotonic()
            result = subprocess.run(
                [
                    # --force-rm: a failed step leaves no container that pins its images.
                    *("docker", "build", "--force-rm", "--network", "host"),
                    *("--build-arg", f"PYTHON_IMAGE={self.base}"),
                    *("-f", str(SERVICES[name].dockerfile.relative_to(ROOT))),
                    *("-t", tag, "."),
                ],
                cwd=ROOT,
                env={**os.environ, "DOCKER_BUILDKIT": "0"},
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
            self.build_seconds[name] = time.monotonic() - started
            if result.returncode != 0:
                log = "\n".join((result.stdout + result.stderr).splitlines()[-80:])
                self.failures[name] = f"docker build -f {name}/Dockerfile . failed:\n{log}"
                pytest.fail(self.failures[name], pytrace=False)
            self.tags[name] = tag
            print(f"built {name} in {self.build_seconds[name]:.1f} s")
        return self.tags[name]

    def clean_up(self) -> None:
        problems: list[str] = []
        for tag in self.tags.values():
            _try(problems, "image", "rm", tag)
        # What is left: the builder stages' images and their intermediate parents.
        _try(problems, "image", "prune", "-a", "-f", "--filter", f"label={RUN_LABEL}={self.run}")
        if image_exists(self.base):  # the prune usually took it already
            _try(problems, "image", "rm", self.base)
        if self.stand_in:  # only if it is a stand-in: a pulled image under the tag stays
            try:
                remove_stand_in(self.stand_in)
            except RuntimeError as exc:  # another session may still build on it
                problems.append(str(exc))
        left = docker("images", "-a", "-q", "--filter", f"label={RUN_LABEL}={self.run}").split()
        if left:
            problems.append(f"images still labelled {RUN_LABEL}={self.run}: {left}")
        if problems:
            print("clean-up incomplete:\n" + "\n".join(problems))


def _try(problems: list[str], *args: str) -> None:
    try:
        docker(*args, timeout=300)
    except RuntimeError as exc:
        problems.append(str(exc))


@pytest.fixture(scope="module")
def images() -> Iterator[Images]:
    built = Images()
    try:
        built.prepare()
        yield built
    finally:
        built.clean_up()
        if built.build_seconds:
            timings = ", ".join(f"{n} {s:.1f} s" for n, s in built.build_seconds.items())
            print(f"image builds: {timings}")


# --- running ----------------------------------------------------------------------------------


def run(image: str, *argv: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``docker run --rm --network none [options] --entrypoint argv[0] image argv[1:]``."""
    return subprocess.run(
        [
            *("docker", "run", "--rm", "--network", "none", *options),
            *("--entrypoint", argv[0], image, *argv[1:]),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def run_python(image: str, code: str, *options: str) -> str:
    result = run(image, "python", "-c", code, options=options)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def config(image: str) -> dict[str, object]:
    out = docker("image", "inspect", "--format", "{{json .Config}}", image, timeout=30)
    parsed: dict[str, object] = json.loads(out)
    return parsed


def healthcheck_argv(image: str) -> list[str]:
    check = config(image).get("Healthcheck")
    assert isinstance(check, dict), f"{image} has no HEALTHCHECK"
    test = check["Test"]
    assert isinstance(test, list)
    assert test, f"{image}: empty HEALTHCHECK"
    if test[0] == "CMD":
        return [str(part) for part in test[1:]]
    assert test[0] == "CMD-SHELL", f"{image}: HEALTHCHECK {test}"
    return ["/bin/sh", "-c", str(test[1])]


# --- the Dockerfiles --------------------------------------------------------------------------


def test_every_service_pins_the_same_base_image() -> None:
    pins = {name: dockerfile_base_image(service.dockerfile) for name, service in SERVICES.items()}
    assert len(set(pins.values())) == 1, pins
    assert PINNED_BASE.match(pins["auth-service"]), pins["auth-service"]


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_installs_exactly_the_lock(name: str) -> None:
    text = SERVICES[name].dockerfile.read_text()
    syncs = re.findall(r"^RUN uv sync (.*)$", text, re.MULTILINE)
    assert syncs, "no `uv sync` step"
    for options in syncs:
        assert "--frozen" in options.split(), options
        assert "--no-dev" in options.split(), options
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS builder$", text, re.MULTILINE)
    assert len(re.findall(r"^FROM \$\{PYTHON_IMAGE\}\s*$", text, re.MULTILINE)) == 1


def test_the_spawner_image_compiles_the_shim_with_the_locked_zig() -> None:
    text = SERVICES["spawner-service"].dockerfile.read_text()
    (pinned,) = re.findall(r"^ARG ZIGLANG_VERSION=(\S+)$", text, re.MULTILINE)
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (locked,) = [package["version"] for package in lock["package"] if package["name"] == "ziglang"]
    assert pinned == locked, f"the Dockerfile builds with Zig {pinned}, uv.lock pins {locked}"


# --- the images -------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.parametrize("name", SERVICES)
def test_service_and_common_import(images: Images, name: str) -> None:
    image = images.get(name)
    package = SERVICES[name].package
    out = run_python(image, f"import {package}, faas_common; print({package}.__file__)")
    # Installed as a wheel in the virtualenv, not an editable link to a source tree.
    assert out.startswith("/app/.venv/lib/python3.11/site-packages/"), out


@pytest.mark.docker
@pytest.mark.parametrize("name", SERVICES)
def test_runs_as_unprivileged_user(images: Images, name: str) -> None:
    image = images.get(name)
    user = config(image).get("User")
    assert isinstance(user, str)
    assert user.split(":")[0] not in {"", "0", "root"}, f"USER {user!r}"
    out = run_python(
        image,
        "import json, os, pwd, site; "
        "print(json.dumps([os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name, "
        "os.access(site.getsitepackages()[0], os.W_OK), os.access('/app/.venv/bin', os.W_OK)]))",
    )
    uid, gid, user_name, site_writable, bin_writable = json.loads(out)
    assert uid != 0
    assert gid != 0
    assert user_name == "faas"
    assert not site_writable, "the service can rewrite its own dependencies"
    assert not bin_writable


@pytest.mark.docker
@pytest.mark.parametrize("name", SERVICES)
def test_no_build_or_dev_tools(images: Images, name: str) -> None:
    image = images.get(name)
    out = run_python(
        image,
        "import importlib.metadata as m, importlib.util as u, json, shutil; "
        f"commands = {list(UNWANTED_COMMANDS)!r}; dists = {list(DEV_DISTRIBUTIONS)!r}; "
        "print(json.dumps({"
        "'commands': [c for c in commands if shutil.which(c)], "
        "'modules': [d for d in dists if u.find_spec(d.replace('-', '_'))], "
        "'distributions': sorted({d.metadata['Name'].lower() for d in m.distributions()} "
        "& set(dists))}))",
    )
    found = json.loads(out)
    assert found == {"commands": [], "modules": [], "distributions": []}


@pytest.mark.docker
@pytest.mark.parametrize("name", SERVICES)
def test_entrypoint_and_healthcheck(images: Images, name: str) -> None:
    service = SERVICES[name]
    image = images.get(name)
    image_config = config(image)
    assert image_config["Entrypoint"] == ["python", "-m", service.package]
    exposed = image_config.get("ExposedPorts") or {}
    assert exposed == ({"8000/tcp": {}} if service.health_path else {})
    argv = healthcheck_argv(image)
    assert argv[0] == "python", argv
    assert not any(tool in " ".join(argv) for tool in ("curl", "wget")), argv


HEALTH_PROBE = """
import http.server, json, os, subprocess, threading

check = json.loads(os.environ["CHECK"])
path = os.environ["HEALTH_PATH"]
status = {"code": 200}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(status["code"] if self.path == path else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def listen(port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def probe(**env):
    env = {**os.environ, **env}
    return subprocess.run(check, env=env, capture_output=True, timeout=30).returncode


results = {"nothing listening": probe()}
server = listen(8000)
results["healthy"] = probe()
status["code"] = 503
results["answers 503"] = probe()
server.shutdown()
server.server_close()
status["code"] = 200
listen(8081)
results["healthy on the configured port"] = probe(**{os.environ["PORT_ENV"]: "8081"})
print(json.dumps(results))
"""


@pytest.mark.docker
@pytest.mark.parametrize("name", HTTP_SERVICES)
def test_healthcheck_tells_healthy_from_failing(images: Images, name: str) -> None:
    service = SERVICES[name]
    assert service.health_path is not None
    assert service.port_env is not None
    image = images.get(name)
    out = run_python(
        image,
        HEALTH_PROBE,
        *("-e", f"CHECK={json.dumps(healthcheck_argv(image))}"),
        *("-e", f"HEALTH_PATH={service.health_path}"),
        *("-e", f"PORT_ENV={service.port_env}"),
    )
    results = json.loads(out)
    assert results["healthy"] == 0, results
    assert results["healthy on the configured port"] == 0, results
    assert results["nothing listening"] != 0, results
    assert results["answers 503"] != 0, results


@pytest.mark.docker
def test_auth_service_starts_and_turns_healthy(images: Images) -> None:
    """auth-service needs its database and NATS (token revocations): a nats-server (the static
    binary of this environment) runs in a container of its own, and auth-service joins that
    container's network namespace, so both reach each other on loopback only."""
    image = images.get("auth-service")
    nats_binary = find_nats_server()
    assert nats_binary is not None, "the nats-server binary of this environment is missing"
    nats_name = f"faas-test-deploy-nats-{images.run}"
    name = f"faas-test-deploy-auth-{images.run}"
    docker(
        *("run", "-d", "--name", nats_name, "--network", "none", "--read-only"),
        *("--tmpfs", "/tmp:rw,uid=10001,gid=10001,mode=1700"),
        *("-v", f"{nats_binary.resolve()}:/nats-server:ro", "--entrypoint", "/nats-server"),
        image,
        *("-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/tmp/js"),
        timeout=60,
    )
    try:
        docker(
            *("run", "-d", "--name", name, "--network", f"container:{nats_name}"),
            # As hardened as a deployment would run it: the image needs no writable root
            # filesystem.
            *("--read-only", "--tmpfs", "/tmp:rw,uid=10001,gid=10001,mode=1700"),
            *("--cap-drop", "ALL", "--security-opt", "no-new-privileges"),
            *("--health-interval", "1s", "--health-start-period", "60s"),
            *("-e", "DATABASE_URL=sqlite+aiosqlite:////tmp/auth.db"),
            *("-e", "AUTH_GENERATE_KEYS=true", "-e", "AUTH_PRIVATE_KEY_FILE=/tmp/keys/jwt.pem"),
            *("-e", "NATS_URL=nats://127.0.0.1:4222"),
            image,
            timeout=60,
        )
        status = _wait_for_health(name, seconds=60)
        if status != "healthy":
            logs = subprocess.run(
                ["docker", "logs", "--tail", "40", name],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            pytest.fail(f"auth-service is {status or 'not running'}:\n{logs.stdout}{logs.stderr}")
    finally:
        for container in (name, nats_name):
            subprocess.run(
                ["docker", "rm", "-f", container], capture_output=True, timeout=60, check=False
            )


def _wait_for_health(name: str, *, seconds: float) -> str:
    """The container's health status once healthy or stopped, or the last one seen."""
    status = ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = json.loads(docker("inspect", "--format", "{{json .State}}", name, timeout=30))
        status = state.get("Health", {}).get("Status", "")
        if status == "healthy" or not state.get("Running"):
            break
        time.sleep(0.5)
    return status


def _docker_socket() -> Path:
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        pytest.skip(f"the engine is reached through DOCKER_HOST={host}, not a local socket")
    return Path(host.removeprefix("unix://") or "/var/run/docker.sock")


@pytest.mark.docker
def test_spawner_healthcheck_needs_the_socket_and_its_group(images: Images) -> None:
    image = images.get("spawner-service")
    argv = healthcheck_argv(image)
    socket = _docker_socket()
    info = socket.stat()
    assert stat.S_ISSOCK(info.st_mode), f"{socket} is not a socket"
    mount = ("-v", f"{socket}:/var/run/docker.sock")

    without_socket = run(image, *argv)
    assert without_socket.returncode != 0, without_socket.stdout + without_socket.stderr

    granted = run(image, *argv, options=(*mount, "--group-add", str(info.st_gid)))
    assert granted.returncode == 0, granted.stdout + granted.stderr

    others_rw = stat.S_IROTH | stat.S_IWOTH
    if info.st_mode & others_rw != others_rw:
        # Mounted but the group not granted: the unprivileged user is refused.
        refused = run(image, *argv, options=mount)
        assert refused.returncode != 0, refused.stdout + refused.stderr


def image_env(image: str) -> dict[str, str]:
    entries = config(image).get("Env") or []
    assert isinstance(entries, list)
    return dict(str(entry).split("=", 1) for entry in entries)


FILE_MODES = """
import json, os, sys
print(json.dumps({
    "files": {path: [os.stat(path).st_uid, os.stat(path).st_gid, os.stat(path).st_mode & 0o7777]
              for path in sys.argv[1:]},
    "writable": os.access(sys.argv[1], os.W_OK),
}))
"""


@pytest.mark.docker
def test_spawner_image_holds_a_static_shim_at_spawner_pool_shim(
    images: Images, tmp_path: Path
) -> None:
    image = images.get("spawner-service")
    shim = image_env(image)["SPAWNER_POOL_SHIM"]
    container = docker("create", image, timeout=60).strip()
    try:
        docker("cp", f"{container}:{shim}", str(tmp_path / "faas-shim"), timeout=60)
    finally:
        docker("rm", container, timeout=60)
    headers = program_header_types(tmp_path / "faas-shim")
    assert PT_INTERP not in headers, "the shim needs a program interpreter"
    assert PT_DYNAMIC not in headers, "the shim is linked dynamically"

    result = run(image, "python", "-c", FILE_MODES, shim, "/var/lib/faas-shim")
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout)
    assert found["files"][shim] == [0, 0, 0o755], "root's, executable by every user"
    assert found["writable"] is False, "the spawner could change its containers' entrypoint"
    assert found["files"]["/var/lib/faas-shim"][:2] == [10001, 10001], "the volume's mount point"


INSTALL_SHIM = (
    "from spawner_service.config import SpawnerSettings; "
    "from spawner_service.runtime.prewarm import install_shim; "
    "import sys; install_shim(SpawnerSettings(pool_shim_volume=sys.argv[1]))"
)


@pytest.mark.docker
def test_function_containers_run_the_shim_the_spawner_put_into_the_volume(
    images: Images,
) -> None:
    """As in compose: the spawner (its own user, read-only root, no capabilities) has the named
    volume at SPAWNER_POOL_SHIM_DIR and copies the shim there; a function container, hardened and
    another user, mounts the same volume read-only at /.faas and runs the shim as its
    entrypoint."""
    image = images.get("spawner-service")
    volume = f"faas-test-shim-{images.run}"
    hardened = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")
    try:
        spawner = run(
            image,
            *("python", "-c", INSTALL_SHIM, volume),
            options=(*hardened, "--user", "10001:0", "-v", f"{volume}:/var/lib/faas-shim"),
        )
        assert spawner.returncode == 0, spawner.stdout + spawner.stderr
        frame = encode_frame(["python", "-c", "print('from the volume')"], {}, "")
        function = subprocess.run(
            [
                *("docker", "run", "--rm", "-i", "--network", "none", *hardened),
                *("--user", "65534:65534", "-v", f"{volume}:/.faas:ro"),
                *("--entrypoint", "/.faas/faas-shim", image),
            ],
            input=frame,
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    finally:
        subprocess.run(
            ["docker", "volume", "rm", "-f", volume], capture_output=True, timeout=60, check=False
        )
    assert function.returncode == 0, function.stderr.decode(errors="replace")
    capture = ShimCapture(stdout_limit=1 << 16, stderr_tail=0)
    capture.write(STDOUT, function.stdout)
    assert (capture.stdout, capture.end, capture.malformed) == (
        b"from the volume\n",
        (b"X", 0),
        False,
    )
