"""Pattern-checked tokens are matched whole: Python's ``$`` also matches before a trailing
newline, so ``"abc\\n"`` must not pass for ``"abc"`` anywhere a token is checked in code."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from faas_common.contract import is_id
from faas_common.http import PlatformMiddleware
from faas_common.logging import request_id_var
from publisher_service.timing import PhaseTimer


@pytest.mark.parametrize("value", ["abc", "A-b_9", "x" * 64])
def test_whole_tokens_are_ids(value: str) -> None:
    assert is_id(value)


@pytest.mark.parametrize("value", ["abc\n", "abc\r\n", "\nabc", "ab c", "", "x" * 65, "a.b"])
def test_anything_more_is_not_an_id(value: str) -> None:
    assert not is_id(value)


async def _request_id_seen(header: bytes) -> tuple[str | None, bytes]:
    """What a route sees as the request id, and what the response echoes, for ``header``."""
    seen: dict[str, Any] = {}
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["id"] = request_id_var.get()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"x-request-id", header)],
        "client": ("127.0.0.1", 1234),
    }
    await PlatformMiddleware(app)(scope, receive, send)
    echoed = dict(sent[0]["headers"])[b"x-request-id"]
    return seen["id"], echoed


async def test_a_request_id_with_a_trailing_newline_is_replaced() -> None:
    seen, echoed = await _request_id_seen(b"abc\n")
    assert seen != "abc\n"
    assert b"\n" not in echoed
    assert echoed == (seen or "").encode()


async def test_a_whole_request_id_is_kept() -> None:
    assert await _request_id_seen(b"abc") == ("abc", b"abc")


def test_server_timing_names_are_whole_tokens() -> None:
    header = PhaseTimer().header({"run\n": 1.0, "run": 2.0})
    assert "\n" not in header
    assert "run;dur=2.0" in header
