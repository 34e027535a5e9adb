"""NUL characters, which PostgreSQL cannot store, never reach the database as a 500."""

from __future__ import annotations

from pathlib import Path

from tests.unit.auth.factories import client_for, make_settings, running_app


async def test_nul_in_login_and_register_is_a_4xx(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    async with running_app(settings) as app, client_for(app) as client:
        login = await client.post(
            "/auth/login", json={"username": "a\u0000b", "password": "wonderland-42"}
        )
        assert login.status_code == 401
        register = await client.post(
            "/auth/register", json={"username": "a\u0000b", "password": "wonderland-42"}
        )
        assert register.status_code == 422
        # A NUL inside a password is only ever hashed: it is accepted and works.
        created = await client.post(
            "/auth/register", json={"username": "nul-password", "password": "pass\u0000word"}
        )
        assert created.status_code == 201
        ok = await client.post(
            "/auth/login", json={"username": "nul-password", "password": "pass\u0000word"}
        )
        assert ok.status_code == 200
