"""Two publisher instances on one NATS: each receives only its own replies."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from tests.integration.publisher.conftest import SettingsFactory
from tests.integration.publisher.helpers import open_store, publisher, register_new
from tests.integration.publisher.spawner import FakeSpawner
from tests.unit.publisher.factories import PUBLISH, publish_body
from tests.unit.registry.factories import User


async def test_each_publisher_only_takes_its_own_replies(
    nc: NATS, js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    seen: list[str] = []

    async def spy(msg: Msg) -> None:
        seen.append(msg.subject)

    await nc.subscribe("faas.reply.>", cb=spy)
    await register_new(js, alice.id)
    async with (
        publisher(settings_for(instance_id="pub-a")) as first,
        publisher(settings_for(instance_id="pub-b")) as second,
        FakeSpawner(nc, js, await open_store(js), decoy_instances=("pub-a", "pub-b")) as spawner,
    ):
        answers = await asyncio.gather(
            *(
                client.post(PUBLISH, json=publish_body(argument=argument), headers=alice.headers)
                for client, argument in (
                    (first, "for a"),
                    (second, "for b"),
                    (first, "for a again"),
                    (second, "for b again"),
                )
            )
        )

        await nc.flush()
        for _ in range(50):
            if len(seen) >= 8:
                break
            await asyncio.sleep(0.02)

    assert [answer.status_code for answer in answers] == [200, 200, 200, 200]
    # Every call got its own result, never the decoy sent to the other instance.
    assert [answer.json()["result"] for answer in answers] == [
        "for a",
        "for b",
        "for a again",
        "for b again",
    ]
    replies_to = {job.execution_id: job.reply_subject for job in spawner.finished}
    for answer, instance in zip(answers, ("pub-a", "pub-b", "pub-a", "pub-b"), strict=True):
        execution_id = answer.json()["execution_id"]
        assert replies_to[execution_id] == f"faas.reply.{instance}.{execution_id}"
    # Each execution got a decoy on the other instance's subject, and the real reply on its own.
    for answer, own, other in zip(
        answers, ("pub-a", "pub-b") * 2, ("pub-b", "pub-a") * 2, strict=True
    ):
        execution_id = answer.json()["execution_id"]
        assert f"faas.reply.{own}.{execution_id}" in seen
        assert f"faas.reply.{other}.{execution_id}" in seen
    assert len(seen) == 8
