"""registry-service app factory: ``create_app(settings)``; the lifespan owns every connection.

Start-up, in order: token verifier (fails at once without ``JWT_PUBLIC_KEY_FILE`` or
``JWT_JWKS_URL``), database + migrations, NATS + the ``functions`` KV bucket, the
``revocations`` bucket watched into memory (the verifier honours it), reconciliation of the
bucket with the database, then the background tasks that reconcile them again every
``REGISTRY_RECONCILE_INTERVAL_SECONDS`` and delete the functions of deleted accounts. Shutdown
runs it backwards (the tasks are cancelled, NATS drains, the engine is disposed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from faas_common.contract import FUNCTIONS_BUCKET
from faas_common.db import make_engine, make_sessionmaker, migrate, ping
from faas_common.health import health_router
from faas_common.http import create_service_app
from faas_common.nats import ensure_kv, open_nats
from faas_common.revocation import RevocationList, open_revocations
from faas_common.security import open_token_verifier
from registry_service import admission as admission_module
from registry_service import service
from registry_service.accounts import AccountPurger
from registry_service.admission import Admission, HostResolver
from registry_service.catalog import FunctionCatalog, NatsFunctionCatalog
from registry_service.config import RegistrySettings
from registry_service.router import aliases, router

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_registry"


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    # wait() rather than awaiting the task: a cancellation of the caller itself still propagates.
    await asyncio.wait([task])


def admission_from(settings: RegistrySettings, resolver: HostResolver) -> Admission:
    return Admission(
        policy=settings.images,
        registry_allow=settings.registry_allow,
        resolver=resolver,
        resolve_timeout=settings.resolve_timeout_seconds,
        max_env_bytes=settings.max_env_bytes,
        max_functions=settings.max_functions_per_user,
    )


def create_app(
    settings: RegistrySettings | None = None,
    *,
    catalog: FunctionCatalog | None = None,
    resolver: HostResolver | None = None,
) -> FastAPI:
    """The registry app. ``catalog`` replaces the NATS KV catalog (unit tests pass a fake);
    ``resolver`` the system's name resolution of image registry hosts (tests pass a fake)."""
    settings = settings or RegistrySettings()
    admission = admission_from(settings, resolver or admission_module.system_resolver)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            verifier = await open_token_verifier(settings, stack, service="registry-service")

            engine = make_engine(settings.database_url)
            stack.push_async_callback(engine.dispose)
            await migrate(engine, script_location=MIGRATIONS, version_table=VERSION_TABLE)
            sessionmaker = make_sessionmaker(engine)

            function_catalog = catalog
            revocations: RevocationList | None = None
            if function_catalog is None:
                nc, on_reconnect = await open_nats(
                    stack,
                    settings.nats_servers,
                    name="registry-service",
                    connect_timeout=settings.nats_connect_timeout,
                )
                js = nc.jetstream(timeout=settings.kv_timeout)
                kv = await ensure_kv(
                    js,
                    FUNCTIONS_BUCKET,
                    replicas=settings.nats_replicas,
                    max_bytes=settings.functions_max_bytes,
                )
                function_catalog = NatsFunctionCatalog(nc, kv, timeout=settings.kv_timeout)
                revocations = await open_revocations(
                    nc, js, stack, settings, on_reconnect=on_reconnect
                )
                verifier.honour(revocations)

            async with sessionmaker() as session:
                await service.reconcile(session, function_catalog)
            if settings.reconcile_interval_seconds > 0:
                # Pushed last, so stopped first: before NATS drains and the engine is disposed.
                reconciler = asyncio.create_task(
                    service.reconcile_periodically(
                        sessionmaker,
                        function_catalog,
                        interval=settings.reconcile_interval_seconds,
                    ),
                    name="registry-reconcile",
                )
                stack.push_async_callback(_cancel, reconciler)
            if revocations is not None:
                # Deleted accounts lose their functions (see registry_service.accounts).
                purger = AccountPurger(sessionmaker, function_catalog)
                revocations.listeners.append(purger.notice)
                for user_id in revocations.deleted_users():
                    purger.notice(user_id)
                purger.start()
                stack.push_async_callback(purger.stop)

            app.state.settings = settings
            app.state.engine = engine
            app.state.sessionmaker = sessionmaker
            app.state.catalog = function_catalog
            app.state.admission = admission
            app.state.token_verifier = verifier
            yield

    async def database_ready() -> None:
        await ping(app.state.engine)

    async def nats_ready() -> None:
        function_catalog: FunctionCatalog = app.state.catalog
        await function_catalog.ready()

    app = create_service_app(
        title="registry-service",
        prefix="/registry",
        lifespan=lifespan,
        routers=[
            router,
            aliases,
            health_router("/registry", {"database": database_ready, "nats": nats_ready}),
        ],
        max_body_bytes=settings.max_body_bytes,
    )
    return app
