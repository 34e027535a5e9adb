"""Password hashing is bounded: at most ``AUTH_HASH_CONCURRENCY`` hashes run at once, off the
event loop, so health and the other routes answer while a flood of logins waits its turn."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from auth_service.service import PasswordHasher
from tests.unit.auth.factories import (
    client_for,
    make_settings,
    running_app,
    unique_username,
)
from tests.unit.registry.factories import wait_until

CONCURRENCY = 2
LOGINS = 6


class BlockingContext:
    """A hash context whose ``verify`` holds until released, counting who is inside."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.entered = 0

    def hash(self, secret: str) -> str:
        return f"plain${secret}"

    def verify(self, secret: str, hash: str) -> bool:
        with self._lock:
            self.inside += 1
            self.entered += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.release.wait(timeout=60)
            return hash == f"plain${secret}"
        finally:
            with self._lock:
                self.inside -= 1


async def test_health_answers_while_every_hash_slot_is_held(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, hash_concurrency=CONCURRENCY)
    async with running_app(settings) as app, client_for(app) as client:
        blocking = BlockingContext()
        hasher = PasswordHasher(concurrency=CONCURRENCY, context=blocking)
        app.state.hasher = hasher
        try:
            logins = [
                asyncio.create_task(
                    client.post(
                        "/auth/login",
                        json={"username": unique_username(), "password": "some-password"},
                    )
                )
                for _ in range(LOGINS)
            ]
            await wait_until(lambda: blocking.inside == CONCURRENCY, within=10)

            health = await client.get("/auth/health")
            assert health.status_code == 200
            assert health.json() == {"status": "ok"}
            jwks = await client.get("/auth/.well-known/jwks.json")
            assert jwks.status_code == 200
            # Every login is waiting by now; only CONCURRENCY of them got a hash thread.
            assert blocking.entered == CONCURRENCY
            assert not any(login.done() for login in logins)

            blocking.release.set()
            responses = await asyncio.gather(*logins)
        finally:
            blocking.release.set()
            hasher.close()
        assert [response.status_code for response in responses] == [401] * LOGINS
        assert blocking.entered == LOGINS
        assert blocking.most_inside == CONCURRENCY


def test_hash_concurrency_defaults_to_the_cpu_count(tmp_path: Path) -> None:
    import os

    assert make_settings(tmp_path).hash_concurrency == (os.cpu_count() or 1)
