"""RS256 token verification and the ``CurrentUser`` dependency.

Only auth-service signs. Every other service verifies each request itself with the public key,
read from ``JWT_PUBLIC_KEY_FILE`` or fetched from ``JWT_JWKS_URL`` (cached; refetched at most every
``JWKS_REFRESH_SECONDS`` when a token names an unknown ``kid``). Only ``RS256`` is accepted, so
``alg: none`` and HS256 tokens (even ones "signed" with the public key as an HMAC secret) fail.

Revocation: a verifier given a ``RevocationCheck`` (``honour``; in the services the
``revocations`` bucket watched into memory, ``faas_common.revocation``) refuses revoked tokens
(401 ``token_revoked``) and answers 503 while it cannot tell.

A token's ``name`` must be a canonical username (``faas_common.validation.is_username``): the
image policy takes it as the user's namespace, so a name spelt otherwise is an invalid token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from faas_common.errors import DependencyUnavailable, Unauthorized
from faas_common.revocation import RevocationsUnavailable
from faas_common.settings import CommonSettings, ConfigurationError
from faas_common.validation import is_username

ALGORITHM = "RS256"
JWKS_REFRESH_SECONDS = 30.0
JWKS_RETRY_SECONDS = 5.0
"""After a failed JWKS fetch, requests needing a new key fail fast (503) for this long."""
REQUIRED_CLAIMS = ("sub", "name", "iat", "exp", "iss", "key")


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: str
    username: str
    issued_at: datetime
    expires_at: datetime
    token_id: str | None = None
    """The ``jti`` claim (every token auth-service issues has one): what logout revokes."""


class RevocationCheck(Protocol):
    def is_revoked(self, *, user_id: str, jti: str | None) -> bool:
        """Whether the token is revoked; raises ``RevocationsUnavailable`` when it cannot tell."""
        ...


def load_public_key(pem: bytes) -> RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the JWT public key must be an RSA key")
    return key


def key_id(public_key: RSAPublicKey) -> str:
    """RFC 7638 thumbprint of the key: a stable ``kid`` without any configuration."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public_key))
    canonical = json.dumps(
        {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwk(public_key: RSAPublicKey) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public_key))
    jwk.update({"kid": key_id(public_key), "use": "sig", "alg": ALGORITHM})
    return jwk


