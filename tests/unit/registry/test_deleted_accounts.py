"""The functions of a deleted account: ``AccountPurger`` deletes them from the database and the
catalog (only that account's), retries while the catalog is unavailable, and a second deletion of
the same account (another replica, a restart) finds nothing left."""

from __future__ import annotations

import logging

import httpx
import pytest

from registry_service import repository
from registry_service.accounts import AccountPurger, delete_owner_functions
from registry_service.config import RegistrySettings
from tests.unit.registry.factories import (
    FakeCatalog,
    User,
    client_for,
    function_body,
    running_app,
    wait_until,
)


async def create(client: httpx.AsyncClient, user: User, name: str) -> None:
    response = await client.post(
        "/registry/functions", json=function_body(name), headers=user.headers
    )
    assert response.status_code == 201, response.text


async def test_a_deleted_accounts_functions_are_deleted_once_the_catalog_answers(
    settings: RegistrySettings,
    catalog: FakeCatalog,
    alice: User,
    bob: User,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="registry.accounts")
    async with running_app(settings, catalog) as app, client_for(app) as client:
        for name in ("one", "two"):
            await create(client, alice, name)
        await create(client, bob, "one")
        purger = AccountPurger(app.state.sessionmaker, catalog, retry_delay=0.05)
        catalog.failing = True
        purger.notice(alice.id)
        purger.start()
        try:
            await wait_until(lambda: "deleting a deleted account's functions failed" in caplog.text)
            assert (await client.get("/registry/functions", headers=alice.headers)).json()
            catalog.failing = False

            async def alice_gone() -> bool:
                async with app.state.sessionmaker() as session:
                    return not await repository.list_for_owner(session, owner_id=alice.id)

            await wait_until(alice_gone)
            assert set(catalog.entries) == {f"{bob.id}.one"}
            listed = await client.get("/registry/functions", headers=alice.headers)
            assert listed.json() == []
            kept = await client.get("/registry/functions", headers=bob.headers)
            assert [function["name"] for function in kept.json()] == ["one"]

            # Another replica's, or a restart's, second deletion of the account.
            writes = catalog.writes
            async with app.state.sessionmaker() as session:
                assert await delete_owner_functions(session, catalog, owner_id=alice.id) == 0
            assert catalog.writes == writes
        finally:
            await purger.stop()


async def test_a_function_created_just_after_the_deletion_goes_at_the_second_pass(
    settings: RegistrySettings, catalog: FakeCatalog, alice: User
) -> None:
    async with running_app(settings, catalog) as app, client_for(app) as client:
        purger = AccountPurger(app.state.sessionmaker, catalog, second_pass_delay=1.0)

        async def alice_has_none() -> bool:
            async with app.state.sessionmaker() as session:
                return not await repository.list_for_owner(session, owner_id=alice.id)

        purger.start()
        try:
            purger.notice(alice.id)
            await wait_until(lambda: not purger.pending)
            # A create verified before the deletion was known here, committed after the purge.
            await create(client, alice, "late")
            await wait_until(alice_has_none)
            assert catalog.entries == {}
        finally:
            await purger.stop()
