"""The opt-in image sweep (``SPAWNER_IMAGE_SWEEP_DAYS``, 0 = off): images that no function has
used for that many days are removed from the engine.

**Used** means: a spawner of this engine created a container from the image for an activation
(the image was present or it pulled it). The time of that use is recorded durably in the KV
bucket ``image_use`` (``ImageUseRecord``, key ``<engine id>.<image id>``, written at most once
an hour per image by each spawner), so it survives restarts and is shared by every spawner of
the engine. The sweep only ever looks at images recorded there: an image the platform never ran
(the spawner's own, an operator's, one pulled by hand) has no record and is never removed, and
neither is one used since the sweep's cut-off, whoever references it. Removal is by image id and
never forced: the engine refuses an image a container still uses, or one that other tags also
name (``docker rmi`` without ``-f``); those stay and are tried again on the next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from faas_common.contract import IMAGE_USE_BUCKET
from faas_common.nats import DEFAULT_BUCKET_MAX_BYTES, ensure_kv

logger = logging.getLogger("spawner.images")

TOUCH_INTERVAL = 3600.0
"""A spawner records an image's use at most this often (seconds): days are what count."""
SWEEP_INTERVAL = 3600.0
"""Seconds between two sweeps (the first one at start-up)."""
DAY = 86_400.0


class ImageUseRecord(BaseModel):
    image_id: str
    """The engine's image id (``sha256:…``)."""
    reference: str
    """The reference the last activation named it by (for the log)."""
    last_used: float
    """Epoch seconds of the last recorded use."""


class ImageUse(Protocol):
    """Where image uses are recorded, per engine."""

    async def touch(self, engine_id: str, record: ImageUseRecord) -> None: ...

    async def records(self, engine_id: str) -> list[ImageUseRecord]: ...

    async def forget(self, engine_id: str, image_id: str) -> None: ...


def _key_part(value: str) -> str:
    """A KV key token: engine ids (``ABCD:EFGH:…``) and image ids (``sha256:…``) have colons."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", value)


class KvImageUse:
    """``ImageUse`` in the ``image_use`` KV bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        replicas: int = 1,
        max_bytes: int = DEFAULT_BUCKET_MAX_BYTES,
        bucket: str = IMAGE_USE_BUCKET,
    ) -> KvImageUse:
        return cls(await ensure_kv(js, bucket, replicas=replicas, max_bytes=max_bytes))

    @staticmethod
    def _key(engine_id: str, image_id: str) -> str:
        return f"{_key_part(engine_id)}.{_key_part(image_id)}"

    async def touch(self, engine_id: str, record: ImageUseRecord) -> None:
        await self.kv.put(self._key(engine_id, record.image_id), record.model_dump_json().encode())

    async def records(self, engine_id: str) -> list[ImageUseRecord]:
        try:
            keys = await self.kv.keys()  # a few keys per image; filters are not reliable here
        except NoKeysError:
            return []
        ours = f"{_key_part(engine_id)}."
        found: list[ImageUseRecord] = []
        for key in (key for key in keys if key.startswith(ours)):
            with contextlib.suppress(KeyNotFoundError):
                entry = await self.kv.get(key)
                if entry.value:
                    found.append(ImageUseRecord.model_validate_json(entry.value))
        return found

    async def forget(self, engine_id: str, image_id: str) -> None:
        await self.kv.purge(self._key(engine_id, image_id))


class ImageSweeper(Protocol):
    async def sweep_images(self, now: float, unused_for: float) -> int: ...


async def sweep_forever(
    runtime: ImageSweeper,
    days: float,
    *,
    clock: Callable[[], float],
    interval: float = SWEEP_INTERVAL,
) -> None:
    """Sweep at once, then every ``interval`` seconds, until cancelled."""
    while True:
        try:
            removed = await runtime.sweep_images(clock(), days * DAY)
        except Exception:
            logger.exception("image sweep failed")
        else:
            if removed:
                logger.info("image sweep", extra={"removed": removed, "days": days})
        await asyncio.sleep(interval)
