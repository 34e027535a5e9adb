"""The HTTP edge's settings and the middleware's rule for bodies cut short (the servers
themselves: ``tests/integration/common/test_http_edge.py``)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from faas_common.edge import EdgeLimits, error_response, uvicorn_options
from faas_common.http import PlatformMiddleware
from faas_common.settings import CommonSettings
from tests.support.raw_http import parse

# --- settings ---------------------------------------------------------------------------------


def test_the_edge_limits_default_to_the_documented_values() -> None:
    limits = EdgeLimits.from_settings(CommonSettings())
    assert limits == EdgeLimits(
        max_header_bytes=16_384,
        request_timeout_seconds=10.0,
        keep_alive_seconds=15.0,
        max_connections=512,
        forwarded_allow_ips=("127.0.0.1",),
    )


def test_idle_connections_outlive_those_of_httpx_pools() -> None:
    """A client whose pool keeps idle connections longer than the server sends requests on
    connections the server is closing: those requests are lost."""
    keep_alive = uvicorn_options(EdgeLimits.from_settings(CommonSettings()))["timeout_keep_alive"]
    assert keep_alive > httpx.Limits().keepalive_expiry


def test_the_edge_limits_are_read_from_their_plain_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_HEADER_BYTES", "8192")
    monkeypatch.setenv("REQUEST_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("KEEP_ALIVE_SECONDS", "30")
    monkeypatch.setenv("MAX_CONNECTIONS", "64")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", " 10.0.1.0/24, fd00::1 ,")
    limits = EdgeLimits.from_settings(CommonSettings())
    assert limits == EdgeLimits(8192, 2.5, 30.0, 64, ("10.0.1.0/24", "fd00::1"))


@pytest.mark.parametrize("value", ["", " ", "*"])
def test_no_proxy_or_every_proxy_can_be_trusted(value: str) -> None:
    settings = CommonSettings(forwarded_allow_ips=value)
    assert settings.trusted_proxies == tuple(part for part in (value.strip(),) if part)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("gateway", "'gateway' is not an IP address or network", id="a-name"),
        pytest.param("10.0.0.1/8", "'10.0.0.1/8' is not", id="host-bits-set"),
        pytest.param("127.0.0.1,*", "trusts everybody", id="star-with-others"),
    ],
)
def test_proxy_addresses_that_would_silently_trust_nobody_are_refused(
    value: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        CommonSettings(forwarded_allow_ips=value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_header_bytes", 512),
        ("request_timeout_seconds", 0),
        ("keep_alive_seconds", 0),
        ("max_connections", 0),
    ],
)
def test_limits_that_cannot_work_are_refused(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        CommonSettings.model_validate({field: value})


def test_edge_errors_are_complete_responses_in_the_platforms_shape() -> None:
    answer = parse(error_response(503, "too_many_connections", "Too many", retry_after=1))
    assert answer is not None
    assert (answer.status, answer.json()) == (
        503,
        {"detail": "Too many", "code": "too_many_connections"},
    )
    assert answer.headers["connection"] == "close"
    assert answer.headers["retry-after"] == "1"


# --- bodies cut short -------------------------------------------------------------------------


def http_scope() -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": "/items",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
        "client": ("127.0.0.1", 50000),
    }


async def run_middleware(messages: list[dict[str, Any]]) -> tuple[list[bytes], list[Message]]:
    """The middleware over an app that records the bodies it reads; the client sends
    ``messages``. Returns what the app read and what was sent back."""
    bodies: list[bytes] = []
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        bodies.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    queue: list[Message] = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await PlatformMiddleware(app, max_body_bytes=4096)(http_scope(), receive, send)
    return bodies, sent


async def test_a_body_ended_by_a_disconnect_reaches_no_route(
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"name": "complete-looking"}', "more_body": True},
        {"type": "http.disconnect"},
    ]
    with caplog.at_level(logging.INFO, "faas.access"):
        bodies, sent = await run_middleware(messages)
    assert (bodies, sent) == ([], [])
    [record] = [record for record in caplog.records if record.name == "faas.access"]
    assert (record.status, record.client) == (499, "127.0.0.1")  # type: ignore[attr-defined]


async def test_a_disconnect_before_any_body_reaches_no_route() -> None:
    bodies, sent = await run_middleware([{"type": "http.disconnect"}])
    assert (bodies, sent) == ([], [])


async def test_a_body_in_several_chunks_reaches_the_route_whole() -> None:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"name": ', "more_body": True},
        {"type": "http.request", "body": b'"whole"}', "more_body": False},
    ]
    bodies, sent = await run_middleware(messages)
    assert bodies == [b'{"name": "whole"}']
    assert sent[0]["status"] == 201
