"""The HTTP edge of every service: what a connection may cost before any route runs.

uvicorn serves each app with ``EdgeProtocol``, its h11 protocol plus these limits
(``EdgeLimits``, from the shared settings):

- request heads (request line and headers) over ``max_header_bytes`` in total answer 431
  ``headers_too_large``, whether the head is still arriving or came in one piece;
- a request's head and body must arrive within ``request_timeout_seconds`` of its first byte
  (of the connection, for its first request): a client that is slower gets 408
  ``request_timeout`` and is disconnected; the route, if it was waiting for the body, sees the
  client gone;
- an idle keep-alive connection is closed after ``keep_alive_seconds``: longer than the
  clients in front keep theirs idle (the gateway, httpx), since a request sent just as the
  server closes its connection is lost;
- at most ``max_connections`` connections are open per process: one more is answered 503
  ``too_many_connections`` at once and closed, so it holds no file descriptor;
- ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are honoured only from ``forwarded_allow_ips``
  (addresses or networks of the proxies in front, e.g. the gateway's network).

Errors written here, before or instead of the app, keep the platform's ``{"detail", "code"}``
shape and close the connection.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from faas_common.settings import CommonSettings


@dataclass(frozen=True)
class EdgeLimits:
    max_header_bytes: int = 16_384
    request_timeout_seconds: float = 10.0
    keep_alive_seconds: float = 15.0
    max_connections: int = 512
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> EdgeLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            request_timeout_seconds=settings.request_timeout_seconds,
            keep_alive_seconds=settings.keep_alive_seconds,
            max_connections=settings.max_connections,
            forwarded_allow_ips=settings.trusted_proxies,
        )


def error_response(status: int, code: str, detail: str, *, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, with a JSON error body."""
    body = json.dumps({"detail": detail, "code": code}).encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        lines.append(f"retry-after: {retry_after}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


TOO_MANY_CONNECTIONS = error_response(
    503, "too_many_connections", "Too many open connections", retry_after=1
)
REQUEST_TIMEOUT = error_response(408, "request_timeout", "The request did not arrive in time")
MALFORMED = error_response(400, "bad_request", "Invalid HTTP request")


def _head_size(request: h11.Request) -> int:
    """The request line and headers as sent, give or take the spaces around values."""
    size = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n\r\n")
    return size + sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items())


class HeadCappedConnection(h11.Connection):
    """h11's server side, with a cap on the whole request head.

    h11 itself refuses only a head still incomplete beyond the cap (with a 431 hint); this one
    also refuses a complete head over it. The last protocol error is kept for the answer.
    """

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes
        self.error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            if isinstance(event, h11.Request) and _head_size(event) > self.max_head_bytes:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        except h11.RemoteProtocolError as exc:
            self.error = exc
            raise
        return event


class EdgeProtocol(H11Protocol):
    """uvicorn's h11 protocol with the edge limits; ``edge_protocol(limits)`` binds them."""

    limits: ClassVar[EdgeLimits] = EdgeLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = HeadCappedConnection(self.limits.max_header_bytes)
        self.request_timer: asyncio.TimerHandle | None = None

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.logger.warning("connection refused: %d open", len(self.connections) - 1)
            self.close_with(TOO_MANY_CONNECTIONS)
            return
        self.arm_request_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.follow_request()

    def send_400_response(self, msg: str) -> None:
        error = self.conn.error if isinstance(self.conn, HeadCappedConnection) else None
        if error is not None and error.error_status_hint == 431:
            self.close_with(
                error_response(
                    431,
                    "headers_too_large",
                    f"Request headers exceed {self.limits.max_header_bytes} bytes",
                )
            )
        else:
            self.close_with(MALFORMED)

    # --- the request timer ----------------------------------------------------------------

    def reading_request(self) -> bool:
        """Part of a request has arrived and the rest has not (head or body)."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            return True
        return state is h11.IDLE and bool(self.conn.trailing_data[0])

    def follow_request(self) -> None:
        if self.transport.is_closing():
            return
        if self.reading_request():
            self.arm_request_timer()
        else:
            self.cancel_request_timer()

    def arm_request_timer(self) -> None:
        if self.request_timer is None:
            self.request_timer = self.loop.call_later(
                self.limits.request_timeout_seconds, self.request_timed_out
            )

    def cancel_request_timer(self) -> None:
        if self.request_timer is not None:
            self.request_timer.cancel()
            self.request_timer = None

    def request_timed_out(self) -> None:
        self.request_timer = None
        if self.transport.is_closing():
            return
        answering = self.conn.their_state is h11.SEND_BODY and self.cycle is not None
        if answering and self.cycle.response_started:
            self.transport.close()  # the app answered already; the rest of the body is late
            return
        if answering:
            # The route waiting for the body sees the client gone and answers nothing.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.logger.info("request not received within %ss", self.limits.request_timeout_seconds)
        self.close_with(REQUEST_TIMEOUT)

    def close_with(self, response: bytes) -> None:
        self.cancel_request_timer()
        self.transport.write(response)
        self.transport.close()


def edge_protocol(limits: EdgeLimits) -> type[EdgeProtocol]:
    """``EdgeProtocol`` bound to ``limits`` (one class per server)."""
    return type("BoundEdgeProtocol", (EdgeProtocol,), {"limits": limits})


def uvicorn_options(limits: EdgeLimits) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` that put ``limits`` in force
    (JSON logs come from the platform's logging set-up, not uvicorn's)."""
    return {
        "http": edge_protocol(limits),
        "ws": "none",  # no route speaks WebSocket: an upgrade request is plain HTTP here
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "timeout_keep_alive": limits.keep_alive_seconds,
        "proxy_headers": bool(limits.forwarded_allow_ips),
        "forwarded_allow_ips": list(limits.forwarded_allow_ips),
        "log_config": None,
    }
