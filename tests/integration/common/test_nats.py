"""The NATS connection helper against a real nats-server: server list, bounded first connect,
reconnection after a restart, idempotent bucket creation."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from faas_common.nats import NatsUnavailable, connect_nats, ensure_kv
from tests.support.nats_server import NatsServer, free_port


async def test_connects_to_a_live_server_when_the_first_of_the_list_is_down(
    nats_url: str,
) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    nc = await connect_nats([dead, nats_url], name="test", connect_timeout=15)
    try:
        assert nc.is_connected
        assert nc.connected_url is not None
        assert nc.connected_url.port == int(nats_url.rsplit(":", 1)[1])
    finally:
        await nc.close()


async def test_first_connect_gives_up_after_its_budget() -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(NatsUnavailable, match="cannot reach NATS"):
        await connect_nats([dead], name="test", connect_timeout=1.5)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 10


async def test_waits_for_a_server_that_starts_later(nats_server: NatsServer) -> None:
    nats_server.stop()
    try:
        connecting = asyncio.create_task(
            connect_nats([nats_server.url], name="test", connect_timeout=20)
        )
        await asyncio.sleep(1.0)
        assert not connecting.done()
        await asyncio.to_thread(nats_server.start)
        nc = await asyncio.wait_for(connecting, timeout=20)
        assert nc.is_connected
        await nc.close()
    finally:
        if not nats_server.running:
            nats_server.start()


async def test_reconnects_after_the_server_restarts(nats_server: NatsServer) -> None:
    nc = await connect_nats([nats_server.url], name="test", connect_timeout=15)
    try:
        await asyncio.to_thread(nats_server.stop)
        await asyncio.sleep(0.5)
        assert not nc.is_connected
        await asyncio.to_thread(nats_server.start)
        deadline = time.monotonic() + 20
        while not nc.is_connected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        assert nc.is_connected
        js = nc.jetstream()
        info = await js.account_info()
        assert info is not None
    finally:
        await nc.close()


async def test_ensure_kv_creates_once_and_reopens(nats_url: str) -> None:
    nc = await connect_nats([nats_url], name="test", connect_timeout=15)
    try:
        js = nc.jetstream()
        bucket = f"test_{uuid.uuid4().hex[:12]}"
        first, second = await asyncio.gather(ensure_kv(js, bucket), ensure_kv(js, bucket))
        await first.put("k", b"v1")
        entry = await second.get("k")
        assert entry.value == b"v1"
        again = await ensure_kv(js, bucket)
        assert (await again.get("k")).value == b"v1"
        await js.delete_key_value(bucket)
    finally:
        await nc.close()
