"""Migration 0002 on SQLite and PostgreSQL: existing usernames become canonical; of names that
fold together the oldest account keeps it and the others (and invalid names) are renamed; the
database then refuses any non-canonical name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from auth_service.main import MIGRATIONS, VERSION_TABLE
from faas_common.db import make_engine, migrate
from tests.unit.auth.factories import PASSWORD, client_for, login, make_settings, running_app

ROWS = [  # (id, username), oldest first
    ("00000000-0000-4000-8000-00000000000a", "Alice"),
    ("00000000-0000-4000-8000-00000000000b", "alice"),
    ("00000000-0000-4000-8000-00000000000c", "ALICE"),
    ("00000000-0000-4000-8000-00000000000d", "Bob"),
    ("00000000-0000-4000-8000-00000000000e", "carol"),
    ("00000000-0000-4000-8000-00000000000f", "x..y"),
    ("00000000-0000-4000-8000-000000000010", "bob"),
]


def _upgrade_to(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = VERSION_TABLE
    command.upgrade(config, revision)


async def test_usernames_become_canonical(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_upgrade_to, "0001_auth")
            start = datetime(2026, 1, 1, tzinfo=UTC)
            for index, (user_id, username) in enumerate(ROWS):
                await conn.execute(
                    text(
                        'INSERT INTO "user" (id, username, password_hash, created_at) '
                        "VALUES (:id, :username, 'x', :created_at)"
                    ),
                    {"id": user_id, "username": username, "created_at": start + timedelta(index)},
                )
            await conn.commit()
        await migrate(engine, script_location=MIGRATIONS, version_table=VERSION_TABLE)
        async with engine.connect() as conn:
            result = await conn.execute(text('SELECT id, username FROM "user"'))
            names = {str(row[0]): str(row[1]) for row in result}
            assert names == {
                ROWS[0][0]: "alice",  # the oldest keeps the name
                ROWS[1][0]: "renamed-0000000000004000800000000000000b",
                ROWS[2][0]: "renamed-0000000000004000800000000000000c",
                ROWS[3][0]: "bob",
                ROWS[4][0]: "carol",
                ROWS[5][
                    0
                ]: "renamed-0000000000004000800000000000000f",  # not a repository component
                ROWS[6][0]: "renamed-00000000000040008000000000000010",
            }
            with pytest.raises(IntegrityError):
                await conn.execute(
                    text(
                        'INSERT INTO "user" (id, username, password_hash, created_at) '
                        "VALUES ('new', 'Dave', 'x', :now)"
                    ),
                    {"now": start},
                )
    finally:
        await engine.dispose()

    # The service starts on the migrated database and keeps the case-insensitive rule.
    settings = make_settings(tmp_path, database_url=database_url)
    async with running_app(settings) as app, client_for(app) as client:
        taken = await client.post("/auth/register", json={"username": "BOB", "password": PASSWORD})
        assert taken.status_code == 409
        await client.post("/auth/register", json={"username": "Dave", "password": PASSWORD})
        assert await login(client, "DAVE")
