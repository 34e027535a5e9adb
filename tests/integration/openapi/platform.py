"""The three HTTP services in one process, for a schemathesis run over their OpenAPI documents.

Each app runs in schemathesis' in-process ASGI transport (an event loop thread of its own; each
lifespan is entered once and left when the platform stops) against a real nats-server and real
PostgreSQL databases. Tokens come from auth-service itself: a real login, or auth-service's own
issuer where the run spends a token per request (logout, account deletion). The publisher's user
owns a function registered through registry-service, so activations reach the ``EXECUTIONS``
stream; a stand-in spawner (``FakeSpawner``, no container) answers every job from a thread of
its own.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import nats
from anyio.from_thread import start_blocking_portal
from fastapi import FastAPI
from schemathesis.python import asgi

from auth_service.config import AuthSettings
from auth_service.main import create_app as create_auth_app
from auth_service.models import User
from auth_service.service import TokenIssuer
from faas_common.executions import ExecutionStore
from publisher_service.main import create_app as create_publisher_app
from registry_service.main import create_app as create_registry_app
from tests.integration.publisher.spawner import FakeSpawner
from tests.support.keys import RsaKeys
from tests.unit.publisher.factories import make_settings as publisher_settings
from tests.unit.registry.factories import make_settings as registry_settings

PASSWORD = "correct-horse-battery"
FUNCTION_NAME = "hello"
"""The name in the OpenAPI examples: the publisher's example activations find this function."""
READY_WITHIN = 15.0


@dataclass(frozen=True)
class Databases:
    auth: str
    registry: str


@dataclass(frozen=True)
class Platform:
    auth: FastAPI
    registry: FastAPI
    publisher: FastAPI
    auth_headers: dict[str, str]
    registry_headers: dict[str, str]
    """A real token of a user with no functions to begin with."""
    publisher_headers: dict[str, str]
    """A real token of the user that owns ``FUNCTION_NAME``."""
    another_token: Callable[[], dict[str, str]]
    """Another token of the ``auth_headers`` user (for a logout)."""
    new_user: Callable[[], dict[str, str]]
    """Registers another user and returns its token (for an account deletion)."""


def build_apps(databases: Databases, nats_url: str, keys: RsaKeys) -> tuple[FastAPI, ...]:
    auth = create_auth_app(
        AuthSettings(
            environment="local",
            database_url=databases.auth,
            private_key_file=keys.private_path,
            generate_keys=False,
            nats_url=nats_url,
            nats_connect_timeout=10.0,
        )
    )
    registry = create_registry_app(
        registry_settings(
            databases.registry, keys.public_path, nats_url=nats_url, nats_connect_timeout=10.0
        )
    )
    publisher = create_publisher_app(
        publisher_settings(
            keys.public_path,
            nats_url=nats_url,
            nats_connect_timeout=10.0,
            nats_timeout=2.0,
            queue_timeout_seconds=5.0,
            reply_grace_seconds=1.0,
            result_poll_seconds=0.2,
            instance_id="openapi",
        )
    )
    return auth, registry, publisher


def _mint(auth: FastAPI, user: dict[str, str]) -> dict[str, str]:
    """A token of a registered user, signed by auth-service's own issuer (as a login would)."""
    issuer: TokenIssuer = auth.state.issuer
    issued = issuer.issue(User(id=user["id"], username=user["username"]))
    return {"Authorization": f"Bearer {issued.token}"}


def _register(client: asgi.ASGIClient, username: str) -> dict[str, str]:
    registered = client.post("/auth/register", json={"username": username, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    user: dict[str, str] = registered.json()
    return user


def _token(client: asgi.ASGIClient, username: str) -> dict[str, str]:
    """A new user's token from a real login."""
    _register(client, username)
    login = client.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def _register_function(client: asgi.ASGIClient, headers: dict[str, str], owner: str) -> None:
    body = {"name": FUNCTION_NAME, "image": f"{owner}/hello:1"}
    created = client.post("/registry/functions", json=body, headers=headers)
    assert created.status_code == 201, created.text


def _wait_for_function(client: asgi.ASGIClient, headers: dict[str, str]) -> None:
    """Until the publisher's function cache has the function and the stand-in spawner answers."""
    deadline = time.monotonic() + READY_WITHIN
    body = {"name": FUNCTION_NAME, "argument": "ready?"}
    while True:
        answer = client.post("/publisher/publish", json=body, headers=headers)
        if answer.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the publisher never ran {FUNCTION_NAME}: {answer.text}")
        time.sleep(0.1)


@contextmanager
def stand_in_spawner(nats_url: str, *, ttl_seconds: int) -> Iterator[None]:
    """``FakeSpawner`` in a thread with its own event loop, answering every job (echo)."""
    with start_blocking_portal() as portal:
        nc = portal.call(lambda: nats.connect(nats_url, connect_timeout=5))
        try:
            store = portal.call(
                lambda: ExecutionStore.open(nc.jetstream(), replicas=1, ttl_seconds=ttl_seconds)
            )
            with portal.wrap_async_context_manager(FakeSpawner(nc, nc.jetstream(), store)):
                yield
        finally:
            portal.call(nc.drain)


def _enter(stack: ExitStack, app: FastAPI) -> asgi.ASGIClient:
    return stack.enter_context(asgi.get_client(app))  # type: ignore[arg-type]


@contextmanager
def running_platform(databases: Databases, nats_url: str, keys: RsaKeys) -> Iterator[Platform]:
    auth, registry, publisher = build_apps(databases, nats_url, keys)
    try:
        with ExitStack() as stack:
            auth_client = _enter(stack, auth)
            registry_client = _enter(stack, registry)
            publisher_client = _enter(stack, publisher)  # creates the stream the spawner pulls
            ttl = publisher.state.settings.execution_ttl_seconds
            stack.enter_context(stand_in_spawner(nats_url, ttl_seconds=ttl))
            owner = "openapi-publisher"
            publisher_headers = _token(auth_client, owner)
            _register_function(registry_client, publisher_headers, owner)
            _wait_for_function(publisher_client, publisher_headers)
            auth_user = _register(auth_client, "openapi-auth")
            numbers = itertools.count()
            yield Platform(
                auth,
                registry,
                publisher,
                auth_headers=_mint(auth, auth_user),
                registry_headers=_token(auth_client, "openapi-registry"),
                publisher_headers=publisher_headers,
                another_token=lambda: _mint(auth, auth_user),
                new_user=lambda: _mint(auth, _register(auth_client, f"openapi-{next(numbers)}")),
            )
    finally:
        asgi.shutdown_lifespans()
