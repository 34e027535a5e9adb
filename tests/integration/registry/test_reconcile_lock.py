"""Reconciliation's lock makes database writes wait until it is done (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from faas_common.db import make_engine, make_sessionmaker, migrate
from registry_service import repository
from registry_service.main import MIGRATIONS, VERSION_TABLE


async def test_lock_all_makes_writers_wait(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        await migrate(engine, script_location=MIGRATIONS, version_table=VERSION_TABLE)
        sessions = make_sessionmaker(engine)

        async def write() -> None:
            async with sessions() as session:
                await repository.add(
                    session,
                    owner_id="owner",
                    name="fn",
                    description="",
                    image="hello",
                    timeout_seconds=1,
                    memory_mb=16,
                    env={},
                )
                await session.commit()

        async with sessions() as reconciler:
            await repository.lock_all(reconciler)
            writer = asyncio.create_task(write())
            await asyncio.sleep(0.5)
            assert not writer.done(), "a write went through while the lock was held"
            await reconciler.rollback()
        await asyncio.wait_for(writer, timeout=10)

        async with sessions() as session:
            assert [f.name for f in await repository.list_all(session)] == ["fn"]
    finally:
        await engine.dispose()
