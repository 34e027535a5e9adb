"""Logout and account deletion across the platform: auth-service, registry-service and
publisher-service on one real nats-server and PostgreSQL. A revoked token is refused by every
service within 5 s (other tokens keep working); a deleted account's tokens stop everywhere, its
functions leave the registry's database and the ``functions`` bucket, and a new account under the
same name is a new user who cannot read the old account's execution records."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.js.errors import KeyNotFoundError

from faas_common.contract import (
    FUNCTIONS_BUCKET,
    REVOCATIONS_BUCKET,
    ExecutionRecord,
    function_key,
)
from registry_service import repository
from registry_service.main import create_app as create_registry_app
from tests.support.nats_server import NatsServer
from tests.unit.auth import factories as auth
from tests.unit.publisher.factories import make_settings as publisher_settings
from tests.unit.publisher.factories import running_app as running_publisher
from tests.unit.registry.factories import FakeResolver, function_body, wait_until
from tests.unit.registry.factories import make_settings as registry_settings

PROPAGATION_SECONDS = 5.0
REVOKED = {"detail": "Token revoked", "code": "token_revoked"}


@dataclass
class Platform:
    auth: httpx.AsyncClient
    registry: httpx.AsyncClient
    publisher: httpx.AsyncClient
    registry_app: FastAPI
    publisher_app: FastAPI

    def services(self) -> dict[str, tuple[httpx.AsyncClient, str]]:
        """A route per service that any valid token may call."""
        return {
            "auth": (self.auth, "/auth/validate"),
            "registry": (self.registry, "/registry/functions"),
            "publisher": (self.publisher, "/publisher/executions"),
        }


@pytest.fixture
async def platform(
    postgres_database_url: str, nats_url: str, tmp_path: Path
) -> AsyncIterator[Platform]:
    settings = auth.make_settings(tmp_path, database_url=postgres_database_url, nats_url=nats_url)
    async with AsyncExitStack() as stack:
        auth_app = await stack.enter_async_context(auth.running_app(settings, revocations=None))
        public_key = tmp_path / "jwt-public.pem"
        registry_app = create_registry_app(
            registry_settings(
                postgres_database_url, public_key, nats_url=nats_url, nats_connect_timeout=10.0
            ),
            resolver=FakeResolver(),
        )
        await stack.enter_async_context(registry_app.router.lifespan_context(registry_app))
        publisher_app = await stack.enter_async_context(
            running_publisher(publisher_settings(public_key, nats_url=nats_url))
        )
        yield Platform(
            auth=await stack.enter_async_context(auth.client_for(auth_app)),
            registry=await stack.enter_async_context(auth.client_for(registry_app)),
            publisher=await stack.enter_async_context(auth.client_for(publisher_app)),
            registry_app=registry_app,
            publisher_app=publisher_app,
        )


async def status_everywhere(platform: Platform, token: str) -> dict[str, int]:
    statuses = {}
    for name, (client, path) in platform.services().items():
        response = await client.get(path, headers=auth.bearer(token))
        statuses[name] = response.status_code
    return statuses


async def refused_everywhere(platform: Platform, token: str) -> None:
    async def refused() -> bool:
        return set((await status_everywhere(platform, token)).values()) == {401}

    await wait_until(refused, within=PROPAGATION_SECONDS)
    for client, path in platform.services().values():
        response = await client.get(path, headers=auth.bearer(token))
        assert response.json() == REVOKED


async def test_logout_is_honoured_by_every_service(platform: Platform) -> None:
    name = auth.unique_username("lou")
    await auth.register(platform.auth, name)
    token, other = await auth.login(platform.auth, name), await auth.login(platform.auth, name)
    assert set((await status_everywhere(platform, token)).values()) == {200}

    response = await platform.auth.post("/auth/logout", headers=auth.bearer(token))
    assert response.status_code == 204
    await refused_everywhere(platform, token)
    assert set((await status_everywhere(platform, other)).values()) == {200}


async def test_a_deleted_account_is_gone_everywhere(platform: Platform, nats_url: str) -> None:
    name = auth.unique_username("dee")
    old = await auth.register(platform.auth, name)
    token = await auth.login(platform.auth, name)
    created = await platform.registry.post(
        "/registry/functions", json=function_body("hello"), headers=auth.bearer(token)
    )
    assert created.status_code == 201, created.text
    execution_id = uuid.uuid4().hex
    records = platform.publisher_app.state.backends.records
    await records.create(
        old["id"],
        ExecutionRecord(
            execution_id=execution_id, function="hello", status="succeeded", created_at=time.time()
        ),
    )
    own = await platform.publisher.get(
        f"/publisher/executions/{execution_id}", headers=auth.bearer(token)
    )
    assert own.status_code == 200

    response = await platform.auth.delete("/auth/users/me", headers=auth.bearer(token))
    assert response.status_code == 204
    await refused_everywhere(platform, token)

    sessions = platform.registry_app.state.sessionmaker

    async def functions_deleted() -> bool:
        async with sessions() as session:
            return not await repository.list_for_owner(session, owner_id=old["id"])

    await wait_until(functions_deleted, within=PROPAGATION_SECONDS)
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        kv = await nc.jetstream().key_value(FUNCTIONS_BUCKET)
        with pytest.raises(KeyNotFoundError):
            await kv.get(function_key(old["id"], "hello"))
    finally:
        await nc.close()

    new = await auth.register(platform.auth, name.upper())
    assert (new["username"], new["id"] != old["id"]) == (name, True)
    new_token = await auth.login(platform.auth, name)
    assert set((await status_everywhere(platform, new_token)).values()) == {200}
    listed = await platform.registry.get("/registry/functions", headers=auth.bearer(new_token))
    assert listed.json() == []
    foreign = await platform.publisher.get(
        f"/publisher/executions/{execution_id}", headers=auth.bearer(new_token)
    )
    assert foreign.status_code == 404


async def test_the_last_snapshot_holds_while_nats_is_down(
    platform: Platform, nats_server: NatsServer
) -> None:
    name = auth.unique_username("nat")
    await auth.register(platform.auth, name)
    revoked, kept = await auth.login(platform.auth, name), await auth.login(platform.auth, name)
    assert (
        await platform.auth.post("/auth/logout", headers=auth.bearer(revoked))
    ).status_code == 204
    await refused_everywhere(platform, revoked)

    await asyncio.to_thread(nats_server.stop)
    try:
        # The registry lists functions from its database: it keeps serving, with the snapshot.
        refused = await platform.registry.get("/registry/functions", headers=auth.bearer(revoked))
        assert refused.json() == REVOKED
        listed = await platform.registry.get("/registry/functions", headers=auth.bearer(kept))
        assert listed.status_code == 200
        # Nothing can be revoked meanwhile, and nothing changes.
        logout = await platform.auth.post("/auth/logout", headers=auth.bearer(kept))
        assert logout.status_code == 503
        assert logout.json()["code"] == "revocation_unavailable"
    finally:
        await asyncio.to_thread(nats_server.start)
    # After the reconnect the watch reloads; the revocation is still honoured.
    await asyncio.sleep(2.0)
    assert set((await status_everywhere(platform, kept)).values()) == {200}
    await refused_everywhere(platform, revoked)


async def test_auth_service_keeps_revocations_as_long_as_its_tokens_live(
    nats_url: str, tmp_path: Path
) -> None:
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        for ttl in (600, 3600):
            settings = auth.make_settings(tmp_path, nats_url=nats_url, token_ttl_seconds=ttl)
            async with auth.running_app(settings, revocations=None):
                status = await (await nc.jetstream().key_value(REVOCATIONS_BUCKET)).status()
                assert status.ttl == ttl + 300
    finally:
        await nc.close()
