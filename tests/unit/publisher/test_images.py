"""The image is judged again at activation, for the caller: a function whose image the policy
no longer admits (or whose registry host is an internal address) is a 403 ``image_not_allowed``
and nothing is queued; the job carries the fully-qualified reference the engine runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.keys import RsaKeys
from tests.unit.publisher.factories import (
    PUBLISH,
    FakeBackends,
    client_for,
    make_settings,
    publish_body,
    running_app,
    snapshot,
)
from tests.unit.registry.factories import User

DIGEST = "sha256:" + "0123456789abcdef" * 4

Publisher = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def publisher(rsa_keys: RsaKeys, fakes: FakeBackends) -> Publisher:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = make_settings(Path(rsa_keys.public_path), result_poll_seconds=0.05, **overrides)
        async with running_app(settings, fakes.backends()) as app, client_for(app) as client:
            yield client

    return start


async def activate(
    client: httpx.AsyncClient, fakes: FakeBackends, user: User, image: str
) -> httpx.Response:
    fakes.catalog.add(snapshot(user.id, "fn", image=image))
    return await client.post(PUBLISH, json=publish_body("fn"), headers=user.headers)


@pytest.mark.parametrize(
    ("image", "engine_reference"),
    [
        ("alice/fn:1", "docker.io/alice/fn:1"),
        ("index.docker.io/alice/fn", "docker.io/alice/fn:latest"),
        (f"alice/fn@{DIGEST}", f"docker.io/alice/fn@{DIGEST}"),
    ],
)
async def test_the_job_carries_the_fully_qualified_reference(
    publisher: Publisher, fakes: FakeBackends, alice: User, image: str, engine_reference: str
) -> None:
    async with publisher(image_policy="namespaced") as client:
        response = await activate(client, fakes, alice, image)

    assert response.status_code == 200, response.text
    [job] = fakes.queue.published
    assert job.function.image == engine_reference


@pytest.mark.parametrize("image", ["bob/secret:1", "busybox", DIGEST, "86207db6"])
async def test_an_image_outside_the_namespace_is_refused_at_activation(
    publisher: Publisher, fakes: FakeBackends, alice: User, image: str
) -> None:
    async with publisher(image_policy="namespaced") as client:
        response = await activate(client, fakes, alice, image)

    assert response.status_code == 403, response.text
    assert response.json()["code"] == "image_not_allowed"
    assert "not allowed" in response.json()["detail"]
    assert fakes.queue.published == []
    assert fakes.records.entries == {}


async def test_the_allow_list_is_honoured_at_activation(
    publisher: Publisher, fakes: FakeBackends, alice: User
) -> None:
    async with publisher(image_policy="namespaced", image_allow="docker.io/library/") as client:
        response = await activate(client, fakes, alice, "busybox:1.36")

    assert response.status_code == 200, response.text
    assert fakes.queue.published[0].function.image == "docker.io/library/busybox:1.36"


async def test_any_hands_image_ids_to_the_engine_unchanged(
    publisher: Publisher, fakes: FakeBackends, alice: User
) -> None:
    async with publisher() as client:
        response = await activate(client, fakes, alice, DIGEST)

    assert response.status_code == 200, response.text
    assert fakes.queue.published[0].function.image == DIGEST


@pytest.mark.parametrize("image", ["127.0.0.1:8091/x:1", "localhost:4222/x", "[::1]:5000/x"])
async def test_an_internal_registry_host_is_refused_at_activation_whatever_the_policy(
    publisher: Publisher, fakes: FakeBackends, alice: User, image: str
) -> None:
    # A function registered before the registry refused such hosts.
    async with publisher() as client:
        response = await activate(client, fakes, alice, image)

    assert response.status_code == 403, response.text
    assert response.json() == {
        "detail": "The function's image names a registry host that is an internal address; "
        "it is not allowed",
        "code": "image_not_allowed",
    }
    assert fakes.queue.published == []


async def test_an_operator_allowed_internal_registry_runs(
    publisher: Publisher, fakes: FakeBackends, alice: User
) -> None:
    async with publisher(image_registry_allow="127.0.0.1:5000") as client:
        response = await activate(client, fakes, alice, "127.0.0.1:5000/team/fn:1")

    assert response.status_code == 200, response.text
    assert fakes.queue.published[0].function.image == "127.0.0.1:5000/team/fn:1"
