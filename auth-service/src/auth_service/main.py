"""auth-service app factory: ``create_app(settings)``; the lifespan owns every connection.

Start-up, in order: the signing key, database + migrations, NATS + the ``revocations`` bucket
(its max age set to the token lifetime plus a margin) watched into memory (the service's own
verifier honours it, and logout and account deletion write it), then the routes. Shutdown runs
it backwards (the watch stops, NATS drains, the hash threads and the engine go).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Protocol

from fastapi import FastAPI

from auth_service.config import AuthSettings
from auth_service.keys import load_private_key
from auth_service.router import router
from auth_service.service import Clock, PasswordHasher, Revocations, TokenIssuer
from faas_common.contract import revocation_max_age
from faas_common.db import make_engine, make_sessionmaker, migrate, ping
from faas_common.health import health_router
from faas_common.http import create_service_app
from faas_common.nats import open_nats
from faas_common.revocation import RevocationList, open_revocations
from faas_common.security import RevocationCheck, TokenVerifier

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_auth"
SERVICE = "auth-service"


class RevocationBackend(Revocations, RevocationCheck, Protocol):
    """What auth-service needs of the revocations bucket: it writes and honours it."""

    @property
    def loaded(self) -> bool: ...


async def open_nats_revocations(settings: AuthSettings, stack: AsyncExitStack) -> RevocationList:
    nc, on_reconnect = await open_nats(
        stack, settings.nats_servers, name=SERVICE, connect_timeout=settings.nats_connect_timeout
    )
    return await open_revocations(
        nc,
        nc.jetstream(),
        stack,
        settings,
        on_reconnect=on_reconnect,
        max_age=revocation_max_age(settings.token_ttl_seconds),
    )


def create_app(
    settings: AuthSettings | None = None,
    *,
    revocations: RevocationBackend | None = None,
    clock: Clock = time.time,
) -> FastAPI:
    """The auth app. ``revocations`` replaces the NATS bucket (unit tests pass an in-memory
    one); ``clock`` (epoch seconds) drives login throttling and token times."""
    settings = settings or AuthSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            private_key = load_private_key(
                settings.private_key_file, generate=settings.generate_keys
            )
            engine = make_engine(settings.database_url)
            stack.push_async_callback(engine.dispose)
            await migrate(engine, script_location=MIGRATIONS, version_table=VERSION_TABLE)
            hasher = PasswordHasher(concurrency=settings.hash_concurrency)
            stack.callback(hasher.close)
            active = revocations or await open_nats_revocations(settings, stack)
            issuer = TokenIssuer(
                private_key,
                issuer=settings.jwt_issuer,
                consumer_key=settings.jwt_consumer_key,
                ttl_seconds=settings.token_ttl_seconds,
                clock=clock,
            )
            verifier = TokenVerifier(
                issuer=settings.jwt_issuer,
                consumer_key=settings.jwt_consumer_key,
                public_key=issuer.public_key,
            )
            verifier.honour(active)
            app.state.settings = settings
            app.state.engine = engine
            app.state.sessionmaker = make_sessionmaker(engine)
            app.state.hasher = hasher
            app.state.issuer = issuer
            app.state.throttle = settings.throttle
            app.state.clock = clock
            app.state.revocations = active
            app.state.token_verifier = verifier
            yield

    async def database_ready() -> None:
        await ping(app.state.engine)

    async def revocations_ready() -> None:
        backend: RevocationBackend = app.state.revocations
        if not backend.loaded:
            raise RuntimeError("the revocation list is not loaded")

    app = create_service_app(
        title=SERVICE,
        prefix="/auth",
        lifespan=lifespan,
        routers=[
            router,
            health_router("/auth", {"database": database_ready, "revocations": revocations_ready}),
        ],
        max_body_bytes=settings.max_body_bytes,
    )
    return app
