"""Database helpers: async engine and sessions, and Alembic migrations applied at start-up.

Migrations run under a lock so replicas racing at start-up apply them once: a PostgreSQL advisory
lock (keyed by the service's version table), or an exclusive file lock next to a SQLite database.
Each service keeps its own migration scripts and its own version table, so services can share one
database without stepping on each other's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

from alembic import command, context
from alembic.config import Config
from fastapi import Depends, Request
from sqlalchemy import Connection, MetaData, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with factory() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def is_postgresql(session: AsyncSession) -> bool:
    """Whether the session's database is PostgreSQL (else SQLite): locking differs between them."""
    connection = await session.connection()
    return connection.dialect.name == "postgresql"


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _upgrade(connection: Connection, script_location: str, version_table: str) -> None:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["connection"] = connection
    config.attributes["version_table"] = version_table
    command.upgrade(config, "head")


async def migrate(
    engine: AsyncEngine,
    *,
    script_location: str | Path,
    version_table: str,
    attempts: int = 30,
    delay: float = 1.0,
) -> None:
    """Apply every migration up to head, once, whatever the number of replicas starting at once.

    The database may still be starting (compose and swarm start everything together): connection
    errors are retried ``attempts`` times before giving up.
    """
    location = str(script_location)
    for attempt in range(1, attempts + 1):
        try:
            await _migrate_once(engine, location, version_table)
            return
        except (OperationalError, DBAPIError, OSError) as exc:
            if attempt == attempts or not _is_connection_error(exc):
                raise
            await asyncio.sleep(delay)


def _is_connection_error(exc: Exception) -> bool:
    if isinstance(exc, OSError):
        return True
    return (
        bool(getattr(exc, "connection_invalidated", False))
        or isinstance(getattr(exc, "orig", None), OSError | ConnectionError)
        or "connect" in str(exc).lower()
    )


async def _migrate_once(engine: AsyncEngine, location: str, version_table: str) -> None:
    url = engine.url
    if url.get_backend_name() == "postgresql":
        async with engine.connect() as conn:
            key = _lock_key(version_table)
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                await conn.run_sync(_upgrade, location, version_table)
                await conn.commit()
            finally:
                # End a failed upgrade's transaction first: otherwise the unlock fails too, hides
                # the real error and leaves the lock held by a pooled connection.
                await conn.rollback()
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                await conn.commit()
        return
    database = url.database or ":memory:"
    lock_path = Path(f"{database}.migrate.lock") if database != ":memory:" else None

    async def run() -> None:
        async with engine.connect() as conn:
            await conn.run_sync(_upgrade, location, version_table)
            await conn.commit()

    if lock_path is None:
        await run()
        return
    # flock blocks: take it in a thread, keep it for the duration of the upgrade.
    lock = _file_lock(lock_path)
    await asyncio.to_thread(lock.__enter__)
    try:
        await run()
    finally:
        lock.__exit__(None, None, None)


def run_migrations_env(target_metadata: MetaData) -> None:
    """Body of every service's ``migrations/env.py``: run on the connection ``migrate`` passes."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("migrations run through faas_common.db.migrate, not the alembic CLI")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=context.config.attributes["version_table"],
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
