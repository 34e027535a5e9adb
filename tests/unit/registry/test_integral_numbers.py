"""Integers are JSON Schema's ``integer``: an integral number written ``135.0`` is 135; ``135.5``,
a string or a boolean is still a 422."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.unit.registry.factories import User, function_body


@pytest.mark.parametrize(
    ("path", "image_field"), [("/registry/functions", "image"), ("/registry/register", "payload")]
)
async def test_integral_numbers_register(
    client: httpx.AsyncClient, alice: User, path: str, image_field: str
) -> None:
    body = function_body("integral", timeout_seconds=135.0, memory_mb=256.0)
    body[image_field] = body.pop("image")
    response = await client.post(path, json=body, headers=alice.headers)
    assert response.status_code == 201, response.text
    assert response.json()["timeout_seconds"] == 135
    assert response.json()["memory_mb"] == 256
    fetched = await client.get("/registry/functions/integral", headers=alice.headers)
    assert fetched.json()["timeout_seconds"] == 135


async def test_integral_numbers_update(client: httpx.AsyncClient, alice: User) -> None:
    created = await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    assert created.status_code == 201
    patched = await client.patch(
        "/registry/functions/hello", json={"timeout_seconds": 60.0}, headers=alice.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["timeout_seconds"] == 60
    updated = await client.put(
        "/registry/update", json={"name": "hello", "memory_mb": 512.0}, headers=alice.headers
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["memory_mb"] == 512


@pytest.mark.parametrize(
    "value",
    [135.5, "135", True, 1e300, 0.0, 901.0],
    ids=["fraction", "string", "bool", "huge", "zero", "over"],
)
async def test_other_numbers_are_refused(
    client: httpx.AsyncClient, alice: User, value: Any
) -> None:
    body = function_body("refused", timeout_seconds=value)
    response = await client.post("/registry/functions", json=body, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert response.json()["detail"][0]["loc"] == ["body", "timeout_seconds"]


async def test_the_document_says_integer(client: httpx.AsyncClient) -> None:
    document = (await client.get("/registry/openapi.json")).json()
    schema = document["components"]["schemas"]["FunctionCreate"]["properties"]
    assert (
        schema["timeout_seconds"] | {"minimum": 1, "maximum": 900, "type": "integer"}
        == (schema["timeout_seconds"])
    )
    assert (
        schema["memory_mb"] | {"minimum": 16, "maximum": 4096, "type": "integer"}
        == (schema["memory_mb"])
    )
