"""Authentication on every route, and isolation between users."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.support.keys import RsaKeys, generate_rsa_keys
from tests.unit.registry.factories import FakeCatalog, User, bearer, function_body, mint_token

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/registry/functions", function_body()),
    ("GET", "/registry/functions", None),
    ("GET", "/registry/functions/hello", None),
    ("PATCH", "/registry/functions/hello", {"memory_mb": 256}),
    ("DELETE", "/registry/functions/hello", None),
    ("POST", "/registry/register", {"name": "hello", "payload": "hello"}),
    ("GET", "/registry/list", None),
    ("GET", "/registry/retrieve?name=hello", None),
    ("PUT", "/registry/update", {"name": "hello", "payload": "hello"}),
    ("DELETE", "/registry/delete?name=hello", None),
]


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> RsaKeys:
    return generate_rsa_keys(tmp_path_factory.mktemp("other-keys"))


def bad_tokens(private_pem: bytes, other_pem: bytes) -> dict[str, str]:
    sub = str(uuid.uuid4())
    return {
        "garbage": "not-a-token",
        "other key": mint_token(other_pem, sub=sub),
        "expired": mint_token(private_pem, sub=sub, ttl=-3600),
        "wrong issuer": mint_token(private_pem, sub=sub, issuer="someone-else"),
        "wrong consumer key": mint_token(private_pem, sub=sub, key="another-platform"),
        "tampered": mint_token(private_pem, sub=sub)[:-4] + "AAAA",
    }


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_no_token_is_401(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await client.request(method, path, json=body)

    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_bad_tokens_are_401(
    client: httpx.AsyncClient,
    rsa_keys: RsaKeys,
    other_keys: RsaKeys,
    catalog: FakeCatalog,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    for reason, token in bad_tokens(rsa_keys.private_pem, other_keys.private_pem).items():
        response = await client.request(method, path, json=body, headers=bearer(token))

        assert response.status_code == 401, reason
        assert response.json()["code"] in {"invalid_token", "token_expired"}, reason
    assert catalog.entries == {}


async def test_hs256_token_signed_with_the_public_key_is_401(
    client: httpx.AsyncClient, rsa_keys: RsaKeys
) -> None:
    header = b'{"alg":"HS256","typ":"JWT"}'

    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    now = int(time.time())
    claims = {"sub": "x", "name": "x", "iat": now, "exp": now + 60}
    claims |= {"iss": "faas-auth", "key": "faas-platform"}
    signing_input = b64(header) + b"." + b64(json.dumps(claims).encode())
    signature = hmac.new(rsa_keys.public_pem, signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + b64(signature)).decode()

    response = await client.get("/registry/functions", headers=bearer(token))

    assert response.status_code == 401


async def test_authentication_comes_before_validation(client: httpx.AsyncClient) -> None:
    response = await client.post("/registry/functions", json={"name": "bad name"})

    assert response.status_code == 401


async def test_health_and_ready_need_no_token(client: httpx.AsyncClient) -> None:
    health = await client.get("/registry/health")
    ready = await client.get("/registry/ready")

    assert health.status_code == 200
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "nats": "ok"}


async def test_ready_is_503_when_the_catalog_is_down(
    client: httpx.AsyncClient, catalog: FakeCatalog
) -> None:
    catalog.failing = True

    ready = await client.get("/registry/ready")

    assert ready.status_code == 503
    assert ready.json()["checks"]["nats"].startswith("unavailable")


async def test_other_users_function_is_not_found(
    client: httpx.AsyncClient, alice: User, bob: User, catalog: FakeCatalog
) -> None:
    created = await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    assert created.status_code == 201

    attempts = [
        await client.get("/registry/functions/hello", headers=bob.headers),
        await client.patch(
            "/registry/functions/hello", json={"memory_mb": 256}, headers=bob.headers
        ),
        await client.delete("/registry/functions/hello", headers=bob.headers),
        await client.get("/registry/retrieve?name=hello", headers=bob.headers),
        await client.put(
            "/registry/update", json={"name": "hello", "payload": "x"}, headers=bob.headers
        ),
        await client.delete("/registry/delete?name=hello", headers=bob.headers),
    ]

    for response in attempts:
        assert response.status_code == 404, response.request.url
        assert response.json() == {"detail": "Function not found", "code": "function_not_found"}
    assert (await client.get("/registry/functions", headers=bob.headers)).json() == []
    still = await client.get("/registry/functions/hello", headers=alice.headers)
    assert still.json() == created.json()
    snapshot = catalog.snapshot(alice.id, "hello")
    assert snapshot is not None
    assert snapshot.memory_mb == 128


async def test_two_users_may_use_the_same_name(
    client: httpx.AsyncClient, alice: User, bob: User, catalog: FakeCatalog
) -> None:
    mine = await client.post(
        "/registry/functions", json=function_body(image="alice/hello"), headers=alice.headers
    )
    theirs = await client.post(
        "/registry/functions", json=function_body(image="bob/hello"), headers=bob.headers
    )

    assert mine.status_code == 201
    assert theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    alice_list = (await client.get("/registry/functions", headers=alice.headers)).json()
    bob_list = (await client.get("/registry/functions", headers=bob.headers)).json()
    assert [f["image"] for f in alice_list] == ["alice/hello"]
    assert [f["image"] for f in bob_list] == ["bob/hello"]
    alice_snapshot = catalog.snapshot(alice.id, "hello")
    bob_snapshot = catalog.snapshot(bob.id, "hello")
    assert alice_snapshot is not None
    assert bob_snapshot is not None
    assert alice_snapshot.image == "alice/hello"
    assert bob_snapshot.image == "bob/hello"

    deleted = await client.delete("/registry/functions/hello", headers=bob.headers)
    assert deleted.status_code == 204
    assert (await client.get("/registry/functions/hello", headers=alice.headers)).status_code == 200
    assert catalog.snapshot(alice.id, "hello") is not None
