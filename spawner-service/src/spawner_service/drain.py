"""The ``functions`` bucket watched for changes: a changed or deleted function's prewarmed
containers are drained (``PooledRuntime.drain``), so no call runs on a container made from the
function's old image or env."""

from __future__ import annotations

from collections.abc import Callable

from nats.js.kv import KeyValue

from faas_common.contract import FUNCTIONS_BUCKET
from faas_common.kvwatch import BucketWatch


class FunctionChanges(BucketWatch[dict[str, bytes]]):
    """Each function's last value; ``changed(key)`` for every key whose value is not the one of
    the snapshot in force (after a reconnect's reload too: only real changes count, and a key
    the reload no longer has counts as deleted)."""

    bucket = FUNCTIONS_BUCKET

    def __init__(self, kv: KeyValue, changed: Callable[[str], None]) -> None:
        super().__init__(kv)
        self.changed = changed
        self._installed: set[str] = set()

    def empty(self) -> dict[str, bytes]:
        return {}

    def apply(self, snapshot: dict[str, bytes], key: str, value: bytes | None) -> None:
        if self.snapshot.get(key) != value:
            self.changed(key)
        if value is None:
            snapshot.pop(key, None)
        else:
            snapshot[key] = value
        if snapshot is self.snapshot:  # a live change (not a reload's): known as it is now
            (self._installed.discard if value is None else self._installed.add)(key)

    def installed(self) -> None:
        for key in self._installed - self.snapshot.keys():
            self.changed(key)
        self._installed = set(self.snapshot)
