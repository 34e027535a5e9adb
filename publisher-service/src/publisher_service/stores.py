"""KV adapters: execution records and idempotency keys, with NATS failures as 503s.

- ``KvRecordStore``: ``faas_common.executions.ExecutionStore`` (shared with the spawner) whose
  NATS errors become ``RuntimeUnavailable``; compare-and-set failures stay ``RecordConflict``.
- ``KvIdempotencyStore``: the ``idempotency`` bucket, key ``<user_id>.<sha256 of the header>``
  (a header may hold characters a key cannot), value an ``IdempotencyClaim``. ``kv.create`` is
  the atomic claim: of two requests racing with one key exactly one creates it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator

import nats.errors
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from faas_common.contract import ExecutionRecord
from faas_common.executions import ExecutionStore
from publisher_service.exceptions import RuntimeUnavailable
from publisher_service.service import ClaimOutcome, IdempotencyClaim

logger = logging.getLogger("publisher.stores")

CLAIM_ATTEMPTS = 3


@contextlib.contextmanager
def _unavailable(what: str) -> Iterator[None]:
    try:
        yield
    except (nats.errors.Error, TimeoutError, OSError) as exc:
        raise RuntimeUnavailable(f"The {what} (NATS) is unavailable") from exc


class KvRecordStore:
    """``RecordStore`` over the ``executions`` bucket."""

    def __init__(self, store: ExecutionStore) -> None:
        self._store = store

    async def create(self, user_id: str, record: ExecutionRecord) -> int:
        with _unavailable("execution store"):
            return await self._store.create(user_id, record)

    async def get(self, user_id: str, execution_id: str) -> tuple[ExecutionRecord, int] | None:
        with _unavailable("execution store"):
            return await self._store.get(user_id, execution_id)

    async def update(self, user_id: str, record: ExecutionRecord, *, revision: int) -> int:
        with _unavailable("execution store"):
            return await self._store.update(user_id, record, revision=revision)

    async def list_for_user(
        self, user_id: str, *, function: str | None, limit: int
    ) -> list[ExecutionRecord]:
        with _unavailable("execution store"):
            return await self._store.list_for_user(user_id, function=function, limit=limit)


def idempotency_key(user_id: str, key: str) -> str:
    return f"{user_id}.{hashlib.sha256(key.encode()).hexdigest()}"


class KvIdempotencyStore:
    """``IdempotencyStore`` over the ``idempotency`` bucket (the executions' TTL)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def claim(self, user_id: str, key: str, claim: IdempotencyClaim) -> ClaimOutcome:
        kv_key = idempotency_key(user_id, key)
        with _unavailable("idempotency store"):
            for _ in range(CLAIM_ATTEMPTS):
                try:
                    revision = await self._kv.create(kv_key, claim.model_dump_json().encode())
                except KeyWrongLastSequenceError:
                    pass
                else:
                    return ClaimOutcome(won=True, claim=claim, revision=revision)
                try:
                    entry = await self._kv.get(kv_key)
                except KeyNotFoundError:
                    continue  # released in between: claim it again
                try:
                    existing = IdempotencyClaim.model_validate_json(entry.value or b"")
                except ValidationError as exc:
                    raise RuntimeUnavailable("An idempotency record is unreadable") from exc
                return ClaimOutcome(won=False, claim=existing, revision=entry.revision or 0)
        raise RuntimeUnavailable("The Idempotency-Key could not be claimed")

    async def release(self, user_id: str, key: str, revision: int) -> None:
        # Only while it is still this request's claim (``last``): never someone else's.
        with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
            await self._kv.delete(idempotency_key(user_id, key), last=revision)
