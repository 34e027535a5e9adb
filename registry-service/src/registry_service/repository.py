"""Persistence of functions: keyword-only functions over a session.

Writes are flushed, never committed here: the service commits once the KV catalog agrees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from registry_service.exceptions import FunctionExists, FunctionNotFound
from registry_service.models import Function, utc_now


async def get(
    session: AsyncSession, *, owner_id: str, name: str, for_update: bool = False
) -> Function | None:
    """The caller's function ``name``; ``for_update`` locks its row until the transaction ends."""
    statement = select(Function).where(Function.owner_id == owner_id, Function.name == name)
    if for_update:
        statement = statement.with_for_update()
    result = await session.execute(statement)
    return result.scalar_one_or_none()


async def list_for_owner(session: AsyncSession, *, owner_id: str) -> list[Function]:
    """The caller's functions sorted by name (code point order, the same on every backend)."""
    result = await session.execute(select(Function).where(Function.owner_id == owner_id))
    return sorted(result.scalars(), key=lambda function: function.name)


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
    INSERT/UPDATE/DELETE holds until it commits, and with itself). SQLite: taking the database's
    write lock, which writers hold from their first write to their commit.
    """
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        await session.execute(text('LOCK TABLE "function" IN SHARE ROW EXCLUSIVE MODE'))
    else:
        await session.execute(text('UPDATE "function" SET id = id WHERE 1 = 0'))
