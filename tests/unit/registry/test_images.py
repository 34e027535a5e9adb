"""Images are a tenant-scoped decision on every route that sets one: the image policy (403
``image_not_allowed``) and internal registry hosts (422 ``image_registry_not_allowed``)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry_service.admission import system_resolver
from registry_service.exceptions import ImageRegistryNotAllowed
from tests.support.keys import RsaKeys
from tests.unit.registry.factories import (
    FakeCatalog,
    FakeResolver,
    User,
    client_for,
    function_body,
    make_settings,
    running_app,
)

ROUTES = ["create", "register", "patch", "update"]
DIGEST = "sha256:" + "0123456789abcdef" * 4
REGISTRY_SENTENCE = ImageRegistryNotAllowed.detail
SYSTEM_RESOLVER = system_resolver
"""Bound at import, before the session's fixture replaces the module's attribute."""

Registry = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def registry(sqlite_database_url: str, rsa_keys: RsaKeys, catalog: FakeCatalog) -> Registry:
    """``registry(resolver=..., **settings)``: a client of an app with those settings."""

    @asynccontextmanager
    async def start(
        resolver: FakeResolver | None = None, **overrides: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = make_settings(sqlite_database_url, Path(rsa_keys.public_path), **overrides)
        async with running_app(settings, catalog, resolver) as app, client_for(app) as client:
            yield client

    return start


async def set_image(
    client: httpx.AsyncClient, user: User, route: str, image: str, *, first: str
) -> httpx.Response:
    """Set ``image`` through ``route``; ``patch`` and ``update`` change a function created with
    the image ``first``."""
    if route == "create":
        body = function_body("fn", image=image)
        return await client.post("/registry/functions", json=body, headers=user.headers)
    if route == "register":
        body = {"name": "fn", "payload": image}
        return await client.post("/registry/register", json=body, headers=user.headers)
    created = await client.post(
        "/registry/functions", json=function_body("fn", image=first), headers=user.headers
    )
    assert created.status_code == 201, created.text
    if route == "patch":
        return await client.patch(
            "/registry/functions/fn", json={"image": image}, headers=user.headers
        )
    body = {"name": "fn", "payload": image}
    return await client.put("/registry/update", json=body, headers=user.headers)


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


# --- IMAGE_POLICY=namespaced ------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "image", ["alice/fn:1", "docker.io/alice/fn:1", "index.docker.io/alice/fn:latest"]
)
async def test_namespaced_accepts_the_users_namespace_in_every_spelling(
    registry: Registry, alice: User, route: str, image: str
) -> None:
    async with registry(image_policy="namespaced") as client:
        response = await set_image(client, alice, route, image, first="alice/base:1")

    assert response.status_code in (200, 201), response.text
    assert response.json()["image"] == image


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "image",
    ["bob/secret:1", "docker.io/bob/secret", "index.docker.io/bob/secret:latest", "busybox"],
)
async def test_namespaced_refuses_another_namespace_with_403(
    registry: Registry, alice: User, catalog: FakeCatalog, route: str, image: str
) -> None:
    async with registry(image_policy="namespaced") as client:
        response = await set_image(client, alice, route, image, first="alice/base:1")
        kept = await client.get("/registry/functions", headers=alice.headers)

    assert_refused(response, 403, "image_not_allowed")
    assert image in response.json()["detail"]
    assert "alice/..." in response.json()["detail"]
    assert [function["image"] for function in kept.json()] == (
        [] if route in ("create", "register") else ["alice/base:1"]
    )
    snapshot = catalog.snapshot(alice.id, "fn")
    assert snapshot is None or snapshot.image == "alice/base:1"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("image", [DIGEST, "sha256:86207db6", "86207db6f948"])
async def test_namespaced_refuses_bare_image_ids(
    registry: Registry, alice: User, route: str, image: str
) -> None:
    async with registry(image_policy="namespaced") as client:
        response = await set_image(client, alice, route, image, first="alice/base:1")

    assert_refused(response, 403, "image_not_allowed")
    assert response.json()["detail"].startswith("Image ids are not allowed")


async def test_the_allow_list_admits_the_operators_prefixes(
    registry: Registry, alice: User
) -> None:
    async with registry(image_policy="namespaced", image_allow="docker.io/library/") as client:
        allowed = await client.post(
            "/registry/functions",
            json=function_body("a", image="busybox:1.36"),
            headers=alice.headers,
        )
        refused = await client.post(
            "/registry/functions", json=function_body("b", image="bob/x"), headers=alice.headers
        )

    assert allowed.status_code == 201, allowed.text
    assert_refused(refused, 403, "image_not_allowed")


async def test_namespaced_registries_are_docker_hub_plus_image_registries(
    registry: Registry, alice: User
) -> None:
    image = "registry.example.com/alice/fn:1"
    body = function_body("fn", image=image)
    async with registry(image_policy="namespaced") as client:
        without = await client.post("/registry/functions", json=body, headers=alice.headers)
    async with registry(
        image_policy="namespaced", image_registries="registry.example.com"
    ) as client:
        listed = await client.post("/registry/functions", json=body, headers=alice.headers)

    assert_refused(without, 403, "image_not_allowed")
    assert listed.status_code == 201, listed.text


async def test_any_is_the_default_and_admits_every_namespace(
    registry: Registry, alice: User
) -> None:
    async with registry() as client:
        response = await client.post(
            "/registry/functions", json=function_body(image="bob/secret:1"), headers=alice.headers
        )

    assert response.status_code == 201, response.text


# --- Internal registry hosts ------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "image",
    [
        "127.0.0.1:8091/x:1",
        "localhost:4222/x",
        "10.0.0.8:5000/alice/x",
        "169.254.169.254/latest/x",
        "[::1]:5000/x",
        "2130706433:8091/x",
    ],
)
@pytest.mark.parametrize("policy", ["any", "namespaced"])
async def test_internal_registry_hosts_are_refused_with_422_whatever_the_policy(
    registry: Registry, alice: User, route: str, image: str, policy: str
) -> None:
    async with registry(image_policy=policy) as client:
        response = await set_image(client, alice, route, image, first="alice/base:1")

    assert_refused(response, 422, "image_registry_not_allowed")
    assert response.json()["detail"] == REGISTRY_SENTENCE


async def test_a_name_that_resolves_to_an_internal_address_is_refused(
    registry: Registry, alice: User
) -> None:
    resolver = FakeResolver(
        answers={
            "registry.internal.example": ["10.0.0.5"],
            "mixed.example": ["93.184.215.14", "fd00::5"],
            "public.example": ["93.184.215.14", "2606:4700::1111"],
        }
    )
    async with registry(resolver=resolver) as client:
        internal, mixed, public = [
            await client.post(
                "/registry/functions",
                json=function_body(name, image=f"{host}/team/fn:1"),
                headers=alice.headers,
            )
            for name, host in [
                ("a", "registry.internal.example"),
                ("b", "mixed.example:5000"),
                ("c", "public.example"),
            ]
        ]

    assert_refused(internal, 422, "image_registry_not_allowed")
    assert_refused(mixed, 422, "image_registry_not_allowed")
    assert public.status_code == 201, public.text
    assert resolver.asked == ["registry.internal.example", "mixed.example", "public.example"]


async def test_a_name_that_does_not_resolve_is_refused_with_the_same_sentence(
    registry: Registry, alice: User
) -> None:
    resolver = FakeResolver(answers={"nowhere.example": []})
    async with registry(resolver=resolver) as client:
        response = await client.post(
            "/registry/functions",
            json=function_body(image="nowhere.example/team/fn:1"),
            headers=alice.headers,
        )

    assert_refused(response, 422, "image_registry_not_allowed")
    assert response.json()["detail"] == REGISTRY_SENTENCE


async def test_docker_hub_references_resolve_nothing(registry: Registry, alice: User) -> None:
    resolver = FakeResolver()
    async with registry(resolver=resolver) as client:
        for name, image in [("a", "busybox"), ("b", "docker.io/alice/x"), ("c", "alice/y:1")]:
            response = await client.post(
                "/registry/functions", json=function_body(name, image=image), headers=alice.headers
            )
            assert response.status_code == 201, response.text

    assert resolver.asked == []


async def test_the_operator_allows_an_internal_registry_by_host_and_port(
    registry: Registry, alice: User
) -> None:
    async with registry(image_registry_allow="127.0.0.1:5000, localhost") as client:
        allowed = [
            await client.post(
                "/registry/functions", json=function_body(name, image=image), headers=alice.headers
            )
            for name, image in [("a", "127.0.0.1:5000/x:1"), ("b", "localhost:4000/x")]
        ]
        other_port = await client.post(
            "/registry/functions",
            json=function_body("c", image="127.0.0.1:5001/x:1"),
            headers=alice.headers,
        )

    assert [response.status_code for response in allowed] == [201, 201]
    assert_refused(other_port, 422, "image_registry_not_allowed")


async def test_a_bad_allow_list_entry_stops_the_service_at_start_up(
    sqlite_database_url: str, rsa_keys: RsaKeys
) -> None:
    with pytest.raises(ValueError, match="IMAGE_ALLOW entry 'library/'"):
        make_settings(sqlite_database_url, Path(rsa_keys.public_path), image_allow="library/")


async def test_an_allow_list_entry_that_ends_mid_component_stops_the_service_at_start_up(
    sqlite_database_url: str, rsa_keys: RsaKeys
) -> None:
    entry = "registry.example.com/shared"
    with pytest.raises(ValueError, match=f"IMAGE_ALLOW entry {entry!r} must end with '/'"):
        make_settings(sqlite_database_url, Path(rsa_keys.public_path), image_allow=entry)


class HangingResolver(FakeResolver):
    """A resolver whose answer never comes."""

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_name_without_an_answer_in_time_is_refused(registry: Registry, alice: User) -> None:
    resolver = HangingResolver()
    async with registry(resolver=resolver, resolve_timeout_seconds=0.05) as client:
        response = await client.post(
            "/registry/functions",
            json=function_body(image="slow.example/team/fn:1"),
            headers=alice.headers,
        )

    assert_refused(response, 422, "image_registry_not_allowed")
    assert resolver.asked == ["slow.example"]


async def test_the_system_resolver_reads_the_hosts_own_resolver() -> None:
    # The real one (the test session replaces the module's, so no name reaches a DNS server);
    # localhost is answered from the host's own files.
    addresses = await SYSTEM_RESOLVER("localhost")

    assert addresses
    assert all(ipaddress.ip_address(address).is_loopback for address in addresses)
