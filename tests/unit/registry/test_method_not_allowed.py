"""A method a path does not serve is a 405 whose ``Allow`` names every method it does serve
(each method of a path is its own route)."""

from __future__ import annotations

import httpx
import pytest

from tests.unit.registry.factories import User


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/registry/functions", "GET, POST"),
        ("PUT", "/registry/functions", "GET, POST"),
        ("POST", "/registry/functions/hello", "DELETE, GET, PATCH"),
        ("GET", "/registry/update", "PUT"),
        ("PATCH", "/registry/health", "GET"),
    ],
)
async def test_allow_names_every_method_of_the_path(
    client: httpx.AsyncClient, alice: User, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path, headers=alice.headers)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json() == {"detail": "Method Not Allowed", "code": "method_not_allowed"}
