"""The seed-compatible aliases: register, list, retrieve, update, delete."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.unit.registry.factories import FakeCatalog, User, function_body
from tests.unit.registry.test_validation import assert_validation_error


async def register(client: httpx.AsyncClient, user: User, **body: Any) -> httpx.Response:
    payload = {"name": "hello", "description": "says hello", "payload": "library/hello:1.0"}
    return await client.post("/registry/register", json=payload | body, headers=user.headers)


async def test_register_takes_payload_as_the_image(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    response = await register(client, alice)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "hello"
    assert body["description"] == "says hello"
    assert body["image"] == "library/hello:1.0"
    assert body["timeout_seconds"] == 30
    snapshot = catalog.snapshot(alice.id, "hello")
    assert snapshot is not None
    assert snapshot.image == "library/hello:1.0"
    rest = await client.get("/registry/functions/hello", headers=alice.headers)
    assert rest.json() == body


async def test_register_accepts_the_other_fields(client: httpx.AsyncClient, alice: User) -> None:
    response = await register(client, alice, timeout_seconds=5, memory_mb=64, env={"A": "b"})

    assert response.status_code == 201, response.text
    assert response.json()["timeout_seconds"] == 5
    assert response.json()["memory_mb"] == 64
    assert response.json()["env"] == {"A": "b"}


async def test_register_accepts_image_instead_of_payload(
    client: httpx.AsyncClient, alice: User
) -> None:
    response = await client.post(
        "/registry/register", json={"name": "hi", "image": "busybox"}, headers=alice.headers
    )

    assert response.status_code == 201, response.text
    assert response.json()["image"] == "busybox"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "hello", "description": "no image"},
        {"name": "hello", "payload": "UPPER/x"},
        {"name": "hello", "payload": "a", "image": "b"},
        {"name": "bad name", "payload": "hello"},
        {"name": "hello", "payload": "hello", "timeout_seconds": 0},
    ],
)
async def test_register_validates(
    client: httpx.AsyncClient, alice: User, body: dict[str, Any]
) -> None:
    response = await client.post("/registry/register", json=body, headers=alice.headers)

    assert_validation_error(response)


async def test_register_duplicate_is_409(client: httpx.AsyncClient, alice: User) -> None:
    await register(client, alice)

    response = await register(client, alice)

    assert response.status_code == 409
    assert response.json()["code"] == "function_exists"


async def test_list(client: httpx.AsyncClient, alice: User) -> None:
    await register(client, alice, name="b")
    await register(client, alice, name="a")

    response = await client.get("/registry/list", headers=alice.headers)

    assert response.status_code == 200
    assert [f["name"] for f in response.json()] == ["a", "b"]
    assert (
        response.json() == (await client.get("/registry/functions", headers=alice.headers)).json()
    )


async def test_retrieve_with_a_json_body(client: httpx.AsyncClient, alice: User) -> None:
    created = (await register(client, alice)).json()

    response = await client.request(
        "GET",
        "/registry/retrieve",
        content=json.dumps({"name": "hello"}).encode(),
        headers=alice.headers | {"Content-Type": "application/json"},
    )

    assert response.status_code == 200, response.text
    assert response.json() == created


async def test_retrieve_with_a_body_and_no_content_type(
    client: httpx.AsyncClient, alice: User
) -> None:
    created = (await register(client, alice)).json()

    response = await client.request(
        "GET", "/registry/retrieve", content=b'{"name": "hello"}', headers=alice.headers
    )

    assert response.status_code == 200, response.text
    assert response.json() == created


async def test_retrieve_with_a_query(client: httpx.AsyncClient, alice: User) -> None:
    created = (await register(client, alice)).json()

    response = await client.get("/registry/retrieve?name=hello", headers=alice.headers)

    assert response.status_code == 200, response.text
    assert response.json() == created


async def test_retrieve_prefers_the_body(client: httpx.AsyncClient, alice: User) -> None:
    await register(client, alice, name="one")
    await register(client, alice, name="two")

    response = await client.request(
        "GET", "/registry/retrieve?name=one", content=b'{"name": "two"}', headers=alice.headers
    )

    assert response.json()["name"] == "two"


async def test_retrieve_missing_is_404(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.get(
        "/registry/retrieve", params={"name": "nope"}, headers=alice.headers
    )

    assert response.status_code == 404
    assert response.json()["code"] == "function_not_found"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize(
    ("query", "content", "loc"),
    [
        ("", b"", ["query", "name"]),
        ("", b"{}", ["query", "name"]),
        ("", b'{"other": "x"}', ["query", "name"]),
        ("", b'{"name": "a.b"}', ["body", "name"]),
        ("", b'{"name": null}', ["body", "name"]),
        ("", b'{"name": 5}', ["body", "name"]),
        ("", b"{not json", ["body"]),
        ("?name=a.b", b"", ["query", "name"]),
        ("?name=", b"", ["query", "name"]),
    ],
)
async def test_retrieve_and_delete_need_a_valid_name(
    client: httpx.AsyncClient,
    alice: User,
    method: str,
    query: str,
    content: bytes,
    loc: list[Any],
) -> None:
    path = "/registry/retrieve" if method == "GET" else "/registry/delete"

    response = await client.request(method, path + query, content=content, headers=alice.headers)

    assert_validation_error(response, loc)


async def test_update_with_payload(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    created = (await register(client, alice)).json()

    response = await client.put(
        "/registry/update",
        json={"name": "hello", "payload": "busybox:1.36", "description": "new"},
        headers=alice.headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == "busybox:1.36"
    assert body["description"] == "new"
    assert body["timeout_seconds"] == created["timeout_seconds"]
    snapshot = catalog.snapshot(alice.id, "hello")
    assert snapshot is not None
    assert snapshot.image == "busybox:1.36"


async def test_update_other_fields(client: httpx.AsyncClient, alice: User) -> None:
    await register(client, alice)

    response = await client.put(
        "/registry/update",
        json={"name": "hello", "image": "busybox", "timeout_seconds": 60, "env": {"K": "v"}},
        headers=alice.headers,
    )

    assert response.status_code == 200, response.text
    assert response.json()["image"] == "busybox"
    assert response.json()["timeout_seconds"] == 60
    assert response.json()["env"] == {"K": "v"}


@pytest.mark.parametrize(
    "body",
    [
        {"payload": "busybox"},
        {"name": "hello", "payload": None},
        {"name": "hello", "payload": "UPPER/x"},
        {"name": "hello", "payload": "a", "image": "b"},
        {"name": "hello", "memory_mb": None},
    ],
)
async def test_update_validates(
    client: httpx.AsyncClient, alice: User, body: dict[str, Any]
) -> None:
    await register(client, alice)

    response = await client.put("/registry/update", json=body, headers=alice.headers)

    assert_validation_error(response)


async def test_update_missing_is_404(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.put(
        "/registry/update", json={"name": "nope", "payload": "busybox"}, headers=alice.headers
    )

    assert response.status_code == 404
    assert response.json()["code"] == "function_not_found"


async def test_delete_with_a_json_body(
    client: httpx.AsyncClient, alice: User, catalog: FakeCatalog
) -> None:
    await register(client, alice)

    response = await client.request(
        "DELETE",
        "/registry/delete",
        content=b'{"name": "hello"}',
        headers=alice.headers | {"Content-Type": "application/json"},
    )

    assert response.status_code == 204, response.text
    assert catalog.snapshot(alice.id, "hello") is None
    gone = await client.get("/registry/functions/hello", headers=alice.headers)
    assert gone.status_code == 404


async def test_delete_with_a_query(client: httpx.AsyncClient, alice: User) -> None:
    await register(client, alice)

    response = await client.delete(
        "/registry/delete", params={"name": "hello"}, headers=alice.headers
    )

    assert response.status_code == 204, response.text
    gone = await client.get("/registry/functions/hello", headers=alice.headers)
    assert gone.status_code == 404


async def test_delete_missing_is_404(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.delete("/registry/delete?name=nope", headers=alice.headers)

    assert response.status_code == 404
    assert response.json()["code"] == "function_not_found"


async def test_aliases_are_documented(client: httpx.AsyncClient) -> None:
    openapi = (await client.get("/registry/openapi.json")).json()
    paths = openapi["paths"]

    operations = {
        ("/registry/register", "post"),
        ("/registry/list", "get"),
        ("/registry/retrieve", "get"),
        ("/registry/update", "put"),
        ("/registry/delete", "delete"),
    }
    for path, method in operations:
        operation = paths[path][method]
        assert operation["summary"], (path, method)
        assert "alias" in operation["summary"]
    retrieve = paths["/registry/retrieve"]["get"]
    assert "requestBody" in retrieve
    assert any(param["name"] == "name" for param in retrieve["parameters"])
    for path in ("/registry/functions", "/registry/functions/{name}"):
        assert path in paths


async def test_rest_and_aliases_share_one_store(client: httpx.AsyncClient, alice: User) -> None:
    await client.post("/registry/functions", json=function_body("rest"), headers=alice.headers)
    await register(client, alice, name="seed")

    names = [f["name"] for f in (await client.get("/registry/list", headers=alice.headers)).json()]

    assert names == ["rest", "seed"]
