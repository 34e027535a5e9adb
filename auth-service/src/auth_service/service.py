"""Domain logic of auth-service: password hashing, registration, login and its throttle, token
issuing, logout and account deletion.

Usernames are canonical (``schemas.canonical_username``) before they reach this module.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from passlib.context import CryptContext
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service import repository
from auth_service.exceptions import (
    AccountNotFound,
    InvalidCredentials,
    LoginThrottled,
    LogoutThrottled,
    RevocationUnavailable,
    TokenNotRevocable,
)
from auth_service.models import User
from auth_service.schemas import canonical_username
from auth_service.throttle import ThrottlePolicy, count_attempt
from faas_common.revocation import RevocationsUnavailable
from faas_common.security import ALGORITHM, TokenClaims, key_id
from faas_common.validation import is_username

T = TypeVar("T")

Clock = Callable[[], float]


class HashContext(Protocol):
    """What ``PasswordHasher`` needs of passlib's ``CryptContext``."""

    def hash(self, secret: str) -> str: ...

    def verify(self, secret: str, hash: str) -> bool: ...


class PasswordHasher:
    """argon2 through passlib's API, off the event loop and at most ``concurrency`` at a time.

    Hashes run on a pool of ``concurrency`` threads of their own (never the loop's default
    executor), and a request waits for a free thread before it hands its hash over, so a flood
    of logins queues here while every other route keeps answering; a request cancelled while
    it waits costs nothing.
    """

    def __init__(self, *, concurrency: int, context: HashContext | None = None) -> None:
        self.concurrency = concurrency
        self._context: HashContext = context or CryptContext(schemes=["argon2"], deprecated="auto")
        self._slots = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="argon2")
        # Verifying against this hash when a user does not exist costs what a real check
        # costs, so response time does not tell which usernames exist.
        self._dummy_hash = self._context.hash("dummy password for timing")

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    async def hash(self, password: str) -> str:
        return await self._run(self._context.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        target = password_hash if password_hash is not None else self._dummy_hash
        try:
            ok = await self._run(self._context.verify, password, target)
        except (ValueError, TypeError):
            ok = False
        return ok and password_hash is not None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


class TokenIssuer:
    def __init__(
        self,
        private_key: RSAPrivateKey,
        *,
        issuer: str,
        consumer_key: str,
        ttl_seconds: int,
        clock: Clock = time.time,
    ) -> None:
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.kid = key_id(self.public_key)
        self.issuer = issuer
        self.consumer_key = consumer_key
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    def issue(self, user: User) -> IssuedToken:
        now = int(self.clock())
        claims = {
            "sub": user.id,
            "name": user.username,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "iss": self.issuer,
            "key": self.consumer_key,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid})
        return IssuedToken(token=token, expires_in=self.ttl_seconds)


class Revocations(Protocol):
    """The revocations bucket as auth-service uses it (``faas_common.revocation``)."""

    async def revoke_token(self, *, jti: str, user_id: str) -> None: ...

    async def revoke_user(self, *, user_id: str) -> None: ...

    def is_revoked(self, *, user_id: str, jti: str | None) -> bool: ...


# --- Registration and login -------------------------------------------------------------------


async def _live_user(
    session: AsyncSession, revocations: Revocations, *, username: str
) -> User | None:
    """The account named ``username``, unless it is deleted. A row whose deletion did not
    finish (marked, or revoked by an older release, but not removed) is deleted now: the
    account is gone but for its name."""
    user = await repository.get_by_username(session, username=username)
    if user is None:
        return None
    if user.deleted_at is None:
        try:
            if not revocations.is_revoked(user_id=user.id, jti=None):
                return user
        except RevocationsUnavailable:
            return user
    await _finish_deletion(session, revocations, user=user)
    return None


async def register(
    session: AsyncSession,
    hasher: PasswordHasher,
    revocations: Revocations,
    *,
    username: str,
    password: str,
) -> User:
    await _live_user(session, revocations, username=username)
    password_hash = await hasher.hash(password)
    return await repository.create(session, username=username, password_hash=password_hash)


