"""Canonical usernames: one account whatever the letter case, stored and signed lowercase, and
every name a valid Docker repository path component (the image namespace ``<username>/...``)."""

from __future__ import annotations

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from auth_service.config import AuthSettings
from faas_common.security import key_id
from tests.unit.auth.factories import (
    PASSWORD,
    assert_validation_error,
    bearer,
    claims_for,
    rs256_token,
    unique_username,
)


async def test_every_spelling_is_the_same_account(client: httpx.AsyncClient) -> None:
    name = unique_username("alice")
    created = await client.post(
        "/auth/register", json={"username": name.capitalize(), "password": PASSWORD}
    )
    assert created.status_code == 201, created.text
    assert created.json()["username"] == name

    for spelling in (name.upper(), name, name.capitalize()):
        again = await client.post(
            "/auth/register", json={"username": spelling, "password": "another-password"}
        )
        assert again.status_code == 409, spelling
        assert again.json() == {"detail": "Username already registered", "code": "username_taken"}

    for spelling in (name.upper(), name, "A" + name[1:]):
        login = await client.post("/auth/login", json={"username": spelling, "password": PASSWORD})
        assert login.status_code == 200, spelling
        token = login.json()["access_token"]
        assert jwt.decode(token, options={"verify_signature": False})["name"] == name
        validated = await client.get("/auth/validate", headers=bearer(token))
        assert validated.json()["username"] == name
        assert validated.json()["user_id"] == created.json()["id"]


@pytest.mark.parametrize(
    "separator", [".", "_", "__", "-", "---"], ids=["dot", "underscore", "double", "dash", "dashes"]
)
async def test_docker_path_separators_are_accepted(
    client: httpx.AsyncClient, separator: str
) -> None:
    name = f"{unique_username('sep')}{separator}x9"
    response = await client.post("/auth/register", json={"username": name, "password": PASSWORD})
    assert response.status_code == 201, response.text
    assert response.json()["username"] == name


@pytest.mark.parametrize(
    "username",
    [
        pytest.param("a..b", id="double-dot"),
        pytest.param("a___b", id="triple-underscore"),
        pytest.param("a._b", id="mixed-separators"),
        pytest.param("a-.b", id="dash-dot"),
        pytest.param("_abc", id="leading-underscore"),
        pytest.param(".abc", id="leading-dot"),
        pytest.param("-abc", id="leading-dash"),
        pytest.param("abc_", id="trailing-underscore"),
        pytest.param("abc.", id="trailing-dot"),
        pytest.param("abc-", id="trailing-dash"),
        pytest.param("\u212aate", id="kelvin-sign-is-not-k"),
        pytest.param("\u0130stanbul", id="dotted-capital-i"),
    ],
)
async def test_names_that_are_not_repository_components_are_422(
    client: httpx.AsyncClient, username: str
) -> None:
    response = await client.post(
        "/auth/register", json={"username": username, "password": PASSWORD}
    )
    assert_validation_error(response, ("body", "username"))


async def test_a_non_ascii_lookalike_does_not_log_into_the_account(
    client: httpx.AsyncClient,
) -> None:
    name = "k" + unique_username("ate")
    await client.post("/auth/register", json={"username": name, "password": PASSWORD})
    lookalike = "\u212a" + name[1:]
    response = await client.post("/auth/login", json={"username": lookalike, "password": PASSWORD})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


@pytest.mark.parametrize("username", ["library", "Library", "docker", "localhost"])
async def test_image_namespaces_of_their_own_are_reserved(
    client: httpx.AsyncClient, username: str
) -> None:
    response = await client.post(
        "/auth/register", json={"username": username, "password": PASSWORD}
    )
    assert_validation_error(response, ("body", "username"))
    (error,) = response.json()["detail"]
    assert f"the name {username.lower()!r} is reserved" in error["msg"]


async def test_a_token_signed_before_the_migration_with_its_old_name_is_401(
    client: httpx.AsyncClient, auth_settings: AuthSettings, signing_key: RSAPrivateKey
) -> None:
    token = rs256_token(
        signing_key,
        claims_for(auth_settings, name="Alice", jti="a" * 32),
        kid=key_id(signing_key.public_key()),
    )
    response = await client.get("/auth/validate", headers=bearer(token))
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token claims", "code": "invalid_token"}
