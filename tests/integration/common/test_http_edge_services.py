"""The HTTP edge of each service as it runs in production: ``python -m auth_service``,
``registry_service`` and ``publisher_service`` as processes of their own (one nats-server,
SQLite), configured through the environment, called over raw loopback sockets.

Every service: a head over ``MAX_HEADER_BYTES`` answers 431, a head sent byte by byte is cut
off with 408; a body shorter than its ``Content-Length`` creates no user, no function and no
activation; ``X-Forwarded-For`` from an address outside ``FORWARDED_ALLOW_IPS`` does not reach
the logs; connections over ``MAX_CONNECTIONS`` hold no file descriptor of the process.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.keys import RsaKeys
from tests.support.nats_server import LOOPBACK, NatsServer, find_nats_server, free_port
from tests.support.processes import ServiceProcess, env_of, wait_until
from tests.support.raw_http import (
    exchange,
    first_closed,
    open_half_sent,
    open_sockets,
    parse,
    request_head,
    trickle,
)

pytestmark = pytest.mark.nats

MAX_HEADER_BYTES = 4096
MAX_CONNECTIONS = 20
PASSWORD = "edge-password-1"
UNTRUSTED_PROXY = "192.0.2.1"
"""The only proxy the services believe: not the loopback address the tests call from."""
SPOOFED = "203.0.113.9"


@dataclass
class Services:
    auth: ServiceProcess
    registry: ServiceProcess
    publisher: ServiceProcess

    def by_prefix(self, prefix: str) -> ServiceProcess:
        return {"auth": self.auth, "registry": self.registry, "publisher": self.publisher}[prefix]


def port_of(service: ServiceProcess) -> int:
    assert service.health_url is not None
    return httpx.URL(service.health_url).port or 80


def base_url(service: ServiceProcess) -> str:
    return f"http://{LOOPBACK}:{port_of(service)}"


def service_process(
    name: str, directory: Path, common: dict[str, object], **env: object
) -> ServiceProcess:
    port = free_port()
    prefix = name.upper()
    return ServiceProcess(
        name=name,
        module=f"{name}_service",
        directory=directory / name,
        health_url=f"http://{LOOPBACK}:{port}/{name}/ready",
        env=env_of({**common, f"{prefix}_HOST": LOOPBACK, f"{prefix}_PORT": port, **env}),
    )


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    binary = find_nats_server()
    assert binary is not None, "nats-server is installed with the workspace"
    root = tmp_path_factory.mktemp("edge-nats")
    server = NatsServer(binary, free_port(), root / "store", root / "nats-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, nats: NatsServer, rsa_keys: RsaKeys
) -> Iterator[Services]:
    directory = tmp_path_factory.mktemp("edge")
    common: dict[str, object] = {
        "LOG_LEVEL": "INFO",
        "JWT_PUBLIC_KEY_FILE": rsa_keys.public_path,
        "NATS_URL": nats.url,
        "NATS_REPLICAS": 1,
        "MAX_HEADER_BYTES": MAX_HEADER_BYTES,
        "REQUEST_TIMEOUT_SECONDS": 1,
        "MAX_CONNECTIONS": MAX_CONNECTIONS,
        "FORWARDED_ALLOW_IPS": UNTRUSTED_PROXY,
    }

    def database(name: str) -> str:
        return f"sqlite+aiosqlite:///{directory / name / f'{name}.db'}"

    running = Services(
        auth=service_process(
            "auth",
            directory,
            common,
            DATABASE_URL=database("auth"),
            AUTH_PRIVATE_KEY_FILE=rsa_keys.private_path,
        ),
        registry=service_process("registry", directory, common, DATABASE_URL=database("registry")),
        publisher=service_process("publisher", directory, common),
    )
    processes = [running.auth, running.registry, running.publisher]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready(90)
        yield running
    finally:
        for process in processes:
            process.stop()


@pytest.fixture(scope="module")
def token(services: Services) -> str:
    with httpx.Client(base_url=base_url(services.auth), timeout=30) as client:
        credentials = {"username": f"edge-{uuid.uuid4().hex[:8]}", "password": PASSWORD}
        assert client.post("/auth/register", json=credentials).status_code == 201
        response = client.post("/auth/login", json=credentials)
        assert response.status_code == 200, response.text
        access_token: str = response.json()["access_token"]
        return access_token


def cut_short(path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    """A POST whose complete JSON body is 10 bytes shorter than its ``Content-Length``."""
    raw = json.dumps(body).encode()
    return request_head(
        "POST", path, {**(headers or {}), "Content-Length": str(len(raw) + 10)}, body=raw
    )


async def send_cut_short(service: ServiceProcess, request: bytes) -> bytes:
    """The request, a pause for the service to read what came, then the client hangs up."""
    return await exchange(LOOPBACK, port_of(service), request, half_close=True, pause=0.3)


SERVICES = ["auth", "registry", "publisher"]


# --- header cap and slow clients, every service -----------------------------------------------


@pytest.mark.parametrize("prefix", SERVICES)
async def test_each_service_answers_431_to_a_head_over_the_cap(
    services: Services, prefix: str
) -> None:
    headers = {f"X-Fill-{index}": "v" * 60 for index in range(80)}
    request = request_head("GET", f"/{prefix}/health", {**headers, "Connection": "close"})
    answer = parse(await exchange(LOOPBACK, port_of(services.by_prefix(prefix)), request))
    assert answer is not None
    assert (answer.status, answer.json()["code"]) == (431, "headers_too_large")
    small = request_head("GET", f"/{prefix}/health", {"Connection": "close"})
    answer = parse(await exchange(LOOPBACK, port_of(services.by_prefix(prefix)), small))
    assert answer is not None
    assert answer.status == 200


@pytest.mark.parametrize("prefix", SERVICES)
async def test_each_service_cuts_off_a_head_sent_byte_by_byte(
    services: Services, prefix: str
) -> None:
    port = port_of(services.by_prefix(prefix))
    start = f"GET /{prefix}/health HTTP/1.1\r\n".encode()
    raw, sent = await trickle(
        LOOPBACK, port, start, b"X-Slow: " + b"s" * 100, interval=0.1, limit=100
    )
    answer = parse(raw)
    assert answer is not None
    assert (answer.status, answer.json()["code"]) == (408, "request_timeout")
    assert sent < 100


# --- bodies cut short -------------------------------------------------------------------------


async def test_a_register_cut_short_creates_no_user(services: Services) -> None:
    credentials = {"username": f"cut-{uuid.uuid4().hex[:8]}", "password": PASSWORD}
    raw = await send_cut_short(services.auth, cut_short("/auth/register", credentials))
    async with httpx.AsyncClient(base_url=base_url(services.auth), timeout=30) as client:
        response = await client.post("/auth/register", json=credentials)
    assert raw == b""
    assert response.status_code == 201, response.text  # the name was still free


async def test_a_function_cut_short_is_not_created(services: Services, token: str) -> None:
    name = f"cut-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "description": "cut short", "image": "busybox:1"}
    auth = {"Authorization": f"Bearer {token}"}
    raw = await send_cut_short(services.registry, cut_short("/registry/functions", body, auth))
    async with httpx.AsyncClient(base_url=base_url(services.registry), timeout=30) as client:
        missing = await client.get(f"/registry/functions/{name}", headers=auth)
        created = await client.post("/registry/functions", json=body, headers=auth)
    assert raw == b""
    assert missing.status_code == 404
    assert created.status_code == 201, created.text


async def test_an_activation_cut_short_is_not_queued(services: Services, token: str) -> None:
    name = f"cut-{uuid.uuid4().hex[:8]}"
    auth = {"Authorization": f"Bearer {token}"}
    call = {"name": name, "argument": "x", "async": True}
    async with httpx.AsyncClient(timeout=30, headers=auth) as client:
        function = {"name": name, "description": "cut short", "image": "busybox:1"}
        created = await client.post(
            f"{base_url(services.registry)}/registry/functions", json=function
        )
        assert created.status_code == 201, created.text
        publish = f"{base_url(services.publisher)}/publisher/publish"
        first = await publish_once_known(client, publish, call)
        raw = await send_cut_short(services.publisher, cut_short("/publisher/publish", call, auth))
        last = await client.post(publish, json=call)
        listed = await client.get(
            f"{base_url(services.publisher)}/publisher/executions", params={"function": name}
        )
    assert raw == b""
    assert last.status_code == 202, last.text
    ids = {record["execution_id"] for record in listed.json()["executions"]}
    assert ids == {first, last.json()["execution_id"]}


async def publish_once_known(client: httpx.AsyncClient, url: str, call: dict[str, Any]) -> str:
    """The first async call accepted once the publisher's catalog has the new function."""
    for _ in range(100):  # bounded: the catalog follows the registry within moments
        response = await client.post(url, json=call)
        if response.status_code == 202:
            execution_id: str = response.json()["execution_id"]
            return execution_id
        assert response.status_code == 404, response.text
        await asyncio.sleep(0.1)
    raise AssertionError("the publisher never learnt of the function")


