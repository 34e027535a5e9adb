"""The registry's name resolution of image registry hosts: a few threads of its own, answers
kept a minute, so names that never resolve cannot take the loop's shared threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from registry_service import admission
from registry_service.admission import SystemResolver


class Names:
    """A stand-in for ``getaddrinfo``: ``hang.example`` blocks until released, ``bad.example``
    does not resolve, anything else resolves to a public address; every call is counted."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()

    def __call__(self, host: str) -> list[str]:
        self.calls.append(host)
        if host == "hang.example":
            self.release.wait(timeout=30)
            return ["192.0.2.7"]
        if host == "bad.example":
            raise OSError("Name or service not known")
        return ["93.184.216.34"]


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> Iterator[Names]:
    fake = Names()
    monkeypatch.setattr(admission, "_getaddrinfo", fake)
    yield fake
    fake.release.set()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_name_that_hangs_is_looked_up_once_and_leaves_threads_for_others(
    names: Names,
) -> None:
    resolver = SystemResolver(threads=2)

    for _ in range(5):  # five creates naming the same black-holed registry
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await resolver("hang.example")

    assert names.calls == ["hang.example"]
    assert await resolver("registry.example.com") == ["93.184.216.34"]
    names.release.set()
    assert await resolver("hang.example") == ["192.0.2.7"]  # the same lookup, not cancelled
    assert names.calls == ["hang.example", "registry.example.com"]


async def test_failures_are_kept_for_a_minute_then_asked_again(names: Names) -> None:
    clock = Clock()
    resolver = SystemResolver(cache_seconds=60, clock=clock)

    for _ in range(3):
        with pytest.raises(OSError, match="not known"):
            await resolver("bad.example")
    assert names.calls == ["bad.example"]

    clock.now += 61
    with pytest.raises(OSError, match="not known"):
        await resolver("bad.example")
    assert names.calls == ["bad.example", "bad.example"]


async def test_the_cache_holds_a_bounded_number_of_names(names: Names) -> None:
    resolver = SystemResolver(max_names=2)

    for host in ("a.example", "b.example", "c.example", "a.example"):
        await resolver(host)

    assert names.calls == ["a.example", "b.example", "c.example", "a.example"]
