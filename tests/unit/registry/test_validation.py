"""Every invalid input is a 422 with FastAPI's error list under ``detail`` (never a 500)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from registry_service.config import RegistrySettings
from tests.unit.registry.factories import FakeCatalog, User, function_body

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.fixture
def settings(settings: RegistrySettings) -> RegistrySettings:
    # Loopback registries among the valid references are operator-allowed here, and the total
    # environment cap is out of the way of the per-variable bounds (test_limits_are_inclusive).
    return settings.model_copy(
        update={"image_registry_allow": "127.0.0.1:5000,localhost:5000", "max_env_bytes": 1 << 20}
    )


def assert_validation_error(response: httpx.Response, loc: list[Any] | None = None) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert isinstance(body["detail"], list)
    assert body["detail"]
    if loc is not None:
        assert loc in [error["loc"] for error in body["detail"]], body["detail"]


INVALID_CREATE: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("name missing", {"description": "", "image": "hello"}, ["body", "name"]),
    ("name empty", function_body(""), ["body", "name"]),
    ("name too long", function_body("a" * 65), ["body", "name"]),
    ("name with a dot", function_body("a.b"), ["body", "name"]),
    ("name with a slash", function_body("a/b"), ["body", "name"]),
    ("name with a space", function_body("a b"), ["body", "name"]),
    ("name not a string", function_body() | {"name": 5}, ["body", "name"]),
    ("name null", function_body() | {"name": None}, ["body", "name"]),
    ("image missing", {"name": "x", "description": ""}, ["body", "image"]),
    ("image null", function_body(image=None), ["body", "image"]),
    ("description too long", function_body(description="d" * 1025), ["body", "description"]),
    ("description null", function_body(description=None), ["body", "description"]),
    ("description not a string", function_body(description=["x"]), ["body", "description"]),
    ("timeout zero", function_body(timeout_seconds=0), ["body", "timeout_seconds"]),
    ("timeout too large", function_body(timeout_seconds=901), ["body", "timeout_seconds"]),
    ("timeout negative", function_body(timeout_seconds=-5), ["body", "timeout_seconds"]),
    ("timeout as a string", function_body(timeout_seconds="30"), ["body", "timeout_seconds"]),
    ("timeout as a float", function_body(timeout_seconds=1.5), ["body", "timeout_seconds"]),
    ("timeout as a bool", function_body(timeout_seconds=True), ["body", "timeout_seconds"]),
    ("timeout null", function_body(timeout_seconds=None), ["body", "timeout_seconds"]),
    ("memory too small", function_body(memory_mb=15), ["body", "memory_mb"]),
    ("memory too large", function_body(memory_mb=4097), ["body", "memory_mb"]),
    ("memory as a string", function_body(memory_mb="128"), ["body", "memory_mb"]),
    ("env not an object", function_body(env=["A=1"]), ["body", "env"]),
    ("env null", function_body(env=None), ["body", "env"]),
    (
        "65 env entries",
        function_body(env={f"VAR_{i}": "x" for i in range(65)}),
        ["body", "env"],
    ),
    (
        "env name with a dash",
        function_body(env={"MY-VAR": "x"}),
        ["body", "env", "MY-VAR", "[key]"],
    ),
    ("env name with a digit first", function_body(env={"1X": "x"}), ["body", "env", "1X", "[key]"]),
    ("env name empty", function_body(env={"": "x"}), ["body", "env", "", "[key]"]),
    ("env name with a space", function_body(env={"A B": "x"}), ["body", "env", "A B", "[key]"]),
    (
        "env name too long",
        function_body(env={"A" * 257: "x"}),
        ["body", "env", "A" * 257, "[key]"],
    ),
    ("env value a number", function_body(env={"A": 1}), ["body", "env", "A"]),
    ("env value null", function_body(env={"A": None}), ["body", "env", "A"]),
    ("env value too long", function_body(env={"A": "v" * 4097}), ["body", "env", "A"]),
    ("description with a NUL", function_body(description="a\x00b"), ["body", "description"]),
    ("env value with a NUL", function_body(env={"A": "a\x00b"}), ["body", "env", "A"]),
]


@pytest.mark.parametrize(
    ("body", "loc"),
    [pytest.param(body, loc, id=case) for case, body, loc in INVALID_CREATE],
)
async def test_invalid_create_is_422(
    client: httpx.AsyncClient,
    alice: User,
    catalog: FakeCatalog,
    body: dict[str, Any],
    loc: list[Any],
) -> None:
    response = await client.post("/registry/functions", json=body, headers=alice.headers)

    assert_validation_error(response, loc)
    assert catalog.entries == {}


async def test_limits_are_inclusive(client: httpx.AsyncClient, alice: User) -> None:
    body = function_body(
        "n" * 64,
        description="d" * 1024,
        timeout_seconds=1,
        memory_mb=16,
        env={f"V{i}": "v" * 4096 for i in range(63)} | {"K" * 256: ""},
    )

    low = await client.post("/registry/functions", json=body, headers=alice.headers)
    high = await client.post(
        "/registry/functions",
        json=function_body("high", timeout_seconds=900, memory_mb=4096),
        headers=alice.headers,
    )

    assert low.status_code == 201, low.text
    assert high.status_code == 201, high.text


VALID_IMAGES = [
    "hello",
    "library/python:3.11-slim",
    "127.0.0.1:5000/team/fn:v1",
    f"ghcr.io/a/b@{DIGEST}",
    f"localhost:5000/a/b:latest@{DIGEST}",
    "registry.example.com/team/my_fn__x-y.z:V1.0_rc-1",
    "a-b--c/d",
]
INVALID_IMAGES = [
    "UPPER/x",
    "library/Python",
    "a:",
    ":tag",
    "a b",
    "-a",
    "a-",
    "a//b",
    "/a",
    "a/",
    "",
    "a:-tag",
    "a:" + "t" * 129,
    "a@sha256:abc",
    f"a@sha512:{'0' * 128}",
    f"a@{DIGEST.upper()}",
    "ghcr.io:/a",
    "ghcr.io:port/a",
    "-ghcr.io/a",
    "a..b",
    "a___b",
    "a/" + "b" * 254,
    "héllo",
]


@pytest.mark.parametrize("image", VALID_IMAGES)
async def test_valid_image_references(client: httpx.AsyncClient, alice: User, image: str) -> None:
    response = await client.post(
        "/registry/functions", json=function_body(image=image), headers=alice.headers
    )

    assert response.status_code == 201, response.text
    assert response.json()["image"] == image


@pytest.mark.parametrize("image", INVALID_IMAGES)
async def test_invalid_image_references(client: httpx.AsyncClient, alice: User, image: str) -> None:
    response = await client.post(
        "/registry/functions", json=function_body(image=image), headers=alice.headers
    )

    assert_validation_error(response, ["body", "image"])


INVALID_PATCH: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("description null", {"description": None}, ["body", "description"]),
    ("image null", {"image": None}, ["body", "image"]),
    ("timeout null", {"timeout_seconds": None}, ["body", "timeout_seconds"]),
    ("memory null", {"memory_mb": None}, ["body", "memory_mb"]),
    ("env null", {"env": None}, ["body", "env"]),
    ("name null", {"name": None}, ["body", "name"]),
    ("bad image", {"image": "UPPER/x"}, ["body", "image"]),
    ("timeout too large", {"timeout_seconds": 901}, ["body", "timeout_seconds"]),
    ("memory too small", {"memory_mb": 8}, ["body", "memory_mb"]),
    ("description too long", {"description": "d" * 1025}, ["body", "description"]),
    ("bad env name", {"env": {"A-B": "x"}}, ["body", "env", "A-B", "[key]"]),
    ("65 env entries", {"env": {f"V{i}": "x" for i in range(65)}}, ["body", "env"]),
    ("description with a NUL", {"description": "\x00"}, ["body", "description"]),
    ("env value with a NUL", {"env": {"A": "x\x00"}}, ["body", "env", "A"]),
]


@pytest.mark.parametrize(
    ("body", "loc"),
    [pytest.param(body, loc, id=case) for case, body, loc in INVALID_PATCH],
)
async def test_invalid_patch_is_422_and_changes_nothing(
    client: httpx.AsyncClient, alice: User, body: dict[str, Any], loc: list[Any]
) -> None:
    created = await client.post("/registry/functions", json=function_body(), headers=alice.headers)

    response = await client.patch("/registry/functions/hello", json=body, headers=alice.headers)

    assert_validation_error(response, loc)
    current = await client.get("/registry/functions/hello", headers=alice.headers)
    assert current.json() == created.json()


@pytest.mark.parametrize("path", ["/registry/functions/a.b", "/registry/functions/" + "a" * 65])
async def test_invalid_name_in_path_is_422(
    client: httpx.AsyncClient, alice: User, path: str
) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(
            method, path, json={} if method == "PATCH" else None, headers=alice.headers
        )
        assert_validation_error(response, ["path", "name"])


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/registry/functions"), ("PATCH", "/registry/functions/hello")],
)
@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"name": "x",', b"[", b"{'a': 1}", b"null", b"[1, 2]", b'"text"', b"42"],
)
async def test_malformed_or_non_object_json_is_422(
    client: httpx.AsyncClient, alice: User, method: str, path: str, content: bytes
) -> None:
    await client.post("/registry/functions", json=function_body(), headers=alice.headers)

    response = await client.request(
        method, path, content=content, headers={**alice.headers, "Content-Type": "application/json"}
    )

    assert_validation_error(response)


async def test_undecodable_body_is_a_json_400(client: httpx.AsyncClient, alice: User) -> None:
    # Not text at all (FastAPI's own answer): still the platform's JSON error shape.
    response = await client.post(
        "/registry/functions",
        content=b"\xff\xfe{",
        headers={**alice.headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"


async def test_missing_body_is_422(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.post("/registry/functions", headers=alice.headers)

    assert_validation_error(response)


async def test_form_encoded_body_is_422(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.post(
        "/registry/functions", data={"name": "x", "image": "hello"}, headers=alice.headers
    )

    assert_validation_error(response)


async def test_oversize_input_is_truncated_in_the_error(
    client: httpx.AsyncClient, alice: User
) -> None:
    response = await client.post(
        "/registry/functions",
        json=function_body(description="d" * 100_000),
        headers=alice.headers,
    )

    assert_validation_error(response, ["body", "description"])
    assert len(response.text) < 2000
