"""auth-service app factory: ``create_app(settings)``; the lifespan owns every connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from auth_service.config import AuthSettings
from auth_service.keys import load_private_key
from auth_service.router import router
from auth_service.service import PasswordHasher, TokenIssuer
from faas_common.db import make_engine, make_sessionmaker, migrate, ping
from faas_common.health import health_router
from faas_common.http import create_service_app
from faas_common.security import TokenVerifier

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_auth"


def create_app(settings: AuthSettings | None = None) -> FastAPI:
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
            issuer = TokenIssuer(
                private_key,
                issuer=settings.jwt_issuer,
                consumer_key=settings.jwt_consumer_key,
                ttl_seconds=settings.token_ttl_seconds,
            )
            app.state.settings = settings
            app.state.engine = engine
            app.state.sessionmaker = make_sessionmaker(engine)
            app.state.hasher = PasswordHasher()
            app.state.issuer = issuer
            app.state.token_verifier = TokenVerifier(
                issuer=settings.jwt_issuer,
                consumer_key=settings.jwt_consumer_key,
                public_key=issuer.public_key,
            )
            yield

    async def database_ready() -> None:
        await ping(app.state.engine)

    app = create_service_app(
        title="auth-service",
        prefix="/auth",
        lifespan=lifespan,
        routers=[router, health_router("/auth", {"database": database_ready})],
        max_body_bytes=settings.max_body_bytes,
    )
    return app
