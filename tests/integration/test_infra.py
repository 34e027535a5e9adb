"""The test infrastructure itself: real nats-server, throw-away databases, keys, infra policy."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from nats.aio.client import Client
from nats.js.api import StorageType
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.databases import POSTGRES_URL_ENV, postgres_database, postgres_database_exists
from tests.support.infra import REQUIRE_INFRA_ENV, require
from tests.support.keys import RsaKeys
from tests.support.nats_server import NatsServer


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        yield nc
    finally:
        await nc.close()


async def test_nats_server_has_jetstream(nats_server: NatsServer, nats_url: str) -> None:
    assert nats_url == f"nats://127.0.0.1:{nats_server.port}"
    async with connected(nats_url) as nc:
        info = await nc.jetstream().account_info()
    assert info.limits is not None


async def test_nats_restart_keeps_jetstream_store(nats_server: NatsServer) -> None:
    bucket = f"infra_{uuid.uuid4().hex[:12]}"
    async with connected(nats_server.url) as nc:
        kv = await nc.jetstream().create_key_value(bucket=bucket, storage=StorageType.FILE)
        await kv.put("greeting", b"hello")

    old_pid = nats_server.pid
    nats_server.stop()
    assert not nats_server.running
    nats_server.start()
    assert nats_server.running
    assert nats_server.pid != old_pid

    async with connected(nats_server.url) as nc:
        js = nc.jetstream()
        entry = await (await js.key_value(bucket)).get("greeting")
        assert entry.value == b"hello"
        await js.delete_key_value(bucket)


async def test_database_url_is_connectable(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
            await conn.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO probe (id) VALUES (1)"))
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM probe")) == 1
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_database_is_dropped_afterwards() -> None:
    async with postgres_database() as url:
        name = make_url(url).database
        assert name is not None
        assert name.startswith("faas_t_")
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:  # left open on purpose: the drop forces it closed
                assert await conn.scalar(text("SELECT current_database()")) == name
        finally:
            await engine.dispose()
    assert not await postgres_database_exists(os.environ[POSTGRES_URL_ENV], name)


def test_rsa_keys_sign_and_verify(rsa_keys: RsaKeys) -> None:
    assert rsa_keys.private_path.read_bytes() == rsa_keys.private_pem
    assert rsa_keys.public_path.read_bytes() == rsa_keys.public_pem
    private = serialization.load_pem_private_key(rsa_keys.private_pem, password=None)
    public = serialization.load_pem_public_key(rsa_keys.public_pem)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert isinstance(public, rsa.RSAPublicKey)
    assert private.key_size == 2048
    signature = private.sign(b"payload", padding.PKCS1v15(), hashes.SHA256())
    public.verify(signature, b"payload", padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize(
    ("value", "outcome"),
    [("1", pytest.fail.Exception), ("", pytest.skip.Exception), ("0", pytest.skip.Exception)],
    ids=["ci-fails", "unset-skips", "zero-skips"],
)
def test_require_fails_in_ci_and_skips_otherwise(
    monkeypatch: pytest.MonkeyPatch, value: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv(REQUIRE_INFRA_ENV, value)
    with pytest.raises(outcome, match="thing unavailable: because"):
        require("thing", "because")
