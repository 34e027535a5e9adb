"""POST /auth/register: 201 with the new user, 409 for a taken name, 422 for invalid input."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.unit.auth.factories import (
    PASSWORD,
    RegisteredUser,
    assert_validation_error,
    unique_username,
)


async def test_register_returns_id_and_username(client: httpx.AsyncClient) -> None:
    username = unique_username()
    response = await client.post(
        "/auth/register", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"id", "username"}
    assert body["username"] == username
    assert isinstance(body["id"], str)
    assert body["id"]


async def test_each_user_gets_a_distinct_id(
    client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    other = unique_username()
    response = await client.post("/auth/register", json={"username": other, "password": PASSWORD})
    assert response.status_code == 201
    assert response.json()["id"] != user.id


async def test_response_never_contains_the_password_or_its_hash(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/auth/register",
        json={"username": unique_username(), "password": PASSWORD, "is_admin": True},
    )
    assert response.status_code == 201
    assert PASSWORD not in response.text
    assert "argon2" not in response.text
    assert set(response.json()) == {"id", "username"}


async def test_taken_username_is_409(client: httpx.AsyncClient, user: RegisteredUser) -> None:
    response = await client.post(
        "/auth/register", json={"username": user.username, "password": "another-password"}
    )
    assert response.status_code == 409
    assert response.json() == {"detail": "Username already registered", "code": "username_taken"}


async def test_taken_username_leaves_the_first_account_intact(
    client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    await client.post(
        "/auth/register", json={"username": user.username, "password": "another-password"}
    )
    response = await client.post(
        "/auth/login", json={"username": user.username, "password": user.password}
    )
    assert response.status_code == 200
    response = await client.post(
        "/auth/login", json={"username": user.username, "password": "another-password"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    "username",
    [
        pytest.param("abc", id="3-chars"),
        pytest.param("u" * 64, id="64-chars"),
        pytest.param("a.b_c-9", id="every-allowed-class"),
    ],
)
async def test_username_rule_boundaries_are_accepted(
    client: httpx.AsyncClient, username: str
) -> None:
    # The session's database is fresh: these fixed names are free.
    response = await client.post(
        "/auth/register", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    assert response.json()["username"] == username


@pytest.mark.parametrize(
    "username",
    [
        pytest.param("ab", id="2-chars"),
        pytest.param("a" * 65, id="65-chars"),
        pytest.param("", id="empty"),
        pytest.param("has space", id="space"),
        pytest.param("semi;colon", id="semicolon"),
        pytest.param("sl/ash", id="slash"),
        pytest.param("at@host", id="at-sign"),
        pytest.param("\u00e9mile", id="non-ascii"),
        pytest.param("alice\n", id="trailing-newline"),
        pytest.param("<script>", id="markup"),
    ],
)
async def test_invalid_username_is_422(client: httpx.AsyncClient, username: str) -> None:
    response = await client.post(
        "/auth/register", json={"username": username, "password": PASSWORD}
    )
    assert_validation_error(response, ("body", "username"))


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("x" * 8, id="8-chars"),
        pytest.param("x" * 1024, id="1024-chars"),
        pytest.param("p\u00e4ssw\u00f6rd", id="non-ascii"),
    ],
)
async def test_password_rule_boundaries_are_accepted(
    client: httpx.AsyncClient, password: str
) -> None:
    username = unique_username()
    response = await client.post(
        "/auth/register", json={"username": username, "password": password}
    )
    assert response.status_code == 201, response.text
    login = await client.post("/auth/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("x" * 7, id="7-chars"),
        pytest.param("x" * 1025, id="1025-chars"),
        pytest.param("x" * 2000, id="2000-chars"),
        pytest.param("", id="empty"),
    ],
)
async def test_invalid_password_is_422(client: httpx.AsyncClient, password: str) -> None:
    response = await client.post(
        "/auth/register", json={"username": unique_username(), "password": password}
    )
    assert_validation_error(response, ("body", "password"))


async def test_oversize_password_is_not_echoed_in_full(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/auth/register", json={"username": unique_username(), "password": "y" * 2000}
    )
    assert_validation_error(response, ("body", "password"))
    assert len(response.content) < 2000


async def test_every_invalid_field_is_reported(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/register", json={"username": "a", "password": "b"})
    assert_validation_error(response, ("body", "username"), ("body", "password"))


@pytest.mark.parametrize(
    ("payload", "locations"),
    [
        pytest.param({}, [("body", "username"), ("body", "password")], id="empty-object"),
        pytest.param({"username": "someone"}, [("body", "password")], id="no-password"),
        pytest.param({"password": PASSWORD}, [("body", "username")], id="no-username"),
        pytest.param(
            {"username": 12345, "password": PASSWORD}, [("body", "username")], id="int-username"
        ),
        pytest.param(
            {"username": "someone", "password": ["a", "list"]},
            [("body", "password")],
            id="list-password",
        ),
        pytest.param(
            {"username": None, "password": PASSWORD}, [("body", "username")], id="null-username"
        ),
        pytest.param(
            {"username": "someone", "password": 12345678},
            [("body", "password")],
            id="int-password",
        ),
        pytest.param(["someone", PASSWORD], [("body",)], id="array-body"),
        pytest.param("someone", [("body",)], id="string-body"),
        pytest.param(None, [("body",)], id="null-body"),
    ],
)
async def test_missing_fields_and_wrong_types_are_422(
    client: httpx.AsyncClient, payload: Any, locations: list[tuple[str, ...]]
) -> None:
    response = await client.post(
        "/auth/register",
        content=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert_validation_error(response, *locations)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"username": "someone", "password":', id="truncated"),
        pytest.param(b"{username: someone}", id="unquoted"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"", id="empty-body"),
    ],
)
async def test_malformed_json_is_422(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        "/auth/register", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_validation_error(response)


async def test_body_over_one_mib_is_413(client: httpx.AsyncClient) -> None:
    padding = "a" * (1024 * 1024)
    raw = json.dumps({"username": unique_username(), "password": padding}).encode()
    response = await client.post(
        "/auth/register", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == "payload_too_large"


async def test_body_just_under_the_cap_is_not_413(client: httpx.AsyncClient) -> None:
    raw = json.dumps({"username": unique_username(), "password": "a" * 1000})
    raw += " " * (1024 * 1024 - len(raw))
    assert len(raw) == 1024 * 1024
    response = await client.post(
        "/auth/register", content=raw.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Content-Type": "application/x-www-form-urlencoded"}, id="curl-d"),
        pytest.param({}, id="no-content-type"),
        pytest.param({"Content-Type": "text/plain"}, id="text-plain"),
        pytest.param({"Content-Type": "application/json; charset=utf-8"}, id="json-charset"),
    ],
)
async def test_json_body_is_accepted_whatever_the_content_type(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    username = unique_username()
    raw = json.dumps({"username": username, "password": PASSWORD}).encode()
    response = await client.post("/auth/register", content=raw, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["username"] == username


async def test_invalid_json_sent_as_form_is_still_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/auth/register",
        content=b'{"username": "someone"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_validation_error(response, ("body", "password"))
