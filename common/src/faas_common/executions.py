"""Execution records in the ``executions`` KV bucket, shared by the publisher and the spawner.

Key ``<user_id>.<execution_id>``: a user only ever reads keys under their own id. Status changes
that race (the spawner starting a job while the publisher gives up on it) go through
compare-and-set on the entry's revision, so exactly one of them wins.
"""

from __future__ import annotations

from datetime import timedelta

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from faas_common.contract import EXECUTIONS_BUCKET, ExecutionRecord, execution_key
from faas_common.nats import ensure_kv


class RecordConflict(Exception):
    """The record changed since it was read: someone else moved it first."""


class ExecutionStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int, ttl_seconds: int) -> ExecutionStore:
        kv = await ensure_kv(
            js, EXECUTIONS_BUCKET, replicas=replicas, ttl=timedelta(seconds=ttl_seconds)
        )
        return cls(kv)

    async def create(self, user_id: str, record: ExecutionRecord) -> int:
        """Store a new record; ``RecordConflict`` if one with this id exists."""
        try:
            return await self.kv.create(
                execution_key(user_id, record.execution_id), record.model_dump_json().encode()
            )
        except KeyWrongLastSequenceError as exc:
            raise RecordConflict(record.execution_id) from exc

    async def get(self, user_id: str, execution_id: str) -> tuple[ExecutionRecord, int] | None:
        """The record and its revision, or None when there is none (or it expired)."""
        try:
            entry = await self.kv.get(execution_key(user_id, execution_id))
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return ExecutionRecord.model_validate_json(entry.value), entry.revision

    async def update(self, user_id: str, record: ExecutionRecord, *, revision: int) -> int:
        """Replace the record if it is still at ``revision``; else ``RecordConflict``."""
        try:
            return await self.kv.update(
                execution_key(user_id, record.execution_id),
                record.model_dump_json().encode(),
                last=revision,
            )
        except KeyWrongLastSequenceError as exc:
            raise RecordConflict(record.execution_id) from exc

    async def put(self, user_id: str, record: ExecutionRecord) -> int:
        """Write the record whatever is there (final results: the spawner owns the job)."""
        return await self.kv.put(
            execution_key(user_id, record.execution_id), record.model_dump_json().encode()
        )

    async def list_for_user(self, user_id: str) -> list[ExecutionRecord]:
        """Every live record of the user (server-side filtered by key prefix)."""
        records: list[ExecutionRecord] = []
        watcher = await self.kv.watch(f"{user_id}.*", ignore_deletes=True)
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.value:
                    records.append(ExecutionRecord.model_validate_json(entry.value))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return records
