"""``GET /registry/retrieve`` and ``DELETE /registry/delete``: a body, when there is one, is a
JSON object whose ``name`` is optional; any other JSON is refused rather than ignored."""

from __future__ import annotations

import httpx
import pytest

from tests.unit.registry.factories import User, function_body


@pytest.fixture
async def hello(client: httpx.AsyncClient, alice: User) -> None:
    created = await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    assert created.status_code == 201


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("content", [b"[null, null]", b'"hello"', b"5", b"null", b"true"])
async def test_a_body_that_is_not_an_object_is_refused(
    client: httpx.AsyncClient, alice: User, hello: None, method: str, content: bytes
) -> None:
    path = "/registry/retrieve" if method == "GET" else "/registry/delete"
    response = await client.request(
        method, f"{path}?name=hello", content=content, headers=alice.headers
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert response.json()["detail"][0]["loc"] == ["body"]
    still_there = await client.get("/registry/functions/hello", headers=alice.headers)
    assert still_there.status_code == 200


@pytest.mark.parametrize("content", [b"{}", b'{"other": 1}', b""])
async def test_an_object_without_a_name_leaves_it_to_the_query(
    client: httpx.AsyncClient, alice: User, hello: None, content: bytes
) -> None:
    response = await client.request(
        "GET", "/registry/retrieve?name=hello", content=content, headers=alice.headers
    )
    assert response.status_code == 200
    assert response.json()["name"] == "hello"


async def test_the_document_says_an_object_with_an_optional_name(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/registry/openapi.json")).json()
    for path, method in (("/registry/retrieve", "get"), ("/registry/delete", "delete")):
        body = document["paths"][path][method]["requestBody"]
        schema = body["content"]["application/json"]["schema"]
        assert body["required"] is False
        assert schema["type"] == "object"
        assert "name" in schema["properties"]
        assert "required" not in schema