# --- X-Forwarded-For --------------------------------------------------------------------------


async def test_a_client_outside_the_trusted_proxies_cannot_spoof_its_address(
    services: Services,
) -> None:
    request_id = uuid.uuid4().hex
    mark = services.auth.mark()
    headers = {"X-Forwarded-For": SPOOFED, "X-Request-ID": request_id, "Connection": "close"}
    answer = parse(
        await exchange(
            LOOPBACK, port_of(services.auth), request_head("GET", "/auth/health", headers)
        )
    )
    assert answer is not None
    assert answer.status == 200

    def access_line() -> dict[str, Any] | None:
        for line in services.auth.stderr_since(mark).splitlines():
            if request_id in line:
                entry: dict[str, Any] = json.loads(line)
                if entry.get("logger") == "faas.access":
                    return entry
        return None

    assert wait_until(lambda: access_line() is not None, timeout=10)
    entry = access_line()
    assert entry is not None
    assert entry["client"] == LOOPBACK


# --- connection cap ---------------------------------------------------------------------------


async def test_connections_over_the_cap_hold_no_descriptor_of_the_process(
    tmp_path: Path, nats: NatsServer, rsa_keys: RsaKeys
) -> None:
    auth = service_process(
        "auth",
        tmp_path,
        {"LOG_LEVEL": "INFO", "NATS_URL": nats.url, "JWT_PUBLIC_KEY_FILE": rsa_keys.public_path},
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        AUTH_PRIVATE_KEY_FILE=rsa_keys.private_path,
        MAX_CONNECTIONS=MAX_CONNECTIONS,
        REQUEST_TIMEOUT_SECONDS=120,
    )
    auth.start()
    try:
        auth.wait_ready(90)
        assert auth.pid is not None
        await assert_capped(auth.pid, port_of(auth))
    finally:
        auth.stop()


async def assert_capped(pid: int, port: int) -> None:
    baseline = open_sockets(pid)
    start = b"POST /auth/login HTTP/1.1\r\nHost: x\r\n"
    held = await open_half_sent(LOOPBACK, port, 3 * MAX_CONNECTIONS, start)
    try:
        refused = await first_closed(held, 2 * MAX_CONNECTIONS)
        during = open_sockets(pid)
    finally:
        for connection in held:
            connection.close()
    for raw in refused:
        answer = parse(raw)
        assert answer is not None
        assert (answer.status, answer.json()["code"]) == (503, "too_many_connections")
    assert during <= baseline + MAX_CONNECTIONS + 2, (baseline, during)
