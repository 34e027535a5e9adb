"""Builders for registry-service tests: settings, a running app and its client, tokens, a fake
catalog.

Plain functions and classes (no fixtures) so unit and integration tests share them; the fixtures
built on them live in each directory's ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from fastapi import FastAPI

from faas_common.contract import FunctionSnapshot, function_key
from registry_service.admission import HostResolver
from registry_service.catalog import FunctionCatalog
from registry_service.config import RegistrySettings
from registry_service.exceptions import CatalogUnavailable
from registry_service.main import create_app

BASE_URL = "http://registry.test"
ISSUER = "faas-auth"
CONSUMER_KEY = "faas-platform"


def make_settings(database_url: str, public_key_file: Path, **overrides: Any) -> RegistrySettings:
    values: dict[str, Any] = {
        "environment": "local",
        "database_url": database_url,
        "jwt_public_key_file": public_key_file,
        "jwt_jwks_url": None,
    }
    return RegistrySettings(**(values | overrides))


PUBLIC_ADDRESS = "93.184.215.14"
"""What ``FakeResolver`` answers for a name it was not told about: a global unicast address."""


@dataclass
class FakeResolver:
    """``HostResolver`` from a table: no name is ever looked up on the network.

    ``answers`` maps a host to its addresses (an empty list: the name does not resolve); any
    other host resolves to ``PUBLIC_ADDRESS``. ``asked`` lists every host resolved.
    """

    answers: dict[str, list[str]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        addresses = self.answers.get(host, [PUBLIC_ADDRESS])
        if not addresses:
            raise OSError(f"{host} does not resolve")
        return addresses


@asynccontextmanager
async def running_app(
    settings: RegistrySettings,
    catalog: FunctionCatalog | None = None,
    resolver: HostResolver | None = None,
) -> AsyncIterator[FastAPI]:
    """The app with its lifespan entered: migrated, catalog reconciled, ready to serve.

    Registry hosts are resolved by ``resolver`` (a ``FakeResolver`` unless given)."""
    app = create_app(settings, catalog=catalog, resolver=resolver or FakeResolver())
    async with app.router.lifespan_context(app):
        yield app


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


def mint_token(
    private_pem: bytes,
    *,
    sub: str,
    name: str = "alice",
    ttl: int = 3600,
    issuer: str = ISSUER,
    key: str = CONSUMER_KEY,
    **extra: Any,
) -> str:
    """A platform token as auth-service signs it (RS256; sub, name, iat, exp, iss, key)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "name": name,
        "iat": now,
        "exp": now + ttl,
        "iss": issuer,
        "key": key,
        **extra,
    }
    return jwt.encode(claims, private_pem, algorithm="RS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class User:
    id: str
    name: str
    headers: dict[str, str]


def make_user(private_pem: bytes, name: str) -> User:
    user_id = str(uuid.uuid4())
    return User(user_id, name, bearer(mint_token(private_pem, sub=user_id, name=name)))


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], *, within: float = 10.0, message: str = ""
) -> None:
    """Poll ``condition`` (plain or async) every 20 ms until it holds; fail after ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(message or f"condition still false after {within} s")
        await asyncio.sleep(0.02)


def function_body(name: str = "hello", **overrides: Any) -> dict[str, Any]:
    return {"name": name, "description": "says hello", "image": "library/hello:1.0"} | overrides


@dataclass
class FakeCatalog:
    """In-memory ``FunctionCatalog``.

    ``failing = True`` makes every call unavailable. ``applied_then_failing = n`` makes the next
    ``n`` writes take effect and then fail, as a write does when it times out after the server
    applied it.
    """

    entries: dict[str, bytes] = field(default_factory=dict)
    failing: bool = False
    applied_then_failing: int = 0
    writes: int = 0

    def _check(self) -> None:
        if self.failing:
            raise CatalogUnavailable()

    def _answer_lost(self) -> None:
        if self.applied_then_failing > 0:
            self.applied_then_failing -= 1
            raise CatalogUnavailable()

    async def put(self, snapshot: FunctionSnapshot) -> None:
        self._check()
        self.writes += 1
        self.entries[function_key(snapshot.owner_id, snapshot.name)] = (
            snapshot.model_dump_json().encode()
        )
        self._answer_lost()

    async def delete(self, key: str) -> None:
        self._check()
        self.writes += 1
        self.entries.pop(key, None)
        self._answer_lost()

    async def contents(self) -> dict[str, bytes]:
        self._check()
        return dict(self.entries)

    async def ready(self) -> None:
        self._check()

    def snapshot(self, owner_id: str, name: str) -> FunctionSnapshot | None:
        raw = self.entries.get(function_key(owner_id, name))
        return FunctionSnapshot.model_validate_json(raw) if raw is not None else None
