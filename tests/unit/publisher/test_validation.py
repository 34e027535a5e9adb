"""Bodies and headers the publisher refuses with 422, before anything is looked up or queued."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from faas_common.contract import FunctionSnapshot
from tests.unit.publisher.factories import PUBLISH, FakeBackends
from tests.unit.registry.factories import User


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"name": "hello"}, ["body", "argument"]),
        ({"argument": "x"}, ["body", "name"]),
        ({"name": "hello", "argument": 42}, ["body", "argument"]),
        ({"name": "hello", "argument": None}, ["body", "argument"]),
        ({"name": "hello", "argument": ["a", "b"]}, ["body", "argument"]),
        ({"name": "hello", "argument": {"a": 1}}, ["body", "argument"]),
        ({"name": "hello", "argument": "nul\u0000inside"}, ["body", "argument"]),
        ({"name": "hello", "argument": "x", "async": "yes"}, ["body", "async"]),
        ({"name": "hello", "argument": "x", "async": 1}, ["body", "async"]),
        ({"name": "../etc", "argument": "x"}, ["body", "name"]),
        ({"name": "a.b", "argument": "x"}, ["body", "name"]),
        ({"name": "", "argument": "x"}, ["body", "name"]),
        ({"name": "x" * 65, "argument": "x"}, ["body", "name"]),
        ({"name": 7, "argument": "x"}, ["body", "name"]),
    ],
    ids=[
        "missing-argument",
        "missing-name",
        "integer-argument",
        "null-argument",
        "list-argument",
        "object-argument",
        "nul-in-argument",
        "string-async",
        "integer-async",
        "path-name",
        "dotted-name",
        "empty-name",
        "long-name",
        "integer-name",
    ],
)
async def test_invalid_bodies_are_422(
    client: httpx.AsyncClient,
    fakes: FakeBackends,
    alice: User,
    hello: FunctionSnapshot,
    body: dict[str, Any],
    location: list[str],
) -> None:
    response = await client.post(PUBLISH, json=body, headers=alice.headers)

    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["code"] == "validation_error"
    assert location in [error["loc"] for error in payload["detail"]]
    assert fakes.queue.published == []
    assert fakes.records.entries == {}


async def test_nul_is_refused_with_a_reason(
    client: httpx.AsyncClient, alice: User, hello: FunctionSnapshot
) -> None:
    response = await client.post(
        PUBLISH, json={"name": "hello", "argument": "a\u0000b"}, headers=alice.headers
    )

    assert response.status_code == 422
    assert "NUL" in response.json()["detail"][0]["msg"]


async def test_a_lone_surrogate_is_refused(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    response = await client.post(
        PUBLISH,
        content=b'{"name": "hello", "argument": "\\ud800"}',
        headers={**alice.headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert fakes.queue.published == []


@pytest.mark.parametrize(
    "raw",
    [b"not json", b'{"name": "hello", "argument": ', b'["hello", "x"]', b'"hello"'],
    ids=["text", "truncated", "array", "string"],
)
async def test_bodies_that_are_not_a_json_object_are_422(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, raw: bytes
) -> None:
    response = await client.post(
        PUBLISH, content=raw, headers={**alice.headers, "Content-Type": "application/json"}
    )

    assert response.status_code == 422
    assert fakes.queue.published == []


async def test_unicode_and_unknown_fields_are_fine(
    client: httpx.AsyncClient, alice: User, hello: FunctionSnapshot
) -> None:
    response = await client.post(
        PUBLISH,
        json={"name": "hello", "argument": "héllo wörld ✓ \n\t", "extra": 1},
        headers=alice.headers,
    )

    assert response.status_code == 200
    assert response.json()["result"] == "héllo wörld ✓ \n\t"


@pytest.mark.parametrize(
    "key", ["k" * 201, "tab\tinside", "ünïcode"], ids=["too-long", "control", "non-ascii"]
)
async def test_invalid_idempotency_keys_are_422(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot, key: str
) -> None:
    response = await client.post(
        PUBLISH,
        json={"name": "hello", "argument": "x"},
        headers=[
            *((name.encode(), value.encode()) for name, value in alice.headers.items()),
            (b"Idempotency-Key", key.encode()),
        ],
    )

    assert response.status_code == 422, response.text
    assert ["header", "Idempotency-Key"] in [error["loc"] for error in response.json()["detail"]]
    assert fakes.queue.published == []


async def test_list_query_is_validated(client: httpx.AsyncClient, alice: User) -> None:
    for query in ("limit=0", "limit=101", "limit=x", "function=a.b"):
        response = await client.get(f"/publisher/executions?{query}", headers=alice.headers)
        assert response.status_code == 422, query
