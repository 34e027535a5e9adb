"""``MAX_FUNCTIONS_PER_USER`` holds under concurrent creates on SQLite and PostgreSQL: the count
is taken under the owner's lock, so creates racing for the last places cannot pass it."""

from __future__ import annotations

import asyncio

from nats.js.kv import KeyValue

from registry_service.config import RegistrySettings
from tests.unit.registry.factories import User, client_for, function_body, running_app

QUOTA = 5
RACERS = 16


async def test_concurrent_creates_never_pass_the_quota(
    settings: RegistrySettings, kv: KeyValue, alice: User, bob: User
) -> None:
    limited = settings.model_copy(update={"max_functions_per_user": QUOTA})
    async with running_app(limited) as app, client_for(app) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/registry/functions", json=function_body(f"fn{index}"), headers=user.headers
                )
                for index in range(RACERS)
                for user in (alice, bob)
            )
        )
        listed = {
            user.name: await client.get("/registry/functions", headers=user.headers)
            for user in (alice, bob)
        }

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] * (2 * QUOTA) + [403] * (2 * (RACERS - QUOTA)), [
        response.text for response in responses if response.status_code not in (201, 403)
    ]
    assert {name: len(response.json()) for name, response in listed.items()} == {
        "alice": QUOTA,
        "bob": QUOTA,
    }
    assert len(await kv.keys()) == 2 * QUOTA
