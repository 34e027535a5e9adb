"""Fixtures of publisher-service unit tests: the app over in-memory fakes, two users."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from faas_common.contract import FunctionSnapshot
from publisher_service.config import PublisherSettings
from tests.support.keys import RsaKeys
from tests.unit.publisher.factories import (
    FakeBackends,
    client_for,
    fake_backends,
    make_settings,
    running_app,
    snapshot,
)
from tests.unit.registry.factories import User, make_user


@pytest.fixture
def fakes() -> FakeBackends:
    return fake_backends()


@pytest.fixture
def settings(rsa_keys: RsaKeys) -> PublisherSettings:
    return make_settings(rsa_keys.public_path, result_poll_seconds=0.05)


@pytest.fixture
async def client(
    settings: PublisherSettings, fakes: FakeBackends
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings, fakes.backends()) as app, client_for(app) as client:
        yield client


@pytest.fixture
def alice(rsa_keys: RsaKeys) -> User:
    return make_user(rsa_keys.private_pem, "alice")


@pytest.fixture
def bob(rsa_keys: RsaKeys) -> User:
    return make_user(rsa_keys.private_pem, "bob")


@pytest.fixture
def hello(fakes: FakeBackends, alice: User) -> FunctionSnapshot:
    """alice's function ``hello``."""
    return fakes.catalog.add(snapshot(alice.id, "hello"))
