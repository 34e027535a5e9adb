"""Issued tokens (claims, header), GET /auth/validate, and the JWKS other services verify with."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from auth_service.config import AuthSettings
from faas_common.errors import Unauthorized
from faas_common.security import TokenVerifier
from tests.unit.auth.factories import (
    BASE_URL,
    RegisteredUser,
    bearer,
    claims_for,
    hs256_token,
    login,
    public_pem,
    rs256_token,
    unsigned_token,
)

JWKS_PATH = "/auth/.well-known/jwks.json"
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture(scope="session")
def foreign_key() -> RSAPrivateKey:
    """An RSA key the platform never trusted."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def fetch_jwks(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get(JWKS_PATH)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def jwks_key(client: httpx.AsyncClient) -> tuple[str, RSAPublicKey]:
    """The kid and public key published in the JWKS."""
    jwk = (await fetch_jwks(client))["keys"][0]
    key = jwt.algorithms.RSAAlgorithm.from_jwk(jwk)
    assert isinstance(key, RSAPublicKey)
    return jwk["kid"], key


# --- Claims -----------------------------------------------------------------------------------


async def test_token_carries_the_platform_claims(
    client: httpx.AsyncClient, user: RegisteredUser, auth_settings: AuthSettings
) -> None:
    before = int(time.time())
    token = await login(client, user.username, user.password)
    kid, public_key = await jwks_key(client)

    claims = jwt.decode(
        token,
        public_key,
        algorithms=["RS256"],
        issuer=auth_settings.jwt_issuer,
        options={"require": ["sub", "name", "iat", "exp", "iss", "key"]},
    )
    assert set(claims) >= {"sub", "name", "iat", "exp", "iss", "key"}
    assert claims["sub"] == user.id
    assert claims["name"] == user.username
    assert claims["iss"] == auth_settings.jwt_issuer
    assert claims["key"] == auth_settings.jwt_consumer_key
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == auth_settings.token_ttl_seconds

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == kid


