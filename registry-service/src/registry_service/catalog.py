"""The function catalog: the ``functions`` KV bucket publishers read instead of the database.

``FunctionCatalog`` is the port the service writes through; ``NatsFunctionCatalog`` is its NATS
JetStream adapter (unit tests use a small in-memory fake). Every failure of the adapter surfaces as
``CatalogUnavailable``, so the service can roll back and answer 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from faas_common.contract import FunctionSnapshot, function_key
from registry_service.exceptions import CatalogUnavailable


class FunctionCatalog(Protocol):
    async def put(self, snapshot: FunctionSnapshot) -> None:
        """Write ``snapshot`` under its key ``<owner_id>.<name>``."""

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is absent)."""

    async def contents(self) -> dict[str, bytes]:
        """Every key currently in the catalog, with its raw value."""

    async def ready(self) -> None:
        """Raise unless the catalog can be written right now."""


class NatsFunctionCatalog:
    """``FunctionCatalog`` over a JetStream KV bucket."""

    def __init__(self, nc: NATS, kv: KeyValue, *, timeout: float = 5.0) -> None:
        self._nc = nc
        self._kv = kv
        self._timeout = timeout

    def _check_connected(self) -> None:
        # While reconnecting, nats-py buffers publishes and the call would only time out:
        # fail at once instead.
        if not self._nc.is_connected:
            raise CatalogUnavailable()

    async def put(self, snapshot: FunctionSnapshot) -> None:
        self._check_connected()
        key = function_key(snapshot.owner_id, snapshot.name)
        try:
            await self._kv.put(key, snapshot.model_dump_json().encode())
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise CatalogUnavailable() from exc

    async def delete(self, key: str) -> None:
        self._check_connected()
        try:
            await self._kv.delete(key)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise CatalogUnavailable() from exc

    async def contents(self) -> dict[str, bytes]:
        self._check_connected()
        entries: dict[str, bytes] = {}
        try:
            watcher = await self._kv.watchall(ignore_deletes=True)
            # nats-py leaves these two untyped.
            updates = cast(Callable[..., Awaitable[KeyValue.Entry | None]], watcher.updates)
            stop = cast(Callable[[], Awaitable[None]], watcher.stop)
            try:
                # The watcher yields the current value of every key, then None.
                while (entry := await updates(timeout=self._timeout)) is not None:
                    entries[entry.key] = entry.value or b""
            finally:
                await stop()
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise CatalogUnavailable() from exc
        return entries

    async def ready(self) -> None:
        self._check_connected()
        await asyncio.wait_for(self._nc.flush(), timeout=self._timeout)
