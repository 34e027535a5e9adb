"""Login throttling per account: 10 attempts within a minute lock the account's logins (429 with
Retry-After, also for the right password) for a window that doubles with each lockout in a row;
other accounts log in meanwhile; a success resets the count. The clock is the app's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from passlib.context import CryptContext
from sqlalchemy import select

from auth_service.models import LoginThrottle
from auth_service.service import PasswordHasher
from tests.unit.auth.factories import (
    PASSWORD,
    ManualClock,
    client_for,
    make_settings,
    register,
    running_app,
    unique_username,
)

WRONG = "wrong-password"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def app(tmp_path: Path, clock: ManualClock) -> AsyncIterator[FastAPI]:
    async with running_app(make_settings(tmp_path), clock=clock) as app:
        # Cheap argon2 parameters: these tests log in a hundred times.
        cheap = CryptContext(
            schemes=["argon2"], argon2__memory_cost=64, argon2__rounds=1, argon2__parallelism=1
        )
        app.state.hasher = PasswordHasher(concurrency=2, context=cheap)
        try:
            yield app
        finally:
            app.state.hasher.close()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


async def attempt(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/auth/login", json={"username": username, "password": password})


async def fail(client: httpx.AsyncClient, username: str, times: int) -> None:
    for _ in range(times):
        response = await attempt(client, username, WRONG)
        assert response.status_code == 401, response.text


def assert_throttled(response: httpx.Response, retry_after: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == str(retry_after)
    assert response.json() == {
        "detail": "Too many failed logins for this account: try again later",
        "code": "login_throttled",
    }


async def test_ten_failures_lock_the_account_but_not_the_others(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    victim, bystander = unique_username("victim"), unique_username("bystander")
    await register(client, victim)
    await register(client, bystander)

    await fail(client, victim, 10)
    assert_throttled(await attempt(client, victim, PASSWORD), 60)
    assert_throttled(await attempt(client, victim.upper(), PASSWORD), 60)  # any spelling
    assert (await attempt(client, bystander, PASSWORD)).status_code == 200

    clock.advance(30)
    assert_throttled(await attempt(client, victim, PASSWORD), 30)
    clock.advance(30)
    assert (await attempt(client, victim, PASSWORD)).status_code == 200


async def test_each_lockout_in_a_row_lasts_twice_as_long(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    name = unique_username()
    await register(client, name)
    for window in (60, 120, 240):
        await fail(client, name, 10)
        assert_throttled(await attempt(client, name, PASSWORD), window)
        clock.advance(window)
    assert (await attempt(client, name, PASSWORD)).status_code == 200
    # The success forgot the lockouts: the next one is the shortest again.
    await fail(client, name, 10)
    assert_throttled(await attempt(client, name, PASSWORD), 60)


async def test_a_successful_login_resets_the_count(client: httpx.AsyncClient) -> None:
    name = unique_username()
    await register(client, name)
    await fail(client, name, 9)
    assert (await attempt(client, name, PASSWORD)).status_code == 200
    await fail(client, name, 9)
    assert (await attempt(client, name, PASSWORD)).status_code == 200


async def test_failures_older_than_the_window_do_not_count(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    name = unique_username()
    await register(client, name)
    await fail(client, name, 9)
    clock.advance(61)
    await fail(client, name, 9)
    assert (await attempt(client, name, PASSWORD)).status_code == 200


async def test_unknown_accounts_are_throttled_alike(client: httpx.AsyncClient) -> None:
    # Otherwise a 429 would tell which usernames exist.
    name = unique_username("nobody")
    await fail(client, name, 10)
    assert_throttled(await attempt(client, name, PASSWORD), 60)


async def test_rows_nobody_used_for_a_week_are_forgotten(
    app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    old, recent, new = (unique_username(prefix) for prefix in ("old", "recent", "new"))
    await fail(client, old, 1)
    clock.advance(6 * 24 * 3600)
    await fail(client, recent, 1)
    clock.advance(2 * 24 * 3600)
    await fail(client, new, 1)  # a new name's first attempt sweeps stale rows
    async with app.state.sessionmaker() as session:
        names = set((await session.execute(select(LoginThrottle.username))).scalars())
    assert names == {recent, new}


async def test_an_hour_of_quiet_after_a_lockout_forgives_it(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    name = unique_username()
    await register(client, name)
    await fail(client, name, 10)
    assert_throttled(await attempt(client, name, PASSWORD), 60)
    clock.advance(60 + 3599)
    await fail(client, name, 10)
    assert_throttled(await attempt(client, name, PASSWORD), 120)  # not quiet long enough
    clock.advance(120 + 3600)
    await fail(client, name, 10)
    assert_throttled(await attempt(client, name, PASSWORD), 60)