async def test_token_never_carries_the_password(
    client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    token = await login(client, user.username, user.password)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert user.password not in str(claims)


# --- Validate ---------------------------------------------------------------------------------


async def test_validate_returns_the_user(
    client: httpx.AsyncClient, user: RegisteredUser, auth_settings: AuthSettings
) -> None:
    token = await login(client, user.username, user.password)
    response = await client.get("/auth/validate", headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"user_id", "username", "expires_at"}
    assert body["user_id"] == user.id
    assert body["username"] == user.username
    expires_at = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert expires_at.tzinfo is not None
    claims = jwt.decode(token, options={"verify_signature": False})
    assert expires_at == datetime.fromtimestamp(claims["exp"], UTC)


async def test_validate_accepts_a_lowercase_scheme(
    client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    token = await login(client, user.username, user.password)
    response = await client.get("/auth/validate", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200


def assert_unauthorized(response: httpx.Response, *codes: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["code"] in codes, body


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": ""}, id="empty-header"),
        pytest.param({"Authorization": "Bearer"}, id="scheme-only"),
        pytest.param({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, id="basic-auth"),
    ],
)
async def test_validate_without_a_bearer_token_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/auth/validate", headers=headers)
    assert_unauthorized(response, "unauthorized")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("garbage", id="garbage"),
        pytest.param("a.b.c", id="three-garbage-segments"),
        pytest.param("eyJhbGciOiJSUzI1NiJ9.e30.", id="rs256-header-no-signature"),
    ],
)
async def test_validate_garbage_is_401(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get("/auth/validate", headers=bearer(token))
    assert_unauthorized(response, "invalid_token")


TokenMaker = Callable[[AuthSettings, RSAPrivateKey, RSAPrivateKey, str], str]


def _expired(settings: AuthSettings, key: RSAPrivateKey, _: RSAPrivateKey, kid: str) -> str:
    now = int(time.time())
    return rs256_token(key, claims_for(settings, issued_at=now - 7200, ttl=3600), kid=kid)


def _alg_none(settings: AuthSettings, _: RSAPrivateKey, __: RSAPrivateKey, kid: str) -> str:
    return unsigned_token(claims_for(settings))


def _hs256_random_secret(
    settings: AuthSettings, _: RSAPrivateKey, __: RSAPrivateKey, kid: str
) -> str:
    return hs256_token(claims_for(settings), b"s" * 64, kid=kid)


def _hs256_public_key_as_secret(
    settings: AuthSettings, key: RSAPrivateKey, _: RSAPrivateKey, kid: str
) -> str:
    # The classic key-confusion attack: the public key is public, so anyone can compute this.
    return hs256_token(claims_for(settings), public_pem(key), kid=kid)


def _foreign_rsa_key(
    settings: AuthSettings, _: RSAPrivateKey, foreign: RSAPrivateKey, kid: str
) -> str:
    # Claims the platform's kid, but the signature comes from another key.
    return rs256_token(foreign, claims_for(settings), kid=kid)


def _wrong_issuer(settings: AuthSettings, key: RSAPrivateKey, _: RSAPrivateKey, kid: str) -> str:
    return rs256_token(key, claims_for(settings, iss="someone-else"), kid=kid)


def _wrong_consumer_key(
    settings: AuthSettings, key: RSAPrivateKey, _: RSAPrivateKey, kid: str
) -> str:
    return rs256_token(key, claims_for(settings, key="another-platform"), kid=kid)


def _without(claim: str) -> TokenMaker:
    def make(settings: AuthSettings, key: RSAPrivateKey, _: RSAPrivateKey, kid: str) -> str:
        claims = claims_for(settings)
        del claims[claim]
        return rs256_token(key, claims, kid=kid)

    return make


def _tampered_payload(
    settings: AuthSettings, key: RSAPrivateKey, _: RSAPrivateKey, kid: str
) -> str:
    genuine = rs256_token(key, claims_for(settings, name="alice"), kid=kid)
    forged = rs256_token(key, claims_for(settings, name="mallory"), kid=kid)
    header, _payload, signature = genuine.split(".")
    return ".".join([header, forged.split(".")[1], signature])


def _non_string_subject(
    settings: AuthSettings, key: RSAPrivateKey, _: RSAPrivateKey, kid: str
) -> str:
    return rs256_token(key, claims_for(settings, sub=12345), kid=kid)


@pytest.mark.parametrize(
    ("make", "codes"),
    [
        pytest.param(_expired, ("token_expired",), id="expired"),
        pytest.param(_alg_none, ("invalid_token",), id="alg-none"),
        pytest.param(_hs256_random_secret, ("invalid_token",), id="hs256-random-secret"),
        pytest.param(_hs256_public_key_as_secret, ("invalid_token",), id="hs256-public-key"),
        pytest.param(_foreign_rsa_key, ("invalid_token",), id="other-rsa-key"),
        pytest.param(_wrong_issuer, ("invalid_token",), id="wrong-iss"),
        pytest.param(_wrong_consumer_key, ("invalid_token",), id="wrong-key-claim"),
        pytest.param(_without("sub"), ("invalid_token",), id="missing-sub"),
        pytest.param(_without("name"), ("invalid_token",), id="missing-name"),
        pytest.param(_without("exp"), ("invalid_token",), id="missing-exp"),
        pytest.param(_without("iss"), ("invalid_token",), id="missing-iss"),
        pytest.param(_without("key"), ("invalid_token",), id="missing-key-claim"),
        pytest.param(_tampered_payload, ("invalid_token",), id="tampered-payload"),
        pytest.param(_non_string_subject, ("invalid_token",), id="non-string-sub"),
    ],
)
async def test_validate_rejects_forged_or_unusable_tokens(
    client: httpx.AsyncClient,
    auth_settings: AuthSettings,
    signing_key: RSAPrivateKey,
    foreign_key: RSAPrivateKey,
    make: TokenMaker,
    codes: tuple[str, ...],
) -> None:
    kid, _ = await jwks_key(client)
    token = make(auth_settings, signing_key, foreign_key, kid)
    response = await client.get("/auth/validate", headers=bearer(token))
    assert_unauthorized(response, *codes)


async def test_a_token_minted_like_the_service_does_is_accepted(
    client: httpx.AsyncClient, auth_settings: AuthSettings, signing_key: RSAPrivateKey
) -> None:
    """Control for the rejections above: the same helpers with nothing wrong pass."""
    kid, _ = await jwks_key(client)
    token = rs256_token(signing_key, claims_for(auth_settings, name="minted"), kid=kid)
    response = await client.get("/auth/validate", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["username"] == "minted"


# --- JWKS -------------------------------------------------------------------------------------


async def test_jwks_publishes_one_rsa_signing_key(client: httpx.AsyncClient) -> None:
    jwks = await fetch_jwks(client)
    assert set(jwks) == {"keys"}
    assert len(jwks["keys"]) == 1
    jwk = jwks["keys"][0]
    assert jwk["kty"] == "RSA"
    assert jwk["use"] == "sig"
    assert jwk["alg"] == "RS256"
    assert isinstance(jwk["kid"], str)
    assert jwk["kid"]
    assert jwk["n"]
    assert jwk["e"] == "AQAB"
    assert not PRIVATE_JWK_MEMBERS & set(jwk), "the JWKS leaks private key material"


async def test_jwks_key_is_the_signing_key(
    client: httpx.AsyncClient, signing_key: RSAPrivateKey
) -> None:
    _, public_key = await jwks_key(client)
    assert public_key.public_numbers() == signing_key.public_key().public_numbers()


async def test_token_verifier_from_jwks_verifies_a_fresh_token(
    client: httpx.AsyncClient, user: RegisteredUser, auth_settings: AuthSettings
) -> None:
    token = await login(client, user.username, user.password)
    verifier = TokenVerifier(
        issuer=auth_settings.jwt_issuer,
        consumer_key=auth_settings.jwt_consumer_key,
        jwks_url=f"{BASE_URL}{JWKS_PATH}",
        http=client,
    )
    claims = await verifier.verify(token)
    assert claims.user_id == user.id
    assert claims.username == user.username
    assert claims.expires_at - claims.issued_at == timedelta(
        seconds=auth_settings.token_ttl_seconds
    )


async def test_token_verifier_from_jwks_rejects_a_foreign_key(
    client: httpx.AsyncClient, auth_settings: AuthSettings, foreign_key: RSAPrivateKey
) -> None:
    kid, _ = await jwks_key(client)
    verifier = TokenVerifier(
        issuer=auth_settings.jwt_issuer,
        consumer_key=auth_settings.jwt_consumer_key,
        jwks_url=f"{BASE_URL}{JWKS_PATH}",
        http=client,
    )
    with pytest.raises(Unauthorized) as same_kid:
        await verifier.verify(rs256_token(foreign_key, claims_for(auth_settings), kid=kid))
    assert same_kid.value.code == "invalid_token"
    with pytest.raises(Unauthorized) as unknown_kid:
        await verifier.verify(rs256_token(foreign_key, claims_for(auth_settings), kid="other"))
    assert unknown_kid.value.code == "invalid_token"
