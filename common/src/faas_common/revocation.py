"""Token revocation: the ``revocations`` KV bucket, written by auth-service, watched into memory.

Two kinds of entries (``faas_common.contract``): ``token.<jti>`` revokes one token (logout), and
``user.<user_id>`` marks a deleted account, whose every token is refused. An entry lives the
bucket's max age, longer than any token it refuses: auth-service, the only writer, sets it to
``revocation_max_age(AUTH_TOKEN_TTL_SECONDS)`` when it starts, so what a flood of logouts leaves
in the bucket expires with the tokens; every other service opens the bucket as it is (creating a
missing one with the longest age, ``REVOCATION_MAX_AGE_SECONDS``). The watched snapshot forgets
entries after ``REVOCATION_MAX_AGE_SECONDS`` whatever the bucket's age, so a longer age set later
never makes a service forget a revocation the bucket still holds.

``RevocationList`` is what a verifying service holds: a watch delivers every current entry, then
a ``None`` marker, then every new one, so ``is_revoked`` is a set lookup (no call to auth, no
network hop per request) and a revocation reaches every service within milliseconds.

While the bucket is unreachable:

- before the first full load finished, ``is_revoked`` raises ``RevocationsUnavailable`` (the
  verifier answers 503): a service never accepts tokens without having read the list once;
- after it, the last snapshot stays in force (fail open for what it has not seen) while the watch
  is restarted. auth-service cannot write to an unreachable bucket either (logout and account
  deletion answer 503 then), so the snapshot misses only what a network partition hides.

After a NATS reconnect ``rebuild`` starts a new watch (a restarted server forgets the watch's
consumer without telling the client); the previous snapshot is kept until the new load ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import timedelta

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ValidationError

from faas_common.contract import (
    ID_RE,
    REVOCATION_MAX_AGE_SECONDS,
    REVOCATIONS_BUCKET,
    Revocation,
    deleted_user_key,
    revoked_token_key,
)
from faas_common.kvwatch import BucketWatch
from faas_common.nats import NATS_ERRORS, ReconnectHook, RetryBudget, ensure_kv, retrying
from faas_common.settings import CommonSettings

logger = logging.getLogger("faas.revocation")

_TOKEN_PREFIX = revoked_token_key("")
_USER_PREFIX = deleted_user_key("")
_PRUNE_EVERY_SECONDS = 3600.0

UserDeletedListener = Callable[[str], None]
"""Told the id of every deleted account the watch sees (at each load, then live)."""


class RevocationsUnavailable(RuntimeError):
    """The revocations bucket cannot be read (never loaded yet) or written right now."""


class _Snapshot:
    """Revoked token ids and deleted user ids, each with its ``revoked_at``."""

    def __init__(self) -> None:
        self.tokens: dict[str, float] = {}
        self.users: dict[str, float] = {}

    def apply(self, key: str, revoked_at: float | None) -> str | None:
        """Record (or, with ``None``, forget) ``key``; the user id when it is a deleted account."""
        if key.startswith(_TOKEN_PREFIX):
            target, name = self.tokens, key[len(_TOKEN_PREFIX) :]
        elif key.startswith(_USER_PREFIX):
            target, name = self.users, key[len(_USER_PREFIX) :]
        else:
            return None
        if revoked_at is None:
            target.pop(name, None)
            return None
        target[name] = revoked_at
        return name if target is self.users else None

    def prune(self, now: float) -> None:
        """Forget entries the bucket has expired (expiry sends the watch nothing)."""
        oldest = now - REVOCATION_MAX_AGE_SECONDS
        for entries in (self.tokens, self.users):
            for name in [name for name, at in entries.items() if at < oldest]:
                del entries[name]


class RevocationList(BucketWatch[_Snapshot]):
    """The ``revocations`` bucket watched into memory; also writes entries (auth-service)."""

    bucket = REVOCATIONS_BUCKET

    def __init__(
        self,
        kv: KeyValue,
        *,
        budget: RetryBudget | None = None,
        restart_delay: float = 1.0,
        clock: Callable[[], float] = time.time,
        connected: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(kv, restart_delay=restart_delay)
        self._connected = connected
        self._budget = budget or RetryBudget()
        self._clock = clock
        self._pruned_at = clock()
        self.listeners: list[UserDeletedListener] = []

    def empty(self) -> _Snapshot:
        return _Snapshot()

    def apply(self, snapshot: _Snapshot, key: str, value: bytes | None) -> None:
        self._record(snapshot, key, None if value is None else _revoked_at(key, value))

    def installed(self) -> None:
        logger.info("revocations loaded", extra={"tokens": len(self.snapshot.tokens)})

    def is_revoked(self, *, user_id: str, jti: str | None) -> bool:
        if not self._loaded.is_set():
            raise RevocationsUnavailable("the token revocation list is not loaded yet")
        snapshot = self.snapshot
        return user_id in snapshot.users or (jti is not None and jti in snapshot.tokens)

    def deleted_users(self) -> frozenset[str]:
        return frozenset(self.snapshot.users)

    async def revoke_token(self, *, jti: str, user_id: str) -> None:
        """Refuse the token ``jti`` everywhere (here at once, elsewhere when the watch sees it)."""
        await self._put(revoked_token_key(jti), user_id)

    async def revoke_user(self, *, user_id: str) -> None:
        """Refuse every token of ``user_id`` everywhere: the account is deleted."""
        await self._put(deleted_user_key(user_id), user_id)

    async def _put(self, key: str, user_id: str) -> None:
        name = key.split(".", 1)[1]
        if ID_RE.fullmatch(name) is None:
            raise ValueError(f"not a revocable id: {name!r}")
        revocation = Revocation(user_id=user_id, revoked_at=self._clock())
        data = revocation.model_dump_json().encode()

        async def put(_: int) -> None:
            # While reconnecting, nats-py buffers a publish and sends it once connected: a write
            # that failed would land later. Refuse it at once instead.
            if not self._connected():
                raise RevocationsUnavailable("not connected to NATS")
            await self._kv.put(key, data)

        try:
            await retrying(put, self._budget, what="revocation write")
        except RevocationsUnavailable:
            raise
        except NATS_ERRORS as exc:
            raise RevocationsUnavailable("the token revocation list cannot be written") from exc
        self._record(self.snapshot, key, revocation.revoked_at)

    async def rebuild(self) -> None:
        """Start a new watch; the current snapshot stays in force until its load ends."""
        await self.restart()
        logger.info("revocation list reloading after a NATS reconnect")

    def _record(self, snapshot: _Snapshot, key: str, revoked_at: float | None) -> None:
        deleted_user = snapshot.apply(key, revoked_at)
        if deleted_user is not None:
            for listener in self.listeners:
                listener(deleted_user)
        now = self._clock()
        if now - self._pruned_at >= _PRUNE_EVERY_SECONDS:
            self._pruned_at = now
            snapshot.prune(now)


def _revoked_at(key: str, value: bytes) -> float | None:
    try:
        return Revocation.model_validate_json(value).revoked_at
    except ValidationError:
        logger.warning("unreadable revocation entry ignored", extra={"key": key})
        return None


async def open_revocations(
    nc: NATS,
    js: JetStreamContext,
    stack: AsyncExitStack,
    settings: CommonSettings,
    *,
    on_reconnect: list[ReconnectHook],
    wait: float = 5.0,
    max_age: float | None = None,
) -> RevocationList:
    """The ``revocations`` bucket (created the first time) watched for a service's lifespan,
    its watch started again after every reconnect. ``max_age`` (auth-service's) becomes the
    bucket's max age; without it an existing bucket keeps its own."""
    kv = await ensure_kv(
        js,
        REVOCATIONS_BUCKET,
        replicas=settings.nats_replicas,
        ttl=timedelta(seconds=max_age or REVOCATION_MAX_AGE_SECONDS),
        max_bytes=settings.bucket_max_bytes,
    )
    if max_age is not None:
        await _bring_max_age_in_line(js, max_age)
    revocations = RevocationList(
        kv, budget=settings.retry_budget, connected=lambda: nc.is_connected
    )
    await revocations.start(wait=wait)
    stack.push_async_callback(revocations.stop)
    on_reconnect.append(revocations.rebuild)
    return revocations


async def _bring_max_age_in_line(js: JetStreamContext, max_age: float) -> None:
    info = await js.stream_info(f"KV_{REVOCATIONS_BUCKET}")
    if info.config.max_age != max_age:
        logger.info(
            "revocations max age updated",
            extra={"current": info.config.max_age, "wanted": max_age},
        )
        info.config.max_age = max_age
        await js.update_stream(config=info.config)
