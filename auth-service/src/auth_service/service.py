"""Domain logic of auth-service: password hashing, registration, login, token issuing."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from passlib.context import CryptContext
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service import repository
from auth_service.exceptions import InvalidCredentials
from auth_service.models import User
from auth_service.schemas import USERNAME_RE
from faas_common.security import ALGORITHM, key_id


class PasswordHasher:
    """argon2 through passlib's API; hashing runs off the event loop (it is CPU-bound)."""

    def __init__(self) -> None:
        self._context = CryptContext(schemes=["argon2"], deprecated="auto")
        # Verifying against this hash when a user does not exist costs what a real check
        # costs, so response time does not tell which usernames exist.
        self._dummy_hash = self._context.hash("dummy password for timing")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._context.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        target = password_hash if password_hash is not None else self._dummy_hash
        try:
            ok = await asyncio.to_thread(self._context.verify, password, target)
        except (ValueError, TypeError):
            ok = False
        return ok and password_hash is not None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


class TokenIssuer:
    def __init__(
        self, private_key: RSAPrivateKey, *, issuer: str, consumer_key: str, ttl_seconds: int
    ) -> None:
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.kid = key_id(self.public_key)
        self.issuer = issuer
        self.consumer_key = consumer_key
        self.ttl_seconds = ttl_seconds

    def issue(self, user: User) -> IssuedToken:
        now = int(time.time())
        claims = {
            "sub": user.id,
            "name": user.username,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "iss": self.issuer,
            "key": self.consumer_key,
        }
        token = jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid})
        return IssuedToken(token=token, expires_in=self.ttl_seconds)


async def register(
    session: AsyncSession, hasher: PasswordHasher, *, username: str, password: str
) -> User:
    password_hash = await hasher.hash(password)
    return await repository.create(session, username=username, password_hash=password_hash)


async def authenticate(
    session: AsyncSession, hasher: PasswordHasher, *, username: str, password: str
) -> User:
    # A name no account can have (a NUL byte, 2000 characters) never reaches the database, but
    # costs the same hash check as any other miss.
    valid_name = USERNAME_RE.fullmatch(username) is not None
    user = await repository.get_by_username(session, username=username) if valid_name else None
    ok = await hasher.verify(password, user.password_hash if user else None)
    if user is None or not ok:
        raise InvalidCredentials()
    return user
