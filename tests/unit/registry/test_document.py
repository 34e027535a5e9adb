"""What the registry's OpenAPI document says about a function's fields is what the service
checks: integers with their bounds, the image reference grammar, env names as property names."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from faas_common.validation import IMAGE_REFERENCE_PATTERN
from registry_service.schemas import ENV_NAME_PATTERN
from tests.unit.registry.factories import User, function_body


@pytest.fixture
async def schemas(client: httpx.AsyncClient) -> dict[str, Any]:
    document = (await client.get("/registry/openapi.json")).json()
    found: dict[str, Any] = document["components"]["schemas"]
    return found


@pytest.mark.parametrize(
    "model", ["FunctionCreate", "FunctionPatch", "RegisterAlias", "UpdateAlias"]
)
def test_env_names_are_property_names(schemas: dict[str, Any], model: str) -> None:
    env = schemas[model]["properties"]["env"]
    assert env["propertyNames"] == {"pattern": ENV_NAME_PATTERN, "maxLength": 256}
    assert env["additionalProperties"] == {"type": "string", "maxLength": 4096}
    assert "patternProperties" not in env


@pytest.mark.parametrize("model", ["FunctionCreate", "FunctionPatch"])
def test_image_has_the_reference_pattern(schemas: dict[str, Any], model: str) -> None:
    assert schemas[model]["properties"]["image"]["pattern"] == IMAGE_REFERENCE_PATTERN


async def test_an_env_name_outside_the_pattern_is_refused(
    client: httpx.AsyncClient, alice: User
) -> None:
    body = {"name": "env", "image": "acme/fn:1", "env": {"1BAD": "x"}}
    response = await client.post("/registry/functions", json=body, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:3] == ["body", "env", "1BAD"]


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/registry/functions/hello%0A", None),
        ("GET", "/registry/retrieve?name=hello%0A", None),
        ("POST", "/registry/functions", {"name": "hello\n", "image": "acme/fn:1"}),
        ("PATCH", "/registry/functions/hello", {"name": "hello\n"}),
    ],
)
async def test_a_name_with_a_trailing_newline_is_refused(
    client: httpx.AsyncClient, alice: User, method: str, url: str, body: Any
) -> None:
    """The whole value must match the name pattern (``$`` is the end of the value)."""
    await client.post("/registry/functions", json=function_body(), headers=alice.headers)
    response = await client.request(method, url, json=body, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
