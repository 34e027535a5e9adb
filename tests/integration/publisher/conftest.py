"""Fixtures of publisher-service integration tests: a real nats-server, cleaned around each test.

The stream and bucket names are fixed by the contract and the nats-server is shared by the whole
session, so every test starts and ends without the ``EXECUTIONS`` stream and the ``executions``,
``idempotency`` and ``functions`` buckets.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from faas_common.contract import (
    EXECUTIONS_BUCKET,
    EXECUTIONS_STREAM,
    FUNCTIONS_BUCKET,
    IDEMPOTENCY_BUCKET,
)
from publisher_service.config import PublisherSettings
from tests.support.keys import RsaKeys
from tests.unit.publisher.factories import make_settings
from tests.unit.registry.factories import User, make_user


async def _wipe(js: JetStreamContext) -> None:
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(EXECUTIONS_STREAM)
    for bucket in (EXECUTIONS_BUCKET, IDEMPOTENCY_BUCKET, FUNCTIONS_BUCKET):
        with contextlib.suppress(NotFoundError):
            await js.delete_key_value(bucket)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    """The test's own connection (writes functions, plays the spawner), on a clean server."""
    connection = await nats.connect(nats_url, connect_timeout=5)
    js = connection.jetstream()
    await _wipe(js)
    try:
        yield connection
    finally:
        await _wipe(js)
        await connection.drain()


@pytest.fixture
def js(nc: NATS) -> JetStreamContext:
    return nc.jetstream()


SettingsFactory = Callable[..., PublisherSettings]


@pytest.fixture
def settings_for(nats_url: str, rsa_keys: RsaKeys, nc: NATS) -> SettingsFactory:
    """Settings against the test server; keyword arguments override (short timeouts by default)."""

    def build(**overrides: Any) -> PublisherSettings:
        values: dict[str, Any] = {
            "nats_url": nats_url,
            "nats_connect_timeout": 10.0,
            "nats_timeout": 2.0,
            "queue_timeout_seconds": 5.0,
            "reply_grace_seconds": 1.0,
            "result_poll_seconds": 0.2,
            "instance_id": "pub-a",
        }
        return make_settings(rsa_keys.public_path, **(values | overrides))

    return build


@pytest.fixture
def alice(rsa_keys: RsaKeys) -> User:
    return make_user(rsa_keys.private_pem, "alice")


@pytest.fixture
def bob(rsa_keys: RsaKeys) -> User:
    return make_user(rsa_keys.private_pem, "bob")
