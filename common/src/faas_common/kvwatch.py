"""A NATS KV bucket watched into memory by a task of its own.

A watch delivers every current entry, then a ``None`` marker, then every change (deletes and
purges included). ``BucketWatch`` loads the current entries into a fresh snapshot, installs it
at the marker, then applies the changes to it. A watch that ends or fails is started again after
``restart_delay``; ``restart()`` starts a new one at once, which a service does after a NATS
reconnect (a restarted server forgets the watch's consumer without telling the client, so the
old watch would stay silent). The snapshot in force stays until the new watch's load replaces
it. Subclasses say what a snapshot is and how an entry changes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, cast

import nats.errors
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

__all__ = ["BucketWatch"]

logger = logging.getLogger("faas.kvwatch")

SnapshotT = TypeVar("SnapshotT")

_REMOVALS = frozenset({KV_DEL, KV_PURGE})


class BucketWatch(ABC, Generic[SnapshotT]):
    """The bucket's entries in memory (``snapshot``), kept current by a background watch."""

    bucket: str = "bucket"
    """The bucket's name, for the task's name and the log."""
    keys: str = ">"
    """The keys watched (a subject filter over the keys: ``">"`` is all of them)."""

    def __init__(self, kv: KeyValue, *, restart_delay: float = 1.0) -> None:
        self._kv = kv
        self._restart_delay = restart_delay
        self.snapshot: SnapshotT = self.empty()
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    def empty(self) -> SnapshotT:
        """A snapshot with no entry."""

    @abstractmethod
    def apply(self, snapshot: SnapshotT, key: str, value: bytes | None) -> None:
        """Record ``key``'s new ``value`` in ``snapshot`` (``None``: the key was removed)."""

    def apply_entry(self, snapshot: SnapshotT, entry: KeyValue.Entry) -> None:
        """Record ``entry`` in ``snapshot``: ``apply`` of its key and value (``None`` for a
        removal). Override to use more of the entry (when it was written: ``created``)."""
        value = None if entry.operation in _REMOVALS else entry.value
        self.apply(snapshot, entry.key, value)

    def installed(self) -> None:
        """Called when a full load has become the snapshot."""

    @property
    def _log(self) -> dict[str, str]:
        return {"bucket": self.bucket}

    @property
    def loaded(self) -> bool:
        """Whether a full load finished (``restart`` may clear it again, see subclasses)."""
        return self._loaded.is_set()

    async def start(self, *, wait: float = 5.0) -> None:
        """Start watching; wait up to ``wait`` seconds for the first full load."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.bucket}-watch")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loaded.wait(), timeout=wait)

    async def restart(self) -> None:
        """A new watch at once (the current snapshot stays until its load ends)."""
        await self.stop()
        self._task = asyncio.create_task(self._run(), name=f"{self.bucket}-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning(
                    "bucket watch failed; restarting it",
                    extra={"bucket": self.bucket},
                    exc_info=True,
                )
            await asyncio.sleep(self._restart_delay)

    async def _watch(self) -> None:
        watcher = await self._kv.watch(self.keys)
        stop = cast(Callable[[], Awaitable[None]], watcher.stop)  # untyped in nats-py
        fresh: SnapshotT | None = self.empty()
        try:
            async for entry in watcher:
                if entry is None:
                    if fresh is not None:
                        self.snapshot, fresh = fresh, None
                        self._loaded.set()
                        self.installed()
                    continue
                self.apply_entry(self.snapshot if fresh is None else fresh, entry)
        finally:
            with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
                await stop()
