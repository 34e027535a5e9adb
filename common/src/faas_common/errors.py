"""One error shape for every service: ``{"detail": "...", "code": "snake_case"}``.

Hierarchy (the services' own errors subclass these; ``Retry-After`` where marked)::

    ServiceError (status, code, detail)
    ├── BadRequest            400 bad_request
    ├── Unauthorized          401 unauthorized / invalid_credentials / invalid_token
    ├── Forbidden             403 forbidden / image_not_allowed / quota_exceeded
    ├── NotFound              404 not_found / function_not_found / execution_not_found
    ├── Conflict              409 conflict / username_taken / function_exists /
    │                             idempotency_key_reused
    ├── PayloadTooLarge       413 payload_too_large / argument_too_large
    ├── Unprocessable         422 unprocessable / image_registry_not_allowed / env_too_large
    ├── TooManyRequests       429 too_many_requests / concurrency_limit      (Retry-After: 1)
    ├── BadGateway            502 function_failed / output_too_large / image_unavailable
    ├── DependencyUnavailable 503 service_unavailable / runtime_unavailable  (Retry-After: 2)
    ├── InsufficientStorage   507 storage_full
    └── GatewayTimeout        504 timed_out

``install_error_handlers(app)`` renders these, FastAPI's validation errors (422, the list kept
under ``detail``), Starlette's HTTP errors (404 for unknown paths, 405 with an ``Allow`` naming
every method of the path, ...), lost database connections and refused sockets (503
``service_unavailable``) and, as a last resort, any unexpected exception as a JSON 500 that is
logged with its traceback. Every 5xx is logged with its cause.
"""

from __future__ import annotations

import logging
import math
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

logger = logging.getLogger("faas.errors")


class ServiceError(Exception):
    """A domain error with the HTTP status and the machine-readable code it maps to."""

    status_code: int = 500
    code: str = "internal_error"
    detail: str = "Internal server error"
    retry_after: int | None = None
    """Seconds for a ``Retry-After`` header (an error worth retrying as such)."""

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.detail = detail if detail is not None else type(self).detail
        self.code = code if code is not None else type(self).code
        self.headers = dict(headers or {})
        if self.retry_after is not None:
            self.headers.setdefault("Retry-After", str(self.retry_after))
        self.body = body or {}
        super().__init__(self.detail)


class BadRequest(ServiceError):
    status_code = 400
    code = "bad_request"
    detail = "Bad request"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"
    detail = "Not authenticated"

    def __init__(self, detail: str | None = None, *, code: str | None = None) -> None:
        super().__init__(detail, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"
    detail = "Not allowed"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"
    detail = "Not found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"
    detail = "Conflict"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"
    detail = "Request body too large"


class Unprocessable(ServiceError):
    """A well-formed request the service refuses to act on (one sentence, not a field list)."""

    status_code = 422
    code = "unprocessable"
    detail = "The request cannot be processed"


class TooManyRequests(ServiceError):
    status_code = 429
    code = "too_many_requests"
    detail = "Too many requests"
    retry_after = 1


class BadGateway(ServiceError):
    status_code = 502
    code = "bad_gateway"
    detail = "An upstream failed"


class DependencyUnavailable(ServiceError):
    status_code = 503
    code = "service_unavailable"
    detail = "A dependency of this service is unavailable"
    retry_after = 2


class InsufficientStorage(ServiceError):
    """A store the request must write to is full (its ``max_bytes``): nothing was done."""

    status_code = 507
    code = "storage_full"
    detail = "The platform's storage is full: nothing was done, retry later"


class GatewayTimeout(ServiceError):
    status_code = 504
    code = "timed_out"
    detail = "Timed out"


def error_body(detail: Any, code: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, **extra}


def _status_code_name(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase.lower().replace("'", "")
    except ValueError:
        return "http_error"
    return re.sub(r"[^a-z0-9]+", "_", phrase).strip("_")


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.status_code >= 500:
        logger.warning(
            "answered %d %s: %s",
            exc.status_code,
            exc.code,
            exc.detail,
            extra={"path": request.url.path, "cause": repr(exc.__cause__ or exc.__context__)},
        )
    return JSONResponse(
        error_body(exc.detail, exc.code, **exc.body),
        status_code=exc.status_code,
        headers=exc.headers or None,
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b.decode("latin-1")})
    for error in errors:
        error.pop("url", None)
        # Echoing a 1 MB oversize field back to the caller helps nobody.
        if isinstance(error.get("input"), str) and len(error["input"]) > 256:
            error["input"] = error["input"][:256] + "..."
    return JSONResponse(_encodable(error_body(errors, "validation_error")), status_code=422)


def _encodable(value: Any) -> Any:
    """``value`` with lone surrogates (valid in JSON text, not in UTF-8) replaced by U+FFFD and
    non-finite floats as strings, so echoing a bad input back cannot break the error response."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and Infinity are not JSON
    if isinstance(value, dict):
        return {_encodable(key): _encodable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_encodable(item) for item in value]
    return value


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return JSONResponse(
        error_body(exc.detail, _status_code_name(exc.status_code)),
        status_code=exc.status_code,
        headers=headers or None,
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


_CONNECTION_HINTS = ("connect", "connection", "too many clients", "shutting down", "timeout")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A lost database connection is a 503; any other database error is unexpected."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    assert isinstance(exc, DBAPIError)
    if not isinstance(exc, OperationalError | InterfaceError):
        text = str(exc.orig or exc).lower()
        if not exc.connection_invalidated and not any(hint in text for hint in _CONNECTION_HINTS):
            return await _unexpected_error(request, exc)
    return await _dependency_error(request, exc)


async def _dependency_error(_: Request, exc: Exception) -> JSONResponse:
    """Refused sockets and lost connections: the service is fine, a dependency is not."""
    logger.warning("dependency unavailable: %s", exc)
    unavailable = DependencyUnavailable()
    return JSONResponse(
        error_body(unavailable.detail, unavailable.code),
        status_code=unavailable.status_code,
        headers=unavailable.headers,
    )


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("Internal server error", "internal_error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    try:  # only the services with a database install SQLAlchemy (the ``db`` extra)
        from sqlalchemy.exc import DBAPIError
    except ImportError:
        pass
    else:
        app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(OSError, _dependency_error)
    app.add_exception_handler(Exception, _unexpected_error)
