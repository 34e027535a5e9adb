"""Deleted accounts: registry-service deletes their functions.

auth-service marks a deleted account in the ``revocations`` bucket (``user.<user_id>``). Every
registry replica watches that bucket (``faas_common.revocation.RevocationList``, the same watch its
token verifier honours) and hands each deleted account to ``AccountPurger``, which deletes the
user's functions from the database and the ``functions`` bucket (so publishers stop resolving them).

Idempotent across replicas and restarts: replicas purging the same account queue behind the table
lock and the later ones find nothing left; at every start-up the watch delivers every deletion of
the bucket's max age again. A purge that fails (database or NATS down) is retried.

Each account is purged a second time ``second_pass_delay`` seconds later: a create that was
verified just before this replica learnt of the deletion, and committed just after the first
pass, is deleted then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from faas_common.contract import function_key
from registry_service import repository
from registry_service.catalog import FunctionCatalog

logger = logging.getLogger("registry.accounts")


async def delete_owner_functions(
    session: AsyncSession, catalog: FunctionCatalog, *, owner_id: str
) -> int:
    """Delete every function of ``owner_id`` from the catalog and the database; how many."""
    try:
        if not await repository.list_for_owner(session, owner_id=owner_id):
            return 0
        # Under the lock every write waits for, so no update of these functions lands between
        # the catalog deletes and the commit (and reconciliation sees both or neither).
        await repository.lock_all(session)
        functions = await repository.list_for_owner(session, owner_id=owner_id)
        for function in functions:
            await catalog.delete(function_key(owner_id, function.name))
            await session.delete(function)
        await session.commit()
    finally:
        await session.rollback()  # after a commit: nothing; else releases the lock
    return len(functions)


class AccountPurger:
    """Deletes the functions of every account it is told of, in the background, retrying."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalog: FunctionCatalog,
        *,
        retry_delay: float = 5.0,
        second_pass_delay: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._catalog = catalog
        self._retry_delay = retry_delay
        self._second_pass_delay = second_pass_delay
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notice(self, user_id: str) -> None:
        """``user_id``'s account is deleted (a ``RevocationList`` listener)."""
        self._queue(user_id)
        asyncio.get_running_loop().call_later(self._second_pass_delay, self._queue, user_id)

    @property
    def pending(self) -> frozenset[str]:
        """Accounts waiting for a pass (a failed one, or not run yet)."""
        return frozenset(self._pending)

    def _queue(self, user_id: str) -> None:
        self._pending.add(user_id)
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="registry-account-purge")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for user_id in sorted(self._pending):
                if await self._purge(user_id):
                    self._pending.discard(user_id)
            if self._pending:
                await asyncio.sleep(self._retry_delay)
                self._wake.set()

    async def _purge(self, user_id: str) -> bool:
        try:
            async with self._sessions() as session:
                deleted = await delete_owner_functions(session, self._catalog, owner_id=user_id)
        except Exception:
            logger.warning(
                "deleting a deleted account's functions failed; retrying",
                extra={"user_id": user_id},
                exc_info=True,
            )
            return False
        if deleted:
            logger.info(
                "functions of a deleted account deleted",
                extra={"user_id": user_id, "functions": deleted},
            )
        return True
