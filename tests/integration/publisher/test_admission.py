"""Stream admission: the EXECUTIONS stream's limits are the in-flight limits (429 beyond them),
and capacity returns as soon as a spawner acks."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from faas_common.contract import EXECUTIONS_STREAM, executions_stream_config
from tests.integration.publisher.conftest import SettingsFactory
from tests.integration.publisher.helpers import (
    open_store,
    publisher,
    register_new,
    stream_depth,
    wait_for_depth,
)
from tests.integration.publisher.spawner import FakeSpawner
from tests.unit.publisher.factories import PUBLISH, publish_body
from tests.unit.registry.factories import User


async def test_the_stream_is_created_with_the_configured_limits(
    js: JetStreamContext, settings_for: SettingsFactory
) -> None:
    async with publisher(settings_for(max_in_flight=7, max_in_flight_per_user=3)):
        info = await js.stream_info(EXECUTIONS_STREAM)

    assert info.config.max_msgs == 7
    assert info.config.max_msgs_per_subject == 3
    assert info.config.max_age == 3600.0  # JOB_MAX_AGE_SECONDS: a backstop for unsettled jobs


async def test_an_existing_stream_gets_the_configured_max_age(
    js: JetStreamContext, settings_for: SettingsFactory
) -> None:
    settings = settings_for()
    stale = executions_stream_config(settings)
    stale.max_age = 0  # no limit: an unsettled job would hold its slot forever
    stale.duplicate_window = 120.0
    await js.add_stream(config=stale)
    assert (await js.stream_info(EXECUTIONS_STREAM)).config.max_age == 0

    async with publisher(settings_for(job_max_age_seconds=120, async_queue_timeout_seconds=60)):
        info = await js.stream_info(EXECUTIONS_STREAM)

    assert info.config.max_age == 120.0


async def test_beyond_max_in_flight_is_429_until_a_spawner_acks(
    nc: NATS, js: JetStreamContext, settings_for: SettingsFactory, alice: User, bob: User
) -> None:
    settings = settings_for(max_in_flight=3, max_in_flight_per_user=3)
    body = publish_body(is_async=True)
    async with publisher(settings) as client:
        await register_new(js, alice.id)
        await register_new(js, bob.id)
        accepted = [
            await client.post(PUBLISH, json=body, headers=user.headers)
            for user in (alice, alice, bob)
        ]
        refused = await client.post(PUBLISH, json=body, headers=bob.headers)
        depth = await stream_depth(js)
        rejected = await client.get(
            f"/publisher/executions/{refused.json()['execution']['execution_id']}",
            headers=bob.headers,
        )

        async with FakeSpawner(nc, js, await open_store(js)) as spawner:
            await wait_for_depth(js, 0)
            again = await client.post(PUBLISH, json=body, headers=bob.headers)

    assert [response.status_code for response in accepted] == [202, 202, 202]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["code"] == "concurrency_limit"
    assert depth == 3
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["error"] == "concurrency_limit"
    assert len(spawner.finished) >= 3
    assert again.status_code == 202


async def test_the_per_user_limit_only_holds_back_that_user(
    js: JetStreamContext, settings_for: SettingsFactory, alice: User, bob: User
) -> None:
    settings = settings_for(max_in_flight=10, max_in_flight_per_user=2)
    body = publish_body(is_async=True)
    async with publisher(settings) as client:
        await register_new(js, alice.id)
        await register_new(js, bob.id)
        alice_calls = [
            await client.post(PUBLISH, json=body, headers=alice.headers) for _ in range(3)
        ]
        bob_calls = [await client.post(PUBLISH, json=body, headers=bob.headers) for _ in range(2)]

    assert [response.status_code for response in alice_calls] == [202, 202, 429]
    assert alice_calls[2].json()["code"] == "concurrency_limit"
    assert [response.status_code for response in bob_calls] == [202, 202]
    assert await stream_depth(js) == 4


async def test_a_sync_call_into_a_full_stream_is_429_at_once(
    js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    settings = settings_for(max_in_flight=1)
    async with publisher(settings) as client:
        await register_new(js, alice.id)
        first = await client.post(PUBLISH, json=publish_body(is_async=True), headers=alice.headers)
        second = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)

    assert first.status_code == 202
    assert second.status_code == 429
    assert second.json()["execution"]["status"] == "rejected"
    assert "server-timing" in second.headers
