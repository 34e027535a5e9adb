"""Token verification as every service does it: static public key or JWKS (cached, refreshed)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicNumbers

from faas_common import security
from faas_common.errors import DependencyUnavailable, Unauthorized
from faas_common.security import TokenVerifier, key_id, load_public_key, public_jwk
from tests.support.keys import RsaKeys

ISSUER = "faas-auth"
CONSUMER_KEY = "faas-platform"
JWKS_URL = "http://auth.test/auth/.well-known/jwks.json"


def _b64uint(value: str) -> int:
    return int.from_bytes(jwt.utils.base64url_decode(value), "big")


def test_key_id_is_the_rfc7638_thumbprint() -> None:
    # The example key and thumbprint of RFC 7638, section 3.1.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJEC"
        "PebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Q"
        "vzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6"
        "WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    public_key = RSAPublicNumbers(_b64uint("AQAB"), _b64uint(n)).public_key()
    assert key_id(public_key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_public_jwk_has_no_private_members(rsa_keys: RsaKeys) -> None:
    jwk = public_jwk(load_public_key(rsa_keys.public_pem))
    assert set(jwk) >= {"kty", "n", "e", "kid", "use", "alg"}
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)


def test_load_public_key_refuses_non_rsa_keys() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="RSA"):
        load_public_key(pem)


def test_a_verifier_needs_a_key_source() -> None:
    with pytest.raises(ValueError, match="JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL"):
        TokenVerifier(issuer=ISSUER, consumer_key=CONSUMER_KEY)


def private_key(keys: RsaKeys) -> RSAPrivateKey:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(keys.private_pem, None)
    assert isinstance(key, RSAPrivateKey)
    return key


def token(key: RSAPrivateKey, *, kid: str | None = None, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "user-1",
        "name": "alice",
        "iat": now,
        "exp": now + 300,
        "iss": ISSUER,
        "key": CONSUMER_KEY,
    }
    claims.update(overrides)
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


async def test_verifier_from_a_public_key_file(rsa_keys: RsaKeys) -> None:
    verifier = TokenVerifier.from_file(
        rsa_keys.public_path, issuer=ISSUER, consumer_key=CONSUMER_KEY
    )
    claims = await verifier.verify(token(private_key(rsa_keys)))
    assert claims.user_id == "user-1"
    assert claims.username == "alice"
    assert (claims.expires_at - claims.issued_at).total_seconds() == 300


async def test_leeway_tolerates_small_clock_skew(rsa_keys: RsaKeys) -> None:
    verifier = TokenVerifier.from_file(
        rsa_keys.public_path, issuer=ISSUER, consumer_key=CONSUMER_KEY
    )
    now = int(time.time())
    just_expired = token(private_key(rsa_keys), iat=now - 300, exp=now - 2)
    assert (await verifier.verify(just_expired)).username == "alice"
    long_expired = token(private_key(rsa_keys), iat=now - 300, exp=now - 60)
    with pytest.raises(Unauthorized) as raised:
        await verifier.verify(long_expired)
    assert raised.value.code == "token_expired"


class JwksServer:
    """A JWKS endpoint behind httpx.MockTransport that counts its requests."""

    def __init__(self, *keys: RSAPrivateKey) -> None:
        self.keys = list(keys)
        self.requests = 0
        self.status = 200
        self.body: Any = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        assert str(request.url) == JWKS_URL
        if self.body is not None:
            return httpx.Response(self.status, content=json.dumps(self.body).encode())
        jwks = {"keys": [public_jwk(key.public_key()) for key in self.keys]}
        return httpx.Response(self.status, json=jwks)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def jwks_verifier(http: httpx.AsyncClient) -> TokenVerifier:
    return TokenVerifier(issuer=ISSUER, consumer_key=CONSUMER_KEY, jwks_url=JWKS_URL, http=http)


async def test_jwks_is_fetched_once_and_cached(rsa_keys: RsaKeys) -> None:
    key = private_key(rsa_keys)
    server = JwksServer(key)
    async with server.client() as http:
        verifier = jwks_verifier(http)
        kid = key_id(key.public_key())
        for _ in range(3):
            assert (await verifier.verify(token(key, kid=kid))).user_id == "user-1"
    assert server.requests == 1


async def test_token_without_kid_uses_the_published_key(rsa_keys: RsaKeys) -> None:
    key = private_key(rsa_keys)
    server = JwksServer(key)
    async with server.client() as http:
        assert (await jwks_verifier(http).verify(token(key))).username == "alice"


async def test_unknown_kid_refetches_after_the_refresh_interval(
    rsa_keys: RsaKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = private_key(rsa_keys)
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = JwksServer(old)
    async with server.client() as http:
        verifier = jwks_verifier(http)
        await verifier.verify(token(old, kid=key_id(old.public_key())))
        server.keys = [old, rotated]
        new_token = token(rotated, kid=key_id(rotated.public_key()))

        # Within the interval an unknown kid is refused without hammering the JWKS endpoint.
        with pytest.raises(Unauthorized) as raised:
            await verifier.verify(new_token)
        assert raised.value.code == "invalid_token"
        assert server.requests == 1

        monkeypatch.setattr(security, "JWKS_REFRESH_SECONDS", 0.0)
        assert (await verifier.verify(new_token)).username == "alice"
        assert server.requests == 2


async def test_jwks_endpoint_down_is_503_not_401(rsa_keys: RsaKeys) -> None:
    key = private_key(rsa_keys)
    server = JwksServer(key)
    server.status = 502
    async with server.client() as http:
        with pytest.raises(DependencyUnavailable):
            await jwks_verifier(http).verify(token(key, kid="k"))


async def test_jwks_unreachable_is_503(rsa_keys: RsaKeys) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        with pytest.raises(DependencyUnavailable):
            await jwks_verifier(http).verify(token(private_key(rsa_keys), kid="k"))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(["not", "an", "object"], id="array"),
        pytest.param({"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}, id="bad-key"),
        pytest.param({"keys": [{"kty": "RSA"}]}, id="key-without-n-and-e"),
        pytest.param({"keys": "nope"}, id="keys-not-a-list"),
        pytest.param({"no": "keys"}, id="no-keys"),
    ],
)
async def test_malformed_jwks_is_503(rsa_keys: RsaKeys, body: Any) -> None:
    server = JwksServer()
    server.body = body
    async with server.client() as http:
        with pytest.raises(DependencyUnavailable):
            await jwks_verifier(http).verify(token(private_key(rsa_keys), kid="k"))


async def test_jwks_without_a_matching_key_is_401(rsa_keys: RsaKeys) -> None:
    server = JwksServer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    async with server.client() as http:
        with pytest.raises(Unauthorized):
            await jwks_verifier(http).verify(token(private_key(rsa_keys), kid="unknown"))


async def test_a_known_key_never_waits_behind_a_slow_jwks_fetch(rsa_keys: RsaKeys) -> None:
    key = private_key(rsa_keys)
    kid = key_id(key.public_key())
    release = asyncio.Event()
    server = JwksServer(key)

    async def slow_handler(request: httpx.Request) -> httpx.Response:
        if server.requests >= 1:
            await release.wait()  # every fetch after the first hangs until released
        return server.handler(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow_handler)) as http:
        verifier = jwks_verifier(http)
        await verifier.verify(token(key, kid=kid))  # first fetch: the key is now cached
        stuck = asyncio.create_task(verifier.verify(token(key, kid="no-such-kid")))
        await asyncio.sleep(0.05)
        claims = await asyncio.wait_for(verifier.verify(token(key, kid=kid)), timeout=1)
        assert claims.username == "alice"
        release.set()
        with pytest.raises(Unauthorized):
            await stuck


async def test_a_failed_jwks_fetch_is_not_retried_by_every_request(rsa_keys: RsaKeys) -> None:
    server = JwksServer(private_key(rsa_keys))
    server.status = 500
    async with server.client() as http:
        verifier = jwks_verifier(http)
        for _ in range(5):
            with pytest.raises(DependencyUnavailable):
                await verifier.verify(token(private_key(rsa_keys), kid="k"))
    assert server.requests == 1


async def test_absurd_timestamps_are_401_not_500(rsa_keys: RsaKeys) -> None:
    verifier = TokenVerifier.from_file(
        rsa_keys.public_path, issuer=ISSUER, consumer_key=CONSUMER_KEY
    )
    with pytest.raises(Unauthorized):
        await verifier.verify(token(private_key(rsa_keys), exp=10**20))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Alice", id="upper-case-from-before-the-migration"),
        pytest.param("ALICE", id="all-upper-case"),
        pytest.param("al ice", id="space"),
        pytest.param("ab", id="too-short"),
        pytest.param("a" * 65, id="too-long"),
        pytest.param("-alice", id="leading-dash"),
        pytest.param(7, id="not-a-string"),
    ],
)
async def test_a_token_whose_name_is_not_a_canonical_username_is_401(
    rsa_keys: RsaKeys, name: object
) -> None:
    verifier = TokenVerifier.from_file(
        rsa_keys.public_path, issuer=ISSUER, consumer_key=CONSUMER_KEY
    )
    with pytest.raises(Unauthorized) as raised:
        await verifier.verify(token(private_key(rsa_keys), name=name))
    assert (raised.value.status_code, raised.value.code) == (401, "invalid_token")
