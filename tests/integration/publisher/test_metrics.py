"""The publisher's metrics against a real nats-server: 429s by the limit the stream reports,
the jobs in the EXECUTIONS stream and the functions in the cache, as gauges."""

from __future__ import annotations

import asyncio
import time

from nats.js import JetStreamContext

from tests.integration.publisher.conftest import SettingsFactory
from tests.integration.publisher.helpers import publisher, register_new, wait_for_depth
from tests.support.keys import RsaKeys
from tests.support.metrics import sample
from tests.unit.publisher.factories import PUBLISH, publish_body
from tests.unit.registry.factories import User, make_user

REFRESH_WITHIN = 20.0
"""Longer than the stream gauge's refresh interval (5 s), for a loaded machine."""


async def wait_for_sample(name: str, value: float, within: float = REFRESH_WITHIN) -> None:
    deadline = time.monotonic() + within
    while (current := sample(name)) != value:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} is {current}, expected {value}")
        await asyncio.sleep(0.1)


async def test_429s_are_counted_by_the_limit_the_stream_reached(
    js: JetStreamContext, settings_for: SettingsFactory, rsa_keys: RsaKeys, alice: User, bob: User
) -> None:
    carol = make_user(rsa_keys.private_pem, "carol")
    user_limit = sample("faas_admission_rejections_total", {"limit": "user"})
    cluster_limit = sample("faas_admission_rejections_total", {"limit": "cluster"})
    body = publish_body(is_async=True)
    async with publisher(settings_for(max_in_flight=2, max_in_flight_per_user=1)) as client:
        await register_new(js, alice.id)
        await register_new(js, bob.id)
        await register_new(js, carol.id)
        assert (await client.post(PUBLISH, json=body, headers=alice.headers)).status_code == 202
        per_user = await client.post(PUBLISH, json=body, headers=alice.headers)
        assert (await client.post(PUBLISH, json=body, headers=bob.headers)).status_code == 202
        cluster = await client.post(PUBLISH, json=body, headers=carol.headers)  # her first

    assert per_user.status_code == 429
    assert cluster.status_code == 429
    assert sample("faas_admission_rejections_total", {"limit": "user"}) == user_limit + 1
    assert sample("faas_admission_rejections_total", {"limit": "cluster"}) == cluster_limit + 1


async def test_the_stream_jobs_and_the_cached_functions_are_gauges(
    js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    body = publish_body(is_async=True)
    async with publisher(settings_for()) as client:
        await register_new(js, alice.id)
        await register_new(js, alice.id, "other")
        await wait_for_sample("faas_publisher_functions_cached", 2)
        for _ in range(3):
            assert (await client.post(PUBLISH, json=body, headers=alice.headers)).is_success
        await wait_for_depth(js, 3)

        await wait_for_sample("faas_executions_stream_jobs", 3)

    assert sample("faas_publisher_functions_cached") == 0  # the stopped cache is counted no more
