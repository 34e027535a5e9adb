"""``HttpMetrics``: the ASGI middleware that counts every service's requests (``web`` extra).

Each request is counted once it is answered, by service, route template (the path of the
FastAPI route that matched it, ``/publisher/executions/{execution_id}``, never the raw path;
``unmatched`` when no route does), method (``other`` beyond the standard ones) and status,
and its time goes into a histogram. A request whose client left before any answer counts as
499. ``HttpMetrics`` is the outermost middleware, so that refusals made before any route (413,
499) are counted too; ``RouteCapture``, the innermost, tells it which route the router chose.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faas_common.metrics import HTTP_DURATION, HTTP_REQUESTS

UNMATCHED = "unmatched"
"""The route label of a request no route matched (a 404 of the router, a refusal before it)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NO_ANSWER = 499
ROUTE_KEY = "faas.route"
"""The scope key of the holder ``HttpMetrics`` hands down and ``RouteCapture`` fills in."""


class RouteCapture:
    """The innermost middleware: once the router has handled a request, the path template of
    the route it chose (FastAPI sets ``scope["route"]``) goes into ``HttpMetrics``'s holder. The
    middlewares between them may copy the scope; the holder is the same object in each copy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            holder = scope.get(ROUTE_KEY)
            path = getattr(scope.get("route"), "path", None)
            if isinstance(holder, dict) and isinstance(path, str):
                holder["route"] = path


class HttpMetrics:
    """The outermost middleware: counts and times each request once it is answered."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = NO_ANSWER
        holder = {"route": UNMATCHED}

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app({**scope, ROUTE_KEY: holder}, receive, send_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = holder["route"]
            HTTP_REQUESTS.labels(self.service, route, method, str(status)).inc()
            elapsed = time.perf_counter() - started
            HTTP_DURATION.labels(self.service, route, method).observe(elapsed)
