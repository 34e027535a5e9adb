"""End to end: the HTTP edge of the local stack's single port (``./bin/run.sh``), with the
edge settings a user would set (``MAX_HEADER_BYTES``, ``REQUEST_TIMEOUT_SECONDS``,
``MAX_CONNECTIONS``), the real Docker engine and raw loopback sockets.

A head over the cap answers 431, a head sent byte by byte is cut off with 408, connections over
the cap hold no descriptor of the stack's process, an activation whose body is cut short runs
nothing, and no proxy is believed: ``X-Forwarded-For`` never replaces the caller's address.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.stack import Stack, User, register, running_stack
from tests.support.images import busybox_image
from tests.support.nats_server import LOOPBACK
from tests.support.processes import wait_until
from tests.support.raw_http import (
    exchange,
    first_closed,
    open_half_sent,
    open_sockets,
    parse,
    request_head,
    trickle,
)

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

MAX_CONNECTIONS = 40
HTTP_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "MAX_HEADER_BYTES": "4096",
        "REQUEST_TIMEOUT_SECONDS": "2",
        "MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "SPAWNER_MAX_CONTAINERS": "2",
    }
    with running_stack(tmp_path_factory.mktemp("edge-stack"), **env) as running:
        yield running


@pytest.fixture(scope="module")
def user(stack: Stack) -> Iterator[User]:
    with httpx.Client(base_url=stack.url, timeout=HTTP_TIMEOUT) as client:
        yield register(client, f"edge-{uuid.uuid4().hex[:8]}", "edge-password-1")


async def test_a_head_over_the_cap_answers_431(stack: Stack) -> None:
    headers = {f"X-Fill-{index}": "v" * 60 for index in range(80)}
    request = request_head("GET", "/publisher/health", {**headers, "Connection": "close"})
    answer = parse(await exchange(LOOPBACK, stack.port, request))
    assert answer is not None
    assert (answer.status, answer.json()["code"]) == (431, "headers_too_large")


async def test_a_head_sent_byte_by_byte_is_cut_off_with_408(stack: Stack) -> None:
    start = b"GET /auth/health HTTP/1.1\r\n"
    raw, sent = await trickle(
        LOOPBACK, stack.port, start, b"X-Slow: " + b"s" * 100, interval=0.2, limit=100
    )
    answer = parse(raw)
    assert answer is not None
    assert (answer.status, answer.json()["code"]) == (408, "request_timeout")
    assert sent < 100


async def test_connections_over_the_cap_hold_no_descriptor_of_the_stack(stack: Stack) -> None:
    baseline = open_sockets(stack.process.pid)
    start = b"GET /registry/health HTTP/1.1\r\nHost: x\r\n"
    held = await open_half_sent(LOOPBACK, stack.port, 2 * MAX_CONNECTIONS, start)
    try:
        refused = await first_closed(held, MAX_CONNECTIONS)
        during = open_sockets(stack.process.pid)
    finally:
        for connection in held:
            connection.close()
    codes = [(answer.status, answer.json()["code"]) for answer in map(parse, refused) if answer]
    assert codes == [(503, "too_many_connections")] * len(refused)
    assert during <= baseline + MAX_CONNECTIONS + 2, (baseline, during)


async def test_an_activation_cut_short_runs_nothing(stack: Stack, user: User) -> None:
    name = f"edge-{uuid.uuid4().hex[:8]}"
    user.create_function(name, busybox_image())
    call = json.dumps({"name": name, "argument": "echo ran"}).encode()
    cut_short = request_head(
        "POST",
        "/publisher/publish",
        {**user.headers, "Content-Length": str(len(call) + 10)},
        body=call,
    )
    raw = await exchange(LOOPBACK, stack.port, cut_short, half_close=True, pause=0.5)
    complete = user.post("/publisher/publish", content=call)
    listed = user.get("/publisher/executions", params={"function": name})
    assert raw == b""
    assert complete.status_code == 200, complete.text
    assert complete.json()["result"] == "ran"
    records: list[dict[str, Any]] = listed.json()["executions"]
    assert [record["execution_id"] for record in records] == [complete.json()["execution_id"]]


def test_no_proxy_is_believed_by_default(stack: Stack, user: User) -> None:
    request_id = uuid.uuid4().hex
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Request-ID": request_id}
    assert user.get("/registry/functions", headers=headers).status_code == 200

    def clients() -> list[str]:
        lines = [json.loads(line) for line in stack.log().splitlines() if request_id in line]
        return [line["client"] for line in lines if line.get("logger") == "faas.access"]

    assert wait_until(lambda: bool(clients()), timeout=10)
    assert clients() == [LOOPBACK]
