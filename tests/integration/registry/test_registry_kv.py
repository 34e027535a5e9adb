"""registry-service with a real nats-server and a real database (SQLite and PostgreSQL).

Every change is visible in the ``functions`` KV bucket; start-up reconciles the bucket with the
database; a NATS outage refuses writes (503) without changing anything.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from faas_common.contract import FunctionSnapshot, function_key
from registry_service.config import RegistrySettings
from tests.support.keys import RsaKeys
from tests.support.nats_server import NatsServer
from tests.unit.registry.factories import (
    User,
    client_for,
    function_body,
    make_settings,
    running_app,
    wait_until,
)


@pytest.fixture
def settings(settings: RegistrySettings) -> RegistrySettings:
    # An operator-allowed loopback registry (the PATCH of test_crud_is_mirrored_in_the_kv_bucket).
    return settings.model_copy(update={"image_registry_allow": "127.0.0.1:5000"})


async def kv_snapshot(kv: KeyValue, user: User, name: str) -> FunctionSnapshot | None:
    try:
        entry = await kv.get(function_key(user.id, name))
    except KeyNotFoundError:
        return None
    assert entry.value is not None
    return FunctionSnapshot.model_validate_json(entry.value)


def assert_mirrors(snapshot: FunctionSnapshot | None, user: User, body: dict[str, Any]) -> None:
    assert snapshot is not None
    assert snapshot.id == body["id"]
    assert snapshot.owner_id == user.id
    assert snapshot.name == body["name"]
    assert snapshot.image == body["image"]
    assert snapshot.timeout_seconds == body["timeout_seconds"]
    assert snapshot.memory_mb == body["memory_mb"]
    assert snapshot.env == body["env"]
    assert datetime.fromisoformat(snapshot.updated_at) == datetime.fromisoformat(body["updated_at"])


async def test_crud_is_mirrored_in_the_kv_bucket(
    settings: RegistrySettings, kv: KeyValue, alice: User, bob: User
) -> None:
    async with running_app(settings) as app, client_for(app) as client:
        created = await client.post(
            "/registry/functions",
            json=function_body(env={"B": "2", "A": "1"}, timeout_seconds=5),
            headers=alice.headers,
        )
        assert created.status_code == 201, created.text
        assert_mirrors(await kv_snapshot(kv, alice, "hello"), alice, created.json())

        theirs = await client.post(
            "/registry/functions", json=function_body(image="busybox"), headers=bob.headers
        )
        assert theirs.status_code == 201, theirs.text
        assert_mirrors(await kv_snapshot(kv, bob, "hello"), bob, theirs.json())

        listed = await client.get("/registry/functions", headers=alice.headers)
        assert listed.json() == [created.json()]
        fetched = await client.get("/registry/functions/hello", headers=alice.headers)
        assert fetched.json() == created.json()
        duplicate = await client.post(
            "/registry/functions", json=function_body(), headers=alice.headers
        )
        assert duplicate.status_code == 409

        patched = await client.patch(
            "/registry/functions/hello",
            json={"image": "127.0.0.1:5000/team/hello:v2", "memory_mb": 64, "env": {}},
            headers=alice.headers,
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["image"] == "127.0.0.1:5000/team/hello:v2"
        assert_mirrors(await kv_snapshot(kv, alice, "hello"), alice, patched.json())

        deleted = await client.delete("/registry/functions/hello", headers=alice.headers)
        assert deleted.status_code == 204
        assert await kv_snapshot(kv, alice, "hello") is None
        gone = await client.get("/registry/functions/hello", headers=alice.headers)
        assert gone.status_code == 404
        # The other user's function of the same name is untouched.
        assert_mirrors(await kv_snapshot(kv, bob, "hello"), bob, theirs.json())


async def test_aliases_are_mirrored_in_the_kv_bucket(
    settings: RegistrySettings, kv: KeyValue, alice: User
) -> None:
    async with running_app(settings) as app, client_for(app) as client:
        registered = await client.post(
            "/registry/register",
            json={"name": "seed", "description": "", "payload": "busybox"},
            headers=alice.headers,
        )
        assert registered.status_code == 201, registered.text
        assert_mirrors(await kv_snapshot(kv, alice, "seed"), alice, registered.json())

        retrieved = await client.request(
            "GET", "/registry/retrieve", content=b'{"name": "seed"}', headers=alice.headers
        )
        assert retrieved.json() == registered.json()
        listed = await client.get("/registry/list", headers=alice.headers)
        assert listed.json() == [registered.json()]

        updated = await client.put(
            "/registry/update",
            json={"name": "seed", "payload": "busybox:1.36"},
            headers=alice.headers,
        )
        assert updated.status_code == 200, updated.text
        assert_mirrors(await kv_snapshot(kv, alice, "seed"), alice, updated.json())

        deleted = await client.request(
            "DELETE", "/registry/delete", content=b'{"name": "seed"}', headers=alice.headers
        )
        assert deleted.status_code == 204
        assert await kv_snapshot(kv, alice, "seed") is None


async def test_startup_reconciles_the_bucket_with_the_database(
    settings: RegistrySettings, kv: KeyValue, alice: User, bob: User
) -> None:
    bodies: dict[str, dict[str, Any]] = {}
    async with running_app(settings) as app, client_for(app) as client:
        for name in ("kept", "deleted-while-down", "key-lost"):
            response = await client.post(
                "/registry/functions", json=function_body(name), headers=alice.headers
            )
            assert response.status_code == 201, response.text
            bodies[name] = response.json()

    # While the service is down: a function deleted from the database, a key lost from the
    # bucket, a stray key left by something else.
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text('DELETE FROM "function" WHERE name = :name'), {"name": "deleted-while-down"}
            )
    finally:
        await engine.dispose()
    await kv.delete(function_key(alice.id, "key-lost"))
    await kv.put(function_key(bob.id, "stray"), b"{}")

    async with running_app(settings) as app, client_for(app) as client:
        assert await kv_snapshot(kv, alice, "deleted-while-down") is None
        assert_mirrors(await kv_snapshot(kv, alice, "key-lost"), alice, bodies["key-lost"])
        assert_mirrors(await kv_snapshot(kv, alice, "kept"), alice, bodies["kept"])
        assert await kv_snapshot(kv, bob, "stray") is None
        assert sorted(await kv.keys()) == sorted(
            function_key(alice.id, name) for name in ("kept", "key-lost")
        )
        listed = await client.get("/registry/list", headers=alice.headers)
        assert [f["name"] for f in listed.json()] == ["kept", "key-lost"]


async def test_concurrent_writes_leave_database_and_bucket_in_agreement(
    settings: RegistrySettings, kv: KeyValue, alice: User
) -> None:
    async with running_app(settings) as app, client_for(app) as client:
        creates = await asyncio.gather(
            *(
                client.post("/registry/functions", json=function_body(), headers=alice.headers)
                for _ in range(5)
            )
        )
        assert sorted(response.status_code for response in creates) == [201, 409, 409, 409, 409]

        patches = await asyncio.gather(
            *(
                client.patch(
                    "/registry/functions/hello",
                    json={"memory_mb": 64 + i, "description": f"v{i}"},
                    headers=alice.headers,
                )
                for i in range(8)
            )
        )
        assert all(response.status_code == 200 for response in patches), [
            response.text for response in patches
        ]
        final = (await client.get("/registry/functions/hello", headers=alice.headers)).json()
        assert_mirrors(await kv_snapshot(kv, alice, "hello"), alice, final)


async def test_concurrent_patches_of_different_fields_leave_the_bucket_current(
    settings: RegistrySettings, kv: KeyValue, alice: User
) -> None:
    # Each PATCH sets a field the other leaves alone: the bucket must hold both changes, not the
    # value one request read before the other committed.
    async with running_app(settings) as app, client_for(app) as client:
        created = await client.post(
            "/registry/functions", json=function_body(), headers=alice.headers
        )
        assert created.status_code == 201, created.text
        for round_ in range(15):
            patches = await asyncio.gather(
                client.patch(
                    "/registry/functions/hello",
                    json={"image": f"busybox:{round_}"},
                    headers=alice.headers,
                ),
                client.patch(
                    "/registry/functions/hello",
                    json={"memory_mb": 16 + round_},
                    headers=alice.headers,
                ),
            )
            assert [response.status_code for response in patches] == [200, 200], [
                response.text for response in patches
            ]
            final = (await client.get("/registry/functions/hello", headers=alice.headers)).json()
            assert (final["image"], final["memory_mb"]) == (f"busybox:{round_}", 16 + round_)
            assert_mirrors(await kv_snapshot(kv, alice, "hello"), alice, final)


async def test_periodic_reconcile_removes_an_orphan_key_while_writes_go_on(
    settings: RegistrySettings, kv: KeyValue, alice: User
) -> None:
    settings = settings.model_copy(update={"reconcile_interval_seconds": 0.2})
    async with running_app(settings) as app, client_for(app) as client:
        created = await client.post(
            "/registry/functions", json=function_body(), headers=alice.headers
        )
        assert created.status_code == 201, created.text
        # A create whose put timed out after the server applied it, and whose undo failed.
        await kv.put(function_key(alice.id, "orphan"), b"{}")

        async def orphan_gone() -> bool:
            return await kv_snapshot(kv, alice, "orphan") is None

        # Writes keep working while passes run (and wait for the lock when one repairs).
        for i in range(10):
            patched = await client.patch(
                "/registry/functions/hello", json={"memory_mb": 32 + i}, headers=alice.headers
            )
            assert patched.status_code == 200, patched.text
            await asyncio.sleep(0.05)
        await wait_until(orphan_gone, message="the orphan key is still in the bucket")
        final = (await client.get("/registry/functions/hello", headers=alice.headers)).json()
        assert_mirrors(await kv_snapshot(kv, alice, "hello"), alice, final)
        assert await kv.keys() == [function_key(alice.id, "hello")]
        # In agreement, later passes write nothing (the values read back compare equal).
        revision = (await kv.get(function_key(alice.id, "hello"))).revision
        await asyncio.sleep(1.0)
        assert (await kv.get(function_key(alice.id, "hello"))).revision == revision


async def test_ready_checks_database_and_nats(settings: RegistrySettings, kv: KeyValue) -> None:
    async with running_app(settings) as app, client_for(app) as client:
        response = await client.get("/registry/ready")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "nats": "ok"}


async def test_nats_outage_refuses_writes_and_changes_nothing(
    sqlite_database_url: str,
    nats_server: NatsServer,
    nats_url: str,
    rsa_keys: RsaKeys,
    kv: KeyValue,
    alice: User,
) -> None:
    settings = make_settings(
        sqlite_database_url, rsa_keys.public_path, nats_url=nats_url, nats_connect_timeout=10.0
    )
    async with running_app(settings) as app, client_for(app) as client:
        created = await client.post(
            "/registry/functions", json=function_body(), headers=alice.headers
        )
        assert created.status_code == 201

        nats_server.stop()
        try:
            await wait_for_status(client, "/registry/ready", 503)
            refused = await client.post(
                "/registry/functions", json=function_body("other"), headers=alice.headers
            )
            patched = await client.patch(
                "/registry/functions/hello", json={"memory_mb": 512}, headers=alice.headers
            )
            deleted = await client.delete("/registry/functions/hello", headers=alice.headers)
            # Reads come from the database: still served.
            listed = await client.get("/registry/functions", headers=alice.headers)
        finally:
            nats_server.start()

        for response in (refused, patched, deleted):
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "service_unavailable"
        assert listed.json() == [created.json()]

        await wait_for_status(client, "/registry/ready", 200)
        after = await client.post(
            "/registry/functions", json=function_body("other"), headers=alice.headers
        )
        assert after.status_code == 201, after.text
        assert_mirrors(await kv_snapshot(kv, alice, "other"), alice, after.json())
        assert_mirrors(await kv_snapshot(kv, alice, "hello"), alice, created.json())


async def wait_for_status(client: httpx.AsyncClient, path: str, status: int) -> None:
    """Poll ``path`` until it answers ``status`` (15 s at most)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15.0
    while True:
        response = await client.get(path)
        if response.status_code == status:
            return
        if loop.time() > deadline:
            pytest.fail(f"{path} still answers {response.status_code}, not {status}")
        await asyncio.sleep(0.1)
