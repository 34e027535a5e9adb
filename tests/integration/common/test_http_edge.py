"""The HTTP edge (``faas_common.edge``) on a real uvicorn server in this process, on loopback:
header cap (431), slow clients (408), connection cap (503, closed), truncated bodies (never
processed) and which proxies' ``X-Forwarded-For`` is believed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request

from faas_common.edge import EdgeLimits, uvicorn_options
from faas_common.http import PlatformMiddleware
from tests.support.nats_server import LOOPBACK, free_port
from tests.support.raw_http import (
    Answer,
    Connection,
    exchange,
    first_closed,
    open_half_sent,
    parse,
    request_head,
    trickle,
)

LIMITS = EdgeLimits(
    max_header_bytes=4096,
    request_timeout_seconds=1.0,
    max_connections=20,
    forwarded_allow_ips=("127.0.0.1",),
)
START_TIMEOUT = 10.0


@dataclass
class Served:
    port: int
    server: uvicorn.Server
    processed: list[Any]
    """Bodies the ``/items`` route handled."""

    async def exchange(self, request: bytes) -> Answer | None:
        return parse(await exchange(LOOPBACK, self.port, request))

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Answer | None:
        return await self.exchange(
            request_head("GET", path, {"Connection": "close", **(headers or {})})
        )


def build_app(processed: list[Any], slow_seconds: float) -> FastAPI:
    app = FastAPI()

    @app.get("/client")
    async def client(request: Request) -> dict[str, Any]:
        assert request.client is not None
        return {"host": request.client.host}

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(slow_seconds)
        return {"slept": "yes"}

    @app.post("/items", status_code=201)
    async def create(request: Request) -> dict[str, Any]:
        processed.append(await request.json())
        return {"created": True}

    app.add_middleware(PlatformMiddleware, max_body_bytes=65_536)
    return app


@asynccontextmanager
async def serving(limits: EdgeLimits = LIMITS) -> AsyncIterator[Served]:
    """A uvicorn server behind ``limits`` on a free loopback port, until the block ends."""
    port, processed = free_port(), list[Any]()
    app = build_app(processed, slow_seconds=2 * limits.request_timeout_seconds)
    config = uvicorn.Config(
        app, host=LOOPBACK, port=port, lifespan="off", **uvicorn_options(limits)
    )
    served = Served(port, uvicorn.Server(config), processed)
    task = asyncio.create_task(served.server.serve())
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while not served.server.started:
                assert not task.done(), "the server stopped at start-up"
                await asyncio.sleep(0.02)
        yield served
    finally:
        served.server.should_exit = True
        await task


def assert_error(answer: Answer | None, status: int, code: str) -> None:
    assert answer is not None, "the server closed the connection without an answer"
    assert (answer.status, answer.json()["code"]) == (status, code), answer
    assert answer.headers["connection"] == "close"


# --- header cap -------------------------------------------------------------------------------


async def test_a_head_within_the_cap_is_served() -> None:
    headers = {f"X-Fill-{index}": "v" * 60 for index in range(40)}  # about 3 KiB
    async with serving() as served:
        answer = await served.get("/client", headers)
    assert answer is not None
    assert (answer.status, answer.json()) == (200, {"host": "127.0.0.1"})


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({f"X-Fill-{index}": "v" * 60 for index in range(80)}, id="many-headers"),
        pytest.param({"X-Big": "v" * 100_000}, id="one-huge-header"),
        pytest.param({"X-Big": "v" * 5000}, id="just-over"),
    ],
)
async def test_heads_over_the_cap_answer_431(headers: dict[str, str]) -> None:
    async with serving() as served:
        answer = await served.get("/client", headers)
    assert_error(answer, 431, "headers_too_large")
    assert answer is not None
    assert "4096" in answer.json()["detail"]


async def test_a_head_growing_past_the_cap_answers_431_before_it_ends() -> None:
    async with serving() as served, await Connection.open(LOOPBACK, served.port) as connection:
        await connection.send(b"GET /client HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(OSError):  # the server may close while we still send
            for index in range(200):  # 200 * 64 bytes, never a blank line
                await connection.send(f"X-Fill-{index:03d}: {'v' * 50}\r\n".encode())
        raw = await connection.read_until_closed()
    assert_error(parse(raw), 431, "headers_too_large")


async def test_a_malformed_request_answers_400_in_the_platforms_shape() -> None:
    async with serving() as served:
        answer = await served.exchange(b"NOT HTTP AT ALL\r\n\r\n")
    assert_error(answer, 400, "bad_request")


async def test_a_websocket_upgrade_is_served_as_plain_http() -> None:
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with serving() as served:
        answer = await served.exchange(request_head("GET", "/client", upgrade))
    assert answer is not None
    assert (answer.status, answer.json()) == (200, {"host": "127.0.0.1"})


# --- slow clients -----------------------------------------------------------------------------


async def test_a_client_sending_its_head_byte_by_byte_is_cut_off_with_408() -> None:
    drip = b"X-Slow: " + b"s" * 200
    async with serving() as served:
        raw, sent = await trickle(
            LOOPBACK, served.port, b"GET /client HTTP/1.1\r\n", drip, interval=0.1, limit=200
        )
    assert_error(parse(raw), 408, "request_timeout")
    assert sent < 200, "the server waited for the whole slow head"


async def test_a_slow_body_is_cut_off_and_never_processed() -> None:
    body = json.dumps({"name": "slow", "pad": "p" * 200}).encode()
    start = request_head("POST", "/items", {"Content-Length": str(len(body))})
    async with serving() as served:
        raw, sent = await trickle(LOOPBACK, served.port, start, body, interval=0.1, limit=len(body))
        processed = list(served.processed)
    assert_error(parse(raw), 408, "request_timeout")
    assert sent < len(body)
    assert processed == []


async def test_a_connection_that_sends_nothing_is_closed() -> None:
    async with serving() as served, await Connection.open(LOOPBACK, served.port) as connection:
        raw = await connection.read_until_closed()
    assert_error(parse(raw), 408, "request_timeout")


async def test_a_route_may_take_longer_than_the_request_timeout() -> None:
    async with serving() as served:
        answer = await served.get("/slow")
    assert answer is not None
    assert (answer.status, answer.json()) == (200, {"slept": "yes"})


async def test_a_keep_alive_connection_times_each_request_afresh() -> None:
    statuses = []
    async with serving() as served, await Connection.open(LOOPBACK, served.port) as connection:
        for _ in range(3):  # three requests over 1.5 timeouts: each arrives in time
            await connection.send(request_head("GET", "/client"))
            statuses.append((await connection.read_response()).status)
            await asyncio.sleep(0.5)
    assert statuses == [200, 200, 200]


async def test_an_idle_keep_alive_connection_is_closed_after_its_time() -> None:
    limits = replace(LIMITS, keep_alive_seconds=0.5)
    loop = asyncio.get_running_loop()
    async with (
        serving(limits) as served,
        await Connection.open(LOOPBACK, served.port) as connection,
    ):
        await connection.send(request_head("GET", "/client"))
        status = (await connection.read_response()).status
        answered = loop.time()
        rest = await connection.read_until_closed()
        idle = loop.time() - answered
    assert (status, rest) == (200, b"")
    assert idle >= 0.4, f"closed after {idle:.2f} s idle"


# --- connection cap ---------------------------------------------------------------------------

CAP = LIMITS.max_connections


async def test_connections_over_the_cap_are_answered_503_and_closed() -> None:
    limits = replace(LIMITS, request_timeout_seconds=30.0)
    async with serving(limits) as served:
        held = await open_half_sent(
            LOOPBACK, served.port, 3 * CAP, b"GET /c HTTP/1.1\r\nHost: x\r\n"
        )
        try:
            refused = await first_closed(held, 2 * CAP)
            open_connections = len(served.server.server_state.connections)
        finally:
            for connection in held:
                connection.close()
        for _ in range(100):  # bounded: the held ones are gone and the server serves again
            if not served.server.server_state.connections:
                break
            await asyncio.sleep(0.05)
        answer = await served.get("/client")
    assert open_connections <= CAP
    for raw in refused:
        assert_error(parse(raw), 503, "too_many_connections")
        assert parse(raw).headers["retry-after"] == "1"  # type: ignore[union-attr]
    assert answer is not None
    assert answer.status == 200


# --- truncated bodies -------------------------------------------------------------------------


async def test_a_body_shorter_than_its_content_length_is_never_processed() -> None:
    body = json.dumps({"name": "complete-looking"}).encode()
    request = request_head("POST", "/items", {"Content-Length": str(len(body) + 10)}, body=body)
    async with serving() as served:
        raw = await exchange(LOOPBACK, served.port, request, half_close=True, pause=0.3)
        processed = list(served.processed)
        complete = await served.exchange(
            request_head(
                "POST",
                "/items",
                {"Content-Length": str(len(body)), "Connection": "close"},
                body=body,
            )
        )
    assert raw == b""
    assert processed == []
    assert complete is not None
    assert complete.status == 201
    assert served.processed == [{"name": "complete-looking"}]


# --- X-Forwarded-For --------------------------------------------------------------------------

SPOOFED = "203.0.113.9"


def access_clients(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [vars(record)["client"] for record in caplog.records if record.name == "faas.access"]


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serving() as served:
        with caplog.at_level(logging.INFO, "faas.access"):
            answer = await served.get("/client", {"X-Forwarded-For": SPOOFED})
    assert answer is not None
    assert answer.json() == {"host": SPOOFED}
    assert access_clients(caplog) == [SPOOFED]


@pytest.mark.parametrize(
    "trusted",
    [pytest.param(("192.0.2.1",), id="another-proxy"), pytest.param((), id="no-proxy")],
)
async def test_forwarded_for_from_anybody_else_is_ignored(
    trusted: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(replace(LIMITS, forwarded_allow_ips=trusted)) as served:
        with caplog.at_level(logging.INFO, "faas.access"):
            answer = await served.get("/client", {"X-Forwarded-For": SPOOFED})
    assert answer is not None
    assert answer.json() == {"host": "127.0.0.1"}
    assert access_clients(caplog) == ["127.0.0.1"]
