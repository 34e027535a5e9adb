"""Tables owned by auth-service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import CheckConstraint, DateTime, Float, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from faas_common.db import new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()


def _now() -> datetime:
    return datetime.now(UTC)


class User(Base):
    __tablename__ = "user"
    # Usernames are stored canonical (lowercase), so the unique constraint is case-insensitive.
    __table_args__ = (CheckConstraint("username = lower(username)", name="username_canonical"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    """Set (and committed) before the account's revocation is written: a row left behind by a
    deletion that failed afterwards is gone for good, whatever the revocations bucket forgets."""


class LoginThrottle(Base):
    """Recent login attempts of one username (existing or not), shared by every replica; the
    logouts of one account under ``logout:<user_id>`` (never a username: no ``:`` in those).

    Times are epoch seconds. A row is deleted by a successful login, or once it is stale.
    """

    __tablename__ = "login_throttle"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    """Attempts counted in the current window (an attempt counts until it succeeds)."""
    window_started_at: Mapped[float] = mapped_column(Float)
    lockouts: Mapped[int] = mapped_column(Integer, default=0)
    """Lockouts in a row: each one lasts twice the previous one, up to the maximum."""
    locked_until: Mapped[float] = mapped_column(Float, default=0.0)
    last_attempt_at: Mapped[float] = mapped_column(Float, index=True)