async def _count(session: AsyncSession, policy: ThrottlePolicy, *, key: str, now: float) -> None:
    """Count one attempt under the throttle ``key``; ``LoginThrottled`` (or, for a logout key,
    ``LogoutThrottled``) while it is locked."""
    try:
        row = await repository.lock_throttle(session, username=key, now=now)
        wait = count_attempt(row, policy, now)
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    if wait is not None:
        raise LogoutThrottled(wait) if key.startswith(_LOGOUT_KEY) else LoginThrottled(wait)


async def authenticate(
    session: AsyncSession,
    hasher: PasswordHasher,
    policy: ThrottlePolicy,
    revocations: Revocations,
    *,
    username: str,
    password: str,
    now: float,
) -> User:
    """The user ``username`` (any case) names, if ``password`` is theirs.

    Every name an account could have is throttled, whether the account exists or not, so a
    429 does not tell which ones exist. A name no account can have (a NUL byte, 2000
    characters) never reaches the database, but costs the same hash check as any other miss.
    """
    name = canonical_username(username)
    if not isinstance(name, str) or not is_username(name):
        await hasher.verify(password, None)
        raise InvalidCredentials()
    await _count(session, policy, key=name, now=now)
    user = await _live_user(session, revocations, username=name)
    ok = await hasher.verify(password, user.password_hash if user else None)
    if user is None or not ok:
        raise InvalidCredentials()
    await repository.forget_throttle(session, username=name)
    return user


# --- Logout and account deletion --------------------------------------------------------------


_LOGOUT_KEY = "logout:"


def logout_throttle_key(user_id: str) -> str:
    """The throttle row of an account's logouts (a ``:`` is never in a username)."""
    return f"{_LOGOUT_KEY}{user_id}"


async def logout(
    session: AsyncSession,
    policy: ThrottlePolicy,
    revocations: Revocations,
    *,
    claims: TokenClaims,
    now: float,
) -> None:
    """Revoke the presented token everywhere (the user's other tokens keep working).

    Each logout writes an entry to the revocations bucket, so an account's logouts are throttled
    like logins (every one counts, a success never resets them): a login and logout loop cannot
    fill the bucket that every account's logout and deletion need."""
    if claims.token_id is None:
        raise TokenNotRevocable()
    await _count(session, policy, key=logout_throttle_key(claims.user_id), now=now)
    try:
        await revocations.revoke_token(jti=claims.token_id, user_id=claims.user_id)
    except RevocationsUnavailable as exc:
        raise RevocationUnavailable() from exc


async def delete_account(
    session: AsyncSession, revocations: Revocations, *, user_id: str, now: datetime
) -> None:
    """Delete the account: every token of the user is revoked (which also tells
    registry-service to delete the user's functions), then the row goes and the name is free.

    The row is marked deleted (committed) before the revocation is written, so a deletion that
    fails after it can never bring the account back, even once the bucket has expired the entry:
    the next login or registration of the name finishes it. A revocation that cannot be written
    takes the mark back: the 503 leaves the account as it was."""
    user = await repository.get_by_id(session, user_id=user_id)
    if user is None:
        raise AccountNotFound()
    await repository.mark_deleted(session, user=user, at=now)
    try:
        await revocations.revoke_user(user_id=user_id)
    except RevocationsUnavailable as exc:
        await repository.mark_deleted(session, user=user, at=None)
        raise RevocationUnavailable() from exc
    await repository.remove(session, user=user)


async def _finish_deletion(session: AsyncSession, revocations: Revocations, *, user: User) -> None:
    """The end of a deletion that failed halfway: revoke (unless the bucket still says so) and
    delete the row."""
    try:
        if not revocations.is_revoked(user_id=user.id, jti=None):
            await revocations.revoke_user(user_id=user.id)
    except RevocationsUnavailable as exc:
        raise RevocationUnavailable() from exc
    await repository.remove(session, user=user)
