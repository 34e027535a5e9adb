"""Bodies built to break a JSON API: every one is a 4xx JSON answer, never a 500."""

from __future__ import annotations

import httpx
import pytest

HOSTILE_BODIES = {
    "nan": '{"username": NaN, "password": "wonderland-42"}',
    "infinity": '{"username": "someone", "password": Infinity}',
    "lone-surrogate": '{"username": "\\ud800abc", "password": "wonderland-42"}',
    "deep-nesting": "[" * 100_000,
    "huge-integer": '{"username": ' + "1" * 5000 + ', "password": "wonderland-42"}',
    "not-utf8": b'{"username": "\xff\xfe", "password": "wonderland-42"}',
    "array": '[{"username": "someone", "password": "wonderland-42"}]',
    "string": '"username"',
    "empty": "",
}


@pytest.mark.parametrize("path", ["/auth/register", "/auth/login"])
@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
async def test_hostile_body_is_a_json_4xx(
    client: httpx.AsyncClient, path: str, body: str | bytes
) -> None:
    response = await client.post(
        path, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert 400 <= response.status_code < 500, response.text
    payload = response.json()
    assert set(payload) >= {"detail", "code"}


async def test_login_with_a_name_no_account_can_have_is_a_plain_401(
    client: httpx.AsyncClient,
) -> None:
    for username in ("a\u0000b", "x" * 1000, "spaces are not allowed"):
        response = await client.post(
            "/auth/login", json={"username": username, "password": "wonderland-42"}
        )
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_credentials"
