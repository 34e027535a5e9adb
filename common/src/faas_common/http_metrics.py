"""``HttpMetrics``: the ASGI middleware that counts every service's requests (``web`` extra).

Each request is counted once it is answered, by service, route template (the path of the
FastAPI route that matched it, ``/publisher/executions/{execution_id}``, never the raw path;
``unmatched`` when no route does), method (``other`` for a method no route serves) and status,
and its time goes into a histogram. A request whose client left before any answer counts as
499. It is the outermost middleware, so that refusals made before any route (413, 499) are
counted too.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faas_common.metrics import HTTP_DURATION, HTTP_REQUESTS

UNMATCHED = "unmatched"
"""The route label of a request no route matches (a 404 of the router)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NO_ANSWER = 499


def route_template(scope: Scope) -> str:
    """The path template of the route of ``scope``'s app that matches it (fully, or by path
    alone: a 405), else ``UNMATCHED``."""
    app = scope.get("app")
    if not isinstance(app, FastAPI):
        return UNMATCHED
    partial: str | None = None
    for route in app.router.routes:
        match, _ = route.matches(scope)
        path = getattr(route, "path", None)
        if match is Match.FULL and path is not None:
            return str(path)
        if match is Match.PARTIAL and partial is None and path is not None:
            partial = str(path)
    return partial or UNMATCHED


class HttpMetrics:
    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = NO_ANSWER

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = route_template(scope)
            HTTP_REQUESTS.labels(self.service, route, method, str(status)).inc()
            HTTP_DURATION.labels(self.service, route, method).observe(time.perf_counter() - started)
