"""The service around the endpoints: health, errors for unknown paths, docs, the signing key."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from tests.unit.auth.factories import (
    bearer,
    client_for,
    load_private_key,
    login,
    make_settings,
    register,
    running_app,
)


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_checks_the_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "revocations": "ok"}}


@pytest.mark.parametrize("path", ["/nope", "/auth/nope", "/registry/functions", "/"])
async def test_unknown_path_is_json_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == "not_found"


async def test_wrong_method_is_json_405(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/login")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/health", headers={"X-Request-ID": "gw-req-42"})
    assert response.headers["x-request-id"] == "gw-req-42"
    generated = await client.get("/auth/health")
    assert generated.headers["x-request-id"]


async def test_openapi_and_docs_live_under_the_prefix(client: httpx.AsyncClient) -> None:
    schema = await client.get("/auth/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/auth/register", "/auth/login", "/auth/validate", "/auth/.well-known/jwks.json"):
        assert path in paths
    login_body = paths["/auth/login"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(login_body)
    assert (await client.get("/auth/docs")).status_code == 200


# --- The signing key --------------------------------------------------------------------------


async def test_generated_key_is_private_and_its_public_half_is_written(
    auth_app: FastAPI, tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = tmp_path_factory.mktemp("keygen")
    settings = make_settings(directory)
    assert not settings.private_key_file.exists()
    async with running_app(settings):
        pass
    mode = stat.S_IMODE(settings.private_key_file.stat().st_mode)
    assert mode == 0o600
    public = serialization.load_pem_public_key((directory / "jwt-public.pem").read_bytes())
    assert isinstance(public, rsa.RSAPublicKey)
    private = load_private_key(settings)
    assert private.key_size >= 2048
    assert public.public_numbers() == private.public_key().public_numbers()


async def test_restart_keeps_the_key_users_and_tokens(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running_app(settings) as app, client_for(app) as client:
        await register(client, "persistent")
        token = await login(client, "persistent")
        kid = (await client.get("/auth/.well-known/jwks.json")).json()["keys"][0]["kid"]

    async with running_app(settings) as app, client_for(app) as client:
        jwks = (await client.get("/auth/.well-known/jwks.json")).json()
        assert jwks["keys"][0]["kid"] == kid
        response = await client.get("/auth/validate", headers=bearer(token))
        assert response.status_code == 200
        assert response.json()["username"] == "persistent"
        assert await login(client, "persistent")
        again = await client.post(
            "/auth/register", json={"username": "persistent", "password": "another-password"}
        )
        assert again.status_code == 409


async def test_an_existing_key_file_is_used(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings = make_settings(tmp_path)
    settings.private_key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    async with running_app(settings) as app, client_for(app) as client:
        await register(client, "keyholder")
        token = await login(client, "keyholder")
    claims = jwt.decode(token, key.public_key(), algorithms=["RS256"], issuer=settings.jwt_issuer)
    assert claims["name"] == "keyholder"


async def test_missing_key_without_generation_fails_at_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, generate_keys=False)
    with pytest.raises(FileNotFoundError, match="AUTH_PRIVATE_KEY_FILE"):
        async with running_app(settings):
            pass
    assert not settings.private_key_file.exists()


async def test_short_rsa_key_is_refused(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - refusing it is the point
    settings = make_settings(tmp_path)
    settings.private_key_file.write_bytes(
        weak.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="2048"):
        async with running_app(settings):
            pass


async def test_non_rsa_key_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.private_key_file.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="not an RSA private key"):
        async with running_app(settings):
            pass
