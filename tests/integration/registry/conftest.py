"""Fixtures of registry-service integration tests: real nats-server, SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from faas_common.contract import FUNCTIONS_BUCKET
from faas_common.nats import ensure_kv
from registry_service.config import RegistrySettings
from tests.support.keys import RsaKeys
from tests.unit.registry.factories import User, make_settings, make_user


@pytest.fixture
async def kv(nats_url: str) -> AsyncIterator[KeyValue]:
    """The ``functions`` bucket, emptied first (the nats-server is shared by the session)."""
    nc = await nats.connect(nats_url, connect_timeout=5)
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_key_value(FUNCTIONS_BUCKET)
    try:
        yield await ensure_kv(js, FUNCTIONS_BUCKET)
    finally:
        await nc.drain()


@pytest.fixture
def settings(database_url: str, nats_url: str, rsa_keys: RsaKeys) -> RegistrySettings:
    return make_settings(
        database_url, rsa_keys.public_path, nats_url=nats_url, nats_connect_timeout=10.0
    )


@pytest.fixture
def alice(rsa_keys: RsaKeys) -> User:
    return make_user(rsa_keys.private_pem, "alice")


@pytest.fixture
def bob(rsa_keys: RsaKeys) -> User:
    return make_user(rsa_keys.private_pem, "bob")
