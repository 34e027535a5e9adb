"""Text the API accepts is text every backend can store: NUL characters are refused (422).

PostgreSQL cannot store U+0000 in a text column, and no process environment can hold it, so
``description`` and env values containing it are validation errors on SQLite and PostgreSQL alike,
and nothing is written anywhere.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.keys import RsaKeys
from tests.unit.registry.factories import (
    FakeCatalog,
    client_for,
    function_body,
    make_settings,
    make_user,
    running_app,
)

NUL_FIELDS: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("description", {"description": "a\x00b"}, ["body", "description"]),
    ("env value", {"env": {"A": "a\x00b"}}, ["body", "env", "A"]),
]


@pytest.mark.parametrize(
    ("fields", "loc"), [pytest.param(fields, loc, id=case) for case, fields, loc in NUL_FIELDS]
)
async def test_nul_characters_are_a_422_on_every_backend(
    database_url: str, rsa_keys: RsaKeys, fields: dict[str, Any], loc: list[Any]
) -> None:
    settings = make_settings(database_url, rsa_keys.public_path)
    alice = make_user(rsa_keys.private_pem, "alice")
    catalog = FakeCatalog()
    async with running_app(settings, catalog) as app, client_for(app) as client:
        created = await client.post(
            "/registry/functions", json=function_body("other", **fields), headers=alice.headers
        )
        registered = await client.post(
            "/registry/register",
            json={"name": "seed", "payload": "hello", **fields},
            headers=alice.headers,
        )
        kept = await client.post("/registry/functions", json=function_body(), headers=alice.headers)
        assert kept.status_code == 201, kept.text
        entries = dict(catalog.entries)
        patched = await client.patch(
            "/registry/functions/hello", json=fields, headers=alice.headers
        )
        updated = await client.put(
            "/registry/update", json={"name": "hello", **fields}, headers=alice.headers
        )

        for response in (created, registered, patched, updated):
            assert response.status_code == 422, response.text
            body = response.json()
            assert body["code"] == "validation_error"
            assert loc in [error["loc"] for error in body["detail"]], body["detail"]
        listed = await client.get("/registry/functions", headers=alice.headers)
        assert listed.json() == [kept.json()]
        assert catalog.entries == entries
