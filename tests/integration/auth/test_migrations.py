"""Migrations at start-up, on SQLite and PostgreSQL: applied once however many replicas start
together, idempotent on restart, and a failing migration reports its own error and releases the
migration lock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from auth_service.config import AuthSettings
from auth_service.main import MIGRATIONS, VERSION_TABLE
from faas_common.db import make_engine, migrate
from tests.unit.auth.factories import PASSWORD, client_for, make_settings, running_app


def head_revision() -> str:
    """The newest auth revision (what every start-up migrates to)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


FAILING_MIGRATION = """
from alembic import op

revision = "0001_fails"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT * FROM no_such_table")


def downgrade() -> None:
    pass
"""

ENV = """
from sqlalchemy import MetaData

from faas_common.db import run_migrations_env

run_migrations_env(MetaData())
"""


async def schema_state(database_url: str) -> tuple[list[str], list[str], list[str]]:
    """Table names, applied auth revisions and usernames in the database."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            versions = await conn.execute(text("SELECT version_num FROM alembic_version_auth"))
            users = await conn.execute(text('SELECT username FROM "user"'))
            return tables, list(versions.scalars()), sorted(users.scalars())
    finally:
        await engine.dispose()


async def test_replicas_starting_together_migrate_once(database_url: str, tmp_path: Path) -> None:
    # Two replicas, one database and one key (as in compose): both start, both serve.
    first = make_settings(tmp_path, database_url=database_url)
    second = first.model_copy()
    started: list[str] = []
    both_started = asyncio.Event()
    results: dict[str, httpx.Response] = {}

    async def replica(name: str, settings: AuthSettings) -> None:
        async with running_app(settings) as app, client_for(app) as client:
            started.append(name)
            if len(started) == 2:
                both_started.set()
            await both_started.wait()
            results[name] = await client.post(
                "/auth/register", json={"username": f"user-{name}", "password": PASSWORD}
            )

    async with asyncio.timeout(120), asyncio.TaskGroup() as group:
        group.create_task(replica("a", first))
        group.create_task(replica("b", second))
    assert {name: response.status_code for name, response in results.items()} == {
        "a": 201,
        "b": 201,
    }

    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            versions = (
                await conn.execute(text("SELECT version_num FROM alembic_version_auth"))
            ).all()
            users = (await conn.execute(text('SELECT username FROM "user"'))).scalars().all()
    finally:
        await engine.dispose()
    assert tables.count("user") == 1
    assert VERSION_TABLE in tables
    assert [row[0] for row in versions] == [head_revision()]
    assert sorted(users) == ["user-a", "user-b"]


async def test_restart_applies_nothing_twice(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    for _ in range(2):
        async with running_app(settings):
            pass
    _, versions, _ = await schema_state(database_url)
    assert versions == [head_revision()]


async def test_failing_migration_reports_its_error_and_releases_the_lock(
    database_url: str, tmp_path: Path
) -> None:
    scripts = tmp_path / "failing"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(ENV)
    (scripts / "versions" / "0001_fails.py").write_text(FAILING_MIGRATION)

    failed = make_engine(database_url)
    try:
        with pytest.raises(DBAPIError, match="no_such_table"):
            await migrate(failed, script_location=scripts, version_table=VERSION_TABLE, attempts=1)
        # While the failed engine still holds its pooled connections, another replica migrates.
        engine = make_engine(database_url)
        try:
            async with asyncio.timeout(20):
                await migrate(engine, script_location=MIGRATIONS, version_table=VERSION_TABLE)
        finally:
            await engine.dispose()
    finally:
        await failed.dispose()
    _, versions, _ = await schema_state(database_url)
    assert versions == [head_revision()]
