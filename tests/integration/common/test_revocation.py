"""The ``revocations`` bucket against a real nats-server: a revocation written by one list reaches
every other watcher, deleted accounts reach the listeners, the last snapshot stays in force while
NATS is down, and a list that never loaded answers nothing but "unavailable"."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import nats
import pytest
from nats.js.kv import KeyValue

from faas_common.contract import (
    REVOCATION_MAX_AGE_SECONDS,
    REVOCATIONS_BUCKET,
    revocation_max_age,
)
from faas_common.nats import ReconnectHook, RetryBudget, connect_nats, drain_nats, ensure_kv
from faas_common.revocation import RevocationList, RevocationsUnavailable, open_revocations
from faas_common.settings import CommonSettings
from tests.support.nats_server import NatsServer
from tests.unit.registry.factories import wait_until

SHORT_BUDGET = RetryBudget(total=1.0, attempt=0.5, backoff=0.1)


@pytest.fixture
async def kv(nats_url: str) -> AsyncIterator[KeyValue]:
    """A bucket of its own per test (the nats-server is shared by the session)."""
    nc = await connect_nats([nats_url], name="test", connect_timeout=10)
    try:
        yield await ensure_kv(nc.jetstream(), f"revocations_{uuid.uuid4().hex[:12]}")
    finally:
        await wait_until(lambda: nc.is_connected)  # a test may have restarted the server
        await drain_nats(nc)


async def started(kv: KeyValue, **options: object) -> RevocationList:
    revocations = RevocationList(kv, **options)  # type: ignore[arg-type]
    await revocations.start(wait=5.0)
    assert revocations.loaded
    return revocations


async def test_a_revoked_token_reaches_every_watcher(kv: KeyValue) -> None:
    writer, reader = await started(kv), await started(kv)
    try:
        await writer.revoke_token(jti="token-1", user_id="user-1")
        assert writer.is_revoked(user_id="user-1", jti="token-1")
        await wait_until(lambda: reader.is_revoked(user_id="user-1", jti="token-1"), within=5.0)
        assert not reader.is_revoked(user_id="user-1", jti="token-2")
        assert not reader.is_revoked(user_id="user-1", jti=None)
    finally:
        await writer.stop()
        await reader.stop()


async def test_a_deleted_account_refuses_every_token_and_reaches_the_listeners(
    kv: KeyValue,
) -> None:
    seen: list[str] = []
    reader = await started(kv)
    reader.listeners.append(seen.append)
    writer = await started(kv)
    try:
        await writer.revoke_user(user_id="user-gone")
        await wait_until(lambda: seen == ["user-gone"], within=5.0)
        assert reader.is_revoked(user_id="user-gone", jti="any-token")
        assert reader.is_revoked(user_id="user-gone", jti=None)
        assert not reader.is_revoked(user_id="user-kept", jti="any-token")
        # A service starting later learns of the deletion from the first load.
        late_seen: list[str] = []
        late = RevocationList(kv)
        late.listeners.append(late_seen.append)
        await late.start(wait=5.0)
        assert late_seen == ["user-gone"]
        assert late.deleted_users() == {"user-gone"}
        await late.stop()
    finally:
        await writer.stop()
        await reader.stop()


async def test_the_last_snapshot_stays_in_force_while_nats_is_down(
    kv: KeyValue, nats_server: NatsServer
) -> None:
    revocations = await started(kv, budget=SHORT_BUDGET)
    try:
        await revocations.revoke_token(jti="revoked", user_id="user-1")
        await asyncio.to_thread(nats_server.stop)
        assert revocations.is_revoked(user_id="user-1", jti="revoked")
        assert not revocations.is_revoked(user_id="user-1", jti="other")
        with pytest.raises(RevocationsUnavailable):
            await revocations.revoke_token(jti="during-outage", user_id="user-1")
        await asyncio.sleep(1.5)  # the watch fails and restarts meanwhile
        assert revocations.is_revoked(user_id="user-1", jti="revoked")
    finally:
        await revocations.stop()
        await asyncio.to_thread(nats_server.start)


async def test_a_list_that_never_loaded_cannot_tell(kv: KeyValue, nats_server: NatsServer) -> None:
    await asyncio.to_thread(nats_server.stop)
    revocations = RevocationList(kv, restart_delay=0.1)
    try:
        await revocations.start(wait=0.5)
        assert not revocations.loaded
        with pytest.raises(RevocationsUnavailable):
            revocations.is_revoked(user_id="user-1", jti="token-1")
    finally:
        await revocations.stop()
        await asyncio.to_thread(nats_server.start)


async def test_open_revocations_creates_the_bucket_with_the_contract_max_age(
    nats_url: str,
) -> None:
    nc = await nats.connect(nats_url, connect_timeout=5)
    js = nc.jetstream()
    try:
        await _delete_bucket(js)
        async with AsyncExitStack() as stack:
            hooks: list[ReconnectHook] = []
            revocations = await open_revocations(
                nc, js, stack, CommonSettings(), on_reconnect=hooks
            )
            assert hooks == [revocations.rebuild]
            assert revocations.loaded
            status = await (await js.key_value(REVOCATIONS_BUCKET)).status()
            assert status.ttl == REVOCATION_MAX_AGE_SECONDS
    finally:
        await nc.close()


async def test_the_writers_max_age_is_set_and_other_services_leave_it_as_it_is(
    nats_url: str,
) -> None:
    nc = await nats.connect(nats_url, connect_timeout=5)
    js = nc.jetstream()
    try:
        await _delete_bucket(js)
        for max_age, expected in [
            (None, REVOCATION_MAX_AGE_SECONDS),  # created missing: the longest age
            (revocation_max_age(600), 900),  # auth-service shortens it to its token lifetime
            (None, 900),  # another service opens it as it is
            (revocation_max_age(3600), 3900),  # auth-service restarted with longer tokens
        ]:
            async with AsyncExitStack() as stack:
                await open_revocations(
                    nc, js, stack, CommonSettings(), on_reconnect=[], max_age=max_age
                )
                status = await (await js.key_value(REVOCATIONS_BUCKET)).status()
                assert status.ttl == expected, max_age
    finally:
        await _delete_bucket(js)
        await nc.close()


async def _delete_bucket(js: nats.js.JetStreamContext) -> None:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_key_value(REVOCATIONS_BUCKET)
