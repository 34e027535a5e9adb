"""A JSON body that is not UTF-8 text is a 400 ``bad_request`` on every route that reads JSON,
whether FastAPI parses it or the route reads it by hand (login, the registry's name aliases)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.keys import RsaKeys
from tests.unit.auth.factories import client_for as auth_client
from tests.unit.auth.factories import make_settings as auth_settings
from tests.unit.auth.factories import running_app as running_auth
from tests.unit.registry.factories import FakeCatalog, make_user
from tests.unit.registry.factories import client_for as registry_client
from tests.unit.registry.factories import make_settings as registry_settings
from tests.unit.registry.factories import running_app as running_registry

NOT_UTF8 = b'{"username": "\xff", "password": "wonderland-42", "name": "\xff"}'


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_auth(auth_settings(tmp_path)) as app, auth_client(app) as client:
        yield client


@pytest.fixture
async def registry(tmp_path: Path, rsa_keys: RsaKeys) -> AsyncIterator[httpx.AsyncClient]:
    settings = registry_settings(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", rsa_keys.public_path)
    async with running_registry(settings, FakeCatalog()) as app, registry_client(app) as client:
        yield client


def assert_bad_request(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {
        "detail": "There was an error parsing the body",
        "code": "bad_request",
    }


@pytest.mark.parametrize("path", ["/auth/register", "/auth/login"])
@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
async def test_auth(auth: httpx.AsyncClient, path: str, content_type: str) -> None:
    response = await auth.post(path, content=NOT_UTF8, headers={"content-type": content_type})
    assert_bad_request(response)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/registry/functions"),
        ("GET", "/registry/retrieve"),
        ("DELETE", "/registry/delete"),
        ("PUT", "/registry/update"),
    ],
)
async def test_registry(
    registry: httpx.AsyncClient, rsa_keys: RsaKeys, method: str, path: str
) -> None:
    alice = make_user(rsa_keys.private_pem, "alice")
    headers = {**alice.headers, "content-type": "application/json"}
    response = await registry.request(method, path, content=NOT_UTF8, headers=headers)
    assert_bad_request(response)
