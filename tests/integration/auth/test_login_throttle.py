"""Login throttling shared by auth replicas through the database (SQLite and PostgreSQL): the
replicas count one account's attempts together, also when they arrive at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from passlib.context import CryptContext

from auth_service.service import PasswordHasher
from tests.unit.auth.factories import (
    PASSWORD,
    ManualClock,
    client_for,
    make_settings,
    register,
    running_app,
)

CHEAP = CryptContext(
    schemes=["argon2"], argon2__memory_cost=64, argon2__rounds=1, argon2__parallelism=1
)


@pytest.fixture
async def replicas(database_url: str, tmp_path: Path) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two auth replicas on one database, one key and one clock."""
    settings = make_settings(tmp_path, database_url=database_url)
    clock = ManualClock()
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            app = await stack.enter_async_context(running_app(settings, clock=clock))
            app.state.hasher = PasswordHasher(concurrency=4, context=CHEAP)
            stack.callback(app.state.hasher.close)
            clients.append(await stack.enter_async_context(client_for(app)))
        yield clients


async def login(client: httpx.AsyncClient, password: str) -> int:
    response = await client.post("/auth/login", json={"username": "dana", "password": password})
    return response.status_code


async def test_replicas_count_an_account_together(replicas: list[httpx.AsyncClient]) -> None:
    first, second = replicas
    await register(first, "dana")
    for client in (first, second) * 5:
        assert await login(client, "wrong-password") == 401
    assert await login(first, PASSWORD) == 429
    assert await login(second, PASSWORD) == 429


async def test_parallel_guesses_never_exceed_the_limit(replicas: list[httpx.AsyncClient]) -> None:
    await register(replicas[0], "dana")
    async with asyncio.timeout(60):
        statuses = await asyncio.gather(
            *(login(replicas[index % 2], "wrong-password") for index in range(24))
        )
    assert sorted(statuses) == [401] * 10 + [429] * 14
