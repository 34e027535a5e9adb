"""Builders for auth-service tests: settings, a running app and its client, users, tokens.

Plain functions (no fixtures) so unit and integration tests share them; the fixtures built on
them live in ``tests/unit/auth/conftest.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from fastapi import FastAPI

from auth_service.config import AuthSettings
from auth_service.main import RevocationBackend, create_app

PASSWORD = "correct-horse-battery"
BASE_URL = "http://test"


def make_settings(
    directory: Path, *, database_url: str | None = None, **overrides: Any
) -> AuthSettings:
    """Settings of a local-stack auth-service whose database and key live in ``directory``."""
    values: dict[str, Any] = {
        "database_url": database_url or f"sqlite+aiosqlite:///{directory / 'a.db'}",
        "private_key_file": directory / "k.pem",
        "generate_keys": True,
        "environment": "local",
    }
    return AuthSettings(**(values | overrides))


class MemoryRevocations:
    """The revocations bucket of one process, in memory (``RevocationBackend``)."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.users: set[str] = set()
        self.loaded = True

    async def revoke_token(self, *, jti: str, user_id: str) -> None:
        self.tokens[jti] = user_id

    async def revoke_user(self, *, user_id: str) -> None:
        self.users.add(user_id)

    def is_revoked(self, *, user_id: str, jti: str | None) -> bool:
        return user_id in self.users or (jti is not None and jti in self.tokens)


class ManualClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_IN_MEMORY = MemoryRevocations()


@asynccontextmanager
async def running_app(
    settings: AuthSettings,
    *,
    revocations: RevocationBackend | None = _IN_MEMORY,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[FastAPI]:
    """The app with its lifespan entered: database migrated, key loaded, ready to serve.

    Revocations stay in memory unless ``revocations=None``: then the app uses the NATS bucket
    at ``settings.nats_url``."""
    if revocations is _IN_MEMORY:
        revocations = MemoryRevocations()
    app = create_app(settings, revocations=revocations, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


@dataclass(frozen=True)
class RegisteredUser:
    id: str
    username: str
    password: str


def unique_username(prefix: str = "user") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> dict[str, Any]:
    """Register a user, asserting success; return the response body ``{"id", "username"}``."""
    response = await client.post(
        "/auth/register", json={"username": username, "password": password}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    """Log in with a JSON body, asserting success; return the access token."""
    response = await client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def assert_validation_error(response: httpx.Response, *locations: tuple[str | int, ...]) -> None:
    """A 422 in the platform shape: ``code`` plus FastAPI's error list under ``detail``."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == "validation_error"
    assert isinstance(body["detail"], list)
    assert body["detail"]
    for error in body["detail"]:
        assert {"loc", "msg", "type"} <= set(error)
    found = {tuple(error["loc"]) for error in body["detail"]}
    for location in locations:
        assert location in found, f"{location} not among {found}"


# --- Tokens -----------------------------------------------------------------------------------


def load_private_key(settings: AuthSettings) -> RSAPrivateKey:
    """The key the app signs with (read from its key file)."""
    key = serialization.load_pem_private_key(settings.private_key_file.read_bytes(), None)
    assert isinstance(key, RSAPrivateKey)
    return key


def public_pem(key: RSAPrivateKey | RSAPublicKey) -> bytes:
    public = key.public_key() if isinstance(key, RSAPrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def claims_for(
    settings: AuthSettings,
    *,
    sub: object = "00000000-0000-0000-0000-000000000001",
    name: str = "alice",
    issued_at: int | None = None,
    ttl: int = 600,
    **overrides: Any,
) -> dict[str, Any]:
    """A complete claim set as auth-service issues it; ``overrides`` replace or add claims."""
    now = int(time.time()) if issued_at is None else issued_at
    claims: dict[str, Any] = {
        "sub": sub,
        "name": name,
        "iat": now,
        "exp": now + ttl,
        "iss": settings.jwt_issuer,
        "key": settings.jwt_consumer_key,
    }
    claims.update(overrides)
    return claims


def rs256_token(private_key: RSAPrivateKey, claims: dict[str, Any], *, kid: str | None) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, private_key, algorithm="RS256", headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unsigned_token(claims: dict[str, Any]) -> str:
    """An ``alg: none`` token: header and payload, empty signature."""
    return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(claims)}."


def hs256_token(claims: dict[str, Any], secret: bytes, *, kid: str | None = None) -> str:
    """An HS256 token built by hand (PyJWT refuses a PEM public key as an HMAC secret)."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"
