"""End to end: ``GET /publisher/executions/{id}?wait=`` through the local stack's HTTP server.

One long poll per user (``PUBLISHER_MAX_WAITERS_PER_USER=1``), so a wait still held after its
client left would refuse the next one with a 429: a client that disconnects frees its wait at
once, and a wait answers as soon as its function finished.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.stack import Stack, User, register, running_stack
from tests.support.images import busybox_image

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

FREED_WITHIN = 10.0
"""Far less than the abandoned wait (50 s) and the function's timeout (20 s, after which its
record is final and every wait ends): a slot free before was freed by the disconnect."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("long-poll"), PUBLISHER_MAX_WAITERS_PER_USER="1"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def frank(stack: Stack) -> Iterator[User]:
    with httpx.Client(base_url=stack.url, timeout=70) as client:
        user = register(client, "frank", "frank-password-1")
        user.create_function("sh", busybox_image(), timeout_seconds=20, memory_mb=64)
        yield user


def started(user: User, script: str) -> str:
    accepted = user.post(
        "/publisher/publish", json={"name": "sh", "argument": script, "async": True}
    )
    assert accepted.status_code == 202, accepted.text
    status_url: str = accepted.json()["status_url"]
    return status_url


def test_a_wait_answers_when_the_function_finishes(frank: User) -> None:
    status_url = started(frank, "sleep 1; echo finished")

    answer = frank.get(status_url, params={"wait": 60})

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded"
    assert answer.json()["result"] == "finished"


def test_a_client_that_leaves_frees_its_wait(stack: Stack, frank: User) -> None:
    status_url = started(frank, "sleep 50")
    abandoned = holding_the_wait(stack, frank, status_url)

    abandoned.close()

    freed = wait_for_status(frank, status_url, 200)
    assert freed.json()["status"] in ("queued", "running")


def holding_the_wait(stack: Stack, user: User, status_url: str) -> socket.socket:
    """A connection whose long poll holds the user's one wait (seen refusing another)."""
    request = (
        f"GET {status_url}?wait=50 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {user.token}\r\n\r\n"
    ).encode()
    deadline = time.monotonic() + FREED_WITHIN
    while time.monotonic() < deadline:
        held = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
        held.sendall(request)
        time.sleep(0.5)
        answer = user.get(status_url, params={"wait": 0.2})
        if answer.status_code == 429:
            assert answer.json()["code"] == "wait_limit"
            return held
        held.close()  # this check took the slot first: the held one was refused; again
    raise AssertionError("no long poll ever held the wait")


def wait_for_status(user: User, status_url: str, status: int) -> httpx.Response:
    """Short waits until one answers ``status``; fails after ``FREED_WITHIN`` seconds."""
    deadline = time.monotonic() + FREED_WITHIN
    while True:
        answer = user.get(status_url, params={"wait": 0.2})
        if answer.status_code == status or time.monotonic() > deadline:
            assert answer.status_code == status, answer.text
            return answer
        time.sleep(0.1)
