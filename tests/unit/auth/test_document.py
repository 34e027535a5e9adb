"""The username pattern in auth-service's OpenAPI document is what registration accepts: a
client validating against the document refuses exactly the names the service refuses."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from auth_service.schemas import USERNAME_INPUT_PATTERN
from tests.unit.auth.factories import PASSWORD


def unique(stem: str) -> str:
    return f"{stem}{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    ("username", "accepted"),
    [
        (unique("alice"), True),
        (unique("Alice"), True),
        (unique("a.b_c__d--e"), True),
        (unique("a b"), False),
        (unique("a..b"), False),
        (unique("-a"), False),
        (unique("caf\u00e9"), False),
        (unique("a") + "\n", False),
    ],
)
async def test_the_pattern_is_what_registration_accepts(
    client: httpx.AsyncClient, username: str, accepted: bool
) -> None:
    response = await client.post(
        "/auth/register", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == (201 if accepted else 422), response.text
    assert (re.fullmatch(USERNAME_INPUT_PATTERN, username) is not None) is accepted


async def test_the_document_carries_the_pattern(client: httpx.AsyncClient) -> None:
    document = (await client.get("/auth/openapi.json")).json()
    username = document["components"]["schemas"]["Credentials"]["properties"]["username"]
    assert username["pattern"] == USERNAME_INPUT_PATTERN
