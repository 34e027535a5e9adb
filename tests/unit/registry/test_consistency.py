"""The database and the catalog never disagree silently: failures roll back, start-up reconciles."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from faas_common.contract import FunctionSnapshot
from registry_service.config import RegistrySettings
from registry_service.exceptions import CatalogUnavailable
from tests.support.keys import RsaKeys
from tests.unit.registry.factories import (
    FakeCatalog,
    User,
    client_for,
    function_body,
    make_settings,
    running_app,
    wait_until,
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


async def test_create_whose_catalog_write_failed_after_applying_is_undone(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    catalog.applied_then_failing = 1

    response = await client.post("/registry/functions", json=function_body(), headers=alice.headers)

    assert response.status_code == 503
    # The user was told nothing was created: no publisher may find the function either.
    assert catalog.entries == {}
    assert (await client.get("/registry/functions/hello", headers=alice.headers)).status_code == 404
    retry = await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    assert retry.status_code == 201
    assert catalog.snapshot(alice.id, "hello") is not None


async def test_update_whose_catalog_write_failed_after_applying_is_undone(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    created = await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    before = dict(catalog.entries)
    catalog.applied_then_failing = 1

    response = await client.patch(
        "/registry/functions/hello", json={"image": "busybox"}, headers=alice.headers
    )

    assert response.status_code == 503
    assert catalog.entries == before
    current = await client.get("/registry/functions/hello", headers=alice.headers)
    assert current.json() == created.json()


async def test_delete_whose_catalog_write_failed_after_applying_is_undone(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    before = dict(catalog.entries)
    catalog.applied_then_failing = 1

    response = await client.delete("/registry/functions/hello", headers=alice.headers)

    assert response.status_code == 503
    assert catalog.entries == before
    assert (await client.get("/registry/functions/hello", headers=alice.headers)).status_code == 200


async def test_an_undo_that_fails_too_is_still_a_503(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    # The write and its undo both time out after applying: the undo still took effect.
    catalog.applied_then_failing = 2

    response = await client.post("/registry/functions", json=function_body(), headers=alice.headers)

    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert catalog.entries == {}


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


async def test_database_errors_are_a_503(
    client: httpx.AsyncClient, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    assert created.status_code == 201

    async def execute(self: AsyncSession, *args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(AsyncSession, "execute", execute)
    responses = [
        await client.get("/registry/functions", headers=alice.headers),
        await client.get("/registry/functions/hello", headers=alice.headers),
        await client.patch(
            "/registry/functions/hello", json={"memory_mb": 64}, headers=alice.headers
        ),
        await client.delete("/registry/functions/hello", headers=alice.headers),
    ]

    for response in responses:
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "service_unavailable"


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


# --- Periodic reconciliation ------------------------------------------------------------------


def _ghost(owner_id: str) -> bytes:
    return (
        FunctionSnapshot(
            id="ghost",
            owner_id=owner_id,
            name="ghost",
            image="hello",
            timeout_seconds=1,
            memory_mb=16,
            updated_at="2020-01-01T00:00:00+00:00",
        )
        .model_dump_json()
        .encode()
    )


@pytest.fixture
def fast_reconcile(sqlite_database_url: str, rsa_keys: RsaKeys) -> RegistrySettings:
    return make_settings(sqlite_database_url, rsa_keys.public_path, reconcile_interval_seconds=0.05)


async def test_periodic_reconcile_repairs_the_catalog_while_running(
    fast_reconcile: RegistrySettings, alice: User
) -> None:
    catalog = FakeCatalog()
    async with running_app(fast_reconcile, catalog) as app, client_for(app) as client:
        for name in ("kept", "lost"):
            response = await client.post(
                "/registry/functions", json=function_body(name), headers=alice.headers
            )
            assert response.status_code == 201
        expected = dict(catalog.entries)
        # What a write that failed after applying, with an undo that failed too, leaves behind.
        catalog.entries[f"{alice.id}.ghost"] = _ghost(alice.id)
        del catalog.entries[f"{alice.id}.lost"]

        await wait_until(
            lambda: catalog.entries == expected, message="the catalog was not repaired"
        )
        deleted = await client.delete("/registry/functions/kept", headers=alice.headers)
        assert deleted.status_code == 204


async def test_periodic_reconcile_writes_nothing_while_in_agreement(
    fast_reconcile: RegistrySettings, alice: User
) -> None:
    catalog = FakeCatalog()
    async with running_app(fast_reconcile, catalog) as app, client_for(app) as client:
        await client.post("/registry/functions", json=function_body(), headers=alice.headers)
        writes = catalog.writes
        await asyncio.sleep(0.3)

    assert catalog.writes == writes


async def test_periodic_reconcile_outlives_a_catalog_outage(
    fast_reconcile: RegistrySettings, alice: User
) -> None:
    catalog = FakeCatalog()
    async with running_app(fast_reconcile, catalog):
        catalog.failing = True
        await asyncio.sleep(0.3)  # several failed passes
        catalog.failing = False
        catalog.entries[f"{alice.id}.ghost"] = _ghost(alice.id)

        await wait_until(lambda: catalog.entries == {}, message="the orphan key is still there")


async def test_periodic_reconcile_is_disabled_by_zero(
    sqlite_database_url: str, rsa_keys: RsaKeys, alice: User
) -> None:
    settings = make_settings(
        sqlite_database_url, rsa_keys.public_path, reconcile_interval_seconds=0
    )
    catalog = FakeCatalog()
    async with running_app(settings, catalog):
        catalog.entries[f"{alice.id}.ghost"] = _ghost(alice.id)
        await asyncio.sleep(0.3)

        assert list(catalog.entries) == [f"{alice.id}.ghost"]
