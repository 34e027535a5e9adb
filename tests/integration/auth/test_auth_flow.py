"""auth-service against real databases (SQLite file and PostgreSQL): the flow a user runs and
the uniqueness the database enforces."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from auth_service.config import AuthSettings
from tests.unit.auth.factories import (
    PASSWORD,
    bearer,
    client_for,
    login,
    make_settings,
    register,
    running_app,
)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> AuthSettings:
    return make_settings(tmp_path, database_url=database_url)


async def test_register_login_validate(settings: AuthSettings) -> None:
    async with running_app(settings) as app, client_for(app) as client:
        created = await register(client, "alice")
        token = await login(client, "alice")
        response = await client.get("/auth/validate", headers=bearer(token))
        assert response.status_code == 200
        assert response.json()["user_id"] == created["id"]
        assert response.json()["username"] == "alice"

        form = await client.post(
            "/auth/login",
            data={"username": "alice", "password": PASSWORD, "grant_type": "password"},
        )
        assert form.status_code == 200

        wrong = await client.post(
            "/auth/login", json={"username": "alice", "password": "nope-nope"}
        )
        unknown = await client.post("/auth/login", json={"username": "bob", "password": PASSWORD})
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json() == unknown.json()

        ready = await client.get("/auth/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "revocations": "ok"}


async def test_duplicate_username_is_409(settings: AuthSettings) -> None:
    async with running_app(settings) as app, client_for(app) as client:
        await register(client, "carol")
        again = await client.post(
            "/auth/register", json={"username": "carol", "password": "different-password"}
        )
        assert again.status_code == 409
        assert again.json()["code"] == "username_taken"
        # The session recovered from the failed insert: the next request works.
        await register(client, "carol2")
        assert await login(client, "carol")


async def test_concurrent_registrations_of_one_name_create_one_user(
    settings: AuthSettings,
) -> None:
    async with running_app(settings) as app, client_for(app) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/auth/register", json={"username": "dave", "password": f"password-{i}"}
                )
                for i in range(4)
            )
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201, 409, 409, 409], [r.text for r in responses]
        winner = next(i for i, response in enumerate(responses) if response.status_code == 201)
        assert await login(client, "dave", f"password-{winner}")


async def test_non_ascii_password_round_trips(settings: AuthSettings) -> None:
    password = "p\u00e4ssw\u00f6rd-\u2603-\U0001f511"
    async with running_app(settings) as app, client_for(app) as client:
        await register(client, "erin", password)
        assert await login(client, "erin", password)


async def test_users_survive_a_restart(settings: AuthSettings) -> None:
    async with running_app(settings) as app, client_for(app) as client:
        await register(client, "frank")
        token = await login(client, "frank")
    async with running_app(settings) as app, client_for(app) as client:
        assert (await client.get("/auth/validate", headers=bearer(token))).status_code == 200
        assert await login(client, "frank")
