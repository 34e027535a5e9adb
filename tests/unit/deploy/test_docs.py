"""What the documentation tells users to type names what docker-compose.yml runs.

Operators copy the scale commands and the internal addresses from the README, so every compose
service name and every ``name:port`` in the documentation's code — README.md and each part's
README (fenced blocks and inline code), the comments of bin/run.sh, bin/run.windows.ps1 and
docker-compose.yml — is checked against the compose file:

- ``--scale NAME=N`` and ``docker service ... faas_NAME[=N]`` name a compose service;
- ``http://NAME:PORT`` and bare ``NAME:PORT`` name a compose service and a port it listens on
  there (its ``*_PORT`` variable, its healthcheck, its published container port, or the address
  other services are given for it; for the gateway, also its APISIX listen and metrics ports);
- the README's scale lines cover every platform service with the file's replica counts, and its
  topology table lists exactly the compose services with their replicas and ports.

Placeholders (``NAME``, ``SERVICE``, ``<service-name>``) are not names. Everything is parsed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import deploy

GATEWAY = "apisix"
# The platform's own services, by the names users scale them with.
PLATFORM_SERVICES = ("auth-service", "registry-service", "publisher-service", "spawner-service")
# Their replica counts in docker-compose.yml, as the README's scale lines spell them out.
REPLICAS = dict(zip(PLATFORM_SERVICES, (3, 3, 3, 10), strict=True))
# The seed's internal addresses of the HTTP services: http://auth-service:8081 and so on.
SEED_ADDRESSES = {"auth-service": 8081, "registry-service": 8082, "publisher-service": 8083}

MARKDOWN = [
    deploy.README,
    *sorted(
        path for path in deploy.ROOT.glob("*/README.md") if not path.parent.name.startswith(".")
    ),
]
COMMENTED = [deploy.RUN_SH, deploy.RUN_PS1, deploy.COMPOSE_FILE]


def document_id(path: Path) -> str:
    return str(path.relative_to(deploy.ROOT))


def code_of(path: Path) -> list[str]:
    if path.suffix == ".md":
        return deploy.markdown_code(path.read_text(encoding="utf-8"))
    return deploy.comment_lines(path)


@pytest.fixture(scope="module")
def ports(compose: dict[str, Any]) -> dict[str, set[int]]:
    """The ports each compose service listens on, per the deployment files."""
    found = {name: deploy.listening_ports(compose, name) for name in deploy.services(compose)}
    found[GATEWAY] |= deploy.gateway_ports()
    return found


@pytest.fixture(scope="module")
def readme_code() -> list[str]:
    return code_of(deploy.README)


# --- every name and address in the documentation ----------------------------------------------


@pytest.mark.parametrize("document", MARKDOWN + COMMENTED, ids=document_id)
def test_every_scaled_name_is_a_compose_service(
    document: Path, compose_services: dict[str, dict[str, Any]]
) -> None:
    unknown = [
        f"{name} in {line.strip()!r}"
        for line in code_of(document)
        for name, _ in deploy.scaled_services(line)
        if not deploy.is_placeholder(name) and name not in compose_services
    ]
    assert not unknown, f"{document_id(document)} scales no such compose service: {unknown}"


@pytest.mark.parametrize("document", MARKDOWN + COMMENTED, ids=document_id)
def test_every_address_is_a_compose_service_on_a_port_it_listens_on(
    document: Path, ports: dict[str, set[int]]
) -> None:
    wrong = []
    for line in code_of(document):
        for host, port in deploy.service_addresses(line):
            if host not in ports:
                wrong.append(f"{host}:{port} (no such compose service) in {line.strip()!r}")
            elif int(port) not in ports[host]:
                wrong.append(f"{host}:{port} ({host} listens on {sorted(ports[host])})")
    assert not wrong, f"{document_id(document)}: {wrong}"


def test_the_stack_and_project_name_is_the_one_the_documentation_uses() -> None:
    assert f'PROJECT="${{FAAS_PROJECT:-{deploy.STACK}}}"' in deploy.RUN_SH.read_text()
    assert f"Get-Setting 'FAAS_PROJECT' '{deploy.STACK}'" in deploy.RUN_PS1.read_text()
    text = deploy.README.read_text(encoding="utf-8")
    assert f"docker-compose.yml {deploy.STACK}`" in text, "the README's stack deploy line"
    assert f"docker compose -p {deploy.STACK} " in text


# --- the README's scale commands --------------------------------------------------------------


def scale_lines(code: list[str], command: str) -> list[dict[str, int | None]]:
    return [
        dict(deploy.scaled_services(line))
        for line in code
        if line.lstrip().startswith(command) and deploy.scaled_services(line)
    ]


@pytest.mark.parametrize(
    "command", ["docker compose up", "docker service scale"], ids=["compose", "swarm"]
)
def test_the_readme_scales_every_platform_service_to_the_files_counts(
    command: str, readme_code: list[str], compose_services: dict[str, dict[str, Any]]
) -> None:
    lines = scale_lines(readme_code, command)
    assert lines, f"the README shows no `{command}` line with --scale / faas_NAME="
    expected = {name: deploy.replicas(compose_services[name]) for name in PLATFORM_SERVICES}
    assert expected in lines, f"no `{command}` line scales {expected}: {lines}"


def test_the_readme_shows_the_scale_commands_verbatim(readme_code: list[str]) -> None:
    compose_line = "docker compose up -d " + " ".join(
        f"--scale {name}={count}" for name, count in REPLICAS.items()
    )
    swarm_line = "docker service scale " + " ".join(
        f"{deploy.STACK}_{name}={count}" for name, count in REPLICAS.items()
    )
    stripped = [line.strip() for line in readme_code]
    assert compose_line in stripped
    assert swarm_line in stripped


def test_the_readme_gives_the_internal_address_of_each_http_service(
    readme_code: list[str], ports: dict[str, set[int]]
) -> None:
    mentioned = {
        (host, int(port)) for line in readme_code for host, port in deploy.service_addresses(line)
    }
    for name, port in SEED_ADDRESSES.items():
        assert ports[name] == {port}, f"{name} listens on {sorted(ports[name])}, not {port}"
        assert (name, port) in mentioned, f"the README does not show http://{name}:{port}"


# --- the README's topology table --------------------------------------------------------------


def test_the_topology_table_is_the_compose_file(
    compose_services: dict[str, dict[str, Any]], ports: dict[str, set[int]]
) -> None:
    rows = deploy.readme_topology(deploy.README.read_text(encoding="utf-8"))
    listed = [name for row in rows for name in row.names]
    assert sorted(listed) == sorted(compose_services), "the table lists other services"
    for row in rows:
        for name in row.names:
            service = compose_services[name]
            assert row.replicas == deploy.replicas(service), f"{name}: replicas"
            if row.port is None:
                assert not ports[name], f"{name} listens on {sorted(ports[name])}: say which"
            else:
                assert row.port in ports[name], f"{name}: {row.port} not in {ports[name]}"
            own = {
                int(value)
                for variable, value in deploy.environment_of(service).items()
                if variable.endswith("_PORT")
            }
            assert own <= {row.port}, f"{name} is configured to listen on {own}"


# --- the checks themselves --------------------------------------------------------------------


def test_the_checks_catch_the_names_and_ports_of_before(
    compose_services: dict[str, dict[str, Any]], ports: dict[str, set[int]]
) -> None:
    # The names and port the file used before issue 11 are found, and are refused.
    old = (
        "docker compose -p faas up -d --scale spawner=20 --scale publisher=5\n"
        "docker service scale faas_spawner=20 faas_publisher=5\n"
        "JWT_JWKS_URL=http://auth:8000/auth/.well-known/jwks.json\n"
        "upstream `registry:8000`\n"
    )
    lines = old.splitlines()
    scaled = [name for line in lines for name, _ in deploy.scaled_services(line)]
    assert scaled == ["spawner", "publisher", "spawner", "publisher"]
    assert not set(scaled) & set(compose_services)
    addresses = [address for line in lines for address in deploy.service_addresses(line)]
    assert addresses == [("auth", "8000"), ("registry", "8000")]
    assert 8000 not in ports["auth-service"] | ports["registry-service"]


@pytest.mark.parametrize(
    "text",
    [
        "nats:2.15-alpine",
        "postgres:16-bookworm",
        "faas-platform/auth-service:latest",
        "http://127.0.0.1:8081/auth/health",
        "http://localhost:8080",
        "docker service logs faas_SERVICE",
        "--scale <service-name>=<number>",
    ],
)
def test_the_checks_ignore_what_is_no_service_address(text: str) -> None:
    assert deploy.service_addresses(text) == []
    names = [name for name, _ in deploy.scaled_services(text)]
    assert all(deploy.is_placeholder(name) for name in names)
