"""Execution records in the ``executions`` KV bucket, shared by the publisher and the spawner.

Key ``<user_id>.<execution_id>``: a user only ever reads keys under their own id. Status changes
that race (the spawner starting a job while the publisher gives up on it) go through
compare-and-set on the entry's revision, so exactly one of them wins.
"""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from faas_common.contract import EXECUTIONS_BUCKET, ExecutionRecord, execution_key
from faas_common.nats import ensure_kv


class RecordConflict(Exception):
    """The record changed since it was read: someone else moved it first."""


class ExecutionStore:
    def __init__(
        self,
        kv: KeyValue,
        js: JetStreamContext | None = None,
        *,
        bucket: str = EXECUTIONS_BUCKET,
    ) -> None:
        self.kv = kv
        self._js = js  # needed only to list a user's records
        self._bucket = bucket

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int, ttl_seconds: int) -> ExecutionStore:
        kv = await ensure_kv(
            js, EXECUTIONS_BUCKET, replicas=replicas, ttl=timedelta(seconds=ttl_seconds)
        )
        return cls(kv, js)

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

    async def execution_ids(self, user_id: str) -> list[str]:
        """Ids of the user's live records, from the bucket's subject index (no consumer)."""
        if self._js is None:
            raise RuntimeError("listing records needs the JetStream context")
        prefix = f"$KV.{self._bucket}.{user_id}."  # a KV bucket is the stream KV_<bucket>
        info = await self._js.stream_info(f"KV_{self._bucket}", subjects_filter=f"{prefix}*")
        subjects = info.state.subjects or {}
        return [subject.removeprefix(prefix) for subject in subjects]

    async def list_for_user(
        self, user_id: str, *, function: str | None = None, limit: int = 20
    ) -> list[ExecutionRecord]:
        """The user's newest records (optionally of one function), at most ``limit``.

        Execution ids start with their creation time (``new_execution_id``), so the newest come
        first by id alone and only the records returned (plus those skipped by ``function``)
        are read.
        """
        records: list[ExecutionRecord] = []
        for execution_id in sorted(await self.execution_ids(user_id), reverse=True):
            found = await self.get(user_id, execution_id)
            if found is None:
                continue  # expired between the index and the read
            record = found[0]
            if function is None or record.function == function:
                records.append(record)
                if len(records) >= limit:
                    break
        records.sort(key=lambda record: record.created_at, reverse=True)
        return records


def new_execution_id() -> str:
    """32 hex digits: the creation time in nanoseconds, then 64 random bits (sortable by age)."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"
