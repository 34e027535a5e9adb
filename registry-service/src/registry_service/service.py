"""Domain logic of registry-service: function CRUD kept in step with the KV catalog.

Every change follows one order, so the database and the catalog never disagree silently:

1. the change is flushed inside a transaction; an update or delete first locks what it changes
   (``repository.get(for_update=True)``), so concurrent writers of a function queue behind each
   other and each one builds on the last committed value;
2. the catalog is written; if that fails the write is undone (it may have been applied all the
   same, e.g. a put that timed out after the server stored it), then the transaction is rolled
   back (503, nothing changed);
3. the transaction is committed; if that fails the catalog write is undone (503).

An undo is best effort: it fails when the catalog is unreachable, and an undo after a failed
commit may land after a concurrent writer's change. Those windows, and a commit that succeeded on
the server but whose answer was lost, are closed by ``reconcile``, which every instance runs at
start-up and then every ``REGISTRY_RECONCILE_INTERVAL_SECONDS`` (``reconcile_periodically``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from faas_common.contract import FunctionSnapshot, function_key
from registry_service import repository
from registry_service.admission import Admission
from registry_service.catalog import FunctionCatalog
from registry_service.exceptions import DatabaseUnavailable, FunctionNotFound, QuotaExceeded
from registry_service.models import Function, utc_now

logger = logging.getLogger("registry.service")


@dataclass(frozen=True, slots=True)
class FunctionChanges:
    """The fields an update sets; ``None`` leaves a field as it is."""

    description: str | None = None
    image: str | None = None
    timeout_seconds: int | None = None
    memory_mb: int | None = None
    env: Mapping[str, str] | None = None

    def values(self) -> dict[str, Any]:
        changed: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                changed[field.name] = dict(value) if field.name == "env" else value
        return changed


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    written: int
    deleted: int
    unchanged: int


def snapshot_of(function: Function) -> FunctionSnapshot:
    """The catalog value of ``function`` (deterministic: env keys sorted)."""
    return FunctionSnapshot(
        id=function.id,
        owner_id=function.owner_id,
        name=function.name,
        image=function.image,
        timeout_seconds=function.timeout_seconds,
        memory_mb=function.memory_mb,
        env=dict(sorted(function.env.items())),
        updated_at=function.updated_at.isoformat(),
    )


async def _undo(undo: Callable[[], Awaitable[None]], *, key: str, after: str) -> None:
    """Best-effort undo of a catalog write; a failure is logged for ``reconcile`` to repair."""
    try:
        await undo()
    except Exception:
        logger.warning(
            "%s and undoing the catalog write failed too: the catalog may disagree with the "
            "database until the next reconciliation",
            after,
            extra={"key": key},
            exc_info=True,
        )


async def _commit_through(
    session: AsyncSession,
    *,
    key: str,
    write: Callable[[], Awaitable[None]],
    undo: Callable[[], Awaitable[None]],
) -> None:
    """Write the catalog, then commit the flushed change; undo and roll back on failure.

    A failed write is undone before the rollback, while the transaction still holds its locks:
    no concurrent writer of the function can have written the catalog in between.
    """
    try:
        await write()
    except Exception:
        try:
            await _undo(undo, key=key, after="the catalog write failed")
        finally:
            await session.rollback()
        raise
    except BaseException:
        await session.rollback()
        raise
    try:
        await session.commit()
    except BaseException as exc:
        await session.rollback()
        await _undo(undo, key=key, after="the commit failed")
        if isinstance(exc, SQLAlchemyError):
            raise DatabaseUnavailable() from exc
        raise


async def create_function(
    session: AsyncSession,
    catalog: FunctionCatalog,
    admission: Admission,
    *,
    owner_id: str,
    username: str,
    name: str,
    description: str,
    image: str,
    timeout_seconds: int,
    memory_mb: int,
    env: Mapping[str, str],
) -> Function:
    """Create a function once ``admission`` accepts its image and environment and the owner is
    under ``MAX_FUNCTIONS_PER_USER`` (counted under the owner's lock, so concurrent creates
    cannot pass it)."""
    await admission.check(username=username, image=image, env=env)
    await repository.lock_owner(session, owner_id=owner_id)
    if await repository.count_for_owner(session, owner_id=owner_id) >= admission.max_functions:
        await session.rollback()
        raise QuotaExceeded(
            f"You already have {admission.max_functions} functions, the most one user may "
            "have: delete one first"
        )
    function = await repository.add(
        session,
        owner_id=owner_id,
        name=name,
        description=description,
        image=image,
        timeout_seconds=timeout_seconds,
        memory_mb=memory_mb,
        env=env,
    )
    snapshot = snapshot_of(function)
    key = function_key(owner_id, name)
    await _commit_through(
        session,
        key=key,
        write=lambda: catalog.put(snapshot),
        undo=lambda: catalog.delete(key),
    )
    return function


async def list_functions(session: AsyncSession, *, owner_id: str) -> list[Function]:
    return await repository.list_for_owner(session, owner_id=owner_id)


async def get_function(session: AsyncSession, *, owner_id: str, name: str) -> Function:
    function = await repository.get(session, owner_id=owner_id, name=name)
    if function is None:
        raise FunctionNotFound()
    return function


async def update_function(
    session: AsyncSession,
    catalog: FunctionCatalog,
    admission: Admission,
    *,
    owner_id: str,
    username: str,
    name: str,
    changes: FunctionChanges,
) -> Function:
    await admission.check(username=username, image=changes.image, env=changes.env)
    function = await repository.get(session, owner_id=owner_id, name=name, for_update=True)
    if function is None:
        raise FunctionNotFound()
    values = {
        field: value
        for field, value in changes.values().items()
        if getattr(function, field) != value
    }
    if not values:
        # Nothing to change: end the transaction (releasing the row lock) without touching the
        # catalog. A commit, not a rollback: a rollback would expire the loaded function.
        await session.commit()
        return function
    before = snapshot_of(function)
    await repository.change(session, function=function, values={**values, "updated_at": utc_now()})
    after = snapshot_of(function)
    await _commit_through(
        session,
        key=function_key(owner_id, name),
        write=lambda: catalog.put(after),
        undo=lambda: catalog.put(before),
    )
    return function


async def delete_function(
    session: AsyncSession, catalog: FunctionCatalog, *, owner_id: str, name: str
) -> None:
    function = await repository.get(session, owner_id=owner_id, name=name, for_update=True)
    if function is None:
        raise FunctionNotFound()
    before = snapshot_of(function)
    key = function_key(owner_id, name)
    await repository.remove(session, function=function)
    await _commit_through(
        session,
        key=key,
        write=lambda: catalog.delete(key),
        undo=lambda: catalog.put(before),
    )


def _wanted(functions: Iterable[Function]) -> dict[str, FunctionSnapshot]:
    return {
        function_key(function.owner_id, function.name): snapshot_of(function)
        for function in functions
    }


async def reconcile(session: AsyncSession, catalog: FunctionCatalog) -> ReconcileReport:
    """Make the catalog exactly the database: write every function, delete every other key.

    Runs while holding the lock that every database write waits for, so no create, update or
    delete is half done (flushed and in the catalog but not committed) while it compares.
    """
    try:
        await repository.lock_all(session)
        wanted = _wanted(await repository.list_all(session))
        current = await catalog.contents()
        written = deleted = 0
        for key, snapshot in wanted.items():
            if current.get(key) != snapshot.model_dump_json().encode():
                await catalog.put(snapshot)
                written += 1
        for key in current.keys() - wanted.keys():
            await catalog.delete(key)
            deleted += 1
    finally:
        await session.rollback()  # releases the lock
    report = ReconcileReport(written=written, deleted=deleted, unchanged=len(wanted) - written)
    logger.info(
        "functions catalog reconciled",
        extra={"written": written, "deleted": deleted, "unchanged": report.unchanged},
    )
    return report


async def catalog_differs(session: AsyncSession, catalog: FunctionCatalog) -> bool:
    """Whether the catalog and the database disagree, compared without locking anything.

    A write in flight (in the catalog, not yet committed) shows as a difference; ``reconcile``
    then sorts it out under its lock. A disagreement this misses because a write changed both
    sides between the two reads is found by the next comparison.
    """
    try:
        wanted = {
            key: snapshot.model_dump_json().encode()
            for key, snapshot in _wanted(await repository.list_all(session)).items()
        }
    finally:
        await session.rollback()
    return await catalog.contents() != wanted


async def reconcile_periodically(
    sessions: async_sessionmaker[AsyncSession], catalog: FunctionCatalog, *, interval: float
) -> None:
    """Every ``interval`` seconds, reconcile when the catalog and the database disagree.

    Runs until cancelled. The comparison takes no lock, so writes wait only when there is
    something to repair; a pass that fails (NATS or the database unavailable) is logged and the
    next one tries again.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            async with sessions() as session:
                if not await catalog_differs(session, catalog):
                    continue
                report = await reconcile(session, catalog)
        except Exception as exc:
            logger.warning(
                "periodic reconciliation of the functions catalog failed: %s", exc, exc_info=True
            )
            continue
        if report.written or report.deleted:
            logger.warning(
                "periodic reconciliation repaired the functions catalog",
                extra={"written": report.written, "deleted": report.deleted},
            )
