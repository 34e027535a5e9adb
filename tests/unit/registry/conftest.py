"""Fixtures of registry-service unit tests: an app on SQLite with a fake catalog, two users."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from registry_service.config import RegistrySettings
from tests.support.keys import RsaKeys
from tests.unit.registry.factories import (
    FakeCatalog,
    User,
    client_for,
    make_settings,
    make_user,
    running_app,
)


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog()


@pytest.fixture
def settings(sqlite_database_url: str, rsa_keys: RsaKeys) -> RegistrySettings:
    return make_settings(sqlite_database_url, rsa_keys.public_path)


@pytest.fixture
async def client(
    settings: RegistrySettings, catalog: FakeCatalog
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings, catalog) as app, client_for(app) as client:
        yield client


@pytest.fixture
def alice(rsa_keys: RsaKeys) -> User:
    return make_user(rsa_keys.private_pem, "alice")


@pytest.fixture
def bob(rsa_keys: RsaKeys) -> User:
    return make_user(rsa_keys.private_pem, "bob")
