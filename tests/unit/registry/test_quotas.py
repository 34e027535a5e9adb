"""Function quotas: ``MAX_FUNCTIONS_PER_USER`` (403 ``quota_exceeded``) and the size of a
function's environment, ``REGISTRY_MAX_ENV_BYTES`` (422 ``env_too_large``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry_service.config import RegistrySettings
from tests.support.keys import RsaKeys
from tests.unit.registry.factories import (
    FakeCatalog,
    User,
    client_for,
    function_body,
    make_settings,
    running_app,
)

Registry = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def registry(sqlite_database_url: str, rsa_keys: RsaKeys, catalog: FakeCatalog) -> Registry:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = make_settings(sqlite_database_url, Path(rsa_keys.public_path), **overrides)
        async with running_app(settings, catalog) as app, client_for(app) as client:
            yield client

    return start


async def create(client: httpx.AsyncClient, user: User, name: str, **fields: Any) -> httpx.Response:
    return await client.post(
        "/registry/functions", json=function_body(name, **fields), headers=user.headers
    )


def env_of(size: int) -> dict[str, str]:
    """One variable whose ``NAME=value`` is ``size`` bytes in UTF-8."""
    return {"V": "x" * (size - 2)}


# --- MAX_FUNCTIONS_PER_USER -------------------------------------------------------------------


async def test_the_101st_function_is_refused_by_default(
    registry: Registry, alice: User, catalog: FakeCatalog
) -> None:
    async with registry() as client:
        for index in range(100):
            response = await create(client, alice, f"fn{index}")
            assert response.status_code == 201, response.text
        refused = await create(client, alice, "one-more")
        listed = await client.get("/registry/functions", headers=alice.headers)

    assert refused.status_code == 403, refused.text
    assert refused.json() == {
        "detail": "You already have 100 functions, the most one user may have: delete one first",
        "code": "quota_exceeded",
    }
    assert len(listed.json()) == 100
    assert catalog.snapshot(alice.id, "one-more") is None


async def test_the_quota_is_per_user_on_both_create_routes_and_freed_by_a_delete(
    registry: Registry, alice: User, bob: User
) -> None:
    async with registry(max_functions_per_user=2) as client:
        assert (await create(client, alice, "a")).status_code == 201
        assert (await create(client, alice, "b")).status_code == 201
        rest = await create(client, alice, "c")
        alias = await client.post(
            "/registry/register", json={"name": "c", "payload": "busybox"}, headers=alice.headers
        )
        bobs = await create(client, bob, "a")
        deleted = await client.delete("/registry/functions/a", headers=alice.headers)
        again = await create(client, alice, "c")

    assert rest.status_code == 403, rest.text
    assert rest.json()["code"] == "quota_exceeded"
    assert alias.status_code == 403, alias.text
    assert alias.json()["code"] == "quota_exceeded"
    assert bobs.status_code == 201
    assert deleted.status_code == 204
    assert again.status_code == 201, again.text


async def test_updates_are_not_creates(registry: Registry, alice: User) -> None:
    async with registry(max_functions_per_user=1) as client:
        assert (await create(client, alice, "a")).status_code == 201
        patched = await client.patch(
            "/registry/functions/a", json={"memory_mb": 64}, headers=alice.headers
        )

    assert patched.status_code == 200, patched.text


# --- REGISTRY_MAX_ENV_BYTES -------------------------------------------------------------------


async def test_an_environment_over_the_cap_is_refused_on_every_route(
    registry: Registry, alice: User, catalog: FakeCatalog
) -> None:
    too_big = env_of(65)
    async with registry(max_env_bytes=64) as client:
        at_cap = await create(client, alice, "fits", env=env_of(64))
        created = await create(client, alice, "big", env=too_big)
        registered = await client.post(
            "/registry/register",
            json={"name": "big", "payload": "busybox", "env": too_big},
            headers=alice.headers,
        )
        patched = await client.patch(
            "/registry/functions/fits", json={"env": too_big}, headers=alice.headers
        )
        updated = await client.put(
            "/registry/update", json={"name": "fits", "env": too_big}, headers=alice.headers
        )

    assert at_cap.status_code == 201, at_cap.text
    for response in (created, registered, patched, updated):
        assert response.status_code == 422, response.text
        assert response.json() == {
            "detail": "The environment is 65 bytes (NAME=value, UTF-8, summed); "
            "at most 64 bytes are allowed",
            "code": "env_too_large",
        }
    snapshot = catalog.snapshot(alice.id, "fits")
    assert snapshot is not None
    assert snapshot.env == env_of(64)
    assert catalog.snapshot(alice.id, "big") is None


async def test_the_environment_is_counted_in_utf8_bytes_over_every_variable(
    registry: Registry, alice: User
) -> None:
    env = {"A": "é" * 10, "BB": "x"}  # A= + 20 bytes, BB=x: 26 bytes
    async with registry(max_env_bytes=25) as client:
        refused = await create(client, alice, "a", env=env)
    async with registry(max_env_bytes=26) as client:
        accepted = await create(client, alice, "b", env=env)

    assert refused.status_code == 422
    assert "26 bytes" in refused.json()["detail"]
    assert accepted.status_code == 201, accepted.text


def test_defaults_and_variable_names(
    monkeypatch: pytest.MonkeyPatch, sqlite_database_url: str, rsa_keys: RsaKeys
) -> None:
    defaults = make_settings(sqlite_database_url, Path(rsa_keys.public_path))
    monkeypatch.setenv("MAX_FUNCTIONS_PER_USER", "7")
    monkeypatch.setenv("REGISTRY_MAX_ENV_BYTES", "1000")
    from_environment = RegistrySettings(
        database_url=sqlite_database_url, jwt_public_key_file=rsa_keys.public_path
    )

    assert (defaults.max_functions_per_user, defaults.max_env_bytes) == (100, 32_768)
    assert (from_environment.max_functions_per_user, from_environment.max_env_bytes) == (7, 1000)
