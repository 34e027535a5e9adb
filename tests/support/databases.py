"""Throw-away databases for tests: a SQLite file, or a fresh PostgreSQL database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.support.infra import require

POSTGRES_URL_ENV = "FAAS_TEST_POSTGRES_URL"
TEST_DATABASE_PREFIX = "faas_t_"


def sqlite_url(directory: Path, name: str = "test.db") -> str:
    return f"sqlite+aiosqlite:///{directory / name}"


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _as_asyncpg(url: str) -> URL:
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"{POSTGRES_URL_ENV} must be a postgresql URL, got {parsed.drivername}")
    return parsed.set(drivername="postgresql+asyncpg")


async def _execute_autocommit(admin_url: URL, statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    engine = create_async_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def check_postgres(url: str) -> None:
    """Raise when the server behind ``url`` does not answer ``SELECT 1``."""
    await _execute_autocommit(_as_asyncpg(url), "SELECT 1")


async def create_postgres_database(url: str) -> str:
    """Create a uniquely named database on the server of ``url``; return the URL that names it.

    The role of ``url`` needs the CREATEDB privilege; it owns the new database.
    """
    admin = _as_asyncpg(url)
    name = f"{TEST_DATABASE_PREFIX}{uuid.uuid4().hex}"
    await _execute_autocommit(admin, f'CREATE DATABASE "{name}"')
    return _render(admin.set(database=name))


async def drop_postgres_database(url: str, database_url: str) -> None:
    """Drop the database named by ``database_url``, closing any connection still open to it."""
    name = make_url(database_url).database
    if not name or not name.startswith(TEST_DATABASE_PREFIX):
        raise ValueError(f"refusing to drop a database the tests did not create: {name!r}")
    await _execute_autocommit(_as_asyncpg(url), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def postgres_database_exists(url: str, name: str) -> bool:
    engine = create_async_engine(_as_asyncpg(url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
    finally:
        await engine.dispose()
    return found is not None


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh database on the server of ``FAAS_TEST_POSTGRES_URL``, dropped on exit.

    Skips the test (fails it in CI) when the variable is unset or the server cannot create one.
    """
    base = os.environ.get(POSTGRES_URL_ENV, "").strip()
    if not base:
        require("postgres", f"{POSTGRES_URL_ENV} is not set")
    try:
        url = await create_postgres_database(base)
    except (OSError, SQLAlchemyError) as exc:
        where = make_url(base).render_as_string(hide_password=True)
        require("postgres", f"cannot create a database through {where}: {exc}")
    try:
        yield url
    finally:
        await drop_postgres_database(base, url)
