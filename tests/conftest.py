"""Fixtures shared by every kind of test.

Infrastructure fixtures skip their tests when a dependency is missing, and fail them instead when
``FAAS_REQUIRE_INFRA=1`` (CI): see ``tests.support.infra``.

- ``nats_server`` (session): a real nats-server with JetStream on a free loopback port;
  ``stop()`` / ``start()`` / ``kill()`` restart it on the same port and store.
- ``nats_url``: the URL of that server, started again first if a test left it stopped.
- ``database_url``: parametrized over ``sqlite`` and ``postgres`` (a fresh database per test,
  dropped afterwards; needs ``FAAS_TEST_POSTGRES_URL``). ``sqlite_database_url`` and
  ``postgres_database_url`` give one backend only.
- ``rsa_keys`` (session): an RSA 2048 key pair, in memory and as PEM files.
- ``shim_binary`` (session): the spawner's static shim, compiled for this machine.

Tests using these fixtures are marked ``nats`` / ``postgres`` automatically; tests marked ``docker``
are skipped (or failed in CI) when no Docker engine answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.databases import postgres_database, sqlite_url
from tests.support.infra import require, require_docker
from tests.support.keys import RsaKeys, generate_rsa_keys
from tests.support.nats_server import NatsServer, find_nats_server, free_port
from tests.support.shim import build_shim

NATS_FIXTURES = frozenset({"nats_server", "nats_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & NATS_FIXTURES:
            item.add_marker(pytest.mark.nats)
        uses_postgres = "postgres_database_url" in fixtures
        if isinstance(item, pytest.Function) and hasattr(item, "callspec"):
            uses_postgres = uses_postgres or item.callspec.params.get("database_url") == "postgres"
        if uses_postgres:
            item.add_marker(pytest.mark.postgres)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is not None:
        require_docker()


# --- NATS -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    binary = find_nats_server()
    if binary is None:
        require("nats-server", "no nats-server binary next to the interpreter nor on PATH")
    root = tmp_path_factory.mktemp("nats")
    server: NatsServer | None = None
    for attempt in range(3):
        # The free port may be taken between choosing and binding it: try another one.
        server = NatsServer(
            binary=binary,
            port=free_port(),
            store_dir=root / "store",
            log_path=root / "nats-server.log",
        )
        try:
            server.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
    assert server is not None
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    nats_server.start()  # no-op unless an earlier test left it stopped
    return nats_server.url


# --- Databases --------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"], ids=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_database_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
async def postgres_database_url() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


# --- Keys -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> RsaKeys:
    return generate_rsa_keys(tmp_path_factory.mktemp("keys"))


# --- Name resolution --------------------------------------------------------------------------


async def _loopback_only_resolver(host: str) -> list[str]:
    if host == "localhost":
        return ["127.0.0.1"]
    raise OSError(f"tests resolve no name but localhost ({host!r})")


@pytest.fixture(autouse=True)
def _no_registry_host_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry app built without a resolver of its own resolves image registry hosts with
    the system's resolver; in tests that one answers only ``localhost``, so no name is ever
    sent to a DNS server (any other name does not resolve: a 422)."""
    from registry_service import admission

    monkeypatch.setattr(admission, "system_resolver", _loopback_only_resolver)


# --- spawner shim -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shim_binary() -> Path:
    """The spawner's static shim for this machine, where the spawner and the local stack look for
    it by default (``spawner-service/shim/build/``); built unless it is newer than its source."""
    return build_shim()
