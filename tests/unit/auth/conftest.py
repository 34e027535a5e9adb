"""Fixtures of the auth-service unit tests: one running app (SQLite) shared by the session.

Tests that share the app register users under unique names, so they never depend on each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from fastapi import FastAPI

from auth_service.config import AuthSettings
from tests.unit.auth.factories import (
    PASSWORD,
    RegisteredUser,
    client_for,
    load_private_key,
    make_settings,
    register,
    running_app,
    unique_username,
)


@pytest.fixture(scope="session")
def auth_settings(tmp_path_factory: pytest.TempPathFactory) -> AuthSettings:
    return make_settings(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="session")
async def auth_app(auth_settings: AuthSettings) -> AsyncIterator[FastAPI]:
    async with running_app(auth_settings) as app:
        yield app


@pytest.fixture
async def client(auth_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(auth_app) as http:
        yield http


@pytest.fixture(scope="session")
def signing_key(auth_app: FastAPI, auth_settings: AuthSettings) -> RSAPrivateKey:
    """The private key the running app signs with."""
    return load_private_key(auth_settings)


@pytest.fixture
async def user(client: httpx.AsyncClient) -> RegisteredUser:
    """A freshly registered user with a unique name."""
    username = unique_username()
    body = await register(client, username, PASSWORD)
    return RegisteredUser(id=body["id"], username=username, password=PASSWORD)
