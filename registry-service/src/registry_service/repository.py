"""Persistence of functions: keyword-only functions over a session.

Writes are flushed, never committed here: the service commits once the KV catalog agrees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from faas_common.db import is_postgresql
from registry_service.exceptions import FunctionExists, FunctionNotFound
from registry_service.models import Function, utc_now

OWNER_LOCK_CLASS = 0x66756E63
"""First key of the per-owner advisory locks (``b"func"``)."""


async def get(
    session: AsyncSession, *, owner_id: str, name: str, for_update: bool = False
) -> Function | None:
    """The caller's function ``name``.

    ``for_update`` reads it for a change: no other writer can change or delete it between this
    read and the end of the transaction. PostgreSQL locks the row (``SELECT ... FOR UPDATE``).
    SQLite has no row locks (and pysqlite would run a plain SELECT outside any transaction): the
    database's write lock is taken before reading, so concurrent read-modify-write sequences run
    one after the other and none of them builds on a value read before another one committed.
    """
    statement = select(Function).where(Function.owner_id == owner_id, Function.name == name)
    if for_update:
        if await is_postgresql(session):
            statement = statement.with_for_update()
        else:
            await _write_lock(session)
    result = await session.execute(statement)
    return result.scalar_one_or_none()


async def list_for_owner(session: AsyncSession, *, owner_id: str) -> list[Function]:
    """The caller's functions sorted by name (code point order, the same on every backend)."""
    result = await session.execute(select(Function).where(Function.owner_id == owner_id))
    return sorted(result.scalars(), key=lambda function: function.name)


async def count_for_owner(session: AsyncSession, *, owner_id: str) -> int:
    result = await session.execute(
        select(func.count()).select_from(Function).where(Function.owner_id == owner_id)
    )
    return int(result.scalar_one())


async def lock_owner(session: AsyncSession, *, owner_id: str) -> None:
    """Serialise this owner's creates until the transaction ends, so a count taken after it
    stays true until the insert commits (the function quota is exact under concurrency).

    PostgreSQL: a transaction-level advisory lock on ``(OWNER_LOCK_CLASS, hashtext(owner_id))``
    (two int4 keys: a key space apart from the single-key migration lock). SQLite: the
    database's write lock.
    """
    if await is_postgresql(session):
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:class_id, hashtext(:owner_id))"),
            {"class_id": OWNER_LOCK_CLASS, "owner_id": owner_id},
        )
    else:
        await _write_lock(session)


async def list_all(session: AsyncSession) -> Sequence[Function]:
    result = await session.execute(select(Function))
    return result.scalars().all()


async def add(
    session: AsyncSession,
    *,
    owner_id: str,
    name: str,
    description: str,
    image: str,
    timeout_seconds: int,
    memory_mb: int,
    env: Mapping[str, str],
) -> Function:
    now = utc_now()
    function = Function(
        owner_id=owner_id,
        name=name,
        description=description,
        image=image,
        timeout_seconds=timeout_seconds,
        memory_mb=memory_mb,
        env=dict(env),
        created_at=now,
        updated_at=now,
    )
    session.add(function)
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        raise FunctionExists(f"You already have a function named {name!r}") from exc
    return function


async def change(session: AsyncSession, *, function: Function, values: Mapping[str, Any]) -> None:
    for field, value in values.items():
        setattr(function, field, value)
    try:
        await session.flush()
    except StaleDataError as exc:  # deleted by a concurrent request since it was read
        await session.rollback()
        raise FunctionNotFound() from exc


async def remove(session: AsyncSession, *, function: Function) -> None:
    await session.delete(function)
    try:
        await session.flush()
    except StaleDataError as exc:
        await session.rollback()
        raise FunctionNotFound() from exc


async def lock_all(session: AsyncSession) -> None:
    """Block every write to ``function`` until this transaction ends, and wait for those running.

    PostgreSQL: a SHARE ROW EXCLUSIVE table lock (conflicts with the row-exclusive lock any
    INSERT/UPDATE/DELETE holds until it commits, and with itself). SQLite: the database's write
    lock, which writers hold from their first write (or ``get(for_update=True)``) to their commit.
    """
    if await is_postgresql(session):
        await session.execute(text('LOCK TABLE "function" IN SHARE ROW EXCLUSIVE MODE'))
    else:
        await _write_lock(session)


async def _write_lock(session: AsyncSession) -> None:
    """SQLite: take the database's write lock now, held until the transaction ends.

    A write that changes nothing still opens a write transaction (pysqlite issues ``BEGIN``
    before it, and SQLite takes the write lock when the statement starts), waiting up to the
    connection's busy timeout for the current writer to commit. Being the transaction's first
    statement, it also starts the read snapshot after that commit.
    """
    await session.execute(text('UPDATE "function" SET id = id WHERE 1 = 0'))
