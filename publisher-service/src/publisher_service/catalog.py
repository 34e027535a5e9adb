"""The function catalog: the ``functions`` KV bucket, watched into memory.

registry-service writes one key per function (``<user_id>.<name>``, a ``FunctionSnapshot``). A
watcher delivers every current value, then a ``None`` marker, then every change, deletes and
purges included; ``FunctionCache`` keeps the result in a dict, so resolving a function costs no
network hop. A name that is not in memory yet is read from the bucket directly (one ``get``): a
function is callable as soon as the registry answered 201, even before the watcher saw it.

If the watch ends or fails it is started again and the dict is rebuilt from the next full load
(a key deleted meanwhile disappears). After the NATS connection comes back (``rebuild``, on the
client's reconnect) the watch is started again too: a restarted server has forgotten the
watch's consumer without telling the client, so the old watch would stay silent while deletes
happen. Until the new load finishes, lookups read the bucket (retried across an election of the
bucket's leader); only if the bucket does not answer at all is the last snapshot used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import cast

import nats.errors
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import ValidationError

from faas_common.contract import FunctionSnapshot, function_key
from faas_common.nats import NATS_ERRORS, RetryBudget, retrying
from publisher_service.exceptions import RuntimeUnavailable

logger = logging.getLogger("publisher.catalog")

_REMOVALS = frozenset({KV_DEL, KV_PURGE})


class FunctionCache:
    """``FunctionCatalog`` over the ``functions`` bucket (memory first, then one direct read)."""

    def __init__(
        self, kv: KeyValue, *, budget: RetryBudget | None = None, restart_delay: float = 1.0
    ) -> None:
        self._kv = kv
        self._budget = budget or RetryBudget()
        self._restart_delay = restart_delay
        self._functions: dict[str, FunctionSnapshot] = {}
        self._stale: dict[str, FunctionSnapshot] = {}
        """What the previous watch knew, while a rebuild loads the bucket again."""
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        """Whether the first full load finished (until then lookups read the bucket)."""
        return self._loaded.is_set()

    def __len__(self) -> int:
        return len(self._functions)

    async def start(self, *, wait: float = 5.0) -> None:
        """Start watching; wait up to ``wait`` seconds for the first full load."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="functions-watch")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loaded.wait(), timeout=wait)

    async def rebuild(self) -> None:
        """Forget everything and load the bucket again from a new watch."""
        await self.stop()
        self._stale, self._functions = self._functions, {}
        self._loaded.clear()
        self._task = asyncio.create_task(self._run(), name="functions-watch")
        logger.info("function cache rebuilt after a NATS reconnect: reloading the functions")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def resolve(self, user_id: str, name: str) -> FunctionSnapshot | None:
        key = function_key(user_id, name)
        found = self._functions.get(key)
        if found is not None:
            return found
        # Not seen by the watcher (yet): ask the bucket. The answer is not cached; the watcher
        # delivers the key soon, in order with its later changes.
        try:
            return await retrying(lambda _: self._read(key), self._budget, what="function lookup")
        except NATS_ERRORS as exc:
            stale = self._stale.get(key)
            if stale is not None and not self.loaded:
                return stale  # the bucket does not answer: the last snapshot is all there is
            raise RuntimeUnavailable("The function catalog (NATS) is unavailable") from exc

    async def _read(self, key: str) -> FunctionSnapshot | None:
        try:
            entry = await self._kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return _parse(key, entry.value)

    async def _run(self) -> None:
        while True:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("functions watch failed; restarting it")
            await asyncio.sleep(self._restart_delay)

    async def _watch(self) -> None:
        watcher = await self._kv.watchall()
        # nats-py leaves this one untyped.
        stop = cast(Callable[[], Awaitable[None]], watcher.stop)
        fresh: dict[str, FunctionSnapshot] | None = {}
        try:
            async for entry in watcher:
                if entry is None:
                    if fresh is not None:
                        self._functions, fresh = fresh, None
                        self._stale = {}
                        self._loaded.set()
                        logger.info("functions loaded", extra={"functions": len(self._functions)})
                    continue
                target = fresh if fresh is not None else self._functions
                key: str = entry.key
                if entry.operation in _REMOVALS:
                    target.pop(key, None)
                    continue
                snapshot = _parse(key, entry.value)
                if snapshot is None:
                    target.pop(key, None)
                else:
                    target[key] = snapshot
        finally:
            with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
                await stop()


def _parse(key: str, value: bytes | None) -> FunctionSnapshot | None:
    if not value:
        return None
    try:
        return FunctionSnapshot.model_validate_json(value)
    except ValidationError:
        logger.warning("unreadable function snapshot ignored", extra={"key": key})
        return None
