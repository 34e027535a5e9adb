"""POST /auth/login: JSON (any Content-Type) or OAuth2 form; one 401 for every bad credential."""

from __future__ import annotations

import json
import statistics
import time

import httpx
import pytest

from auth_service.config import AuthSettings
from tests.unit.auth.factories import RegisteredUser, assert_validation_error, unique_username

INVALID_CREDENTIALS = {"detail": "Incorrect username or password", "code": "invalid_credentials"}


def assert_token_response(response: httpx.Response, settings: AuthSettings) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.token_ttl_seconds
    assert isinstance(body["access_token"], str)
    assert body["access_token"].count(".") == 2


def assert_invalid_credentials(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == INVALID_CREDENTIALS
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Content-Type": "application/json"}, id="json"),
        pytest.param({"Content-Type": "application/x-www-form-urlencoded"}, id="curl-d"),
        pytest.param({}, id="no-content-type"),
        pytest.param({"Content-Type": "text/plain"}, id="text-plain"),
    ],
)
async def test_json_login_whatever_the_content_type(
    client: httpx.AsyncClient,
    user: RegisteredUser,
    auth_settings: AuthSettings,
    headers: dict[str, str],
) -> None:
    raw = json.dumps({"username": user.username, "password": user.password}).encode()
    response = await client.post("/auth/login", content=raw, headers=headers)
    assert_token_response(response, auth_settings)


async def test_oauth2_password_form_login(
    client: httpx.AsyncClient, user: RegisteredUser, auth_settings: AuthSettings
) -> None:
    response = await client.post(
        "/auth/login",
        data={"username": user.username, "password": user.password, "grant_type": "password"},
    )
    assert response.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert_token_response(response, auth_settings)


async def test_form_login_without_grant_type(
    client: httpx.AsyncClient, user: RegisteredUser, auth_settings: AuthSettings
) -> None:
    response = await client.post(
        "/auth/login", data={"username": user.username, "password": user.password}
    )
    assert_token_response(response, auth_settings)


async def test_extra_json_fields_are_ignored(
    client: httpx.AsyncClient, user: RegisteredUser, auth_settings: AuthSettings
) -> None:
    response = await client.post(
        "/auth/login",
        json={"username": user.username, "password": user.password, "scope": "admin"},
    )
    assert_token_response(response, auth_settings)


async def test_wrong_password_is_401(client: httpx.AsyncClient, user: RegisteredUser) -> None:
    response = await client.post(
        "/auth/login", json={"username": user.username, "password": "wrong-password"}
    )
    assert_invalid_credentials(response)


async def test_unknown_user_is_the_same_401(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/auth/login", json={"username": unique_username("ghost"), "password": "whatever-pass"}
    )
    assert_invalid_credentials(response)


async def test_wrong_password_in_a_form_is_the_same_401(
    client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    response = await client.post(
        "/auth/login",
        data={"username": user.username, "password": "wrong-password", "grant_type": "password"},
    )
    assert_invalid_credentials(response)


async def test_username_is_case_insensitive(
    client: httpx.AsyncClient, user: RegisteredUser, auth_settings: AuthSettings
) -> None:
    response = await client.post(
        "/auth/login", json={"username": user.username.upper(), "password": user.password}
    )
    assert_token_response(response, auth_settings)


async def test_password_is_not_trimmed(client: httpx.AsyncClient, user: RegisteredUser) -> None:
    response = await client.post(
        "/auth/login", json={"username": user.username, "password": f" {user.password} "}
    )
    assert_invalid_credentials(response)


async def test_credentials_breaking_registration_rules_are_a_failed_login(
    client: httpx.AsyncClient,
) -> None:
    # Rules apply when registering; a login with a name no account can have is simply wrong.
    response = await client.post("/auth/login", json={"username": "x", "password": "y"})
    assert_invalid_credentials(response)


async def test_unknown_user_and_wrong_password_take_comparable_time(
    client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    """Without a dummy hash check, an unknown user answers ~100x faster: names would leak."""
    ghost = unique_username("ghost")

    async def timed(username: str) -> float:
        started = time.perf_counter()
        response = await client.post(
            "/auth/login", json={"username": username, "password": "wrong-password"}
        )
        elapsed = time.perf_counter() - started
        assert_invalid_credentials(response)
        return elapsed

    await timed(ghost)  # warm up
    unknown: list[float] = []
    wrong: list[float] = []
    for _ in range(5):
        unknown.append(await timed(ghost))
        wrong.append(await timed(user.username))
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.33 < ratio < 3, f"unknown user {unknown} vs wrong password {wrong}"


@pytest.mark.parametrize(
    ("payload", "locations"),
    [
        pytest.param({}, [("body", "username"), ("body", "password")], id="empty-object"),
        pytest.param({"username": "someone"}, [("body", "password")], id="no-password"),
        pytest.param({"password": "some-password"}, [("body", "username")], id="no-username"),
        pytest.param({"username": "", "password": "pw"}, [("body", "username")], id="empty"),
        pytest.param(
            {"username": "someone", "password": 12345678}, [("body", "password")], id="int"
        ),
        pytest.param(
            {"username": "someone", "password": "p" * 2000}, [("body", "password")], id="oversize"
        ),
        pytest.param([], [("body",)], id="array-body"),
    ],
)
async def test_invalid_json_login_is_422(
    client: httpx.AsyncClient, payload: object, locations: list[tuple[str, ...]]
) -> None:
    response = await client.post("/auth/login", content=json.dumps(payload).encode())
    assert_validation_error(response, *locations)


@pytest.mark.parametrize(
    ("form", "locations"),
    [
        pytest.param({"username": "someone"}, [("body", "password")], id="no-password"),
        pytest.param({"password": "some-password"}, [("body", "username")], id="no-username"),
        pytest.param({"grant_type": "password"}, [("body", "username")], id="grant-only"),
    ],
)
async def test_incomplete_form_login_is_422(
    client: httpx.AsyncClient, form: dict[str, str], locations: list[tuple[str, ...]]
) -> None:
    response = await client.post("/auth/login", data=form)
    assert_validation_error(response, *locations)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="garbage"),
        pytest.param(b'{"username": "someone",', id="truncated"),
    ],
)
async def test_malformed_login_body_is_422(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        "/auth/login", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_validation_error(response)


async def test_login_body_over_one_mib_is_413(client: httpx.AsyncClient) -> None:
    raw = json.dumps({"username": "someone", "password": "p" * (1024 * 1024)}).encode()
    response = await client.post("/auth/login", content=raw)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_each_login_issues_a_working_token(
    client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    response = await client.post(
        "/auth/login", json={"username": user.username, "password": user.password}
    )
    token = response.json()["access_token"]
    validated = await client.get("/auth/validate", headers={"Authorization": f"Bearer {token}"})
    assert validated.status_code == 200
    assert validated.json()["user_id"] == user.id
