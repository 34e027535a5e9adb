"""POST /auth/logout and DELETE /auth/users/me against an in-memory revocations bucket: the
presented token (or every token of a deleted account) is refused, other tokens keep working, the
name is free again, and nothing changes while revocation is unavailable (503)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service import repository
from auth_service.config import AuthSettings
from auth_service.models import User
from faas_common.revocation import RevocationsUnavailable
from faas_common.security import key_id
from tests.unit.auth.factories import (
    PASSWORD,
    ManualClock,
    MemoryRevocations,
    RegisteredUser,
    bearer,
    claims_for,
    client_for,
    login,
    make_settings,
    register,
    rs256_token,
    running_app,
)

REVOKED = {"detail": "Token revoked", "code": "token_revoked"}


async def test_logout_revokes_only_the_presented_token(
    client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    first, second = await login(client, user.username), await login(client, user.username)
    response = await client.post("/auth/logout", headers=bearer(first))
    assert response.status_code == 204
    assert response.content == b""
    refused = await client.get("/auth/validate", headers=bearer(first))
    assert refused.status_code == 401
    assert refused.json() == REVOKED
    assert (await client.get("/auth/validate", headers=bearer(second))).status_code == 200
    again = await client.post("/auth/logout", headers=bearer(first))
    assert again.status_code == 401


async def test_logout_needs_a_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/logout")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_a_token_without_jti_cannot_be_revoked_alone(
    client: httpx.AsyncClient,
    user: RegisteredUser,
    auth_settings: AuthSettings,
    signing_key: RSAPrivateKey,
) -> None:
    claims = claims_for(auth_settings, sub=user.id, name=user.username)
    token = rs256_token(signing_key, claims, kid=key_id(signing_key.public_key()))
    response = await client.post("/auth/logout", headers=bearer(token))
    assert response.status_code == 400
    assert response.json()["code"] == "token_not_revocable"


async def test_deleting_the_account_revokes_every_token_and_frees_the_name(
    client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    tokens = [await login(client, user.username) for _ in range(2)]
    response = await client.delete("/auth/users/me", headers=bearer(tokens[0]))
    assert response.status_code == 204
    for token in tokens:
        refused = await client.get("/auth/validate", headers=bearer(token))
        assert refused.json() == REVOKED
    failed = await client.post(
        "/auth/login", json={"username": user.username, "password": user.password}
    )
    assert failed.status_code == 401

    again = await register(client, user.username.upper(), "a-new-password")
    assert again["username"] == user.username
    assert again["id"] != user.id
    token = await login(client, user.username, "a-new-password")
    validated = await client.get("/auth/validate", headers=bearer(token))
    assert validated.json()["user_id"] == again["id"]


class UnavailableRevocations(MemoryRevocations):
    async def revoke_token(self, *, jti: str, user_id: str) -> None:
        raise RevocationsUnavailable("down")

    async def revoke_user(self, *, user_id: str) -> None:
        raise RevocationsUnavailable("down")


async def test_nothing_changes_while_revocation_is_unavailable(tmp_path: Path) -> None:
    settings: AuthSettings = make_settings(tmp_path)
    async with (
        running_app(settings, revocations=UnavailableRevocations()) as app,
        client_for(app) as client,
    ):
        await register(client, "erin")
        token = await login(client, "erin")
        for method, path in (("POST", "/auth/logout"), ("DELETE", "/auth/users/me")):
            response = await client.request(method, path, headers=bearer(token))
            assert response.status_code == 503, path
            assert response.json()["code"] == "revocation_unavailable"
            assert "retry-after" in response.headers
        assert (await client.get("/auth/validate", headers=bearer(token))).status_code == 200
        assert await login(client, "erin", PASSWORD)


async def test_a_deletion_the_database_missed_is_finished_at_the_next_login(
    auth_app: FastAPI, client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    # The bucket says the account is deleted, but the row's deletion was never committed.
    revocations: MemoryRevocations = auth_app.state.revocations
    await revocations.revoke_user(user_id=user.id)
    failed = await client.post(
        "/auth/login", json={"username": user.username, "password": user.password}
    )
    assert failed.status_code == 401
    assert failed.json()["code"] == "invalid_credentials"
    again = await register(client, user.username)
    assert again["id"] != user.id


async def test_a_name_whose_account_the_database_kept_can_be_registered_again(
    auth_app: FastAPI, client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    revocations: MemoryRevocations = auth_app.state.revocations
    await revocations.revoke_user(user_id=user.id)
    again = await register(client, user.username.upper(), "a-new-password")
    assert (again["username"], again["id"] != user.id) == (user.username, True)


class FailingRemoval:
    """``repository.remove`` that fails like a database gone away, the first ``times`` calls."""

    def __init__(self, times: int) -> None:
        self.left = times
        self.real = repository.remove

    async def __call__(self, session: AsyncSession, *, user: User) -> None:
        if self.left > 0:
            self.left -= 1
            raise OperationalError("DELETE FROM user", {}, ConnectionError("database gone"))
        await self.real(session, user=user)


@pytest.mark.parametrize("then", ["login", "register"])
async def test_an_account_whose_row_survived_its_deletion_never_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    revocations = MemoryRevocations()
    async with (
        running_app(make_settings(tmp_path), revocations=revocations) as app,
        client_for(app) as client,
    ):
        created = await register(client, "frank")
        token = await login(client, "frank")
        monkeypatch.setattr(repository, "remove", FailingRemoval(times=1))
        failed = await client.delete("/auth/users/me", headers=bearer(token))
        assert failed.status_code == 503
        assert revocations.users == {created["id"]}
        # The bucket expires the entry (every token of the account has expired by then).
        revocations.users.clear()

        if then == "login":
            response = await client.post(
                "/auth/login", json={"username": "frank", "password": PASSWORD}
            )
            assert response.status_code == 401
            assert response.json()["code"] == "invalid_credentials"
            assert revocations.users == {created["id"]}  # the deletion was finished
        again = await register(client, "frank", "a-new-password")
        assert again["id"] != created["id"]
        refused = await client.post("/auth/login", json={"username": "frank", "password": PASSWORD})
        assert refused.status_code == 401


async def test_an_accounts_logouts_are_throttled_and_a_login_does_not_reset_them(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    settings = make_settings(tmp_path, login_max_failures=3, login_lockout_seconds=60)
    revocations = MemoryRevocations()
    async with (
        running_app(settings, revocations=revocations, clock=clock) as app,
        client_for(app) as client,
    ):
        await register(client, "grace")
        await register(client, "heidi")
        for _ in range(3):
            token = await login(client, "grace")
            logout = await client.post("/auth/logout", headers=bearer(token))
            assert logout.status_code == 204
        token = await login(client, "grace")  # logins are not locked by logouts
        refused = await client.post("/auth/logout", headers=bearer(token))
        assert refused.status_code == 429
        assert refused.json() == {
            "detail": "Too many logouts for this account: try again later",
            "code": "logout_throttled",
        }
        assert refused.headers["retry-after"] == "60"
        assert len(revocations.tokens) == 3
        assert (await client.get("/auth/validate", headers=bearer(token))).status_code == 200

        other = await login(client, "heidi")  # other accounts are not slowed
        assert (await client.post("/auth/logout", headers=bearer(other))).status_code == 204

        clock.advance(60)
        assert (await client.post("/auth/logout", headers=bearer(token))).status_code == 204
