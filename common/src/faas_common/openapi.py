"""What the OpenAPI documents say about errors: one error schema, shared response sets.

Every error a service answers is ``{"detail", "code"}`` (``ErrorBody``; validation errors keep
FastAPI's list under ``detail``). Routes declare the statuses they can answer with these sets::

    EVERY_ROUTE     400 408 413 431 503  the HTTP edge and the body cap, whatever the route
    JSON_BODY       400 413 422          a route that reads a JSON body
    PARAMETERS      422                  a route with path, query or header parameters
    AUTHENTICATED   401 503              a bearer token is verified (503: signing keys unreachable)

plus ``error_response(status, ...)`` for a route's own statuses (404, 409, ...). Every 401 declares
``WWW-Authenticate``, every 429 and 503 ``Retry-After`` (``STANDARD_HEADERS``).
``create_service_app`` applies ``EVERY_ROUTE`` to each route of a service, and
``declare_request_id`` declares ``X-Request-ID`` on every response of its document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from faas_common.contract import REQUEST_ID_PATTERN

Responses = dict[int | str, dict[str, Any]]


class ErrorBody(BaseModel):
    """Every error answer. Some carry more fields (an activation error its ``execution``)."""

    model_config = ConfigDict(extra="allow")

    detail: str | list[dict[str, Any]] = Field(
        description="What went wrong: a sentence, or FastAPI's list of validation errors"
    )
    code: str = Field(description="Machine-readable snake_case code", examples=["not_found"])


def error_response(
    status: int,
    description: str,
    *,
    code: str,
    detail: str,
    model: type[BaseModel] = ErrorBody,
    headers: Mapping[str, str] | None = None,
) -> Responses:
    """One documented error status: its description, schema, an example body and its headers
    (by default the ones every error of that status carries, see ``standard_headers``)."""
    return {
        status: {
            "description": description,
            "model": model,
            "content": {"application/json": {"example": {"detail": detail, "code": code}}},
            "headers": header_objects(standard_headers(status) if headers is None else headers),
        }
    }


STANDARD_HEADERS = {
    401: {"WWW-Authenticate": "Bearer"},
    429: {"Retry-After": "Seconds to wait before trying again"},
    503: {"Retry-After": "Seconds to wait before trying again"},
}
"""The headers ``faas_common.errors`` puts on every error of these statuses."""


def standard_headers(status: int) -> Mapping[str, str]:
    return STANDARD_HEADERS.get(status, {})


def header_objects(headers: Mapping[str, str]) -> dict[str, Any]:
    """OpenAPI header objects: each header always sent, with its description."""
    return {
        name: {"description": description, "required": True, "schema": {"type": "string"}}
        for name, description in headers.items()
    }


REQUEST_ID_HEADER_OBJECT = {
    "description": "The request's id: the caller's X-Request-ID when it is 1-128 characters of "
    "[A-Za-z0-9._:-], else a new one (also in the service's log lines about the request, and "
    "an execution record's request_id)",
    "required": True,
    "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
}


def declare_request_id(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (an OpenAPI document) with ``X-Request-ID`` declared on every response of
    every operation, as ``PlatformMiddleware`` sends it."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {})["X-Request-ID"] = REQUEST_ID_HEADER_OBJECT
    return document


def merge(*sets: Responses) -> Responses:
    """Response sets combined; a later set's entry for a status replaces an earlier one."""
    merged: Responses = {}
    for responses in sets:
        merged.update(responses)
    return merged


EVERY_ROUTE = merge(
    error_response(
        400,
        "The request is not valid HTTP (answered by the HTTP edge)",
        code="bad_request",
        detail="Invalid HTTP request",
    ),
    error_response(
        408,
        "The request's head and body did not arrive within REQUEST_TIMEOUT_SECONDS",
        code="request_timeout",
        detail="The request did not arrive in time",
    ),
    error_response(
        413,
        "The request body exceeds the service's body cap",
        code="payload_too_large",
        detail="Request body exceeds 1048576 bytes",
    ),
    error_response(
        431,
        "The request's headers exceed MAX_HEADER_BYTES in total",
        code="headers_too_large",
        detail="Request headers exceed 16384 bytes",
    ),
    error_response(
        503,
        "The service holds MAX_CONNECTIONS open connections; see Retry-After",
        code="too_many_connections",
        detail="Too many open connections",
    ),
)
"""What any request may be answered, before a route runs: the HTTP edge's limits
(``faas_common.edge``) and the body cap (``PlatformMiddleware``)."""
PARAMETERS: Responses = {
    422: {
        "description": "A parameter or the body is invalid (FastAPI's error list under detail)",
        "model": ErrorBody,
        "content": {
            "application/json": {
                "example": {
                    "detail": [
                        {"type": "missing", "loc": ["body", "name"], "msg": "Field required"}
                    ],
                    "code": "validation_error",
                }
            }
        },
    }
}
JSON_BODY = merge(
    error_response(
        400,
        "The body cannot be parsed (not UTF-8, nested too deep, a number too long), or the "
        "request is not valid HTTP",
        code="bad_request",
        detail="There was an error parsing the body",
    ),
    EVERY_ROUTE,
    PARAMETERS,
)
AUTHENTICATED = merge(
    error_response(
        401,
        "Missing, invalid, expired or revoked bearer token",
        code="invalid_token",
        detail="Invalid token",
    ),
    error_response(
        503,
        "A dependency (database, NATS, the token signing keys) is unavailable, or the service "
        "holds its maximum of open connections; see Retry-After",
        code="service_unavailable",
        detail="A dependency of this service is unavailable",
    ),
)
