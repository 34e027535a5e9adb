"""Persistence of users and login throttles: keyword-only functions over a session."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.exceptions import UsernameTaken
from auth_service.models import LoginThrottle, User
from faas_common.db import is_postgresql

STALE_AFTER_SECONDS = 7 * 24 * 3600.0
"""A throttle row untouched for this long (and not locked) is forgotten."""


async def get_by_username(session: AsyncSession, *, username: str) -> User | None:
    result = await session.execute(select(User).where(User.username == username))
    return result.scalar_one_or_none()


async def get_by_id(session: AsyncSession, *, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def create(session: AsyncSession, *, username: str, password_hash: str) -> User:
    user = User(username=username, password_hash=password_hash)
    session.add(user)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise UsernameTaken() from exc
    return user


async def mark_deleted(session: AsyncSession, *, user: User, at: datetime | None) -> None:
    """Mark ``user`` deleted since ``at`` (``None``: not deleted after all), committed."""
    user.deleted_at = at
    try:
        await session.commit()
    except BaseException:
        await session.rollback()
        raise


async def remove(session: AsyncSession, *, user: User) -> None:
    """Delete ``user``, committed."""
    await session.delete(user)
    try:
        await session.commit()
    except BaseException:
        await session.rollback()
        raise


async def lock_throttle(session: AsyncSession, *, username: str, now: float) -> LoginThrottle:
    """The throttle row of ``username``, created when missing and locked until the transaction
    ends, so concurrent attempts on every replica count one after the other.

    The insert comes first: on SQLite it takes the database's write lock (which serialises the
    read below with every other writer); on PostgreSQL the row is then read ``FOR UPDATE``.
    """
    postgresql = await is_postgresql(session)
    insert = postgresql_insert if postgresql else sqlite_insert
    values = {"username": username, "window_started_at": now, "last_attempt_at": now}
    created = await session.execute(
        insert(LoginThrottle).values(**values).on_conflict_do_nothing(index_elements=["username"])
    )
    statement = select(LoginThrottle).where(LoginThrottle.username == username)
    if postgresql:
        statement = statement.with_for_update()
    row = (await session.execute(statement.execution_options(populate_existing=True))).scalar_one()
    if getattr(created, "rowcount", 0) == 1:
        # A new name: a good moment to drop the rows nobody has used for long.
        await session.execute(
            delete(LoginThrottle).where(
                LoginThrottle.last_attempt_at < now - STALE_AFTER_SECONDS,
                LoginThrottle.locked_until < now,
            )
        )
    return row


async def forget_throttle(session: AsyncSession, *, username: str) -> None:
    await session.execute(delete(LoginThrottle).where(LoginThrottle.username == username))
    await session.commit()
