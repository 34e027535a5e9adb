"""REST CRUD of one user's functions, and the catalog written alongside."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from registry_service.config import RegistrySettings
from tests.unit.registry.factories import FakeCatalog, User, function_body


@pytest.fixture
def settings(settings: RegistrySettings) -> RegistrySettings:
    # An operator-allowed loopback registry (test_create_with_every_field).
    return settings.model_copy(update={"image_registry_allow": "127.0.0.1:5000"})


FIELDS = {
    "id",
    "name",
    "description",
    "image",
    "timeout_seconds",
    "memory_mb",
    "env",
    "created_at",
    "updated_at",
}


async def test_create_returns_the_function_with_defaults(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    response = await client.post(
        "/registry/functions",
        json={"name": "hello", "description": "says hello", "image": "hello"},
        headers=alice.headers,
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == FIELDS
    assert body["name"] == "hello"
    assert body["description"] == "says hello"
    assert body["image"] == "hello"
    assert body["timeout_seconds"] == 30
    assert body["memory_mb"] == 128
    assert body["env"] == {}
    created = datetime.fromisoformat(body["created_at"])
    assert created.tzinfo is not None
    assert body["created_at"] == body["updated_at"]
    snapshot = catalog.snapshot(alice.id, "hello")
    assert snapshot is not None
    assert snapshot.id == body["id"]
    assert snapshot.image == "hello"
    assert snapshot.timeout_seconds == 30
    assert datetime.fromisoformat(snapshot.updated_at) == datetime.fromisoformat(body["updated_at"])


async def test_description_defaults_to_empty(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.post(
        "/registry/functions", json={"name": "bare", "image": "busybox"}, headers=alice.headers
    )

    assert response.status_code == 201, response.text
    assert response.json()["description"] == ""


async def test_create_with_every_field(client: httpx.AsyncClient, alice: User) -> None:
    body = function_body(
        "full",
        image="127.0.0.1:5000/team/fn:v1",
        timeout_seconds=900,
        memory_mb=4096,
        env={"GREETING": "hi", "_X1": ""},
    )

    response = await client.post("/registry/functions", json=body, headers=alice.headers)

    assert response.status_code == 201, response.text
    got = response.json()
    assert {key: got[key] for key in body} == body


async def test_form_content_type_is_read_as_json(client: httpx.AsyncClient, alice: User) -> None:
    # What `curl -d '{...}'` sends.
    response = await client.post(
        "/registry/functions",
        content=b'{"name": "curl", "description": "", "image": "busybox"}',
        headers={**alice.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 201, response.text
    assert response.json()["name"] == "curl"


async def test_unknown_fields_are_ignored(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.post(
        "/registry/functions",
        json=function_body("extra", owner_id="someone-else", id="mine", colour="blue"),
        headers=alice.headers,
    )

    assert response.status_code == 201, response.text
    assert response.json()["id"] != "mine"


async def test_duplicate_name_is_409(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    first = await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    assert first.status_code == 201
    writes = catalog.writes

    second = await client.post(
        "/registry/functions", json=function_body(image="other"), headers=alice.headers
    )

    assert second.status_code == 409
    assert second.json()["code"] == "function_exists"
    assert catalog.writes == writes
    snapshot = catalog.snapshot(alice.id, "hello")
    assert snapshot is not None
    assert snapshot.image == "library/hello:1.0"


async def test_list_is_sorted_by_name(client: httpx.AsyncClient, alice: User) -> None:
    for name in ("zeta", "Alpha", "beta", "_under", "9lives"):
        response = await client.post(
            "/registry/functions", json=function_body(name), headers=alice.headers
        )
        assert response.status_code == 201

    response = await client.get("/registry/functions", headers=alice.headers)

    assert response.status_code == 200
    assert [f["name"] for f in response.json()] == ["9lives", "Alpha", "_under", "beta", "zeta"]


async def test_list_is_empty_for_a_new_user(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.get("/registry/functions", headers=alice.headers)

    assert response.status_code == 200
    assert response.json() == []


async def test_get_one(client: httpx.AsyncClient, alice: User) -> None:
    created = await client.post("/registry/functions", json=function_body(), headers=alice.headers)

    response = await client.get("/registry/functions/hello", headers=alice.headers)

    assert response.status_code == 200
    assert response.json() == created.json()


async def test_get_missing_is_404(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.get("/registry/functions/nope", headers=alice.headers)

    assert response.status_code == 404
    assert response.json() == {"detail": "Function not found", "code": "function_not_found"}


async def test_patch_changes_only_the_given_fields(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    created = (
        await client.post(
            "/registry/functions", json=function_body(env={"A": "1"}), headers=alice.headers
        )
    ).json()

    response = await client.patch(
        "/registry/functions/hello",
        json={"image": "ghcr.io/team/hello@sha256:" + "ab" * 32, "memory_mb": 256},
        headers=alice.headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == "ghcr.io/team/hello@sha256:" + "ab" * 32
    assert body["memory_mb"] == 256
    assert body["description"] == created["description"]
    assert body["timeout_seconds"] == created["timeout_seconds"]
    assert body["env"] == {"A": "1"}
    assert body["created_at"] == created["created_at"]
    updated_at = datetime.fromisoformat(body["updated_at"])
    assert updated_at > datetime.fromisoformat(created["updated_at"])
    snapshot = catalog.snapshot(alice.id, "hello")
    assert snapshot is not None
    assert snapshot.image == body["image"]
    assert snapshot.memory_mb == 256
    assert datetime.fromisoformat(snapshot.updated_at) == datetime.fromisoformat(body["updated_at"])
    again = await client.get("/registry/functions/hello", headers=alice.headers)
    assert again.json() == body


async def test_patch_replaces_env_and_description(client: httpx.AsyncClient, alice: User) -> None:
    await client.post(
        "/registry/functions", json=function_body(env={"A": "1", "B": "2"}), headers=alice.headers
    )

    response = await client.patch(
        "/registry/functions/hello",
        json={"env": {"C": "3"}, "description": "", "timeout_seconds": 1},
        headers=alice.headers,
    )

    assert response.status_code == 200, response.text
    assert response.json()["env"] == {"C": "3"}
    assert response.json()["description"] == ""
    assert response.json()["timeout_seconds"] == 1


async def test_patch_without_changes_writes_nothing(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    created = (
        await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    ).json()
    writes = catalog.writes

    empty = await client.patch("/registry/functions/hello", json={}, headers=alice.headers)
    same = await client.patch(
        "/registry/functions/hello",
        json={"name": "hello", "image": created["image"]},
        headers=alice.headers,
    )

    assert empty.status_code == 200
    assert same.status_code == 200
    assert empty.json() == created
    assert same.json() == created
    assert catalog.writes == writes


async def test_patch_cannot_rename(client: httpx.AsyncClient, alice: User) -> None:
    await client.post("/registry/functions", json=function_body(), headers=alice.headers)

    response = await client.patch(
        "/registry/functions/hello", json={"name": "renamed"}, headers=alice.headers
    )

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert response.json()["detail"][0]["loc"] == ["body", "name"]
    assert (await client.get("/registry/functions/hello", headers=alice.headers)).status_code == 200


async def test_patch_missing_is_404(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.patch(
        "/registry/functions/nope", json={"memory_mb": 256}, headers=alice.headers
    )

    assert response.status_code == 404
    assert response.json()["code"] == "function_not_found"


async def test_delete(client: httpx.AsyncClient, alice: User, catalog: FakeCatalog) -> None:
    await client.post("/registry/functions", json=function_body(), headers=alice.headers)

    response = await client.delete("/registry/functions/hello", headers=alice.headers)

    assert response.status_code == 204
    assert response.content == b""
    assert catalog.snapshot(alice.id, "hello") is None
    gone = await client.get("/registry/functions/hello", headers=alice.headers)
    assert gone.status_code == 404
    again = await client.delete("/registry/functions/hello", headers=alice.headers)
    assert again.status_code == 404
    assert again.json()["code"] == "function_not_found"


async def test_name_can_be_reused_after_delete(client: httpx.AsyncClient, alice: User) -> None:
    first = await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    await client.delete("/registry/functions/hello", headers=alice.headers)

    second = await client.post("/registry/functions", json=function_body(), headers=alice.headers)

    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]
