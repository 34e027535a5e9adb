"""Execution ids are matched whole: an id with anything after it (a trailing newline, which a
``$`` anchor lets through) names no execution."""

from __future__ import annotations

import time

import pytest
from nats.js import JetStreamContext

from faas_common.contract import ExecutionRecord
from faas_common.executions import ExecutionStore
from tests.integration.publisher.conftest import SettingsFactory
from tests.integration.publisher.helpers import publisher
from tests.unit.registry.factories import User


@pytest.mark.parametrize("suffix", ["%0A", "%0D%0A", "%09", "%20"])
async def test_an_id_with_a_trailing_character_is_not_found(
    js: JetStreamContext, settings_for: SettingsFactory, alice: User, suffix: str
) -> None:
    store = await ExecutionStore.open(js, replicas=1, ttl_seconds=3600)
    record = ExecutionRecord(
        execution_id="abc", function="hello", status="succeeded", created_at=time.time()
    )
    await store.create(alice.id, record)
    async with publisher(settings_for()) as client:
        found = await client.get("/publisher/executions/abc", headers=alice.headers)
        assert found.status_code == 200
        assert found.json()["execution_id"] == "abc"

        response = await client.get(f"/publisher/executions/abc{suffix}", headers=alice.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "execution_not_found"


async def test_a_function_name_with_a_trailing_newline_is_refused(
    settings_for: SettingsFactory, alice: User
) -> None:
    async with publisher(settings_for()) as client:
        listed = await client.get("/publisher/executions?function=hello%0A", headers=alice.headers)
        assert listed.status_code == 422
        published = await client.post(
            "/publisher/publish", json={"name": "hello\n", "argument": "x"}, headers=alice.headers
        )
        assert published.status_code == 422
        assert published.json()["detail"][0]["loc"] == ["body", "name"]
