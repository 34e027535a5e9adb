"""Fixtures of the OpenAPI run: the platform (module scope) and one schema per service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
import schemathesis
from nats.js.errors import NotFoundError
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.schemas import OpenApiSchema

from faas_common.contract import (
    EXECUTIONS_BUCKET,
    EXECUTIONS_STREAM,
    FUNCTIONS_BUCKET,
    IDEMPOTENCY_BUCKET,
    REVOCATIONS_BUCKET,
)
from tests.integration.openapi.platform import Databases, Platform, running_platform
from tests.support.databases import postgres_database
from tests.support.keys import RsaKeys
from tests.support.nats_server import NatsServer

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20260101,
        # Unknown query parameters and body fields are ignored by design (not a schema breach).
        "generation": {"deterministic": True, "database": "none", "allow-extra-parameters": False},
    }
)


async def _wipe(nats_url: str) -> None:
    """No stream or bucket left by another test (the nats-server is shared by the session)."""
    nc = await nats.connect(nats_url, connect_timeout=5)
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(EXECUTIONS_STREAM)
    for bucket in (EXECUTIONS_BUCKET, IDEMPOTENCY_BUCKET, FUNCTIONS_BUCKET, REVOCATIONS_BUCKET):
        with contextlib.suppress(NotFoundError):
            await js.delete_key_value(bucket)
    await nc.drain()


@pytest.fixture(scope="module")
async def databases() -> AsyncIterator[Databases]:
    async with postgres_database() as auth, postgres_database() as registry:
        yield Databases(auth=auth, registry=registry)


@pytest.fixture(scope="module")
async def clean_nats(nats_server: NatsServer) -> AsyncIterator[str]:
    nats_server.start()
    await _wipe(nats_server.url)
    yield nats_server.url
    await _wipe(nats_server.url)


@pytest.fixture(scope="module")
def platform(databases: Databases, clean_nats: str, rsa_keys: RsaKeys) -> Iterator[Platform]:
    with running_platform(databases, clean_nats, rsa_keys) as running:
        yield running


def _schema(platform: Platform, app_name: str, prefix: str) -> OpenApiSchema:
    app = getattr(platform, app_name)
    return schemathesis.openapi.from_asgi(f"{prefix}/openapi.json", app, config=CONFIG)


@pytest.fixture(scope="module")
def auth_api(platform: Platform) -> OpenApiSchema:
    return _schema(platform, "auth", "/auth")


@pytest.fixture(scope="module")
def registry_api(platform: Platform) -> OpenApiSchema:
    return _schema(platform, "registry", "/registry")


@pytest.fixture(scope="module")
def publisher_api(platform: Platform) -> OpenApiSchema:
    return _schema(platform, "publisher", "/publisher")
