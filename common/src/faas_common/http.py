"""The ASGI middleware every service runs, and the app constructor that installs it.

``PlatformMiddleware`` (pure ASGI, one per app):

- request id: reuses a sane ``X-Request-ID`` from the gateway or the client
  (``faas_common.contract.is_request_id``) or makes one, puts it in the logging context and
  echoes it on every response, errors included (an unexpected exception is answered 500
  ``internal_error`` here, its traceback logged with the request id);
- body cap: a body over ``max_body_bytes`` is a 413 ``payload_too_large`` before any route runs;
- whole bodies only: a client that disconnects before its body ended (shorter than its
  ``Content-Length``) reaches no route; the access log says 499;
- JSON whatever the Content-Type: ``curl -d '{...}'`` sends ``application/x-www-form-urlencoded``;
  a body that is a JSON object or array is handed to the routes as ``application/json``;
- one access-log line per request, with the client's address (the proxy's ``X-Forwarded-For``
  only when it comes from ``FORWARDED_ALLOW_IPS``, see ``faas_common.edge``).

``serve`` runs an app with uvicorn behind the limits of ``faas_common.edge``, with the process's
Prometheus ``/metrics`` on ``METRICS_PORT``. ``HttpMetrics`` (``faas_common.http_metrics``), the
outermost middleware, counts every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faas_common.contract import is_request_id, new_request_id
from faas_common.errors import BadRequest, ServiceError, error_body, install_error_handlers
from faas_common.http_metrics import HttpMetrics, RouteCapture
from faas_common.logging import configure_logging, request_id_var
from faas_common.metrics import serving_metrics
from faas_common.openapi import EVERY_ROUTE, declare_request_id
from faas_common.settings import CommonSettings

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")

access_log = logging.getLogger("faas.access")
logger = logging.getLogger("faas.http")

REQUEST_ID_HEADER = "x-request-id"
_JSON_TYPES = (b"application/json", b"application/merge-patch+json")
CLIENT_GONE = 499
"""The access log's status of a request whose client disconnected before its body ended."""


class PlatformMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int = 1_048_576) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        incoming = _header(headers, b"x-request-id")
        request_id = incoming if is_request_id(incoming) else new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder.update(status=message["status"], started=True)
                response_headers = list(message.get("headers", []))
                response_headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": response_headers}
            await send(message)

        try:
            body, too_large = await self._read_body(receive)
            if body is None:
                # The client left before its body ended: a truncated body is never processed
                # as if complete, and nobody is left to answer.
                status_holder["status"] = CLIENT_GONE
                return
            if too_large:
                await _send_json(
                    send_with_id,
                    413,
                    error_body(
                        f"Request body exceeds {self.max_body_bytes} bytes", "payload_too_large"
                    ),
                )
                return
            if body and not _is_json_type(_header(headers, b"content-type")):
                stripped = body.lstrip()
                if stripped[:1] in (b"{", b"["):
                    headers = [(k, v) for k, v in headers if k != b"content-type"]
                    headers.append((b"content-type", b"application/json"))
            scope = {**scope, "headers": headers}
            await self.app(scope, _replay(body, receive), send_with_id)
        except Exception:
            if status_holder["started"]:
                raise
            # Answered here, not by Starlette's outer error middleware: the 500 carries the
            # request id and its traceback is logged with it.
            logger.exception("unhandled error")
            internal = error_body("Internal server error", "internal_error")
            await _send_json(send_with_id, 500, internal)
        finally:
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status_holder["status"],
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status_holder["status"],
                    "client": _client_host(scope),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            request_id_var.reset(token)

    async def _read_body(self, receive: Receive) -> tuple[bytes | None, bool]:
        """The whole body (None if the client disconnected first), or whether it is too large."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), False


def _client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _is_json_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower().encode()
    return media in _JSON_TYPES or media.endswith(b"+json")


def _replay(body: bytes, upstream: Receive) -> Receive:
    """The body read already, then the server's own messages (its ``http.disconnect`` when
    the client leaves: see ``until_disconnected``)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await upstream()

    return receive


class ClientGone(ServiceError):
    """The client disconnected while its request waited: nobody reads the answer, the access
    log says 499."""

    status_code = CLIENT_GONE
    code = "client_gone"
    detail = "The client disconnected"


async def until_disconnected(receive: Receive) -> None:
    """Return when the client has disconnected (the request's body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """``work``'s result, or ``ClientGone`` as soon as the client leaves first; ``work`` is
    cancelled then (a long wait frees what it holds at once)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(until_disconnected(receive))
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancelled(gone)
        if not task.done():
            await _cancelled(task)
    if task in done:
        return task.result()
    raise ClientGone()


async def _cancelled(future: asyncio.Future[Any]) -> None:
    future.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await future


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def create_service_app(
    *,
    title: str,
    prefix: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    routers: Sequence[APIRouter],
    max_body_bytes: int,
    version: str = "0.1.0",
) -> FastAPI:
    """A FastAPI app whose every path, docs included, lives under ``prefix`` (the gateway's)."""
    app = FastAPI(
        title=title,
        version=version,
        lifespan=lifespan,
        openapi_url=f"{prefix}/openapi.json",
        docs_url=f"{prefix}/docs",
        redoc_url=None,
        responses=EVERY_ROUTE,
    )
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    app.add_middleware(RouteCapture)  # innermost: tells HttpMetrics the route chosen
    app.add_middleware(PlatformMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(HttpMetrics, service=title)  # outermost: counts what Platform refuses
    document = app.openapi
    app.openapi = lambda: declare_request_id(document())  # type: ignore[method-assign]
    return app


def parse_json_body(raw: bytes) -> Any:
    """A request body read by hand, parsed as JSON; invalid JSON is the usual 422."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": "Invalid JSON", "input": ""}]
        ) from exc
    except (ValueError, RecursionError) as exc:
        # Not UTF-8 text, nesting too deep, an integer with thousands of digits: FastAPI
        # answers these with a 400 when it parses the body itself; so do we.
        raise BadRequest("There was an error parsing the body") from exc


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def validate_body(model: type[ModelT], data: Any) -> ModelT:
    """Validate data read by hand as ``model``; errors are the usual 422 located in the body."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for error in errors:
            error["loc"] = ("body", *error["loc"])
        raise RequestValidationError(errors) from exc


def serve(app: FastAPI, *, service: str, host: str, port: int, settings: CommonSettings) -> None:
    """Run one service app with uvicorn (``python -m <service>``), logging in ``LOG_FORMAT``,
    behind the settings' HTTP edge limits."""
    import uvicorn

    from faas_common.edge import EdgeLimits, uvicorn_options

    configure_logging(service, settings.log_level, settings.log_format)
    with serving_metrics(settings.metrics_host, settings.metrics_port):
        uvicorn.run(
            app, host=host, port=port, **uvicorn_options(EdgeLimits.from_settings(settings))
        )
