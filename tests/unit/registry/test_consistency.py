"""The database and the catalog never disagree silently: failures roll back, start-up reconciles."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from faas_common.contract import FunctionSnapshot
from registry_service.config import RegistrySettings
from registry_service.exceptions import CatalogUnavailable
from tests.unit.registry.factories import (
    FakeCatalog,
    User,
    client_for,
    function_body,
    running_app,
)


async def test_catalog_down_on_create_is_503_and_stores_nothing(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    catalog.failing = True

    response = await client.post("/registry/functions", json=function_body(), headers=alice.headers)

    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    catalog.failing = False
    assert (await client.get("/registry/functions/hello", headers=alice.headers)).status_code == 404
    assert catalog.entries == {}
    retry = await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    assert retry.status_code == 201


async def test_catalog_down_on_update_is_503_and_changes_nothing(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    created = await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    before = dict(catalog.entries)
    catalog.failing = True

    response = await client.patch(
        "/registry/functions/hello", json={"memory_mb": 512}, headers=alice.headers
    )

    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    catalog.failing = False
    current = await client.get("/registry/functions/hello", headers=alice.headers)
    assert current.json() == created.json()
    assert catalog.entries == before


async def test_catalog_down_on_delete_is_503_and_keeps_the_function(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    created = await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    before = dict(catalog.entries)
    catalog.failing = True

    response = await client.delete("/registry/functions/hello", headers=alice.headers)

    assert response.status_code == 503
    catalog.failing = False
    current = await client.get("/registry/functions/hello", headers=alice.headers)
    assert current.json() == created.json()
    assert catalog.entries == before


@pytest.fixture
def failing_commit(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Arm to make the next ``AsyncSession.commit`` fail as a lost database connection would."""
    real_commit = AsyncSession.commit
    armed = {"value": False}

    async def commit(self: AsyncSession) -> None:
        if armed["value"]:
            armed["value"] = False
            raise OperationalError("COMMIT", {}, ConnectionResetError("connection lost"))
        await real_commit(self)

    monkeypatch.setattr(AsyncSession, "commit", commit)

    def arm() -> None:
        armed["value"] = True

    return arm


async def test_commit_failure_undoes_the_catalog_write(
    client: httpx.AsyncClient,
    alice: User,
    catalog: FakeCatalog,
    failing_commit: Callable[[], None],
) -> None:
    failing_commit()
    created = await client.post("/registry/functions", json=function_body(), headers=alice.headers)

    assert created.status_code == 503
    assert created.json()["code"] == "service_unavailable"
    assert catalog.entries == {}
    assert (await client.get("/registry/functions/hello", headers=alice.headers)).status_code == 404

    await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    before = dict(catalog.entries)
    failing_commit()
    updated = await client.patch(
        "/registry/functions/hello", json={"image": "busybox"}, headers=alice.headers
    )
    assert updated.status_code == 503
    assert catalog.entries == before

    failing_commit()
    deleted = await client.delete("/registry/functions/hello", headers=alice.headers)
    assert deleted.status_code == 503
    assert catalog.entries == before
    assert (await client.get("/registry/functions/hello", headers=alice.headers)).status_code == 200


async def _with_client(
    settings: RegistrySettings,
    catalog: FakeCatalog,
    action: Callable[[httpx.AsyncClient], Awaitable[None]],
) -> None:
    async with running_app(settings, catalog) as app, client_for(app) as client:
        await action(client)


async def test_startup_reconciles_the_catalog_with_the_database(
    settings: RegistrySettings, alice: User, bob: User
) -> None:
    first = FakeCatalog()

    async def create(client: httpx.AsyncClient) -> None:
        for user, name in ((alice, "kept"), (alice, "corrupted"), (bob, "lost")):
            response = await client.post(
                "/registry/functions", json=function_body(name), headers=user.headers
            )
            assert response.status_code == 201

    await _with_client(settings, first, create)
    expected = dict(first.entries)
    assert len(expected) == 3
    # While the service is down: a key lost, a value corrupted, a function deleted elsewhere.
    second = FakeCatalog(entries=dict(expected))
    del second.entries[f"{bob.id}.lost"]
    second.entries[f"{alice.id}.corrupted"] = b"{}"
    ghost = FunctionSnapshot(
        id="ghost",
        owner_id=alice.id,
        name="ghost",
        image="hello",
        timeout_seconds=1,
        memory_mb=16,
        updated_at="2020-01-01T00:00:00+00:00",
    )
    second.entries[f"{alice.id}.ghost"] = ghost.model_dump_json().encode()
    second.entries["not-a-function-key"] = b"junk"

    async def nothing(_: httpx.AsyncClient) -> None:
        return None

    await _with_client(settings, second, nothing)

    assert second.entries == expected
    # Two writes (lost, corrupted) and two deletes (ghost, junk); the kept key was left alone.
    assert second.writes == 4


async def test_startup_fails_when_the_catalog_is_down(settings: RegistrySettings) -> None:
    catalog = FakeCatalog(failing=True)

    with pytest.raises(CatalogUnavailable):
        async with running_app(settings, catalog):
            pass


async def test_reconcile_of_an_empty_database_empties_the_catalog(
    settings: RegistrySettings,
) -> None:
    catalog = FakeCatalog(entries={"someone.fn": b"{}"})

    async with running_app(settings, catalog):
        pass

    assert catalog.entries == {}
