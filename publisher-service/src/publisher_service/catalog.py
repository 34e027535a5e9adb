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

import logging

from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from faas_common.contract import FUNCTIONS_BUCKET, FunctionSnapshot, function_key
from faas_common.kvwatch import BucketWatch
from faas_common.nats import NATS_ERRORS, RetryBudget, retrying
from publisher_service.exceptions import RuntimeUnavailable

logger = logging.getLogger("publisher.catalog")


class FunctionCache(BucketWatch[dict[str, FunctionSnapshot]]):
    """``FunctionCatalog`` over the ``functions`` bucket (memory first, then one direct read)."""

    bucket = FUNCTIONS_BUCKET

    def __init__(
        self, kv: KeyValue, *, budget: RetryBudget | None = None, restart_delay: float = 1.0
    ) -> None:
        super().__init__(kv, restart_delay=restart_delay)
        self._budget = budget or RetryBudget()
        self._stale: dict[str, FunctionSnapshot] = {}
        """What the previous watch knew, while a rebuild loads the bucket again."""

    def empty(self) -> dict[str, FunctionSnapshot]:
        return {}

    def apply(self, snapshot: dict[str, FunctionSnapshot], key: str, value: bytes | None) -> None:
        function = _parse(key, value)
        if function is None:
            snapshot.pop(key, None)
        else:
            snapshot[key] = function

    def installed(self) -> None:
        self._stale = {}
        logger.info("functions loaded", extra={"functions": len(self.snapshot)})

    def __len__(self) -> int:
        return len(self.snapshot)

    async def rebuild(self) -> None:
        """Forget everything and load the bucket again from a new watch."""
        await self.stop()
        self._stale, self.snapshot = self.snapshot, {}
        self._loaded.clear()
        await self.restart()
        logger.info("function cache rebuilt after a NATS reconnect: reloading the functions")

    async def resolve(self, user_id: str, name: str) -> FunctionSnapshot | None:
        key = function_key(user_id, name)
        found = self.snapshot.get(key)
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


def _parse(key: str, value: bytes | None) -> FunctionSnapshot | None:
    if not value:
        return None
    try:
        return FunctionSnapshot.model_validate_json(value)
    except ValidationError:
        logger.warning("unreadable function snapshot ignored", extra={"key": key})
        return None
