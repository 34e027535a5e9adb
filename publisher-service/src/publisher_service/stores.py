"""The idempotency keys' KV adapter (execution records are ``faas_common.executions``).

``KvIdempotencyStore``: the ``idempotency`` bucket, key ``<user_id>.<sha256 of the header>`` (a
header may hold characters a key cannot), value an ``IdempotencyClaim``. ``kv.create`` is the
atomic claim: of two requests racing with one key exactly one creates it. Every request is
retried across a leader election (``RetryBudget``); a bucket still down after it is a 503, a full
one (``IDEMPOTENCY_MAX_BYTES``) a 507 ``storage_full`` at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

from nats.js.errors import (
    APIError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue
from pydantic import ValidationError

from faas_common.contract import STREAM_FULL
from faas_common.nats import NATS_ERRORS, RetryBudget, retrying
from publisher_service.exceptions import RuntimeUnavailable, StorageFull
from publisher_service.service import ClaimOutcome, IdempotencyClaim

logger = logging.getLogger("publisher.stores")

CLAIM_ATTEMPTS = 3
IDEMPOTENCY_FULL = "The Idempotency-Key store is full (its storage limit): nothing was run"


def idempotency_key(user_id: str, key: str) -> str:
    return f"{user_id}.{hashlib.sha256(key.encode()).hexdigest()}"


class KvIdempotencyStore:
    """``IdempotencyStore`` over the ``idempotency`` bucket (the executions' TTL)."""

    def __init__(self, kv: KeyValue, *, budget: RetryBudget) -> None:
        self._kv = kv
        self._budget = budget

    async def claim(self, user_id: str, key: str, claim: IdempotencyClaim) -> ClaimOutcome:
        kv_key = idempotency_key(user_id, key)
        value = claim.model_dump_json().encode()
        for _ in range(CLAIM_ATTEMPTS):
            outcome = await self._claim_once(kv_key, value, claim)
            if outcome is not None:
                return outcome  # else: released in between, claim it again
        raise RuntimeUnavailable("The Idempotency-Key could not be claimed")

    async def _claim_once(
        self, kv_key: str, value: bytes, claim: IdempotencyClaim
    ) -> ClaimOutcome | None:
        async def create(_: int) -> int | None:
            try:
                return await self._kv.create(kv_key, value)
            except KeyWrongLastSequenceError:
                return None
            except APIError as exc:
                if exc.err_code == STREAM_FULL:
                    raise StorageFull(IDEMPOTENCY_FULL) from exc
                raise

        async def read(_: int) -> tuple[bytes, int] | None:
            try:
                entry = await self._kv.get(kv_key)
            except (KeyNotFoundError, KeyDeletedError):
                return None
            return entry.value or b"", entry.revision or 0

        try:
            revision = await retrying(create, self._budget, what="idempotency claim")
            if revision is not None:
                return ClaimOutcome(won=True, claim=claim, revision=revision)
            existing = await retrying(read, self._budget, what="idempotency read")
        except NATS_ERRORS as exc:
            raise RuntimeUnavailable("The idempotency store (NATS) is unavailable") from exc
        if existing is None:
            return None
        if existing[0] == value:
            # A retried create whose first attempt landed: the claim is this request's own.
            return ClaimOutcome(won=True, claim=claim, revision=existing[1])
        try:
            earlier = IdempotencyClaim.model_validate_json(existing[0])
        except ValidationError as exc:
            raise RuntimeUnavailable("An idempotency record is unreadable") from exc
        return ClaimOutcome(won=False, claim=earlier, revision=existing[1])

    async def release(self, user_id: str, key: str, revision: int) -> None:
        # Only while it is still this request's claim (``last``): never someone else's.
        with contextlib.suppress(*NATS_ERRORS):
            await self._kv.delete(idempotency_key(user_id, key), last=revision)