class TokenVerifier:
    """Verifies platform tokens with a static public key or keys fetched from a JWKS URL."""

    def __init__(
        self,
        *,
        issuer: str,
        consumer_key: str,
        public_key: RSAPublicKey | None = None,
        jwks_url: str | None = None,
        http: httpx.AsyncClient | None = None,
        leeway: float = 5.0,
    ) -> None:
        if public_key is None and jwks_url is None:
            raise ValueError("token verification needs JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL")
        self.issuer = issuer
        self.consumer_key = consumer_key
        self.leeway = leeway
        self._static_key = public_key
        self._jwks_url = jwks_url
        self._http = http
        self._keys: dict[str, RSAPublicKey] = {}
        self._fetched_at = float("-inf")
        self._failed_at = float("-inf")
        self._lock = asyncio.Lock()
        self._revocations: RevocationCheck | None = None

    def honour(self, revocations: RevocationCheck) -> None:
        """Refuse the tokens ``revocations`` lists, from now on."""
        self._revocations = revocations

    def _check_revocation(self, user_id: str, jti: str | None) -> None:
        if self._revocations is None:
            return
        try:
            revoked = self._revocations.is_revoked(user_id=user_id, jti=jti)
        except RevocationsUnavailable as exc:
            raise DependencyUnavailable("Cannot check token revocations") from exc
        if revoked:
            raise Unauthorized("Token revoked", code="token_revoked")

    @classmethod
    def from_file(cls, path: Path, *, issuer: str, consumer_key: str) -> TokenVerifier:
        return cls(
            issuer=issuer, consumer_key=consumer_key, public_key=load_public_key(path.read_bytes())
        )

    def _cached_key(self, kid: str | None) -> RSAPublicKey | None:
        if kid is None:  # a token without kid: the JWKS's first key
            return next(iter(self._keys.values()), None)
        return self._keys.get(kid)

    async def _jwks_key(self, kid: str | None) -> RSAPublicKey:
        # Known keys never wait: the lock only serialises fetches.
        if (key := self._cached_key(kid)) is not None:
            return key
        async with self._lock:
            if (key := self._cached_key(kid)) is not None:
                return key  # fetched while this request waited
            now = time.monotonic()
            if now - self._failed_at < JWKS_RETRY_SECONDS:
                raise DependencyUnavailable("Cannot fetch the token signing keys")
            if not self._keys or now - self._fetched_at >= JWKS_REFRESH_SECONDS:
                try:
                    await self._refresh_jwks()
                except DependencyUnavailable:
                    self._failed_at = time.monotonic()
                    raise
            if (key := self._cached_key(kid)) is None:
                raise Unauthorized("Token signed by an unknown key", code="invalid_token")
            return key

    async def _refresh_jwks(self) -> None:
        assert self._jwks_url is not None
        client = self._http or httpx.AsyncClient(timeout=5.0)
        try:
            response = await client.get(self._jwks_url)
            response.raise_for_status()
            document = response.json()
            entries = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(entries, list):
                raise ValueError("the response is not a JWKS document")
            keys: dict[str, RSAPublicKey] = {}
            for jwk in entries:
                if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
                    continue
                key = jwt.algorithms.RSAAlgorithm.from_jwk(jwk)
                if isinstance(key, RSAPublicKey):
                    keys[jwk.get("kid") or key_id(key)] = key
        except (httpx.HTTPError, jwt.PyJWTError, ValueError, KeyError) as exc:
            raise DependencyUnavailable("Cannot fetch the token signing keys") from exc
        finally:
            if self._http is None:
                await client.aclose()
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def verify(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("Malformed token", code="invalid_token") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthorized("Token algorithm not accepted", code="invalid_token")
        key = self._static_key
        if key is None:
            kid = header.get("kid")
            key = await self._jwks_key(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("Token expired", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("Invalid token", code="invalid_token") from exc
        if claims.get("key") != self.consumer_key:
            raise Unauthorized("Token not issued for this platform", code="invalid_token")
        if not isinstance(claims.get("sub"), str) or not _canonical_name(claims.get("name")):
            raise Unauthorized("Invalid token claims", code="invalid_token")
        jti = claims.get("jti")
        if jti is not None and not isinstance(jti, str):
            raise Unauthorized("Invalid token claims", code="invalid_token")
        try:
            issued_at = datetime.fromtimestamp(claims["iat"], UTC)
            expires_at = datetime.fromtimestamp(claims["exp"], UTC)
        except (OverflowError, OSError, ValueError, TypeError) as exc:
            raise Unauthorized("Invalid token claims", code="invalid_token") from exc
        self._check_revocation(claims["sub"], jti)
        return TokenClaims(
            user_id=claims["sub"],
            username=claims["name"],
            issued_at=issued_at,
            expires_at=expires_at,
            token_id=jti,
        )


def _canonical_name(name: object) -> bool:
    """Whether ``name`` is a canonical username: a token signed before a rename (``Alice`` for an
    account now called ``renamed-<id>``) is refused rather than read as another user's name."""
    return isinstance(name, str) and is_username(name)


def token_verifier_from_settings(
    settings: CommonSettings, http: httpx.AsyncClient | None, *, service: str
) -> TokenVerifier:
    """The verifier a service builds at start-up: ``JWT_PUBLIC_KEY_FILE`` when set, else
    ``JWT_JWKS_URL`` (fetched with ``http``); neither is a ``ConfigurationError``."""
    if settings.jwt_public_key_file is not None:
        path = settings.jwt_public_key_file
        if not path.is_file():
            raise ConfigurationError(f"JWT_PUBLIC_KEY_FILE={path} does not exist")
        return TokenVerifier.from_file(
            path, issuer=settings.jwt_issuer, consumer_key=settings.jwt_consumer_key
        )
    if settings.jwt_jwks_url:
        return TokenVerifier(
            issuer=settings.jwt_issuer,
            consumer_key=settings.jwt_consumer_key,
            jwks_url=settings.jwt_jwks_url,
            http=http,
        )
    raise ConfigurationError(
        f"{service} verifies every token itself: set JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL "
        "(auth-service's PEM public key, or its JWKS, e.g. "
        "http://auth-service:8081/auth/.well-known/jwks.json)"
    )


async def open_token_verifier(
    settings: CommonSettings, stack: AsyncExitStack, *, service: str
) -> TokenVerifier:
    """A service's verifier for its lifespan; a JWKS client, when one is needed, closes with
    ``stack``."""
    http: httpx.AsyncClient | None = None
    if settings.jwt_public_key_file is None and settings.jwt_jwks_url:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=5.0))
    return token_verifier_from_settings(settings, http, service=service)


_bearer = HTTPBearer(auto_error=False)


def get_verifier(request: Request) -> TokenVerifier:
    verifier: TokenVerifier = request.app.state.token_verifier
    return verifier


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenClaims:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Missing bearer token", code="unauthorized")
    return await get_verifier(request).verify(credentials.credentials)


CurrentUser = Annotated[TokenClaims, Depends(current_user)]
